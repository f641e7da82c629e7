"""Large S3 objects: parallel ranged GETs written in place, hashed as the file fills in.

Invariant: memory stays one read buffer per part in flight whatever the object's size.
Each part is written at its offset in the destination file (no reordering buffer); the
sha256 and md5 follow the contiguous prefix that is complete, reading it back from the
page cache on the calling thread, so hashing overlaps the download. Every GET carries the
ETag of the HEAD (`IfMatch`), so an object replaced mid-download fails the transfer
instead of mixing two versions. A part that fails transiently is fetched again whole.

Parts: at least 16 MiB, at most 8 per object (part = size / 8 above 128 MiB). Real S3
serves each range independently, so 8 parallel streams multiply one stream's ~100 MB/s;
moto_server reads the whole object for every range, so fewer, larger parts also keep the
test server's cost down - the choice holds for both, it is not tuned for moto alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_BYTES = 1024 * 1024
MIN_PART_BYTES = 16 * 1024 * 1024
MAX_PARTS_IN_FLIGHT = 8


def plan_parts(size: int, concurrency: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges covering size."""
    part = max(MIN_PART_BYTES, -(-size // MAX_PARTS_IN_FLIGHT))
    del concurrency  # parts are sized by the object; the pool bounds how many run at once
    return [(start, min(size, start + part)) for start in range(0, size, part)]


def _no_progress(count: int) -> None:
    pass


@dataclass(frozen=True)
class RangeControl:
    """How the parts are fetched: how many at once, the check between chunks, the retry
    wrapper around one part's fetch, and what hears of each chunk's bytes."""

    concurrency: int
    checkpoint: Callable[[], None]
    retry: Callable[[Callable[[], None]], None]
    on_bytes: Callable[[int], None] = _no_progress


class RangedDownload:
    def __init__(
        self,
        get_range: Callable[[int, int], Any],  # (start, end_inclusive) -> a body with read(n)
        size: int,
        destination: Path,
        control: RangeControl,
    ) -> None:
        self.get_range = get_range
        self.size = size
        self.destination = destination
        concurrency = control.concurrency
        self.concurrency = max(1, min(concurrency, MAX_PARTS_IN_FLIGHT))
        self.checkpoint = control.checkpoint
        self.retry = control.retry
        self.on_bytes = control.on_bytes
        self.parts = plan_parts(size, concurrency)
        self.written = [0] * len(self.parts)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.changed = threading.Condition()

    def run(self) -> tuple[str, str]:
        """Download and return (sha256, md5) hex digests."""
        fd = os.open(self.destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, self.size)
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="range") as pool:
                futures = [pool.submit(self._part, fd, index) for index in range(len(self.parts))]
                try:
                    return self._hash()
                finally:
                    self.stop.set()
                    _settle(futures)
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- workers
    def _part(self, fd: int, index: int) -> None:
        start, end = self.parts[index]

        def fetch() -> None:
            self._set_written(index, 0)
            body = self.get_range(start, end - 1)
            position = start
            try:
                while position < end and not self.stop.is_set():
                    chunk = body.read(min(CHUNK_BYTES, end - position))
                    if not chunk:
                        raise ConnectionError(f"range {start}-{end - 1} ended early at {position}")
                    os.pwrite(fd, chunk, position)
                    position += len(chunk)
                    self._set_written(index, position - start)
                    self.on_bytes(len(chunk))
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

        try:
            self.retry(fetch)
        except BaseException as exc:
            with self.changed:
                self.error = self.error or exc
                self.changed.notify_all()
            raise

    def _set_written(self, index: int, count: int) -> None:
        with self.changed:
            self.written[index] = count
            self.changed.notify_all()

    # ----------------------------------------------------------------- hashing
    def _frontier(self) -> int:
        """Bytes from offset 0 that are in the file already."""
        done = 0
        for (start, end), written in zip(self.parts, self.written, strict=True):
            done = start + written
            if written < end - start:
                break
        return done

    def _hash(self) -> tuple[str, str]:
        sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        hashed = 0
        with self.destination.open("rb") as reader:
            while hashed < self.size:
                self.checkpoint()
                with self.changed:
                    while self.error is None and self._frontier() <= hashed:
                        self.changed.wait(timeout=0.5)
                        self.checkpoint()
                    if self.error is not None:
                        raise self.error
                    frontier = self._frontier()
                reader.seek(hashed)
                while hashed < frontier:
                    data = reader.read(min(CHUNK_BYTES, frontier - hashed))
                    sha256.update(data)
                    md5.update(data)
                    hashed += len(data)
        return sha256.hexdigest(), md5.hexdigest()


def _settle(futures: list[Future[None]]) -> None:
    """Wait for every part worker (each stops at its next chunk once `stop` is set); their
    failures were already handed to the hashing thread through `error`."""
    for future in futures:
        with contextlib.suppress(Exception):
            future.result(timeout=300)
