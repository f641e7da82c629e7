"""The queue interface every backend implements: receive, delete, extend, release, send."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger(__name__)


MAX_BATCH = 10  # the most messages one queue call receives, deletes or sends (SQS's limit)


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int = 1
    attributes: dict[str, str] = field(default_factory=dict)
    first_received_at: float | None = None  # epoch seconds, when the backend knows it
    group_id: str | None = None  # a FIFO queue's MessageGroupId: a retry keeps its group
    sent_at: float | None = None  # epoch seconds the message was sent, when the backend says


@dataclass(frozen=True)
class Outgoing:
    """A message to send in a batch: a body, its attributes and, for a FIFO queue, its
    group and deduplication id."""

    body: str
    attributes: dict[str, str] = field(default_factory=dict)
    group_id: str | None = None
    deduplication_id: str | None = None


@dataclass(frozen=True)
class DeadLetterEntry:
    message_id: str
    body: str
    reason: str
    receive_count: int
    attributes: dict[str, str] = field(default_factory=dict)


class Queue(Protocol):
    url: str
    # Whether every operation is a network round trip (SQS). The worker then settles jobs
    # in a thread of their own, deleting in batches; an embedded queue's delete costs less
    # than handing it to another thread.
    remote: bool

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int
    ) -> list[ReceivedMessage]:
        """Up to max_messages, long-polling up to wait_time_s; each hidden for the timeout."""

    def delete(self, message: ReceivedMessage) -> None:
        """Remove a message for good; raises StaleReceipt if it is no longer ours."""

    def delete_batch(self, messages: Sequence[ReceivedMessage]) -> list[Exception | None]:
        """Delete several in as few calls as the backend allows. Never raises: one error
        (StaleReceipt, or why it failed) or None per message, in order."""

    def change_visibility(self, message: ReceivedMessage, timeout_s: int) -> None:
        """Hide the message for timeout_s from now."""

    def change_visibility_batch(
        self, messages: Sequence[ReceivedMessage], timeout_s: int
    ) -> list[Exception | None]:
        """The heartbeat: hide several for timeout_s from now in as few calls as the backend
        allows. Never raises: None, StaleReceipt or why it failed, per message in order."""

    def release(self, message: ReceivedMessage, error: str | None = None, delay_s: int = 0) -> None:
        """Make the message visible again, at once or after delay_s, for any worker to take.

        `error` is kept as the message's last error where the backend can store it.
        """

    def send(
        self,
        body: str,
        attributes: dict[str, str] | None = None,
        delay_s: int = 0,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> str:
        """Enqueue a message and return its id."""

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        """Enqueue several in as few calls as the backend allows. Never raises: None or
        why it failed per message, in order."""

    def max_message_bytes(self) -> int | None:
        """The largest message the queue accepts, None when it has no limit."""

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        """Move a message that can never succeed out of the way, keeping its body."""

    def list_dead_letters(self, limit: int) -> list[DeadLetterEntry]:
        """Dead-lettered messages, oldest first."""

    def redrive(self, limit: int) -> int:
        """Move dead letters back onto the queue; returns how many moved."""

    def check(self) -> None:
        """Raise QueueUnreachable if the queue cannot be used."""

    def depth(self) -> dict[str, int]:
        """Approximate messages waiting (`visible`) and being worked on (`in_flight`)."""

    def together(self, urls: Iterable[str]) -> AbstractContextManager[object]:
        """While inside, what this thread does to this queue and to the queues at `urls`
        commits as one, where the backend can (the embedded queue, when they all live in
        its file); elsewhere each operation stands alone as always."""


def exhausted_reason(receive_count: int, max_receives: int, last_error: str | None) -> str:
    """Why a message left the queue for good after too many receives; one wording for the
    worker and the embedded queue."""
    reason = f"received {receive_count} times without completing (max_receives={max_receives})"
    return f"{reason}; last error: {last_error}" if last_error else reason


class SinglePass:
    """--once: each message is handled at most once per run.

    A message that comes back during the run (released, or its visibility expired) is held
    hidden until the run ends instead of being released at once; otherwise it would stand
    at the head of the queue and hide the messages behind it.
    """

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.seen: set[str] = set()
        self.held: dict[str, ReceivedMessage] = {}
        self._lock = threading.Lock()  # slots of the embedded queue receive for themselves

    def first_sightings(self, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        fresh = []
        with self._lock:
            for message in messages:
                if message.message_id in self.seen:
                    self.held[message.message_id] = message  # the newest receipt is the valid one
                else:
                    self.seen.add(message.message_id)
                    fresh.append(message)
        return fresh

    def finish(self) -> None:
        for message in self.held.values():
            try:
                self.queue.release(message)
            except Exception as exc:
                logger.warning("could not release %s at the end of the run: %s", message.message_id, exc)
        self.held.clear()
