"""What the TES API does, apart from HTTP: create a task (stored, then queued), cancel one,
and filter the store's records.

Invariant: a task is stored (QUEUED) before its message is sent, so every event a worker
publishes finds its task; a task whose message could not be sent is SYSTEM_ERROR at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from fastapi import APIRouter

from lanworker.core.errors import InvalidMessage, LanworkerError, MessageRefused
from lanworker.message.command import CommandMessage, message_of
from lanworker.message.policy import MessagePolicy
from lanworker.queues import Outgoing, Queue
from lanworker.storage import Storage
from lanworker.storage.control import request_cancel
from lanworker.tes.convert import TaskRefused, new_record, new_task_id, task_to_message
from lanworker.tes.models import State, TesTask
from lanworker.tes.store import Record, TaskStore

logger = logging.getLogger(__name__)


@dataclass
class TesService:
    store: TaskStore
    queue: Queue
    control_url: str
    storage: Storage
    policy: MessagePolicy  # what a task may name (file:// only when and where the operator allows)
    health: Callable[[], tuple[bool, dict[str, object]]] = lambda: (True, {})
    metrics: Callable[[], bytes] | None = None
    extra_routes: list[APIRouter] = field(default_factory=list)  # the status view's
    max_store_bytes: int | None = None  # --max-store-mb: refuse new tasks beyond it (507)
    # The embedded workers' own terms (their executor's check: the image allowlist, the
    # resource maxima): a task they would refuse is a 400 now, not a SYSTEM_ERROR later.
    # None without embedded workers: then the workers that take the task decide.
    worker_terms: Callable[[CommandMessage], object] | None = None

    # ----------------------------------------------------------------- operations
    def create(self, task: TesTask) -> str:
        """One task, as create_batch; raises what refused or failed it."""
        outcome = self.create_batch([task])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def create_batch(self, tasks: list[TesTask]) -> list[str | Exception]:
        """New tasks stored, then queued, together: one store write (one SQLite transaction)
        and one queue send for all of them. Per task in order: its id, or what refused it
        (TaskRefused, StoreFull, MessageRefused: a message too large) or failed it (the
        store's error as raised, the queue's as NotQueued; a task whose message was not sent
        is SYSTEM_ERROR)."""
        outcomes: list[str | Exception] = []
        accepted: list[tuple[int, Record, Outgoing]] = []
        room = _Room(self.store, self.max_store_bytes)
        for task in tasks:
            task_id = new_task_id()
            try:
                message, notes = task_to_message(task, task_id, self.policy)
                self._check_worker_terms(message)
                record = new_record(task, task_id, notes)
                room.take(record)
            except (TaskRefused, StoreFull) as exc:
                outcomes.append(exc)
                continue
            accepted.append((len(outcomes), record, Outgoing(json.dumps(message))))
            outcomes.append(task_id)
        if not accepted:
            return outcomes
        try:
            if len(accepted) == 1:
                self.store.create(accepted[0][1])  # DynamoDB's create_many is a bulk load, unchecked
            else:
                self.store.create_many([record for _, record, _ in accepted])
        except Exception as exc:
            for index, _, _ in accepted:
                outcomes[index] = exc
            return outcomes
        failures = self.queue.send_batch([message for _, _, message in accepted])
        for (index, record, _), failure in zip(accepted, failures, strict=True):
            if failure is None:
                logger.info(
                    "task %s queued", record["id"], extra={"job_id": record["id"], "action": "queued"}
                )
                continue
            self.store.update(record["id"], partial(_failed_to_queue, error=str(failure)))
            outcomes[index] = failure if isinstance(failure, MessageRefused) else NotQueued(str(failure))
        return outcomes

    def _check_worker_terms(self, message: dict[str, object]) -> None:
        if self.worker_terms is None:
            return
        try:
            self.worker_terms(message_of(message))
        except InvalidMessage as exc:
            raise TaskRefused(str(exc)) from exc

    def cancel(self, task_id: str) -> Record | None:
        record = self.store.get(task_id)
        if record is None or State(record["state"]).is_final:
            return record
        try:
            request_cancel(self.storage, self.control_url, task_id, "tes")
        except (LanworkerError, OSError) as exc:  # the storage's errors; anything else is a bug
            raise CancelNotRecorded(str(exc)) from exc
        return self.store.update(task_id, _cancel_requested)


class NotQueued(Exception):
    """The queue did not take a stored task's message (the task is SYSTEM_ERROR): a 503."""


class CancelNotRecorded(Exception):
    """A cancel's marker could not be written (the task is left as it was): a 503."""


class StoreFull(Exception):
    """The store reached --max-store-mb: 507 Insufficient Storage, with the reason."""


class _Room:
    """What --max-store-mb leaves for a batch of new records (without a limit: no reads)."""

    def __init__(self, store: TaskStore, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.used = 0 if max_bytes is None else store.stored_bytes()

    def take(self, record: Record) -> None:
        if self.max_bytes is None:
            return
        size = len(json.dumps(record))
        if self.used + size > self.max_bytes:
            raise StoreFull(
                f"the task store holds {self.used} bytes of its {self.max_bytes} (--max-store-mb): "
                "new tasks are refused until old ones are pruned (serve --keep-days)"
            )
        self.used += size


def _failed_to_queue(record: Record | None, error: str) -> Record | None:
    if record is None:
        return None
    return {
        **record,
        "state": State.SYSTEM_ERROR.value,
        "system_logs": [*record["system_logs"], f"not queued: {error}"],
    }


def _cancel_requested(record: Record | None) -> Record | None:
    if record is None or State(record["state"]).is_final:
        return None
    return {**record, "cancel_requested": True, "state": State.CANCELING.value}


def tag_filter(keys: list[str], values: list[str]) -> dict[str, str]:
    """tag_key and tag_value zipped; a key without a value matches any value."""
    return {key: values[index] if index < len(values) else "" for index, key in enumerate(keys)}
