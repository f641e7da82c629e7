"""The task store: one JSON record per task, newest first, shared by every API node.

Invariants:
- every change is a read-modify-write that either applies whole or is retried on a
  conflict (SQLite: one IMMEDIATE transaction; DynamoDB: a conditional write on the
  record's version), so projections from several API nodes never lose an event's effect;
- a listing reads through an index that orders by creation (newest first) or bounds the
  rows it must sort, never every task: state and tag filters have their own ordered
  indexes, a name prefix and a search their own bounded ones (see each store);
- a page token is the last (created_at, id) a page gave, so paging is stable while tasks
  are being added.

URLs: `sqlite:PATH` (the embedded default) or `dynamodb://TABLE` (created when missing,
with its indexes).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Protocol

from lanworker.core.errors import ConfigError
from lanworker.tes.store.dynamo import DynamoTaskStore
from lanworker.tes.store.records import (
    Change,
    Record,
    RecordFilter,
    RecordTooLarge,
    TaskLog,
    TaskRecord,
    TimelineEntry,
    Touch,
    decode_token,
    encode_token,
)
from lanworker.tes.store.sqlite import SqliteTaskStore

__all__ = [
    "Change",
    "DynamoTaskStore",
    "Record",
    "RecordFilter",
    "RecordTooLarge",
    "SqliteTaskStore",
    "TaskLog",
    "TaskRecord",
    "TaskStore",
    "TimelineEntry",
    "Touch",
    "decode_token",
    "encode_token",
    "failures",
    "open_store",
]


class TaskStore(Protocol):
    url: str
    remote: bool  # its calls go over the network (DynamoDB), not to a local file (SQLite)

    def create(self, record: Record) -> None:
        """Add a new record; raises KeyError if the id exists."""

    def create_many(self, records: list[Record]) -> None:
        """Add new records in one go. SQLite: one transaction, all or none, KeyError if an
        id exists. DynamoDB: a bulk load, 25 items a call, no check that ids are new."""

    def get(self, task_id: str) -> Record | None: ...

    def state_of(self, task_id: str) -> str | None:
        """The task's state alone (a MINIMAL view), without reading its record."""

    def update(self, task_id: str, change: Change) -> Record | None:
        """Apply change atomically; returns the record as stored afterwards."""

    def page(
        self, wanted: RecordFilter, page_size: int, page_token: str | None
    ) -> tuple[list[Record], str | None]:
        """Records newest first that match wanted, and the token of the next page."""

    def counts(self) -> dict[str, int]:
        """How many records are in each state."""

    def touched_since(self, since: float, limit: int) -> list[Touch]:
        """The latest activity of the (at most limit) records changed last, at or after
        since (epoch seconds), latest first."""

    def stored_bytes(self) -> int:
        """What the records take now (SQLite: pages in use; DynamoDB: the table's size as
        DynamoDB reports it, refreshed about every six hours)."""

    def prune(self, created_before: float) -> int:
        """Remove records in a final state created before this time; returns how many."""


def failures() -> tuple[type[Exception], ...]:
    """What a store that did not answer raises: SQLite's errors (its file gone or unreadable,
    a lock held past its wait) and botocore's (DynamoDB out of reach, throttling, access
    refused, no table). Anything else from a store is a bug, not an outage."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (sqlite3.Error, BotoCoreError, ClientError)


def open_store(url: str) -> TaskStore:
    if url.startswith("sqlite:"):
        return SqliteTaskStore(Path(os.path.expanduser(url[len("sqlite:") :])))
    if url.startswith("dynamodb://"):
        return DynamoTaskStore(url[len("dynamodb://") :].strip("/"))
    raise ConfigError(f"unsupported store {url!r}: use sqlite:PATH or dynamodb://TABLE")
