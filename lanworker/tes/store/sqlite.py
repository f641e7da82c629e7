"""The task store in one SQLite file (the embedded default), with an index per filter.

Invariant: `tasks` holds the records; `task_tags` and `task_search` hold each record's
index terms (records.index_terms), written in the same transaction as the record, so a
listing never sees a record without its terms or the reverse.

How a page is read: each filter given is first counted through its own index, up to
PROBE_ROWS entries; the filter with the fewest matches drives the read. State and tag
indexes are ordered newest first, so they are walked and stop after a page. A name
prefix or a search (an FTS5 trigram index: substrings of three characters or more) is
unordered: its matches are sorted when there are fewer than PROBE_ROWS, and otherwise
the newest-first walk of an ordered index checks it row by row, which then finds a page
after about total/PROBE_ROWS rows per match on average.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lanworker.queues.sqlite import Connection, connect, immediate
from lanworker.tes.store.records import (
    FINAL_NAMES,
    MAX_TOKEN_TIME,
    Change,
    Record,
    RecordFilter,
    Touch,
    decode_token,
    encode_token,
    index_terms,
    touch_of,
)

SCHEMA_VERSION = 2
PROBE_ROWS = 2000  # matches an unordered index may give before a page is read in order instead
TABLES = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'UNKNOWN',
    name TEXT,
    updated_at REAL NOT NULL DEFAULT 0,
    worker TEXT,
    ended_at REAL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_tags (
    task INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (task, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_counts (state TEXT PRIMARY KEY, tasks INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_counts VALUES (new.state, 1) ON CONFLICT (state) DO UPDATE SET tasks = tasks + 1;
END;
CREATE TRIGGER IF NOT EXISTS count_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET tasks = tasks - 1 WHERE state = old.state;
END;
CREATE TRIGGER IF NOT EXISTS count_update AFTER UPDATE OF state ON tasks WHEN new.state IS NOT old.state BEGIN
    UPDATE task_counts SET tasks = tasks - 1 WHERE state = old.state;
    INSERT INTO task_counts VALUES (new.state, 1) ON CONFLICT (state) DO UPDATE SET tasks = tasks + 1;
END;
"""
INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_newest ON tasks (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_by_name ON tasks (name);
CREATE INDEX IF NOT EXISTS tasks_by_touch ON tasks (updated_at, worker, ended_at);
CREATE INDEX IF NOT EXISTS tags_by_value ON task_tags (key, value, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tags_by_key ON task_tags (key, created_at DESC, id DESC);
"""
SEARCH_INDEXED = "CREATE VIRTUAL TABLE IF NOT EXISTS task_search USING fts5(text, tokenize='trigram')"
SEARCH_PLAIN = "CREATE TABLE IF NOT EXISTS task_search (rowid INTEGER PRIMARY KEY, text TEXT)"  # no FTS5


@dataclass
class Read:
    """One listing query being built: where rows come from, what they must match, and which
    table's (created_at, id) orders them."""

    source: str
    order: str  # "t" or "g": the alias whose created_at and id order the rows
    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    ordered: bool = True  # False: the source gives its rows in no useful order

    def require(self, condition: str, *params: Any) -> None:
        self.where.append(condition)
        self.params.extend(params)


def _like(needle: str) -> str:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _prefix_range(prefix: str) -> tuple[str, str]:
    return prefix, prefix + "\U0010ffff"


class SqliteTaskStore:
    remote = False  # WAL: a read takes tens of microseconds and never waits on a writer

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:{path}"
        self._local = threading.local()
        self._search_indexed = False  # task_search is an FTS5 trigram index (known once opened)

    def _db(self) -> Connection:
        connection: Connection | None = getattr(self._local, "db", None)
        if connection is None:
            connection = connect(self.path, "")
            _migrate(connection)
            row = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'task_search'").fetchone()
            self._search_indexed = "fts5" in str(row[0]).lower()
            self._local.db = connection
        return connection

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db())

    def create(self, record: Record) -> None:
        try:
            with self._transaction() as db:
                _insert(db, record)
        except sqlite3.IntegrityError:
            raise KeyError(record["id"]) from None

    def create_many(self, records: list[Record]) -> None:
        """Add new records in one transaction, all or none; KeyError if an id exists."""
        try:
            with self._transaction() as db:
                for record in records:
                    _insert(db, record)
        except sqlite3.IntegrityError:
            raise KeyError(", ".join(record["id"] for record in records)) from None

    def get(self, task_id: str) -> Record | None:
        row = self._db().execute("SELECT doc FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def state_of(self, task_id: str) -> str | None:
        row = self._db().execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return str(row[0]) if row else None

    def update(self, task_id: str, change: Change) -> Record | None:
        with self._transaction() as db:
            row = db.execute("SELECT seq, doc FROM tasks WHERE id = ?", (task_id,)).fetchone()
            current = json.loads(row[1]) if row else None
            changed = change(current)
            if changed is None:
                return current
            if current is None:
                _insert(db, changed)
                return changed
            db.execute(
                "UPDATE tasks SET doc = ?, state = ?, name = ?, updated_at = ?, worker = ?, ended_at = ? "
                "WHERE seq = ?",
                (json.dumps(changed), changed["state"], changed.get("name"), *touch_of(changed), row[0]),
            )
            if index_terms(changed) != index_terms(current):
                _forget_terms(db, [row[0]])
                _write_terms(db, row[0], changed)
            return changed

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT state, tasks FROM task_counts WHERE tasks > 0").fetchall()
        return {state: count for state, count in rows}

    def touched_since(self, since: float, limit: int) -> list[Touch]:
        rows = self._db().execute(
            "SELECT updated_at, worker, ended_at FROM tasks WHERE updated_at >= ? ORDER BY updated_at DESC LIMIT ?",
            (since, limit),
        )
        return [Touch(*row) for row in rows.fetchall()]

    def stored_bytes(self) -> int:
        db = self._db()
        pages = (
            db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        )
        return int(pages * db.execute("PRAGMA page_size").fetchone()[0])

    def prune(self, created_before: float) -> int:
        marks = ", ".join("?" for _ in FINAL_NAMES)
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT seq FROM tasks WHERE created_at < ? AND state IN ({marks})",
                (created_before, *FINAL_NAMES),
            ).fetchall()
            seqs = [seq for (seq,) in rows]
            _forget_terms(db, seqs)
            _delete_in(db, "DELETE FROM tasks WHERE seq IN ({})", seqs)
            return len(seqs)

    def page(
        self, wanted: RecordFilter, page_size: int, page_token: str | None
    ) -> tuple[list[Record], str | None]:
        after = decode_token(page_token) if page_token else (MAX_TOKEN_TIME, "")
        db = self._db()  # opened first: the plan depends on the file's search index
        read = self._plan(wanted)
        read.require(f"({read.order}.created_at, {read.order}.id) < (?, ?)", *after)
        sql = (
            f"SELECT t.doc FROM {read.source} WHERE {' AND '.join(read.where)} "
            f"ORDER BY {read.order}.created_at DESC, {read.order}.id DESC LIMIT ?"
        )
        rows = db.execute(sql, (*read.params, page_size + 1)).fetchall()
        found: list[Record] = [json.loads(doc) for (doc,) in rows]
        if len(found) > page_size:
            last = found[page_size - 1]
            return found[:page_size], encode_token(last["created_at"], last["id"])
        return found, None

    def _plan(self, wanted: RecordFilter) -> Read:
        """The read driven by the filter with the fewest matches (see the module's doc)."""
        conditions = _conditions(wanted)
        drivers = self._drivers(wanted, conditions)
        matches = {name: self._probe(*counting) for name, (_, counting) in drivers.items()}
        counted = sorted(drivers, key=lambda name: (matches[name], not drivers[name][0].ordered))
        usable = [name for name in counted if matches[name] < PROBE_ROWS or drivers[name][0].ordered]
        chosen = usable[0] if usable else None
        read = drivers[chosen][0] if chosen else Read("tasks t INDEXED BY tasks_newest", "t")
        for name, condition in conditions.items():
            if name != chosen:
                read.require(*condition)
        return read

    def _probe(self, sql: str, params: list[Any]) -> int:
        """How many entries a driver's index gives, counted up to PROBE_ROWS."""
        bounded = f"SELECT COUNT(*) FROM ({sql} LIMIT {PROBE_ROWS})"
        return int(self._db().execute(bounded, params).fetchone()[0])

    def _drivers(
        self, wanted: RecordFilter, conditions: dict[str, tuple[Any, ...]]
    ) -> dict[str, tuple[Read, tuple[str, list[Any]]]]:
        """Each filter's driving read, with the query that counts its index entries."""
        drivers: dict[str, tuple[Read, tuple[str, list[Any]]]] = {}
        if wanted.state:
            read = Read("tasks t INDEXED BY tasks_by_state", "t")
            read.require("t.state = ?", wanted.state)
            drivers["state"] = (read, ("SELECT 1 FROM tasks WHERE state = ?", [wanted.state]))
        for key, value in list(wanted.tags.items())[:1]:
            index, match, params = (
                ("tags_by_value", "g.key = ? AND g.value = ?", [key, value])
                if value
                else ("tags_by_key", "g.key = ?", [key])
            )
            read = Read(f"task_tags g INDEXED BY {index} CROSS JOIN tasks t ON t.seq = g.task", "g")
            read.require(match, *params)
            drivers["tag"] = (read, (f"SELECT 1 FROM task_tags g WHERE {match}", params))
        if wanted.name_prefix:
            low, high = _prefix_range(wanted.name_prefix)
            read = Read("tasks t INDEXED BY tasks_by_name", "t", ordered=False)
            read.require("t.name >= ? AND t.name < ?", low, high)
            read.require(*conditions["name"])  # the range is a superset: the exact check
            drivers["name"] = (read, ("SELECT 1 FROM tasks WHERE name >= ? AND name < ?", [low, high]))
        if self._search_indexed and len(wanted.needle()) >= 3:  # shorter: not in the index
            phrase = '"' + wanted.needle().replace('"', '""') + '"'
            read = Read("task_search s CROSS JOIN tasks t ON t.seq = s.rowid", "t", ordered=False)
            read.require("task_search MATCH ?", phrase)
            drivers["text"] = (read, ("SELECT 1 FROM task_search WHERE task_search MATCH ?", [phrase]))
        return drivers


def _conditions(wanted: RecordFilter) -> dict[str, tuple[Any, ...]]:
    """Each filter as a condition on one row of tasks (alias t)."""
    found: dict[str, tuple[Any, ...]] = {}
    if wanted.state:
        found["state"] = ("t.state = ?", wanted.state)
    for index, (key, value) in enumerate(wanted.tags.items()):
        match = "x.key = ? AND x.value = ?" if value else "x.key = ?"
        params = (key, value) if value else (key,)
        exists = f"EXISTS (SELECT 1 FROM task_tags x WHERE x.task = t.seq AND {match})"
        found["tag" if index == 0 else f"tag{index}"] = (exists, *params)
    if wanted.name_prefix:
        found["name"] = ("substr(t.name, 1, ?) = ?", len(wanted.name_prefix), wanted.name_prefix)
    if wanted.needle():
        found["text"] = (
            "(SELECT s.text FROM task_search s WHERE s.rowid = t.seq) LIKE ? ESCAPE '\\'",
            _like(wanted.needle()),
        )
    return found


def _insert(db: sqlite3.Connection, record: Record) -> None:
    cursor = db.execute(
        "INSERT INTO tasks (id, created_at, state, name, updated_at, worker, ended_at, doc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (record["id"], record["created_at"], record["state"], record.get("name"), *touch_of(record),
         json.dumps(record)),
    )  # fmt: skip
    assert cursor.lastrowid is not None
    _write_terms(db, cursor.lastrowid, record)


