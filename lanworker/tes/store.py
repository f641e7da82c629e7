"""The task store: one JSON record per task, newest first, shared by every API node.

Invariant: every change is a read-modify-write that either applies whole or is retried on
a conflict (SQLite: one IMMEDIATE transaction; DynamoDB: a conditional put on the record's
version), so projections from several API nodes never lose an event's effect.

URLs: `sqlite:PATH` (the embedded default) or `dynamodb://TABLE` (created when missing,
with a global secondary index that lists tasks newest first).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict, cast

from typing_extensions import Required

from lanworker.core.errors import ConfigError, QueueUnreachable
from lanworker.core.retries import is_botocore_failure
from lanworker.queues.sqlite import connect, immediate
from lanworker.tes.models import FINAL_STATES


class TaskLog(TypedDict, total=False):
    """What the workers' events said about the task's (last) run."""

    worker_id: str
    start_time: str  # RFC 3339
    end_time: str
    exit_code: int | None
    reason: str | None
    error: str | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    executors: list[dict[str, Any]]
    stdout: str | None  # tails
    stderr: str | None
    timings_s: dict[str, float]


class TimelineEntry(TypedDict, total=False):
    """One event in the task's timeline (the status view's)."""

    state: Required[str | None]  # a core.states.EventState value, as the event named it
    time: Required[float]
    worker_id: str | None
    reason: str
    exit_code: int
    error: str
    attempt: int


class TaskRecord(TypedDict, total=False):
    """One task as the store keeps it: the same JSON document in SQLite and DynamoDB."""

    id: Required[str]
    kind: Required[str]  # "tes" (created by the API) or "command" (seen first through events)
    created_at: Required[float]
    creation_time: Required[str]  # RFC 3339
    state: Required[str]  # a tes.models.State value
    name: str | None
    tags: dict[str, str]
    task: dict[str, Any]  # the TES task as submitted
    service: str | None
    system_logs: list[str]
    events: list[TimelineEntry]
    cancel_requested: bool
    attempt: int
    log: TaskLog


Record = TaskRecord
DYNAMODB_ITEM_BYTES = 400 * 1024
ITEM_OVERHEAD_BYTES = 2048  # an item's other attributes and names, beside the JSON document
SIZE_TTL_S = 60.0  # how long DynamoTaskStore keeps the table's size
MAX_TOKEN_TIME = 1e11  # seconds since the epoch: year 5138, beyond any created_at
Change = Callable[[Record | None], Record | None]  # None: leave the record as it is


@dataclass(frozen=True)
class RecordFilter:
    """Which records a listing wants (TES ListTasks, the status view): every field given
    must match. A tag given with an empty value matches any value of that key."""

    state: str | None = None
    name_prefix: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # found in the id, name, service or a tag `key=value`, any case

    def __call__(self, record: Record) -> bool:
        if self.state and record["state"] != self.state:
            return False
        if self.name_prefix and not (record.get("name") or "").startswith(self.name_prefix):
            return False
        own = record.get("tags") or {}
        if not all(key in own and (not value or own[key] == value) for key, value in self.tags.items()):
            return False
        needle = (self.text or "").strip().lower()
        if not needle:
            return True
        haystack = [record["id"], record.get("name") or "", record.get("service") or ""]
        haystack += [f"{key}={value}" for key, value in own.items()]
        return any(needle in text.lower() for text in haystack)


class TaskStore(Protocol):
    url: str

    def create(self, record: Record) -> None:
        """Add a new record; raises KeyError if the id exists."""

    def get(self, task_id: str) -> Record | None: ...

    def update(self, task_id: str, change: Change) -> Record | None:
        """Apply change atomically; returns the record as stored afterwards."""

    def page(
        self, matches: Callable[[Record], bool], page_size: int, page_token: str | None
    ) -> tuple[list[Record], str | None]:
        """Records newest first that satisfy matches, and the token of the next page."""

    def counts(self) -> dict[str, int]:
        """How many records are in each state."""

    def stored_bytes(self) -> int:
        """What the records take now (SQLite: pages in use; DynamoDB: the table's size as
        DynamoDB reports it, refreshed about every six hours)."""

    def prune(self, created_before: float) -> int:
        """Remove records in a final state created before this time; returns how many."""


def _size(record: Record) -> int:
    return len(json.dumps(record).encode())


def _trimmable(record: Record) -> list[tuple[dict[str, Any], str]]:
    """(holder, key) of the texts that may be cut: log tails first, then inline content."""
    log = cast(dict[str, Any], record.get("log") or {})  # cut in place
    found = [(log, key) for key in ("stdout", "stderr") if isinstance(log.get(key), str)]
    for executor in log.get("executors") or []:
        if isinstance(executor, dict):
            found += [(executor, key) for key in ("stdout", "stderr") if isinstance(executor.get(key), str)]
    inputs = (record.get("task") or {}).get("inputs") or []
    found += [
        (item, "content")
        for item in inputs
        if isinstance(item, dict) and isinstance(item.get("content"), str)
    ]
    return found


def fit_record(record: Record, limit_bytes: int) -> Record:
    """The record, cut to fit limit_bytes: the longest log tail (then inline input content)
    is halved, keeping its end, until it fits; system_logs says so. A final event must
    always be stored, or its task would stay RUNNING forever."""
    if _size(record) <= limit_bytes:
        return record
    record = json.loads(json.dumps(record))  # a deep copy to cut
    note = "executor logs and inline input content were cut to fit the store's item limit"
    if note not in record.get("system_logs", []):
        record["system_logs"] = [*record.get("system_logs", []), note]
    while _size(record) > limit_bytes:
        texts = [(holder, key) for holder, key in _trimmable(record) if holder[key]]
        if not texts:
            raise RecordTooLarge(f"task {record.get('id')} does not fit the store even without its logs")
        holder, key = max(texts, key=lambda found: len(found[0][found[1]]))
        text = holder[key]
        holder[key] = text[len(text) // 2 :] if len(text) > 64 else ""
    return record


class RecordTooLarge(ValueError):
    """The store cannot hold a record this large (DynamoDB: 400 KB an item)."""


FINAL_NAMES = tuple(sorted(state.value for state in FINAL_STATES))


def encode_token(created_at: float, task_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, task_id]).encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[float, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        created_at, task_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(created_at, int | float) or not isinstance(task_id, str):
            raise TypeError("not a [time, id] pair")
        when = float(created_at)  # an integer of 400 digits overflows here
        if not 0 <= when < MAX_TOKEN_TIME or len(task_id) > 256:
            raise ValueError("out of range")
        return when, task_id
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ValueError(f"page_token {token[:80]!r} is not one this server gave out") from exc


def open_store(url: str) -> TaskStore:
    if url.startswith("sqlite:"):
        return SqliteTaskStore(Path(os.path.expanduser(url[len("sqlite:") :])))
    if url.startswith("dynamodb://"):
        return DynamoTaskStore(url[len("dynamodb://") :].strip("/"))
    raise ConfigError(f"unsupported store {url!r}: use sqlite:PATH or dynamodb://TABLE")


class SqliteTaskStore:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'UNKNOWN',
        doc TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS tasks_newest ON tasks (created_at DESC, id DESC);
    CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:{path}"
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "db", None)
        if connection is None:
            connection = connect(self.path, self.SCHEMA)
            self._local.db = connection
        return connection

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db())

    def create(self, record: Record) -> None:
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO tasks (id, created_at, state, doc) VALUES (?, ?, ?, ?)",
                    (record["id"], record["created_at"], record["state"], json.dumps(record)),
                )
        except sqlite3.IntegrityError:
            raise KeyError(record["id"]) from None

    def get(self, task_id: str) -> Record | None:
        row = self._db().execute("SELECT doc FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def update(self, task_id: str, change: Change) -> Record | None:
        with self._transaction() as db:
            row = db.execute("SELECT doc FROM tasks WHERE id = ?", (task_id,)).fetchone()
            current = json.loads(row[0]) if row else None
            changed = change(current)
            if changed is None:
                return current
            if row:
                db.execute(
                    "UPDATE tasks SET doc = ?, state = ? WHERE id = ?",
                    (json.dumps(changed), changed["state"], task_id),
                )
            else:
                db.execute(
                    "INSERT INTO tasks (id, created_at, state, doc) VALUES (?, ?, ?, ?)",
                    (task_id, changed["created_at"], changed["state"], json.dumps(changed)),
                )
            return changed

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        return {state: count for state, count in rows}

    def stored_bytes(self) -> int:
        db = self._db()
        pages = (
            db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        )
        return int(pages * db.execute("PRAGMA page_size").fetchone()[0])

    def prune(self, created_before: float) -> int:
        marks = ", ".join("?" for _ in FINAL_NAMES)
        with self._transaction() as db:
            cursor = db.execute(
                f"DELETE FROM tasks WHERE created_at < ? AND state IN ({marks})",
                (created_before, *FINAL_NAMES),
            )
            return cursor.rowcount

    def page(
        self, matches: Callable[[Record], bool], page_size: int, page_token: str | None
    ) -> tuple[list[Record], str | None]:
        after = decode_token(page_token) if page_token else (float("inf"), "")
        found: list[Record] = []
        db = self._db()
        while len(found) <= page_size:
            rows = db.execute(
                "SELECT created_at, id, doc FROM tasks WHERE created_at < ? OR (created_at = ? AND id < ?) "
                "ORDER BY created_at DESC, id DESC LIMIT 500",
                (after[0], after[0], after[1]),
            ).fetchall()
            if not rows:
                break
            for created_at, task_id, doc in rows:
                after = (created_at, task_id)
                record = json.loads(doc)
                if matches(record):
                    found.append(record)
                    if len(found) > page_size:
                        break
        if len(found) > page_size:
            last = found[page_size - 1]
            return found[:page_size], encode_token(last["created_at"], last["id"])
        return found, None


class DynamoTaskStore:
    """One item per task: id (hash key), created_at, kind ("task", the index's hash key),
    sort (created_at and id, the index's range key), version, doc (the JSON record)."""

    INDEX = "newest"

    def __init__(self, table: str, client: Any = None) -> None:
        import boto3

        self.table = table
        self.url = f"dynamodb://{table}"
        self._size: tuple[float, int] | None = None  # (when asked, TableSizeBytes)
        try:
            self.client = client or boto3.session.Session().client("dynamodb")
        except Exception as exc:  # botocore's NoRegionError, a bad profile, ...
            if not is_botocore_failure(exc):
                raise
            raise ConfigError(f"store dynamodb://{table}: {exc} (AWS_REGION or a profile's region)") from exc
        self._ensure_table()

    def _ensure_table(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
            return
        except self.client.exceptions.ResourceNotFoundException:
            pass
        except Exception as exc:
            raise QueueUnreachable(f"DynamoDB table {self.table} is not usable: {exc}") from exc
        with contextlib.suppress(self.client.exceptions.ResourceInUseException):  # another node was first
            self.client.create_table(
                TableName=self.table,
                AttributeDefinitions=[
                    {"AttributeName": "id", "AttributeType": "S"},
                    {"AttributeName": "kind", "AttributeType": "S"},
                    {"AttributeName": "sort", "AttributeType": "S"},
                ],
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                GlobalSecondaryIndexes=[
                    {
                        "IndexName": self.INDEX,
                        "KeySchema": [
                            {"AttributeName": "kind", "KeyType": "HASH"},
                            {"AttributeName": "sort", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        self.client.get_waiter("table_exists").wait(TableName=self.table)

    @staticmethod
    def _sort_key(created_at: float, task_id: str) -> str:
        return f"{created_at:020.6f}#{task_id}"

    def _item(self, record: Record, version: int) -> dict[str, Any]:
        return {
            "id": {"S": record["id"]},
            "kind": {"S": "task"},
            "sort": {"S": self._sort_key(record["created_at"], record["id"])},
            "version": {"N": str(version)},
            "state": {"S": record["state"]},
            "doc": {"S": json.dumps(record)},
        }

    def create(self, record: Record) -> None:
        item = self._item(record, 1)
        if len(item["doc"]["S"]) > DYNAMODB_ITEM_BYTES - ITEM_OVERHEAD_BYTES:
            raise RecordTooLarge(
                f"the task is {len(item['doc']['S'])} bytes as a record; "
                f"a DynamoDB item holds {DYNAMODB_ITEM_BYTES} (inline content is the usual cause)"
            )
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(id)"
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            raise KeyError(record["id"]) from None

    def _read(self, task_id: str) -> tuple[Record | None, int]:
        item = self.client.get_item(
            TableName=self.table, Key={"id": {"S": task_id}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None, 0
        return json.loads(item["doc"]["S"]), int(item["version"]["N"])

    def get(self, task_id: str) -> Record | None:
        return self._read(task_id)[0]

    def update(self, task_id: str, change: Change) -> Record | None:
        for _ in range(50):
            current, version = self._read(task_id)
            changed = change(current)
            if changed is None:
                return current
            changed = fit_record(changed, DYNAMODB_ITEM_BYTES - ITEM_OVERHEAD_BYTES)
            condition = (
                {
                    "ConditionExpression": "version = :v",
                    "ExpressionAttributeValues": {":v": {"N": str(version)}},
                }
                if current is not None
                else {"ConditionExpression": "attribute_not_exists(id)"}
            )
            try:
                self.client.put_item(TableName=self.table, Item=self._item(changed, version + 1), **condition)
                return changed
            except self.client.exceptions.ConditionalCheckFailedException:
                time.sleep(0.01)  # another node changed it: read again and re-apply
        raise RuntimeError(f"task {task_id}: too many concurrent updates")

    def page(
        self, matches: Callable[[Record], bool], page_size: int, page_token: str | None
    ) -> tuple[list[Record], str | None]:
        bound = self._sort_key(*decode_token(page_token)) if page_token else "~"
        found: list[Record] = []
        start: dict[str, Any] | None = None
        while len(found) <= page_size:
            request: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": self.INDEX,
                "KeyConditionExpression": "kind = :k AND sort < :s",
                "ExpressionAttributeValues": {":k": {"S": "task"}, ":s": {"S": bound}},
                "ScanIndexForward": False,
                "Limit": 200,
            }
            if start:
                request["ExclusiveStartKey"] = start
            response = self.client.query(**request)
            for item in response.get("Items", []):
                record = json.loads(item["doc"]["S"])
                if matches(record):
                    found.append(record)
                    if len(found) > page_size:
                        break
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        if len(found) > page_size:
            last = found[page_size - 1]
            return found[:page_size], encode_token(last["created_at"], last["id"])
        return found, None

    def stored_bytes(self) -> int:
        """Asked at most once a minute: DynamoDB refreshes the figure about every six hours,
        so a DescribeTable for every new task would only add a call to each POST."""
        now = time.monotonic()
        if self._size is None or now - self._size[0] >= SIZE_TTL_S:
            table = self.client.describe_table(TableName=self.table)["Table"]
            self._size = (now, int(table.get("TableSizeBytes", 0)))
        return self._size[1]

    def prune(self, created_before: float) -> int:
        removed = 0
        start: dict[str, Any] | None = None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": self.INDEX,
                "KeyConditionExpression": "kind = :k AND sort < :s",
                "ExpressionAttributeValues": {
                    ":k": {"S": "task"},
                    ":s": {"S": self._sort_key(created_before, "")},
                },
                "ProjectionExpression": "id, #s",
                "ExpressionAttributeNames": {"#s": "state"},
            }
            if start:
                request["ExclusiveStartKey"] = start
            response = self.client.query(**request)
            for item in response.get("Items", []):
                if item.get("state", {}).get("S") in FINAL_NAMES:
                    removed += self._delete_final(item["id"]["S"])
            start = response.get("LastEvaluatedKey")
            if not start:
                return removed

    def _delete_final(self, task_id: str) -> int:
        values = {f":f{index}": {"S": name} for index, name in enumerate(FINAL_NAMES)}
        try:
            self.client.delete_item(
                TableName=self.table,
                Key={"id": {"S": task_id}},
                ConditionExpression=f"#s IN ({', '.join(values)})",  # not if it changed since
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=values,
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return 0
        return 1

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for page in self.client.get_paginator("scan").paginate(
            TableName=self.table, ProjectionExpression="#s", ExpressionAttributeNames={"#s": "state"}
        ):
            for item in page.get("Items", []):
                state = item.get("state", {}).get("S", "UNKNOWN")
                found[state] = found.get(state, 0) + 1
        return found
