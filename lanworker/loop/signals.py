"""Signal handling: handlers only count; a watcher thread acts on the count.

The watcher sleeps on a wake-up pipe (`signal.set_wakeup_fd`), which the interpreter
writes the signal's number to the moment the signal arrives: it acts within a thread
switch, not at the next turn of a polling loop, so a message a long poll returns just
after SIGTERM finds the shutdown already requested (and is released, not run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHECK_S = 0.5  # the count is looked at this often anyway (a wake-up byte can be lost)


class SignalFlag:
    """SIGTERM/SIGINT set a counter; `on_signal(n)` runs on a watcher thread for the n-th one.

    Doing the work outside the handler keeps it free of locks a handler could deadlock on.
    """

    def __init__(self) -> None:
        self.count = 0

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def install(self, on_signal: Callable[[int], None]) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in SIGNALS:
            signal.signal(signum, self.handler)
        threading.Thread(
            target=self._watch, args=(on_signal, read_fd), name="signal-watcher", daemon=True
        ).start()

    def _watch(self, on_signal: Callable[[int], None], read_fd: int) -> None:
        seen = 0
        arrived = 0  # SIGTERM/SIGINT bytes read from the pipe
        while True:
            ready, _, _ = select.select([read_fd], [], [], CHECK_S)
            if ready:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    arrived += sum(1 for signum in os.read(read_fd, 64) if signum in SIGNALS)
            while max(arrived, self.count) > seen:
                seen += 1
                logger.warning(
                    "signal received: %s",
                    "forcing stop" if seen > 1 else "graceful shutdown",
                    extra={"action": "signal"},
                )
                on_signal(seen)
