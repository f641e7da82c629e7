"""The task stores' upkeep against SQLite and DynamoDB on moto_server: pruning, size."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lanworker.tes.store import DynamoTaskStore, SqliteTaskStore, TaskStore, decode_token, encode_token


def record(task_id: str, state: str, created_at: float, size: int = 10) -> dict[str, Any]:
    return {"id": task_id, "created_at": created_at, "state": state, "tags": {}, "pad": "x" * size}


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TaskStore:
    if request.param == "sqlite":
        return SqliteTaskStore(tmp_path / "tasks.db")
    request.getfixturevalue("moto_server")
    return DynamoTaskStore(f"tasks-{uuid.uuid4().hex[:8]}")


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
    remaining = {r["id"] for r in store.page(lambda r: True, 100, None)[0]}
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
