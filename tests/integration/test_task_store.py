"""The task stores' upkeep against SQLite and DynamoDB on moto_server: pruning, size."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lanworker.tes.store import (
    DynamoTaskStore,
    RecordFilter,
    SqliteTaskStore,
    TaskStore,
    decode_token,
    encode_token,
)


def record(task_id: str, state: str, created_at: float, size: int = 10) -> dict[str, Any]:
    return {"id": task_id, "created_at": created_at, "state": state, "tags": {}, "pad": "x" * size}


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TaskStore:
    if request.param == "sqlite":
        return SqliteTaskStore(tmp_path / "tasks.db")
    request.getfixturevalue("moto_server")
    return DynamoTaskStore(f"tasks-{uuid.uuid4().hex[:8]}")


def test_state_of_reads_the_state_a_change_left(store: TaskStore) -> None:
    """A MINIMAL poll reads the state alone; it must agree with the record after each change,
    and name no task for an index item's id (DynamoDB keeps tags and counters beside tasks)."""
    store.create(record("t1", "QUEUED", time.time()) | {"tags": {"run": "r1"}})
    assert store.state_of("t1") == "QUEUED"
    store.update("t1", lambda current: None if current is None else current | {"state": "RUNNING"})
    assert store.state_of("t1") == "RUNNING" == (store.get("t1") or {}).get("state")
    assert store.state_of("nothing") is None
    assert store.state_of("t1\x1ftag\x1frun") is None and store.state_of("\x1fcounts\x1f0") is None


def test_prune_removes_only_old_finished_tasks(store: TaskStore) -> None:
    now = time.time()
    old = now - 10 * 86400
    for task_id, state, created in [
        ("old-done", "COMPLETE", old),
        ("old-failed", "SYSTEM_ERROR", old + 1),
        ("old-running", "RUNNING", old + 2),
        ("old-queued", "QUEUED", old + 3),
        ("new-done", "COMPLETE", now),
    ]:
        store.create(record(task_id, state, created))
    assert store.prune(now - 7 * 86400) == 2
    remaining = {r["id"] for r in store.page(RecordFilter(), 100, None)[0]}
    assert remaining == {"old-running", "old-queued", "new-done"}
    assert store.prune(now - 7 * 86400) == 0


def test_sqlite_reuses_what_pruning_frees(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "tasks.db")
    old = time.time() - 30 * 86400
    for index in range(200):
        store.create(record(f"t{index}", "COMPLETE", old + index, size=20_000))
    full = store.stored_bytes()
    assert full > 200 * 20_000
    store.prune(time.time())
    assert store.stored_bytes() < full / 10
    for index in range(200):
        store.create(record(f"u{index}", "COMPLETE", old + index, size=20_000))
    assert (tmp_path / "tasks.db").stat().st_size < full * 1.2  # the freed pages were used again


@pytest.mark.parametrize("bad", [[10**400, "x"], [float("nan"), "x"], [-1, "x"], ["1", "x"], [1.0, 7]])
def test_tokens_out_of_range_are_refused(bad: list[Any]) -> None:
    import base64
    import json

    token = base64.urlsafe_b64encode(json.dumps(bad).encode()).decode().rstrip("=")
    with pytest.raises(ValueError, match="not one this server gave out"):
        decode_token(token)
    assert decode_token(encode_token(1.5, "id")) == (1.5, "id")


def test_a_final_event_always_fits_a_dynamodb_item(moto_server: object) -> None:
    store = DynamoTaskStore(f"tasks-{uuid.uuid4().hex[:8]}")
    inputs = [{"path": f"/in/{i}", "content": "c" * 120_000} for i in range(3)]
    created = {**record("near-limit", "RUNNING", time.time()), "task": {"inputs": inputs}, "system_logs": []}
    store.create(created)

    def finish(current: dict[str, Any] | None) -> dict[str, Any] | None:
        assert current is not None
        tails = [{"exit_code": 0, "stdout": "o" * 16384, "stderr": "e" * 16384} for _ in range(3)]
        return {**current, "state": "COMPLETE", "log": {"executors": tails, "stdout": "s" * 16384}}

    stored = store.update("near-limit", finish)
    assert stored is not None and stored["state"] == "COMPLETE"
    again = store.get("near-limit")
    assert again is not None and again["state"] == "COMPLETE"
    assert any("cut to fit" in line for line in again["system_logs"])
    assert again["log"]["executors"][0]["stdout"].endswith("o")  # the tail's end is kept


def varied(index: int, created_at: float) -> dict[str, Any]:
    """Records that make every filter and combination match some and miss others."""
    tags = {"project": f"p{index % 3}"} | ({"run": f"r{index % 5}"} if index % 2 else {})
    return {
        **record(
            f"task-{index:04d}", ["COMPLETE", "RUNNING", "QUEUED", "EXECUTOR_ERROR"][index % 4], created_at
        ),
        "name": f"{['align', 'call', 'alignx'][index % 3]}-{index % 7}" if index % 11 else None,
        "service": "svc-Upper" if index % 13 == 0 else None,
        "tags": tags,
    }


FILTERS = [
    RecordFilter(),
    RecordFilter(state="RUNNING"),
    RecordFilter(name_prefix="align"),
    RecordFilter(name_prefix="alignx-3"),
    RecordFilter(name_prefix="nothing"),
    RecordFilter(tags={"project": "p1"}),
    RecordFilter(tags={"run": ""}),
    RecordFilter(tags={"run": "r2", "project": "p0"}),
    RecordFilter(state="COMPLETE", name_prefix="call", tags={"project": "p2"}),
    RecordFilter(state="QUEUED", tags={"run": ""}),
    RecordFilter(text="TASK-001"),
    RecordFilter(text="upper"),
    RecordFilter(text="run=r4"),
    RecordFilter(text="x"),
    RecordFilter(text="50%_"),
    RecordFilter(state="RUNNING", text="ign-"),
]


