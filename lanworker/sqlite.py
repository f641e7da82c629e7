"""SQLite as lanworker uses it (the embedded queue, the task store): WAL mode, and writers
serialised by IMMEDIATE transactions, so several processes can share one file safely.

Within a process the embedded queue uses one `SharedConnection` per file for all threads
and all named queues in it, one statement group at a time: per-thread connections each
re-read the pages another connection changed after every transaction, which cost more
than the transactions themselves.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar


def connect(path: Path, schema: str, check_same_thread: bool = True) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit), with the schema created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(
        path, timeout=30.0, isolation_level=None, check_same_thread=check_same_thread
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(schema)
    return connection


@contextmanager
def immediate(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (no upgrade deadlock), rolled back on any error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class SharedConnection:
    """One connection to one file for every thread of the process; users take turns."""

    _open: ClassVar[weakref.WeakValueDictionary[str, SharedConnection]] = weakref.WeakValueDictionary()
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    @classmethod
    def to(
        cls, path: Path, schema: str, prepare: Callable[[sqlite3.Connection], None] | None = None
    ) -> SharedConnection:
        """The process's connection to path, opened (schema, then prepare) on first use.
        It lives as long as someone holds it."""
        key = os.path.realpath(path)
        with cls._registry_lock:
            shared = cls._open.get(key)
            if shared is None:
                connection = connect(path, schema, check_same_thread=False)
                if prepare is not None:
                    prepare(connection)
                shared = cls._open[key] = cls(connection)
            return shared

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._connection) as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection
