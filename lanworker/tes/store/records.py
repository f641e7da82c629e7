"""What the task stores keep and how they are asked: the record, the filter a listing
uses, the terms each store indexes, page tokens and the item-size fit.

Invariant: a filter means the same on every store. `RecordFilter` is the reference
predicate; a store may answer it from its indexes instead, but never differently (the
store tests check both against it).
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict, cast

from typing_extensions import Required

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
        needle = self.needle()
        return not needle or any(needle in text for text in index_terms(record).search)

    def needle(self) -> str:
        """The search text as the stores match it: trimmed, lower case."""
        return (self.text or "").strip().lower()


@dataclass(frozen=True)
class Terms:
    """What a store indexes of a record, beside its id, time and state."""

    name: str | None
    tags: tuple[tuple[str, str], ...]
    search: tuple[str, ...]  # lower case: the id, name, service, each tag as key=value

    @property
    def search_text(self) -> str:
        return "\n".join(self.search)


def index_terms(record: Record) -> Terms:
    tags = tuple(sorted((record.get("tags") or {}).items()))
    texts = [record["id"], record.get("name") or "", record.get("service") or ""]
    texts += [f"{key}={value}" for key, value in tags]
    return Terms(record.get("name"), tags, tuple(text.lower() for text in texts if text))


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


class Touch(NamedTuple):
    """A record's latest activity: what the status view's workers list and chart read."""

    updated_at: float  # its last event's time (its creation before any)
    worker: str | None  # the worker of its last run
    ended_at: float | None  # when it reached a final state


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def touch_of(record: Record) -> Touch:
    times = [float(event.get("time") or 0) for event in record.get("events") or []]
    log = record.get("log") or {}
    final = record["state"] in FINAL_NAMES
    return Touch(
        max([float(record["created_at"]), *times]),
        log.get("worker_id") or None,
        parse_rfc3339(log.get("end_time")) if final else None,
    )
