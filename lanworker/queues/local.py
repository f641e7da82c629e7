"""The embedded queue: a durable SQLite file with SQS semantics.

Visibility timeouts, receive counts, receipt handles and a dead-letter table after
`max_receives`, safe to share between worker and `submit` processes on one machine
(SQLite's WAL mode and BEGIN IMMEDIATE serialise the writers).

URL form: `local:PATH` or `local:PATH#QUEUE_NAME` (default name `jobs`). Several named
queues (jobs, results, replies) can live in one file.

Messages are handed out in the order they became visible (then sent), which the index
answers without sorting: a receive costs the same with ten messages waiting or a million.

A waiting receive looks again at a backoff of POLL_MIN_S to POLL_MAX_S, and at once when
this process makes a message of its queue visible (`Arrivals`): in `serve`, the API, the
embedded workers and the projection hand work to each other without a polling delay.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from lanworker.core.errors import QueueUnreachable, StaleReceipt
from lanworker.queues.base import DeadLetterEntry, Outgoing, ReceivedMessage, exhausted_reason
from lanworker.queues.sqlite import SharedConnection

logger = logging.getLogger(__name__)

DEFAULT_NAME = "jobs"
POLL_MIN_S = 0.05
POLL_MAX_S = 0.5

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    first_received_at REAL,
    receipt TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at, sent_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    reason TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_lettered_at REAL NOT NULL
);
"""


class Arrivals:
    """Counts the messages this process made visible in one queue, and wakes its waiting
    receivers (another process's sends are found by their polling)."""

    _all: dict[tuple[str, str], Arrivals] = {}
    _all_lock = threading.Lock()

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    @classmethod
    def of(cls, file: str, name: str) -> Arrivals:
        """Those of queue `name` in `file` (a real path: every URL of one file shares them)."""
        with cls._all_lock:
            return cls._all.setdefault((file, name), cls())

    def announce(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout_s: float) -> None:
        """Until the count moves past seen, or timeout_s."""
        with self._changed:
            self._changed.wait_for(lambda: self.count != seen, timeout_s)


@functools.lru_cache(maxsize=64)
def _real_file(path: Path) -> str:
    return os.path.realpath(path)


@functools.lru_cache(maxsize=64)
def _file_of(url: str) -> str | None:
    """The real path of the file an embedded queue URL names; None for any other queue.
    (Asked for each settle's targets: a worker has a handful of URLs, every job.)"""
    return _real_file(parse_local_url(url)[0]) if url.startswith("local:") else None


def _stale(message: ReceivedMessage) -> StaleReceipt:
    return StaleReceipt(f"message {message.message_id}: receipt is stale (received again elsewhere or gone)")


def _upgrade(connection: sqlite3.Connection) -> None:
    columns = {row[1] for row in connection.execute("PRAGMA table_info(messages)")}
    if "last_error" not in columns:  # a queue file from before last_error existed
        connection.execute("ALTER TABLE messages ADD COLUMN last_error TEXT")


