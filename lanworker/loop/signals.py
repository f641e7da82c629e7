"""Signal handling: handlers only count; a watcher thread acts on the count."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)


class SignalFlag:
    """SIGTERM/SIGINT set a counter; `on_signal(n)` runs on a watcher thread for the n-th one.

    Doing the work outside the handler keeps it free of locks a handler could deadlock on.
    """

    def __init__(self) -> None:
        self.count = 0

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def install(self, on_signal: Callable[[int], None]) -> None:
        signal.signal(signal.SIGTERM, self.handler)
        signal.signal(signal.SIGINT, self.handler)
        threading.Thread(target=self._watch, args=(on_signal,), name="signal-watcher", daemon=True).start()

    def _watch(self, on_signal: Callable[[int], None]) -> None:
        seen = 0
        while True:
            if self.count > seen:
                seen += 1
                logger.warning(
                    "signal received: %s",
                    "forcing stop" if seen > 1 else "graceful shutdown",
                    extra={"action": "signal"},
                )
                on_signal(seen)
            time.sleep(0.05)
