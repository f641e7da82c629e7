"""Transfers in parallel: a function over items on a few threads, each running in the
submitting thread's context (its job id for the logs), results in order."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from lanworker.storage import Checkpoint, Storage, TransferRecord, no_checkpoint

T = TypeVar("T")
R = TypeVar("R")


def in_context(function: Callable[[T], R]) -> Callable[[T], R]:
    """Run a pool task in the submitting thread's context (its job id for the logs)."""
    context = contextvars.copy_context()
    return lambda item: context.copy().run(function, item)


def parallel(function: Callable[[T], R], items: list[T], concurrency: int) -> list[R]:
    """function over items on up to `concurrency` threads, in the caller's context, results
    in order; no threads at all for one item or none (most jobs)."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(
        max_workers=max(1, min(concurrency, len(items))), thread_name_prefix="transfer"
    ) as pool:
        return list(pool.map(in_context(function), items))


@dataclass(frozen=True)
class Transfers:
    """Storage, how many transfers run at once, and the check each transfer makes between
    chunks: what every stage that moves files needs, as one argument."""

    storage: Storage
    concurrency: int = 1
    checkpoint: Checkpoint = no_checkpoint

    def map(self, function: Callable[[T], R], items: list[T]) -> list[R]:
        return parallel(function, items, self.concurrency)

    def download(self, item: tuple[str, Path, int | None]) -> TransferRecord:
        """(uri, local path, size if known) -> the record of the download."""
        uri, local, size = item
        return self.storage.download(uri, local, self.checkpoint, size)
