"""Queue backends behind one interface; `open_queue` picks one by URL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lanworker.core.config import DEFAULT_LOCAL_QUEUE, is_local_queue
from lanworker.core.errors import ConfigError
from lanworker.queues.base import DeadLetterEntry, Outgoing, Queue, ReceivedMessage, SinglePass
from lanworker.queues.local import LocalQueue

if TYPE_CHECKING:
    from lanworker.queues.sqs import SqsQueue

__all__ = [
    "DEFAULT_LOCAL_QUEUE",
    "DeadLetterEntry",
    "LocalQueue",
    "Outgoing",
    "Queue",
    "QueueCache",
    "ReceivedMessage",
    "SinglePass",
    "SqsQueue",
    "open_queue",
]


def __getattr__(name: str) -> Any:
    """SqsQueue on first use: botocore stays unloaded for the embedded queue (and for
    `worker.py validate`)."""
    if name == "SqsQueue":
        from lanworker.queues.sqs import SqsQueue

        return SqsQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_queue(
    url: str, dead_letter_url: str | None = None, max_receives: int = 5, retry_budget_s: float | None = None
) -> Queue:
    """A queue for `local:PATH[#NAME]` or an SQS queue URL (https://, or http:// for test endpoints).

    retry_budget_s: how long an SQS call rides out an outage (a worker: a minute; a client
    command: a few seconds, then it says so)."""
    if is_local_queue(url):
        return LocalQueue(url, max_receives=max_receives)
    if url.startswith(("https://", "http://")):
        from lanworker.core.retries import Backoff
        from lanworker.queues.sqs import BACKOFF, SqsQueue

        backoff = BACKOFF if retry_budget_s is None else Backoff(budget_s=retry_budget_s)
        return SqsQueue(url, dead_letter_url=dead_letter_url, backoff=backoff)
    raise ConfigError(f"unsupported queue URL {url!r}: use local:PATH[#NAME] or an SQS queue URL")


class QueueCache:
    """Opens each reply queue once; reply_to values repeat across many jobs."""

    def __init__(self, opener: Callable[[str], Queue] = open_queue) -> None:
        self._opener = opener
        self._queues: dict[str, Queue] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> Queue:
        with self._lock:
            if url not in self._queues:
                self._queues[url] = self._opener(url)
            return self._queues[url]
