"""The receive loop the worker and the translator share: small steps, every wait bounded.

Invariant: no step waits longer than max(STEP_S, the long poll), so a shutdown request is
seen within one step whether the loop is idle, busy or draining a `--once` run. A message
received after shutdown was requested is released at once, never started.

With `batch_size` above one, a handler takes up to that many messages at once (the
translator: their commands share sends); a slot is one handler call either way.

With `prefetch`, the loop holds messages beyond its free slots; they wait in the pool's
queue, and the handler is the one to decide what a message that waited past a shutdown
request becomes (the worker releases it).

On the embedded queue (handlers of one message) a slot that finished its message receives
the next one itself, with no wait, and nothing is prefetched: a receive there costs less
than handing a message from thread to thread. The loop still does the long polls, the
backoff after errors, and the end of a --once run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from lanworker.core.errors import QueueUnreachable, TransientError
from lanworker.queues import Queue, ReceivedMessage, SinglePass
from lanworker.queues.base import MAX_BATCH

logger = logging.getLogger(__name__)

STEP_S = 1.0  # the longest a step waits for running handlers
ABANDON_AFTER_S = 1.5  # how long a receive in flight at shutdown may still return its messages
ONCE_WAIT_S = 1  # the long poll of a --once run: it ends when the queue is empty
RECEIVE_BACKOFF_MAX_S = 30.0
SETTLING_PAUSE_S = 0.01  # a --once run that found the queue empty looks again this soon


def _nothing() -> None:
    return None


def _ignore(message: ReceivedMessage) -> None:
    return None


Handler = Callable[[list[ReceivedMessage]], None]


def one_at_a_time(handle: Callable[[ReceivedMessage], None]) -> Handler:
    """A handler of one message as the loop calls handlers (with batch_size 1, one each)."""

    def handle_each(messages: list[ReceivedMessage]) -> None:
        for message in messages:
            handle(message)

    return handle_each


def _none() -> int:
    return 0


def _idle() -> bool:
    return False


def _not_paused() -> str | None:
    return None


@dataclass(frozen=True)
class ReceivePlan:
    """How a receive loop polls: how many handlers at once, how long each receive waits,
    how long a received message stays hidden, whether to end at an empty queue."""

    concurrency: int
    wait_time_s: int
    visibility_timeout_s: int
    once: bool = False
    name: str = "job"  # its threads' names
    batch_size: int = 1  # messages one handler call takes


@dataclass(frozen=True)
class ReceiveHooks:
    """What the worker loop adds to a plain receive loop."""

    on_alive: Callable[[], None] = _nothing
    on_receive_error: Callable[[], None] = _nothing
    on_received: Callable[[ReceivedMessage], None] = _ignore  # in this thread, before the handler
    prefetch: Callable[[], int] = _none  # messages it may hold beyond the free slots, asked each step
    settling: Callable[[], bool] = _idle  # whether finished handlers' work is still being carried out
    paused: Callable[[], str | None] = _not_paused  # why not to receive now (a full disk)


class ReceiveLoop:
    def __init__(
        self,
        queue: Queue,
        handle: Handler,
        plan: ReceivePlan,
        shutdown: threading.Event,
        hooks: ReceiveHooks = ReceiveHooks(),
    ) -> None:
        self.queue = queue
        self.handle = handle
        self.concurrency = plan.concurrency
        # --once ends as soon as the queue is empty: the embedded queue answers that at once;
        # an SQS short poll (wait 0) samples only some servers, so it keeps a 1 s long poll.
        once, wait_time_s = plan.once, plan.wait_time_s
        self.wait_time_s = (min(wait_time_s, ONCE_WAIT_S) if queue.remote else 0) if once else wait_time_s
        self.visibility_timeout_s = plan.visibility_timeout_s
        self.once = once
        self.shutdown = shutdown
        self.hooks = hooks
        self.name = plan.name
        self.batch_size = max(1, min(plan.batch_size, MAX_BATCH))
        self.running: set[Future[None]] = set()
        self.single_pass = SinglePass(queue)
        self._backoff_s = 1.0
        self._pool: ThreadPoolExecutor | None = None
        # On the embedded queue a slot takes its next message itself (see _slot).
        self.chain = not queue.remote and self.batch_size == 1

    def run(self, grace_period_s: float, force: threading.Event, stop_running: Callable[[], None]) -> None:
        """Loop until shutdown (or, with once, an empty queue), then drain the handlers."""
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=self.name) as pool:
            self._pool = pool
            while self.poll_iteration():
                pass
            self.drain(grace_period_s, force, stop_running)
        self.single_pass.finish()

    def poll_iteration(self) -> bool:
        """One step; False when the loop is over."""
        self.running = {future for future in self.running if not future.done()}
        if self.shutdown.is_set():
            return False
        free = self.concurrency + (0 if self.chain else self.hooks.prefetch()) - len(self.running)
        if free <= 0:
            wait(self.running, timeout=STEP_S, return_when=FIRST_COMPLETED)
            self.hooks.on_alive()  # busy is not stalled
            return True
        reason = self.hooks.paused()
        if reason is not None:
            if self.once and not self.running:
                logger.warning(
                    "not receiving: %s; a --once run ends here", reason, extra={"action": "receive"}
                )
                return False
            self.shutdown.wait(STEP_S)  # jobs that are running go on; new ones wait for room
            return True
        messages = self._receive(free * self.batch_size)
        if messages is None:
            return True
        self.hooks.on_alive()
        drained = not messages
        accepted = self._accept(messages)
        if accepted is None:
            return False
        messages = accepted
        assert self._pool is not None
        for start in range(0, len(messages), self.batch_size):
            self.running.add(self._pool.submit(self._slot, messages[start : start + self.batch_size]))
        if self.once and drained:
            if self.running:
                wait(self.running, timeout=STEP_S, return_when=FIRST_COMPLETED)
            elif self.hooks.settling():
                time.sleep(SETTLING_PAUSE_S)  # a settling job may still send a retry here
            else:
                return False
        return True

    def _slot(self, messages: list[ReceivedMessage]) -> None:
        """One slot's work: its messages, then (chained) the next one it receives itself,
        until the queue has none ready, a shutdown is requested or the worker pauses."""
        while messages:
            self.handle(messages)
            messages = self._next_for_slot() if self.chain else []

    def _next_for_slot(self) -> list[ReceivedMessage]:
        if self.shutdown.is_set() or self.hooks.paused() is not None:
            return []
        try:
            messages = self.queue.receive(1, 0, self.visibility_timeout_s)
        except Exception:  # the loop's own next receive meets it, and backs off or stops
            return []
        if messages:
            self.hooks.on_alive()
        return self._accept(messages) or []

    def _accept(self, messages: list[ReceivedMessage]) -> list[ReceivedMessage] | None:
        """The received messages a handler gets: in a --once run only first sightings, each
        leased (on_received) first; None after a shutdown request, when all go back."""
        if self.shutdown.is_set():
            # A receive that returns after the signal: hand these straight back.
            for message in messages:
                self._release(message)
            return None
        if self.once:
            messages = self.single_pass.first_sightings(messages)
        for message in messages:
            self.hooks.on_received(message)
        return messages

    def _receive(self, free: int) -> list[ReceivedMessage] | None:
        try:
            messages = self._receive_until_shutdown(min(free, MAX_BATCH))
        except (TransientError, QueueUnreachable) as exc:
            self.hooks.on_receive_error()
            logger.error(
                "receive failed, retrying in %.0f s: %s", self._backoff_s, exc, extra={"action": "receive"}
            )
            self.shutdown.wait(self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, RECEIVE_BACKOFF_MAX_S)
            return None
        self._backoff_s = 1.0
        return messages

    def _receive_until_shutdown(self, count: int) -> list[ReceivedMessage]:
        """One receive, abandoned when shutdown is requested while it waits: an idle worker
        stops within ABANDON_AFTER_S instead of at the end of its long poll. What the poll
        returns in that time (a message sent just after the signal) comes back here and the
        caller releases it; what an abandoned receive returns later is released too, and if
        the process is gone first, the queue hands it out again after the visibility timeout,
        as after a crash."""
        if self.wait_time_s <= 0:
            return self.queue.receive(count, 0, self.visibility_timeout_s)
        receive = BackgroundReceive(
            self.queue, count, self.wait_time_s, self.visibility_timeout_s, self._release
        )
        while not receive.done.wait(STEP_S / 4):
            if self.shutdown.is_set():
                if receive.done.wait(ABANDON_AFTER_S) or not receive.abandon():
                    break
                return []
        return receive.outcome()

    def _release(self, message: ReceivedMessage) -> None:
        try:
            self.queue.release(message)
        except Exception as exc:
            # It comes back after its visibility timeout; nothing is lost.
            logger.error(
                "release of message %s failed: %s", message.message_id, exc, extra={"action": "release"}
            )

    def drain(self, grace_period_s: float, force: threading.Event, stop_running: Callable[[], None]) -> None:
        """Let running handlers finish within the grace period; then ask them to stop."""
        pending = {future for future in self.running if not future.done()}
        if not pending:
            return
        logger.info(
            "waiting up to %.0f s for %d running job(s) to finish",
            grace_period_s,
            len(pending),
            extra={"action": "shutdown"},
        )
        deadline = time.monotonic() + grace_period_s
        while pending and not force.is_set() and time.monotonic() < deadline:
            _, pending = wait(pending, timeout=0.2)
        if pending:
            logger.warning(
                "stopping %d job(s) and releasing their messages", len(pending), extra={"action": "shutdown"}
            )
            stop_running()
            while pending:
                _, pending = wait(pending, timeout=STEP_S)
                if pending:
                    logger.info("still stopping %d job(s)", len(pending), extra={"action": "shutdown"})


class BackgroundReceive:
    """A queue receive in a daemon thread that its caller may walk away from."""

    def __init__(
        self,
        queue: Queue,
        count: int,
        wait_time_s: float,
        visibility_timeout_s: int,
        release: Callable[[ReceivedMessage], None],
    ) -> None:
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self._messages: list[ReceivedMessage] = []
        self._error: BaseException | None = None
        self._release = release
        thread = threading.Thread(
            target=self._run,
            args=(queue, count, wait_time_s, visibility_timeout_s),
            daemon=True,
            name="receive",
        )
        thread.start()

    def _run(self, queue: Queue, count: int, wait_time_s: float, visibility_timeout_s: int) -> None:
        try:
            messages = queue.receive(count, wait_time_s, visibility_timeout_s)
        except BaseException as exc:  # handed to the caller by outcome()
            messages, self._error = [], exc
        with self._lock:
            self._messages = messages
            abandoned = self._abandoned
            self.done.set()
        if abandoned:
            for message in messages:
                self._release(message)

    def abandon(self) -> bool:
        """Walk away; False when the receive finished first (its outcome is then the caller's)."""
        with self._lock:
            if self.done.is_set():
                return False
            self._abandoned = True
            return True

    def outcome(self) -> list[ReceivedMessage]:
        if self._error is not None:
            raise self._error
        return self._messages
