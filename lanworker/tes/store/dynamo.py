"""The task store in one DynamoDB table, shared by API nodes in several places.

Invariants:
- a record changes only by a conditional write on its version, retried on a conflict, so
  concurrent projections never lose an event's effect; a change of state, name or tags is
  one transaction with the items that index it (tag items, the state counters), so the
  indexes never disagree with the records;
- a listing reads through one ordered index and makes at most QUERY_BUDGET Query calls:
  when a filter that no index answers (a search, a very common name prefix) has not
  filled the page by then, the page is short and its token continues where the reading
  stopped. A page may hold fewer tasks than asked, even none, and still have a token.

Items (hash key `id`):
- a task: kind "task", sort (created_at and id), state, version, doc (the JSON record),
  name and name_sort when it has a name, touch (its latest activity), worker, ended, search;
- a tag of a task: id "TASK\\x1ftag\\x1fKEY", tag_kv, tag_k, sort, task;
- a counter shard: id "\\x1fcounts\\x1fN", one number per state (COUNTER_SHARDS of them).

Indexes: newest (kind, sort), by_state (state, sort), by_name (kind, name_sort),
by_tag (tag_kv, sort), by_tag_key (tag_k, sort), by_touch (kind, touch).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lanworker.core.errors import ConfigError, QueueUnreachable
from lanworker.core.retries import is_botocore_failure
from lanworker.tes.store.records import (
    DYNAMODB_ITEM_BYTES,
    FINAL_NAMES,
    ITEM_OVERHEAD_BYTES,
    SIZE_TTL_S,
    Change,
    Record,
    RecordFilter,
    RecordTooLarge,
    Touch,
    decode_token,
    encode_token,
    fit_record,
    index_terms,
    touch_of,
)

QUERY_BUDGET = 2  # Query calls a listing may make before it returns a short page
NAME_PROBE_ITEMS = 2000  # name matches read from by_name before the newest-first walk is used
COUNTER_SHARDS = 8  # counter items, so that state changes do not all write one item
TRANSACT_ATTEMPTS = 20
MAX_TAGS = 90  # a task's tag items and its own fit one transaction (100 items)
SEP = "\x1f"
INDEXES: dict[str, tuple[str, str, list[str] | None]] = {  # name: hash, range, projected (None: all)
    "newest": ("kind", "sort", None),
    "by_state": ("state", "sort", None),
    "by_name": ("kind", "name_sort", []),
    "by_tag": ("tag_kv", "sort", ["task"]),
    "by_tag_key": ("tag_k", "sort", ["task"]),
    "by_touch": ("kind", "touch", ["worker", "ended"]),
}


def sort_key(created_at: float, task_id: str) -> str:
    return f"{created_at:020.6f}#{task_id}"


def _unsort(key: str) -> tuple[float, str]:
    created, _, task_id = key.partition("#")
    return float(created), task_id


@dataclass(frozen=True)
class Walk:
    """One ordered index read newest first: which index, its key condition, an optional
    server-side filter, and whether its items carry the record or only point at it."""

    index: str
    condition: str
    values: dict[str, Any]
    filter: str | None = None
    names: dict[str, str] | None = None
    pointer: str | None = None  # the attribute naming the task (None: the item has the doc)


class DynamoTaskStore:
    INDEX = "newest"
    remote = True  # each call is an HTTP request

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

    # ------------------------------------------------------------------ the table
    def _ensure_table(self) -> None:
        try:
            found = self.client.describe_table(TableName=self.table)["Table"]
        except self.client.exceptions.ResourceNotFoundException:
            found = None
        except Exception as exc:
            raise QueueUnreachable(f"DynamoDB table {self.table} is not usable: {exc}") from exc
        if found is not None:
            missing = set(INDEXES) - {index["IndexName"] for index in found.get("GlobalSecondaryIndexes", [])}
            if missing:
                raise ConfigError(
                    f"DynamoDB table {self.table} was made by an older lanworker and lacks the indexes "
                    f"{', '.join(sorted(missing))}; give --store a new table name"
                )
            return
        attributes = sorted(
            {key for hash_key, range_key, _ in INDEXES.values() for key in (hash_key, range_key)}
        )
        with contextlib.suppress(self.client.exceptions.ResourceInUseException):  # another node was first
            self.client.create_table(
                TableName=self.table,
                AttributeDefinitions=[
                    {"AttributeName": name, "AttributeType": "S"} for name in ["id", *attributes]
                ],
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                GlobalSecondaryIndexes=[_index(name, *spec) for name, spec in INDEXES.items()],
                BillingMode="PAY_PER_REQUEST",
            )
        self.client.get_waiter("table_exists").wait(TableName=self.table)

    def _item(self, record: Record, version: int) -> dict[str, Any]:
        terms, touch = index_terms(record), touch_of(record)
        item: dict[str, Any] = {
            "id": {"S": record["id"]},
            "kind": {"S": "task"},
            "sort": {"S": sort_key(record["created_at"], record["id"])},
            "version": {"N": str(version)},
            "state": {"S": record["state"]},
            "touch": {"S": sort_key(touch.updated_at, record["id"])},
            "search": {"S": terms.search_text},
            "doc": {"S": json.dumps(record)},
        }
        if terms.name:
            item["name"] = {"S": terms.name}
            item["name_sort"] = {"S": f"{terms.name}\x00{item['sort']['S']}"}
        if touch.worker:
            item["worker"] = {"S": touch.worker}
        if touch.ended_at is not None:
            item["ended"] = {"N": repr(touch.ended_at)}
        return item

    def _tag_items(self, record: Record) -> list[dict[str, Any]]:
        tags = index_terms(record).tags
        if len(tags) > MAX_TAGS:
            raise RecordTooLarge(
                f"a task may have at most {MAX_TAGS} tags on a DynamoDB store, not {len(tags)}"
            )
        return [
            {
                "id": {"S": f"{record['id']}{SEP}tag{SEP}{key}"},
                "tag_kv": {"S": f"{key}{SEP}{value}"},
                "tag_k": {"S": key},
                "sort": {"S": sort_key(record["created_at"], record["id"])},
                "task": {"S": record["id"]},
            }
            for key, value in tags
        ]

    def _count(self, changes: dict[str, int]) -> dict[str, Any]:
        """An Update of one counter shard by changes (state: +1 or -1)."""
        names = {f"#s{index}": state for index, state in enumerate(changes)}
        values = {f":v{index}": {"N": str(delta)} for index, delta in enumerate(changes.values())}
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"id": {"S": f"{SEP}counts{SEP}{random.randrange(COUNTER_SHARDS)}"}},
                "UpdateExpression": "ADD "
                + ", ".join(f"{name} :v{index}" for index, name in enumerate(names)),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    # ------------------------------------------------------------------ records
    def create(self, record: Record) -> None:
        item = self._item(record, 1)
        if len(item["doc"]["S"]) > DYNAMODB_ITEM_BYTES - ITEM_OVERHEAD_BYTES:
            raise RecordTooLarge(
                f"the task is {len(item['doc']['S'])} bytes as a record; "
                f"a DynamoDB item holds {DYNAMODB_ITEM_BYTES} (inline content is the usual cause)"
            )
        put = {
            "Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(id)"}
        }
        if not self._transact([put, self._count({record["state"]: 1}), *self._puts(self._tag_items(record))]):
            raise KeyError(record["id"])

    def create_many(self, records: list[Record]) -> None:
        """Add new records without a transaction each (a bulk load: an import, a benchmark's
        fill): their ids must be new; the counters are added once at the end."""
        items = [item for record in records for item in [self._item(record, 1), *self._tag_items(record)]]
        for start in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            while requests:
                response = self.client.batch_write_item(RequestItems={self.table: requests})
                requests = response.get("UnprocessedItems", {}).get(self.table, [])
        totals = Counter(record["state"] for record in records)
        if totals:
            self._transact([self._count(dict(totals))])

    def _puts(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"Put": {"TableName": self.table, "Item": item}} for item in items]

    def _transact(self, writes: list[dict[str, Any]]) -> bool:
        """Write all or nothing; False when a condition failed (another writer was first).
        A conflict with another transaction on the same items (a counter shard) is retried."""
        for attempt in range(TRANSACT_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=writes)
                return True
            except self.client.exceptions.TransactionCanceledException as exc:
                reasons = [reason.get("Code") for reason in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    return False
                if "TransactionConflict" not in reasons or attempt == TRANSACT_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05))
        raise AssertionError("unreachable")

    def _read(self, task_id: str) -> tuple[Record | None, int]:
        item = self.client.get_item(
            TableName=self.table, Key={"id": {"S": task_id}}, ConsistentRead=True
        ).get("Item")
        if not item or "doc" not in item:  # a tag or counter item's id is not a task's
            return None, 0
        return json.loads(item["doc"]["S"]), int(item["version"]["N"])

    def get(self, task_id: str) -> Record | None:
        return self._read(task_id)[0]

    def state_of(self, task_id: str) -> str | None:
        item = self.client.get_item(
            TableName=self.table,
            Key={"id": {"S": task_id}},
            ConsistentRead=True,
            ProjectionExpression="#s",
            ExpressionAttributeNames={"#s": "state"},
        ).get("Item")
        return str(item["state"]["S"]) if item and "state" in item else None  # only a task has a state

    def update(self, task_id: str, change: Change) -> Record | None:
        for _ in range(50):
            current, version = self._read(task_id)
            changed = change(current)
            if changed is None:
                return current
            changed = fit_record(changed, DYNAMODB_ITEM_BYTES - ITEM_OVERHEAD_BYTES)
            if self._replace(current, changed, version):
                return changed
            time.sleep(0.01)  # another node changed it: read again and re-apply
        raise RuntimeError(f"task {task_id}: too many concurrent updates")

    def _replace(self, current: Record | None, changed: Record, version: int) -> bool:
        put: dict[str, Any] = {"TableName": self.table, "Item": self._item(changed, version + 1)}
        if current is None:
            put["ConditionExpression"] = "attribute_not_exists(id)"
        else:
            put["ConditionExpression"] = "version = :v"
            put["ExpressionAttributeValues"] = {":v": {"N": str(version)}}
        writes: list[dict[str, Any]] = [{"Put": put}]
        before = (current["state"], index_terms(current).tags) if current else (None, ())
        if before[0] != changed["state"]:
            writes.append(self._count({changed["state"]: 1} | ({before[0]: -1} if before[0] else {})))
        if before[1] != index_terms(changed).tags:
            kept = self._tag_items(changed)
            ids = {item["id"]["S"] for item in kept}
            old = self._tag_items(current) if current else []
            writes += self._deletes([item for item in old if item["id"]["S"] not in ids])
            writes += self._puts(kept)
        if len(writes) > 1:
            return self._transact(writes)
        try:
            self.client.put_item(**put)
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False

    def _deletes(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"Delete": {"TableName": self.table, "Key": {"id": item["id"]}}} for item in items]

    # ------------------------------------------------------------------ listings
    def page(
        self, wanted: RecordFilter, page_size: int, page_token: str | None
    ) -> tuple[list[Record], str | None]:
        bound = sort_key(*decode_token(page_token)) if page_token else "~"
        found: list[Record] = []
        last = bound
        for key, record in self._walk(self._plan(wanted, bound), bound, page_size + 1):
            if key is None:  # the budget is spent: a short page, continued from where it stopped
                return found, encode_token(*_unsort(last)) if last != bound else None
            last = key
            if record is not None and wanted(record):
                found.append(record)
                if len(found) > page_size:
                    tail = found[page_size - 1]
                    return found[:page_size], encode_token(tail["created_at"], tail["id"])
        return found, None

    def _plan(self, wanted: RecordFilter, bound: str) -> Walk:
        """The index a listing reads: a state's, a tag's, a name prefix's when it matches
        few tasks, else newest first with the name or search checked by DynamoDB."""
        below = {":b": {"S": bound}}
        if wanted.state:
            return Walk(
                "by_state",
                "#s = :s AND sort < :b",
                {":s": {"S": wanted.state}} | below,
                names={"#s": "state"},
            )
        for key, value in list(wanted.tags.items())[:1]:
            if value:
                return Walk(
                    "by_tag",
                    "tag_kv = :t AND sort < :b",
                    {":t": {"S": f"{key}{SEP}{value}"}} | below,
                    pointer="task",
                )
            return Walk("by_tag_key", "tag_k = :t AND sort < :b", {":t": {"S": key}} | below, pointer="task")
        checks, values, names = [], dict(below), {}
        if wanted.name_prefix:
            checks.append("begins_with(#n, :p)")
            values[":p"], names["#n"] = {"S": wanted.name_prefix}, "name"
        if wanted.needle():
            checks.append("contains(#q, :q)")
            values[":q"], names["#q"] = {"S": wanted.needle()}, "search"
        return Walk(
            "newest", "kind = :k AND sort < :b", values | {":k": {"S": "task"}},
            filter=" AND ".join(checks) or None, names=names or None,
        )  # fmt: skip

    def _walk(self, walk: Walk, bound: str, limit: int) -> Iterator[tuple[str | None, Record | None]]:
        """(sort key, record) newest first along the walk, limit items a call (a filtered
        walk: as many as DynamoDB reads in a call); (None, None) once the budget is spent.
        A name prefix that few tasks match is read from by_name instead."""
        if walk.index == "newest" and walk.filter and ":p" in walk.values:
            few = self._few_named(walk.values[":p"]["S"], bound)
            if few is not None:
                yield from self._resolved(few)
                return
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": walk.index,
            "KeyConditionExpression": walk.condition,
            "ExpressionAttributeValues": walk.values,
            "ScanIndexForward": False,
        }
        if walk.filter:
            request["FilterExpression"] = walk.filter
        else:
            request["Limit"] = limit
        if walk.names:
            request["ExpressionAttributeNames"] = walk.names
        for _ in range(QUERY_BUDGET):
            response = self.client.query(**request)
            items = response.get("Items", [])
            if walk.pointer:
                yield from self._resolved([(item["sort"]["S"], item[walk.pointer]["S"]) for item in items])
            else:
                yield from ((item["sort"]["S"], json.loads(item["doc"]["S"])) for item in items)
            start = response.get("LastEvaluatedKey")
            if not start:
                return
            request["ExclusiveStartKey"] = start
            if not items:  # a filter read items that all failed it: the key marks how far
                yield start["sort"]["S"], None
        yield None, None

    def _few_named(self, prefix: str, bound: str) -> list[tuple[str, str]] | None:
        """(sort key, id) of the tasks whose name starts with prefix, newest first, if no
        more than NAME_PROBE_ITEMS do; None otherwise."""
        response = self.client.query(
            TableName=self.table,
            IndexName="by_name",
            KeyConditionExpression="kind = :k AND begins_with(name_sort, :p)",
            ExpressionAttributeValues={":k": {"S": "task"}, ":p": {"S": prefix}},
            Limit=NAME_PROBE_ITEMS,
        )
        if response.get("LastEvaluatedKey"):
            return None
        keys = [(item["name_sort"]["S"].rpartition("\x00")[2], item["id"]["S"]) for item in response["Items"]]
        return sorted((pair for pair in keys if pair[0] < bound), reverse=True)

    def _resolved(self, pointers: list[tuple[str, str]]) -> Iterator[tuple[str, Record | None]]:
        """The records pointed at, in the pointers' order, read 100 at a time."""
        for start in range(0, len(pointers), 100):
            chunk = pointers[start : start + 100]
            docs: dict[str, Record] = {}
            keys: list[dict[str, Any]] = [
                {"id": {"S": task_id}} for task_id in dict.fromkeys(t for _, t in chunk)
            ]
            while keys:
                response = self.client.batch_get_item(
                    RequestItems={self.table: {"Keys": keys, "ProjectionExpression": "id, doc"}}
                )
                for item in response.get("Responses", {}).get(self.table, []):
                    docs[item["id"]["S"]] = json.loads(item["doc"]["S"])
                keys = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            yield from ((key, docs.get(task_id)) for key, task_id in chunk)

    def touched_since(self, since: float, limit: int) -> list[Touch]:
        response = self.client.query(
            TableName=self.table,
            IndexName="by_touch",
            KeyConditionExpression="kind = :k AND touch >= :t",
            ExpressionAttributeValues={":k": {"S": "task"}, ":t": {"S": sort_key(since, "")}},
            ScanIndexForward=False,
            Limit=limit,
        )
        found: list[Touch] = []
        for item in response.get("Items", []):
            ended = item.get("ended", {}).get("N")
            updated = _unsort(item["touch"]["S"])[0]
            found.append(Touch(updated, item.get("worker", {}).get("S"), float(ended) if ended else None))
        return found

    def counts(self) -> dict[str, int]:
        keys = [{"id": {"S": f"{SEP}counts{SEP}{shard}"}} for shard in range(COUNTER_SHARDS)]
        response = self.client.batch_get_item(
            RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
        )
        found: dict[str, int] = {}
        for item in response.get("Responses", {}).get(self.table, []):
            for state, value in item.items():
                if state != "id":
                    found[state] = found.get(state, 0) + int(value["N"])
        return {state: count for state, count in found.items() if count > 0}

    # ------------------------------------------------------------------ upkeep
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
        for state in FINAL_NAMES:
            request: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": "by_state",
                "KeyConditionExpression": "#s = :s AND sort < :b",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {":s": {"S": state}, ":b": {"S": sort_key(created_before, "")}},
            }
            while True:
                response = self.client.query(**request)
                for item in response.get("Items", []):
                    removed += self._delete_final(json.loads(item["doc"]["S"]))
                if not response.get("LastEvaluatedKey"):
                    break
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return removed

    def _delete_final(self, record: Record) -> int:
        """Remove a final record with its tag items and count; not if it changed since."""
        delete = {
            "Delete": {
                "TableName": self.table,
                "Key": {"id": {"S": record["id"]}},
                "ConditionExpression": "#s = :s",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {":s": {"S": record["state"]}},
            }
        }
        writes = [delete, self._count({record["state"]: -1}), *self._deletes(self._tag_items(record))]
        return 1 if self._transact(writes) else 0


def _index(name: str, hash_key: str, range_key: str, projected: list[str] | None) -> dict[str, Any]:
    projection: dict[str, Any] = {"ProjectionType": "ALL"}
    if projected == []:
        projection = {"ProjectionType": "KEYS_ONLY"}
    elif projected:
        projection = {"ProjectionType": "INCLUDE", "NonKeyAttributes": projected}
    return {
        "IndexName": name,
        "KeySchema": [
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": range_key, "KeyType": "RANGE"},
        ],
        "Projection": projection,
    }