def _write_terms(db: sqlite3.Connection, seq: int, record: Record) -> None:
    terms = index_terms(record)
    db.executemany(
        "INSERT INTO task_tags (task, key, value, created_at, id) VALUES (?, ?, ?, ?, ?)",
        [(seq, key, value, record["created_at"], record["id"]) for key, value in terms.tags],
    )
    db.execute("INSERT INTO task_search (rowid, text) VALUES (?, ?)", (seq, terms.search_text))


def _forget_terms(db: sqlite3.Connection, seqs: list[int]) -> None:
    _delete_in(db, "DELETE FROM task_tags WHERE task IN ({})", seqs)
    _delete_in(db, "DELETE FROM task_search WHERE rowid IN ({})", seqs)


def _delete_in(db: sqlite3.Connection, statement: str, seqs: list[int]) -> None:
    """statement ("... IN ({})") for seqs, 500 at a time (SQLite bounds a statement's parameters)."""
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        db.execute(statement.format(", ".join("?" for _ in chunk)), chunk)


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Each statement in turn, inside the caller's transaction (executescript would commit it)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""


def _migrate(db: Connection) -> None:
    """Bring the file to SCHEMA_VERSION: version 1 kept the records alone, with no index
    terms; they are computed once from each record."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    with immediate(db):
        if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return  # another process was first
        columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
        if columns and "seq" not in columns:
            db.execute("ALTER TABLE tasks RENAME TO tasks_v1")
            db.execute("DROP INDEX IF EXISTS tasks_newest")
            db.execute("DROP INDEX IF EXISTS tasks_state")
        _run_script(db, TABLES)
        try:
            db.execute(SEARCH_INDEXED)
        except sqlite3.OperationalError:  # an SQLite without FTS5 or its trigram tokenizer
            db.execute(SEARCH_PLAIN)
        if columns and "seq" not in columns:
            for (doc,) in db.execute("SELECT doc FROM tasks_v1 ORDER BY created_at").fetchall():
                _insert(db, json.loads(doc))
            db.execute("DROP TABLE tasks_v1")
        _run_script(db, INDEXES)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
