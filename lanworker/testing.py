"""Fakes for testing code that uses lanworker, and lanworker's own decisions.

- `InMemoryQueue`: the Queue interface in memory, with visibility timeouts, receipts,
  receive counts and a dead-letter list; every operation is recorded in `operations`.
- `ScriptedExecutor`: the Executor interface without processes or containers: each run
  calls a script (or returns the next scripted result), after writing scripted outputs.
- `fake_worker`: a Worker wired to these fakes, the embedded results queue included.

Like dramatiq's StubBroker, they let a test drive the real worker loop and job runner.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lanworker.core.config import WorkerConfig, build_config
from lanworker.core.errors import MessageRefused, StaleReceipt
from lanworker.executors.base import ExecutionRequest, ExecutionResult, JobTerms
from lanworker.loop.assemble import assemble
from lanworker.loop.worker import Worker, WorkerParts
from lanworker.message.command import CommandMessage
from lanworker.pipeline.workspace import PathMapper, Workspace
from lanworker.queues import QueueCache, ReceivedMessage
from lanworker.queues.base import DeadLetterEntry, Outgoing
from lanworker.reporting.metrics import Metrics
from lanworker.storage import Storage


@dataclass
class _Stored:
    message_id: str
    body: str
    attributes: dict[str, str]
    visible_at: float = 0.0
    receive_count: int = 0
    receipt: str | None = None
    group_id: str | None = None


class InMemoryQueue:
    """A Queue in memory; thread-safe. `operations` lists (operation, message id)."""

    def __init__(self, url: str = "memory://jobs", remote: bool = False) -> None:
        self.remote = remote  # True: the worker settles in a thread, as for SQS
        self.max_bytes: int | None = None  # a message size limit, as SQS has
        self.url = url
        self.messages: dict[str, _Stored] = {}
        self.dead_letters: list[DeadLetterEntry] = []
        self.operations: list[tuple[str, str]] = []
        self.sent: dict[str, _Stored] = {}  # every message as it was sent, kept after its delete
        self._lock = threading.Lock()
        self._order = itertools.count()

    def send(
        self,
        body: str,
        attributes: dict[str, str] | None = None,
        delay_s: int = 0,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> str:
        if self.max_bytes is not None and len(body.encode()) > self.max_bytes:
            raise MessageRefused(f"{self.url} refused the message: longer than {self.max_bytes} bytes")
        message_id = f"m{next(self._order):04d}-{uuid.uuid4().hex[:6]}"
        with self._lock:
            stored = _Stored(
                message_id, body, dict(attributes or {}), time.monotonic() + delay_s, group_id=group_id
            )
            self.messages[message_id] = stored
            self.sent[message_id] = dataclasses.replace(stored)
            self.operations.append(("send", message_id))
        return message_id

    def max_message_bytes(self) -> int | None:
        return self.max_bytes

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for message in messages:
            try:
                self.send(
                    message.body,
                    message.attributes,
                    group_id=message.group_id,
                    deduplication_id=message.deduplication_id,
                )
                errors.append(None)
            except Exception as exc:
                errors.append(exc)
        return errors

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int
    ) -> list[ReceivedMessage]:
        deadline = time.monotonic() + wait_time_s
        while True:
            received = self._receive_now(max_messages, visibility_timeout_s)
            if received or time.monotonic() >= deadline:
                return received
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def _receive_now(self, max_messages: int, visibility_timeout_s: int) -> list[ReceivedMessage]:
        now = time.monotonic()
        with self._lock:
            ready = [stored for stored in self.messages.values() if stored.visible_at <= now][:max_messages]
            for stored in ready:
                stored.receive_count += 1
                stored.receipt = uuid.uuid4().hex
                stored.visible_at = now + visibility_timeout_s
                self.operations.append(("receive", stored.message_id))
            return [
                ReceivedMessage(
                    s.message_id,
                    s.receipt or "",
                    s.body,
                    s.receive_count,
                    dict(s.attributes),
                    group_id=s.group_id,
                )
                for s in ready
            ]

    def _owned(self, message: ReceivedMessage) -> _Stored:
        stored = self.messages.get(message.message_id)
        if stored is None or stored.receipt != message.receipt_handle:
            raise StaleReceipt(f"message {message.message_id}: receipt is stale")
        return stored

    def delete(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._owned(message)
            del self.messages[message.message_id]
            self.operations.append(("delete", message.message_id))

    def delete_batch(self, messages: Sequence[ReceivedMessage]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for message in messages:
            try:
                self.delete(message)
                errors.append(None)
            except Exception as exc:
                errors.append(exc)
        return errors

    def change_visibility(self, message: ReceivedMessage, timeout_s: int) -> None:
        with self._lock:
            self._owned(message).visible_at = time.monotonic() + timeout_s
            self.operations.append(("extend", message.message_id))

    def change_visibility_batch(
        self, messages: Sequence[ReceivedMessage], timeout_s: int
    ) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for message in messages:
            try:
                self.change_visibility(message, timeout_s)
                errors.append(None)
            except Exception as exc:
                errors.append(exc)
        return errors

    def release(self, message: ReceivedMessage, error: str | None = None, delay_s: int = 0) -> None:
        with self._lock:
            stored = self._owned(message)
            stored.visible_at = time.monotonic() + delay_s
            stored.receipt = None
            self.operations.append(("release", message.message_id))

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        with self._lock:
            stored = self._owned(message)
            del self.messages[message.message_id]
            self.dead_letters.append(
                DeadLetterEntry(
                    stored.message_id, stored.body, reason, stored.receive_count, stored.attributes
                )
            )
            self.operations.append(("dead-letter", message.message_id))

    def list_dead_letters(self, limit: int) -> list[DeadLetterEntry]:
        return self.dead_letters[:limit]

    def redrive(self, limit: int) -> int:
        moved, self.dead_letters = self.dead_letters[:limit], self.dead_letters[limit:]
        for letter in moved:
            self.send(letter.body, letter.attributes)
        return len(moved)

    def check(self) -> None:
        return None

    def together(self, urls: Iterable[str]) -> AbstractContextManager[object]:
        return nullcontext()  # each operation is atomic on its own here

    def depth(self) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            visible = sum(1 for stored in self.messages.values() if stored.visible_at <= now)
            return {"visible": visible, "in_flight": len(self.messages) - visible}

    def bodies(self) -> list[str]:
        with self._lock:
            return [stored.body for stored in self.messages.values()]

    def ops(self, message_id: str) -> list[str]:
        """The operations on one message, in order."""
        return [operation for operation, target in self.operations if target == message_id]


Script = Callable[[ExecutionRequest], ExecutionResult]


@dataclass
class ScriptedExecutor:
    """Runs nothing: writes `outputs` (argv index -> bytes) then returns the script's result.

    `script` is called with the request (so it can poll `request.should_stop()` to act out
    a long command) or, without one, the next of `results` (exit 0 when they run out).
    """

    results: Sequence[ExecutionResult | BaseException] = ()
    script: Script | None = None
    outputs: dict[int, bytes] = field(default_factory=dict)
    terms: JobTerms = field(default_factory=JobTerms)
    refuse: BaseException | None = None  # raised by check_message
    kind: str = "scripted"
    requests: list[ExecutionRequest] = field(default_factory=list)
    _next: int = 0

    def check_message(self, message: CommandMessage) -> JobTerms:
        if self.refuse is not None:
            raise self.refuse
        return self.terms

    def path_mapper(self, workspace: Workspace) -> PathMapper:
        return str

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        self.requests.append(request)
        for index, data in self.outputs.items():
            Path(request.argv[index]).write_bytes(data)
        if self.script is not None:
            return self.script(request)
        if self._next >= len(self.results):
            return ExecutionResult(exit_code=0)
        scripted = self.results[self._next]
        self._next += 1
        if isinstance(scripted, BaseException):
            raise scripted
        return scripted

    def cleanup_stale(self, worker_ids: Sequence[str]) -> None:
        return None


def wait_for_stop(request: ExecutionRequest, limit_s: float = 30.0) -> ExecutionResult:
    """A script that acts out a command running until it is asked to stop."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        reason = request.should_stop()
        if reason is not None:
            return ExecutionResult(exit_code=-9, stop_reason=reason)
        time.sleep(0.01)
    return ExecutionResult(exit_code=0)