def parse_local_url(url: str) -> tuple[Path, str]:
    rest = url[len("local:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    path, _, name = rest.partition("#")
    return Path(os.path.expanduser(path)), name or DEFAULT_NAME


class LocalQueue:
    remote = False

    def __init__(self, url: str, max_receives: int = 5) -> None:
        self.path, self.name = parse_local_url(url)
        self.url = f"local:{self.path}#{self.name}"
        self.max_receives = max_receives
        # Told (message id, body, reason) of each message this queue dead-letters by itself on a receive
        # past max_receives (a worker died on its last attempt), after the move: the worker
        # publishes the job's final event from it, as SQS workers do on their last receive.
        self.on_exhausted: Callable[[str, str, str], None] | None = None
        self._db: SharedConnection | None = None  # opened on first use: the file may not exist yet
        self._file = _real_file(self.path)
        self._arrivals = Arrivals.of(self._file, self.name)

    def sibling(self, name: str) -> LocalQueue:
        """Another named queue in the same file (results, replies)."""
        return LocalQueue(f"local:{self.path}#{name}", self.max_receives)

    # ----------------------------------------------------------------- plumbing
    def _shared(self) -> SharedConnection:
        if self._db is None:
            try:
                self._db = SharedConnection.to(self.path, SCHEMA, _upgrade)
            except (sqlite3.Error, OSError) as exc:
                raise QueueUnreachable(f"cannot open local queue {self.path}: {exc}") from exc
        return self._db

    def _transaction(self, one_statement: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction, or a part of this thread's (see SharedConnection.transaction)."""
        return self._shared().transaction(one_statement)

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._shared().read()

    def together(self, urls: Iterable[str]) -> AbstractContextManager[object]:
        """One transaction for this thread's operations inside, when every queue in `urls`
        lives in this file too (results, replies and events beside the jobs): a job's
        result, its requeue and its delete commit together or not at all. With a queue in
        another file nothing is joined, so no thread ever holds two files' locks."""
        if all(_file_of(url) == self._file for url in urls):
            return self._transaction()
        return nullcontext()

    def check(self) -> None:
        with self._read() as db:
            db.execute("SELECT 1").fetchone()

    # ----------------------------------------------------------------- interface
    def send(
        self,
        body: str,
        attributes: dict[str, str] | None = None,
        delay_s: int = 0,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> str:
        stored = _stored_attributes(Outgoing(body, attributes or {}, group_id, deduplication_id))
        with self._transaction(one_statement=True) as db:
            message_id = self._insert(db, body, stored, delay_s)
        if delay_s <= 0:
            self._arrivals.announce()
        return message_id

    def max_message_bytes(self) -> None:
        return None  # a row holds any size

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        """All in one transaction."""
        try:
            with self._transaction(one_statement=len(messages) == 1) as db:
                for message in messages:
                    self._insert(db, message.body, _stored_attributes(message))
        except Exception as exc:
            return [exc for _ in messages]
        self._arrivals.announce()
        return [None for _ in messages]

    def _insert(self, db: sqlite3.Connection, body: str, attributes: dict[str, str], delay_s: int = 0) -> str:
        message_id = str(uuid.uuid4())
        now = time.time()
        db.execute(
            "INSERT INTO messages (id, queue, body, attributes, sent_at, visible_at) VALUES (?, ?, ?, ?, ?, ?)",
            (message_id, self.name, body, json.dumps(attributes), now, now + max(0, delay_s)),
        )
        return message_id

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int
    ) -> list[ReceivedMessage]:
        deadline = time.monotonic() + max(0.0, wait_time_s)
        pause = POLL_MIN_S
        while True:
            seen = self._arrivals.count
            received = self._receive_now(max_messages, visibility_timeout_s)
            if received or time.monotonic() >= deadline:
                return received
            self._arrivals.wait(seen, min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, POLL_MAX_S)

    def _receive_now(self, max_messages: int, visibility_timeout_s: int) -> list[ReceivedMessage]:
        now = time.time()
        received: list[ReceivedMessage] = []
        exhausted: list[tuple[str, str, str]] = []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, body, attributes, receive_count, first_received_at, last_error, sent_at FROM messages "
                "WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, sent_at LIMIT ?",
                (self.name, now, max_messages * 2),
            ).fetchall()
            for message_id, body, attributes, count, first_received, last_error, sent_at in rows:
                if len(received) >= max_messages:
                    break
                if count >= self.max_receives:
                    # The same rule as an SQS redrive policy: moved on the receive after the limit.
                    reason = exhausted_reason(count, self.max_receives, last_error)
                    self._move_to_dead_letters(db, message_id, reason)
                    exhausted.append((message_id, body, reason))
                    continue
                receipt = f"{message_id}:{uuid.uuid4()}"
                stored = json.loads(attributes)
                db.execute(
                    "UPDATE messages SET visible_at = ?, receive_count = receive_count + 1, "
                    "first_received_at = COALESCE(first_received_at, ?), receipt = ? WHERE id = ?",
                    (now + visibility_timeout_s, now, receipt, message_id),
                )
                received.append(
                    ReceivedMessage(
                        message_id=message_id,
                        receipt_handle=receipt,
                        body=body,
                        receive_count=count + 1,
                        attributes=stored,
                        first_received_at=first_received or now,
                        group_id=stored.get("MessageGroupId"),
                        sent_at=sent_at,
                    )
                )
        for message_id, body, reason in exhausted:
            if self.on_exhausted is not None:
                self.on_exhausted(message_id, body, reason)
        return received

    def _update_owned(self, message: ReceivedMessage, sql: str, parameters: tuple[object, ...]) -> None:
        with self._transaction(one_statement=True) as db:
            cursor = db.execute(
                sql + " WHERE id = ? AND receipt = ?",
                (*parameters, message.message_id, message.receipt_handle),
            )
            if cursor.rowcount != 1:
                raise _stale(message)

    def delete(self, message: ReceivedMessage) -> None:
        error = self.delete_batch([message])[0]
        if error is not None:
            raise error

    def delete_batch(self, messages: Sequence[ReceivedMessage]) -> list[Exception | None]:
        return self._each_owned(messages, "DELETE FROM messages", ())

    def change_visibility(self, message: ReceivedMessage, timeout_s: int) -> None:
        self._update_owned(message, "UPDATE messages SET visible_at = ?", (time.time() + timeout_s,))

    def change_visibility_batch(
        self, messages: Sequence[ReceivedMessage], timeout_s: int
    ) -> list[Exception | None]:
        return self._each_owned(messages, "UPDATE messages SET visible_at = ?", (time.time() + timeout_s,))

    def _each_owned(
        self, messages: Sequence[ReceivedMessage], sql: str, parameters: tuple[object, ...]
    ) -> list[Exception | None]:
        """sql on each message still ours, all in one transaction; per message None or why not."""
        errors: list[Exception | None] = []
        try:
            with self._transaction(one_statement=len(messages) == 1) as db:
                for message in messages:
                    cursor = db.execute(
                        sql + " WHERE id = ? AND receipt = ?",
                        (*parameters, message.message_id, message.receipt_handle),
                    )
                    errors.append(None if cursor.rowcount == 1 else _stale(message))
        except Exception as exc:
            return [exc for _ in messages]
        return errors

    def release(self, message: ReceivedMessage, error: str | None = None, delay_s: int = 0) -> None:
        self._update_owned(
            message,
            "UPDATE messages SET visible_at = ?, receipt = NULL, last_error = COALESCE(?, last_error)",
            (time.time() + max(0, delay_s), error),
        )
        if delay_s <= 0:
            self._arrivals.announce()

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        with self._transaction() as db:
            owned = db.execute(
                "SELECT 1 FROM messages WHERE id = ? AND receipt = ?",
                (message.message_id, message.receipt_handle),
            ).fetchone()
            if owned is None:
                raise _stale(message)
            self._move_to_dead_letters(db, message.message_id, reason)

    def _move_to_dead_letters(self, db: sqlite3.Connection, message_id: str, reason: str) -> None:
        db.execute(
            "INSERT OR REPLACE INTO dead_letters (id, queue, body, attributes, reason, receive_count, dead_lettered_at) "
            "SELECT id, queue, body, attributes, ?, receive_count, ? FROM messages WHERE id = ?",
            (reason, time.time(), message_id),
        )
        db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        logger.warning("message %s dead-lettered: %s", message_id, reason, extra={"action": "dead-letter"})

    def list_dead_letters(self, limit: int) -> list[DeadLetterEntry]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, body, reason, receive_count, attributes FROM dead_letters WHERE queue = ? "
                "ORDER BY dead_lettered_at LIMIT ?",
                (self.name, limit),
            ).fetchall()
        return [DeadLetterEntry(row[0], row[1], row[2], row[3], json.loads(row[4])) for row in rows]

    def redrive(self, limit: int) -> int:
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, body, attributes FROM dead_letters WHERE queue = ? ORDER BY dead_lettered_at LIMIT ?",
                (self.name, limit),
            ).fetchall()
            for message_id, body, attributes in rows:
                db.execute(
                    "INSERT INTO messages (id, queue, body, attributes, sent_at, visible_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (message_id, self.name, body, attributes, now, now),
                )
                db.execute("DELETE FROM dead_letters WHERE id = ?", (message_id,))
        self._arrivals.announce()
        return len(rows)

    def depth(self) -> dict[str, int]:
        counts = self.counts()
        return {"visible": counts["visible"], "in_flight": counts["in_flight"]}

    def holds_job(self, job_id: str) -> bool:
        """Whether a message for job_id (its body's id, or the message id) is queued or in flight."""
        with self._read() as db:
            row = db.execute(
                "SELECT 1 FROM messages WHERE queue = ? AND (id = ? OR "
                "(json_valid(body) AND json_extract(body, '$.id') = ?)) LIMIT 1",
                (self.name, job_id, job_id),
            ).fetchone()
        return row is not None

    def counts(self) -> dict[str, int]:
        """Visible, in-flight and dead-lettered message counts (for tests and the CLI)."""
        now = time.time()
        with self._read() as db:
            visible = db.execute(
                "SELECT COUNT(*) FROM messages WHERE queue = ? AND visible_at <= ?", (self.name, now)
            ).fetchone()[0]
            total = db.execute("SELECT COUNT(*) FROM messages WHERE queue = ?", (self.name,)).fetchone()[0]
            dead = db.execute("SELECT COUNT(*) FROM dead_letters WHERE queue = ?", (self.name,)).fetchone()[0]
        return {"visible": visible, "in_flight": total - visible, "dead_letters": dead}


def _stored_attributes(message: Outgoing) -> dict[str, str]:
    """The attributes kept with a message; a FIFO group and deduplication id among them, as
    SQS reports them back."""
    stored = dict(message.attributes)
    if message.group_id:
        stored["MessageGroupId"] = message.group_id
    if message.deduplication_id:
        stored["MessageDeduplicationId"] = message.deduplication_id
    return stored
