"""Queue backends behind one interface; `open_queue` picks one by URL."""

from __future__ import annotations

from lanworker.errors import ConfigError
from lanworker.queues.base import DeadLetter, Queue, ReceivedMessage, SinglePass
from lanworker.queues.local import LocalQueue
from lanworker.queues.sqs import SqsQueue

DEFAULT_LOCAL_QUEUE = "local:~/.local/state/lanworker/queue.db#jobs"

__all__ = [
    "DEFAULT_LOCAL_QUEUE",
    "DeadLetter",
    "LocalQueue",
    "Queue",
    "ReceivedMessage",
    "SinglePass",
    "SqsQueue",
    "open_queue",
]


def is_local(url: str) -> bool:
    return url.startswith("local:")


def open_queue(url: str, dead_letter_url: str | None = None, max_receives: int = 5) -> Queue:
    """A queue for `local:PATH[#NAME]` or an SQS queue URL (https://, or http:// for test endpoints)."""
    if is_local(url):
        return LocalQueue(url, max_receives=max_receives)
    if url.startswith(("https://", "http://")):
        return SqsQueue(url, dead_letter_url=dead_letter_url)
    raise ConfigError(f"unsupported queue URL {url!r}: use local:PATH[#NAME] or an SQS queue URL")
