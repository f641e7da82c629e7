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

from fastapi import APIRouter

from lanworker.message.policy import MessagePolicy
from lanworker.queues import Queue
from lanworker.storage import Storage
from lanworker.storage.control import request_cancel
from lanworker.tes.convert import new_record, new_task_id, task_to_message
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

    # ----------------------------------------------------------------- operations
    def create(self, task: TesTask) -> str:
        task_id = new_task_id()
        message, notes = task_to_message(task, task_id, self.policy)
        record = new_record(task, task_id, notes)
        self._check_room(record)
        self.store.create(record)
        try:
            self.queue.send(json.dumps(message))
        except Exception as exc:
            error = str(exc)
            self.store.update(task_id, lambda r: _failed_to_queue(r, error))
            raise
        logger.info("task %s queued", task_id, extra={"job_id": task_id, "action": "queued"})
        return task_id

    def _check_room(self, record: Record) -> None:
        if self.max_store_bytes is None:
            return
        used = self.store.stored_bytes()
        if used + len(json.dumps(record)) > self.max_store_bytes:
            raise StoreFull(
                f"the task store holds {used} bytes of its {self.max_store_bytes} (--max-store-mb): "
                "new tasks are refused until old ones are pruned (serve --keep-days)"
            )

    def cancel(self, task_id: str) -> Record | None:
        record = self.store.get(task_id)
        if record is None or State(record["state"]).is_final:
            return record
        request_cancel(self.storage, self.control_url, task_id, "tes")
        return self.store.update(task_id, _cancel_requested)


class StoreFull(Exception):
    """The store reached --max-store-mb: 507 Insufficient Storage, with the reason."""


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