def every_page(store: TaskStore, wanted: RecordFilter, page_size: int) -> list[str]:
    seen: list[str] = []
    token = None
    while True:
        records, token = store.page(wanted, page_size, token)
        assert len(records) <= page_size
        seen += [r["id"] for r in records]
        if token is None:
            return seen


def test_every_filter_lists_what_the_reference_filter_matches_newest_first(store: TaskStore) -> None:
    """Whatever index a store answers from, a listing is the reference predicate's answer."""
    now = time.time()
    records = [varied(index, now - 1000 + index // 2) for index in range(240)]  # ties on created_at
    for each in records:
        store.create(each)
    store.update(
        "task-0007", lambda r: {**r, "state": "COMPLETE", "name": "renamed", "tags": {"project": "p9"}}
    )
    records[7] = {**records[7], "state": "COMPLETE", "name": "renamed", "tags": {"project": "p9"}}
    newest_first = sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    for wanted in [*FILTERS, RecordFilter(name_prefix="renamed"), RecordFilter(tags={"project": "p9"})]:
        expected = [r["id"] for r in newest_first if wanted(r)]
        assert every_page(store, wanted, 7) == expected, wanted
        assert every_page(store, wanted, 500) == expected, wanted
    assert store.counts() == dict(Counter(r["state"] for r in records))
    assert store.prune(now) == sum(r["state"] in ("COMPLETE", "EXECUTOR_ERROR") for r in records)
    assert store.counts() == dict(Counter(r["state"] for r in records if r["state"] in ("RUNNING", "QUEUED")))
    left = [r for r in newest_first if r["state"] in ("RUNNING", "QUEUED")]
    for wanted in FILTERS:
        assert every_page(store, wanted, 9) == [r["id"] for r in left if wanted(r)], wanted


def test_sqlite_reads_a_filter_through_its_index_whatever_the_mix(tmp_path: Path) -> None:
    """Past PROBE_ROWS matches the unordered indexes hand over to an ordered walk."""
    from lanworker.tes.store import sqlite

    store = SqliteTaskStore(tmp_path / "tasks.db")
    now = time.time()
    records = [varied(index, now - 5000 + index) for index in range(300)]
    store.create_many(records)
    newest_first = list(reversed(records))
    for probe_rows in (5, sqlite.PROBE_ROWS):
        sqlite.PROBE_ROWS = probe_rows
        try:
            for wanted in FILTERS:
                assert every_page(store, wanted, 9) == [r["id"] for r in newest_first if wanted(r)], wanted
        finally:
            sqlite.PROBE_ROWS = 2000


def test_paging_is_stable_while_tasks_are_added(store: TaskStore) -> None:
    now = time.time()
    for index in range(60):
        store.create(varied(index, now - 100 + index))
    wanted = RecordFilter(tags={"project": "p1"})
    first, token = store.page(wanted, 8, None)
    for index in range(60, 90):  # newer tasks arrive between the pages
        store.create(varied(index, now + index))
    seen = [r["id"] for r in first]
    while token:
        records, token = store.page(wanted, 8, token)
        seen += [r["id"] for r in records]
    assert seen == [f"task-{index:04d}" for index in reversed(range(60)) if index % 3 == 1]


def test_a_version_one_sqlite_file_is_migrated_with_its_index_terms(tmp_path: Path) -> None:
    import json
    import sqlite3

    path = tmp_path / "tasks.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE tasks (id TEXT PRIMARY KEY, created_at REAL NOT NULL, state TEXT NOT NULL, doc TEXT NOT NULL);"
        "CREATE INDEX tasks_newest ON tasks (created_at DESC, id DESC); CREATE INDEX tasks_state ON tasks (state);"
    )
    records = [varied(index, 1000.0 + index) for index in range(30)]
    old.executemany(
        "INSERT INTO tasks VALUES (?, ?, ?, ?)",
        [(r["id"], r["created_at"], r["state"], json.dumps(r)) for r in records],
    )
    old.commit()
    old.close()
    store = SqliteTaskStore(path)
    for wanted in FILTERS:
        assert every_page(store, wanted, 4) == [r["id"] for r in reversed(records) if wanted(r)], wanted
    assert store.counts()["RUNNING"] == 8  # 1, 5, ..., 29


def test_the_latest_activity_is_read_latest_first_and_bounded(store: TaskStore) -> None:
    now = time.time()
    for index in range(12):
        done = index % 2 == 0
        store.create(
            {
                **record(f"t{index}", "COMPLETE" if done else "RUNNING", now - 500 + index),
                "events": [{"state": "running", "time": now - 100 + index, "worker_id": f"w{index % 3}"}],
                "log": {
                    "worker_id": f"w{index % 3}",
                    **({"end_time": "2026-12-01T12:00:00Z"} if done else {}),
                },
            }
        )
    store.create(record("old", "RUNNING", now - 7200))
    touches = store.touched_since(now - 3600, 5)
    expected = [now - 100 + index for index in (11, 10, 9, 8, 7)]
    assert [touch.updated_at for touch in touches] == pytest.approx(expected, abs=1e-5)
    assert [touch.worker for touch in touches] == ["w2", "w1", "w0", "w2", "w1"]
    assert [touch.ended_at is not None for touch in touches] == [False, True, False, True, False]
    assert len(store.touched_since(now - 3600, 100)) == 12  # not the old one
