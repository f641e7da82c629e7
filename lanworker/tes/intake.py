"""Group commit for new tasks: the POSTs that reach the event loop together are written
together, in one store transaction and one queue send (TesService.create_batch).

The write runs in the event loop, scheduled with call_soon by the first POST that finds
none scheduled, so every POST handled in the same loop iteration joins it; while it
writes, the next POSTs gather in their sockets and make the next batch. No thread: the
GIL hand-offs between a writer thread and the loop cost more than the wait they saved.

Invariant: a POST is answered only when its task is stored and its message sent, or with
what refused or failed it; a lone POST is written at once, never held back for company.
A client that goes away while its batch is written does not undo its task.

Over the network the loop never waits: with an SQS queue a batch is written in a thread;
a DynamoDB store is not batched (each create runs in a thread of its own, as its own
conditional transaction).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool

from lanworker.tes.models import TesTask
from lanworker.tes.service import TesService

logger = logging.getLogger(__name__)

MAX_BATCH = 100  # tasks a write takes at most; the rest go in the next one

Waiting = tuple[TesTask, "asyncio.Future[str]"]


class Intake:
    def __init__(self, service: TesService) -> None:
        self.service = service
        self._waiting: list[Waiting] = []
        self._scheduled = False  # a write is due in this loop iteration

    async def create(self, task: TesTask) -> str:
        """The new task's id; raises what refused or failed it."""
        if self.service.store.remote:
            return await run_in_threadpool(self.service.create, task)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((task, answer))
        self._schedule()
        return await answer

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._scheduled = False
        batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        if self._waiting:
            self._schedule()
        tasks = [task for task, _ in batch]
        if not self.service.queue.remote:
            _answer(batch, self._outcomes(tasks))
            return
        # An SQS send waits on the network: the batch is written in a thread, the loop goes on.
        written = asyncio.get_running_loop().run_in_executor(None, self._outcomes, tasks)
        written.add_done_callback(lambda done: _answer(batch, done.result()))

    def _outcomes(self, tasks: list[TesTask]) -> list[str | Exception]:
        """create_batch's, or the unexpected error's for each task: every POST is answered."""
        try:
            return self.service.create_batch(tasks)
        except Exception as exc:
            logger.exception("tasks not created", extra={"action": "queued"})
            return [exc for _ in tasks]


def _answer(batch: list[Waiting], outcomes: list[str | Exception]) -> None:
    for (_, answer), outcome in zip(batch, outcomes, strict=True):
        if answer.done():
            continue  # its client went away; the task stands
        if isinstance(outcome, Exception):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)
