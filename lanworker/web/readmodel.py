"""What operators ask of the task store - what runs, what failed and why, where, how long -
as plain data, shared by the web pages, their JSON API and the `jobs` command.

Every function here reads records (see tes/store.py) and returns JSON-ready values; none
renders anything, so HTML escaping and terminal colours stay with their renderers.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from lanworker.tes.models import FINAL_STATES, State
from lanworker.tes.store import Record, RecordFilter, TaskStore, Touch
from lanworker.tes.store.records import parse_rfc3339

ACTIVE_STATES = tuple(state.value for state in State if state not in FINAL_STATES and state != State.UNKNOWN)
CHART_MINUTES = 60
ACTIVITY_TASKS = 2000  # the workers list and the chart read the tasks changed last, this many
STATE_ORDER = (
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "CANCELING",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
)


@dataclass(frozen=True)
class JobRow:
    id: str
    name: str  # the task's name, or the command's service
    image: str  # the image, or for a plain command its service
    command: str
    state: str
    created_at: float
    duration_s: float | None
    worker: str
    exit_code: int | None
    tags: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def duration_s(record: Record, now: float | None = None) -> float | None:
    log = record.get("log") or {}
    started = parse_rfc3339(log.get("start_time"))
    if started is None:
        return None
    ended = parse_rfc3339(log.get("end_time"))
    return max(0.0, (ended if ended is not None else (now or time.time())) - started)


def row(record: Record) -> JobRow:
    task = record.get("task") or {}
    executors = task.get("executors") or []
    log = record.get("log") or {}
    if executors:
        image = str(executors[0].get("image", ""))
        command = " ".join(str(part) for part in executors[0].get("command", []))
        if len(executors) > 1:
            command += f"  (+{len(executors) - 1} more)"
    else:
        image = str(record.get("service") or "")
        command = ""
    return JobRow(
        id=record["id"],
        name=str(record.get("name") or record.get("service") or ""),
        image=image,
        command=command[:200],
        state=record["state"],
        created_at=float(record["created_at"]),
        duration_s=duration_s(record),
        worker=str(log.get("worker_id") or ""),
        exit_code=log.get("exit_code"),
        tags=dict(record.get("tags") or {}),
    )


def list_jobs(
    store: TaskStore,
    state: str | None = None,
    query: str | None = None,
    limit: int = 50,
    page_token: str | None = None,
) -> tuple[list[JobRow], str | None]:
    records, token = store.page(RecordFilter(state, text=query), limit, page_token)
    return [row(record) for record in records], token


def counts(store: TaskStore) -> dict[str, int]:
    found = store.counts()
    return {state: found.get(state, 0) for state in STATE_ORDER} | {
        state: count for state, count in found.items() if state not in STATE_ORDER
    }


def detail(record: Record) -> dict[str, Any]:
    """Everything the job page and `jobs show` print."""
    log = record.get("log") or {}
    return {
        **row(record).as_dict(),
        "kind": record.get("kind"),
        "creation_time": record.get("creation_time"),
        "attempt": record.get("attempt", 1),
        "cancel_requested": bool(record.get("cancel_requested")),
        "active": record["state"] in ACTIVE_STATES,
        "reason": log.get("reason"),
        "error": log.get("error"),
        "system_logs": list(record.get("system_logs") or []),
        "events": list(record.get("events") or []),
        "executors": list(log.get("executors") or []),
        "stdout": log.get("stdout"),
        "stderr": log.get("stderr"),
        "inputs": list(log.get("inputs") or []),
        "outputs": list(log.get("outputs") or []),
        "submitted": record.get("task") or record.get("message") or {},
        "timings_s": log.get("timings_s") or {},
    }


def workers_seen(
    touches: list[Touch], within_s: float = 900.0, now: float | None = None
) -> list[dict[str, Any]]:
    """Workers whose jobs changed in the last within_s, newest first, with job counts."""
    now = now or time.time()
    last: dict[str, float] = {}
    jobs: Counter[str] = Counter()
    for touch in touches:
        if touch.worker and now - touch.updated_at <= within_s:
            last[touch.worker] = max(last.get(touch.worker, 0.0), touch.updated_at)
            jobs[touch.worker] += 1
    return [
        {"worker": worker, "last_seen_s_ago": round(now - seen, 1), "jobs": jobs[worker]}
        for worker, seen in sorted(last.items(), key=lambda item: -item[1])
    ]


def finished_per_minute(
    touches: list[Touch], minutes: int = CHART_MINUTES, now: float | None = None
) -> list[int]:
    """Jobs that reached a final state in each of the last `minutes` minutes, oldest first."""
    now = now or time.time()
    buckets = [0] * minutes
    for touch in touches:
        if touch.ended_at is None:
            continue
        age_min = int((now - touch.ended_at) // 60)
        if 0 <= age_min < minutes:
            buckets[minutes - 1 - age_min] += 1
    return buckets


def overview(store: TaskStore, queue_depth: Callable[[], dict[str, int]] | None) -> dict[str, Any]:
    touches = store.touched_since(time.time() - CHART_MINUTES * 60, ACTIVITY_TASKS)
    depth: dict[str, int] | None = None
    if queue_depth is not None:
        try:
            depth = queue_depth()
        except Exception:
            depth = None  # the page still shows the rest
    return {
        "counts": counts(store),
        "queue": depth,
        "workers": workers_seen(touches),
        "finished_per_minute": finished_per_minute(touches),
    }


def pretty(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, default=str)
