"""The task store as a projection of the job state events workers publish.

Invariant: an event only moves a task forward. A final state (COMPLETE, EXECUTOR_ERROR,
SYSTEM_ERROR, CANCELED) is never left, except that a retried job goes back to QUEUED;
a cancel request keeps the task CANCELING until a final event arrives. Events of jobs no
API node created (plain command messages from any worker publishing to the same events
queue) create a record of their own, so the status view shows them too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, cast

from lanworker.core.clock import rfc3339
from lanworker.core.states import EventState
from lanworker.queues import Queue, ReceivedMessage
from lanworker.queues.receive import ReceiveLoop, ReceivePlan, one_at_a_time
from lanworker.tes.models import FINAL_STATES, State
from lanworker.tes.store import Record, TaskLog, TaskStore, TimelineEntry

logger = logging.getLogger(__name__)

MAX_TIMELINE = 200
EXECUTOR_REASONS = frozenset({"exit-code", "timeout", "oom"})
PROGRESS = {
    State.QUEUED: 0,
    State.INITIALIZING: 1,
    State.RUNNING: 2,
    State.CANCELING: 3,
}


TES_STATE = {
    EventState.RECEIVED: State.INITIALIZING,
    EventState.STAGING: State.INITIALIZING,
    EventState.RUNNING: State.RUNNING,
    EventState.UPLOADING: State.RUNNING,
    EventState.SUCCEEDED: State.COMPLETE,
    EventState.CANCELED: State.CANCELED,
    EventState.DEAD_LETTERED: State.SYSTEM_ERROR,
    EventState.RETRYING: State.QUEUED,
    EventState.RELEASED: State.QUEUED,
}


def state_for(event: dict[str, Any]) -> State | None:
    """The TES state an event moves its task towards; None for one that moves nothing."""
    kind = EventState.of(event.get("state"))
    if kind is EventState.FAILED:
        return State.EXECUTOR_ERROR if event.get("reason") in EXECUTOR_REASONS else State.SYSTEM_ERROR
    return TES_STATE.get(kind) if kind is not None else None


def apply_event(record: Record | None, event: dict[str, Any]) -> Record:
    """The record after one event (a new record for a job seen first through its events)."""
    now = float(event.get("timestamp") or time.time())
    if record is None:
        record = {
            "id": event["job_id"],
            "kind": "command",
            "created_at": now,
            "creation_time": rfc3339(now),
            "name": None,
            "state": State.QUEUED.value,
            "tags": {},
            "service": (event.get("result") or {}).get("service"),
            "system_logs": [],
            "events": [],
            "cancel_requested": False,
            "attempt": 1,
            "log": {},
        }
    record = record.copy()
    entry = TimelineEntry(state=event.get("state"), time=now, worker_id=event.get("worker_id"))
    for name in ("reason", "exit_code", "error", "attempt"):
        if event.get(name) is not None:
            cast(dict[str, Any], entry)[name] = event[name]  # the optional fields, as sent
    record["events"] = [*record.get("events", []), entry][-MAX_TIMELINE:]
    target = state_for(event)
    current = State(record["state"])
    log = (record.get("log") or TaskLog()).copy()
    if event.get("worker_id"):
        log["worker_id"] = event["worker_id"]
    if EventState.of(event.get("state")) is EventState.RUNNING and not log.get("start_time"):
        log["start_time"] = rfc3339(now)
    result = event.get("result")
    if isinstance(result, dict):
        if result.get("service") and not record.get("service"):
            record["service"] = result["service"]
        log |= TaskLog(
            exit_code=result.get("exit_code"),
            reason=result.get("reason") or event.get("reason"),
            error=result.get("error"),
            outputs=result.get("outputs") or [],
            inputs=result.get("inputs") or [],
            executors=result.get("executors") or _single_executor(result),
            stdout=(result.get("stdout") or {}).get("text"),
            stderr=(result.get("stderr") or {}).get("text"),
            timings_s=result.get("timings_s") or {},
        )
    if EventState.of(event.get("state")) is EventState.DEAD_LETTERED:
        log |= TaskLog(reason="dead-lettered", error=event.get("reason"))
    if target is not None:
        record["state"] = _next_state(current, target, bool(record.get("cancel_requested")), event).value
    if State(record["state"]) in FINAL_STATES and not log.get("end_time"):
        log["end_time"] = rfc3339(now)
    if EventState.of(event.get("state")) is EventState.RETRYING:
        record["attempt"] = int(event.get("next_attempt") or record.get("attempt", 1) + 1)
        log.pop("end_time", None)
    record["log"] = log
    return record


def _single_executor(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A plain command's run, as the one executor log TES expects."""
    if result.get("exit_code") is None:
        return []
    return [
        {
            "exit_code": result["exit_code"],
            "stdout": (result.get("stdout") or {}).get("text") or "",
            "stderr": (result.get("stderr") or {}).get("text") or "",
        }
    ]


def _next_state(current: State, target: State, cancel_requested: bool, event: dict[str, Any]) -> State:
    if current in FINAL_STATES:
        return current  # late events of a finished job change nothing
    if target in FINAL_STATES:
        return target
    if EventState.of(event.get("state")) is EventState.RETRYING:
        return State.CANCELING if cancel_requested else State.QUEUED
    if cancel_requested:
        return State.CANCELING
    return target if PROGRESS.get(target, 0) >= PROGRESS.get(current, 0) else current


class Projector:
    """Consumes the events queue into the store on a background thread."""

    def __init__(self, events: Queue, store: TaskStore) -> None:
        self.events = events
        self.store = store
        self.shutdown = threading.Event()
        self.last_event_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="projector", daemon=True)

    def start(self) -> Projector:
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        self.shutdown.set()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        ReceiveLoop(
            self.events,
            one_at_a_time(self.handle),
            ReceivePlan(concurrency=1, wait_time_s=1, visibility_timeout_s=60, name="project"),
            self.shutdown,
        ).run(5.0, threading.Event(), lambda: None)

    def handle(self, message: ReceivedMessage) -> None:
        try:
            event = json.loads(message.body)
            if isinstance(event, dict) and "Message" in event and event.get("Type") == "Notification":
                event = json.loads(event["Message"])  # delivered through an SNS subscription
            job_id = event["job_id"]
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("dropping an unreadable event: %s", exc, extra={"action": "project"})
            self.events.delete(message)
            return
        try:
            self.store.update(str(job_id), lambda record: apply_event(record, event))
        except Exception as exc:
            logger.error("could not project event of %s: %s", job_id, exc, extra={"job_id": job_id})
            self.events.release(message, str(exc), 5)
            return
        self.last_event_at = time.monotonic()
        self.events.delete(message)