@dataclass
class FakeWorker:
    worker: Worker
    queue: InMemoryQueue
    results: InMemoryQueue
    executor: ScriptedExecutor

    def run(self) -> None:
        self.worker.run()

    def result_documents(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(body) for body in self.results.bodies()]


def fake_worker(
    work_root: Path, executor: ScriptedExecutor | None = None, remote: bool = False, **flags: Any
) -> FakeWorker:
    """A real Worker and JobRunner over in-memory queues and a scripted executor.

    Flags are WorkerConfig fields; the default is one pass (`once`) without long polls.
    `remote` makes the job queue behave as SQS does for the worker (settled in a thread).
    """
    queue, results = InMemoryQueue("memory://jobs", remote), InMemoryQueue("memory://results")
    settings: dict[str, Any] = {
        "mode": "native",
        "base_command": ("true",),
        "queue_url": "local:/unused#jobs",
        "results_url": results.url,
        "work_root": work_root,
        "once": True,
        "wait_time_s": 0,
        "grace_period_s": 5.0,
        **flags,
    }
    config: WorkerConfig = build_config(settings, {})
    executor = executor or ScriptedExecutor()
    queues = QueueCache(lambda url: {results.url: results, queue.url: queue}[url])
    worker = assemble(config, WorkerParts(queue, queues, executor, Storage(retry_budget_s=1.0), Metrics()))
    return FakeWorker(worker, queue, results, executor)
