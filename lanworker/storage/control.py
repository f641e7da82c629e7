"""Cancel markers: how `worker.py cancel` and the TES API ask a running job to stop.

A marker is `CONTROL/cancel/JOB_ID` (an S3 object or a file) holding
`{"requested_at": EPOCH_S}`; `request_cancel` writes it, for `cancel` and for TES alike.

Invariants:
- a worker looks for markers once per interval however many jobs it runs (one LIST of
  `CONTROL/cancel/`, or one directory listing), never with a request per job, and on its
  own short interval, independent of heartbeats: a cancel lands within seconds;
- a marker applies only to the submission it was written for: one written before the
  message was sent is left over from an earlier job with the same id, so it is removed and
  ignored; the worker removes a job's marker when the job ends.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import unquote

from lanworker.storage import Storage

logger = logging.getLogger(__name__)

DEFAULT_CHECK_S = 2.0


def cancel_marker(control_url: str, job_id: str) -> str:
    return f"{_prefix(control_url)}{job_id}"


def _prefix(control_url: str) -> str:
    return f"{control_url.rstrip('/')}/cancel/"


def request_cancel(storage: Storage, control_url: str, job_id: str, requested_by: str) -> None:
    body = {"requested_at": time.time(), "requested_by": requested_by}
    storage.write_bytes(cancel_marker(control_url, job_id), json.dumps(body).encode())


class CancelWatch:
    """One worker's view of the markers under a control location; thread-safe."""

    def __init__(
        self,
        storage: Storage,
        control_url: str,
        interval_s: float = DEFAULT_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.prefix = _prefix(control_url)
        self.control_url = control_url
        self.interval_s = interval_s
        self.clock = clock
        self._names: frozenset[str] = frozenset()
        self._listed_at: float | None = None
        self._lock = threading.Lock()

    def requested(self, job_id: str, sent_at: float | None) -> bool:
        """Whether job_id's current submission (its message sent at sent_at) is canceled."""
        if job_id not in self._listing():
            return False
        requested_at = self._requested_at(job_id)
        if requested_at is not None and sent_at is not None and requested_at < sent_at:
            logger.info(
                "ignoring a cancel marker written before this job was sent (a leftover)",
                extra={"job_id": job_id, "action": "cancel"},
            )
            self.clear(job_id)
            return False
        return True

    def clear(self, job_id: str) -> None:
        """Remove job_id's marker, if the last listing had one (no request otherwise)."""
        if job_id not in self._names:
            return
        try:
            self.storage.delete(cancel_marker(self.control_url, job_id))
        except Exception as exc:
            logger.warning(
                "cannot remove cancel marker: %s", exc, extra={"job_id": job_id, "action": "cancel"}
            )
            return
        with self._lock:
            self._names = self._names - {job_id}

    def _listing(self) -> frozenset[str]:
        with self._lock:
            now = self.clock()
            if self._listed_at is not None and now - self._listed_at < self.interval_s:
                return self._names
            self._listed_at = now
            try:
                found = self.storage.list_objects(self.prefix)
            except Exception as exc:  # an outage: no cancels now, the next interval asks again
                logger.warning("cannot list cancel markers: %s", exc, extra={"action": "cancel"})
                return self._names
            self._names = frozenset(unquote(item.uri.rsplit("/", 1)[-1]) for item in found)
            return self._names

    def _requested_at(self, job_id: str) -> float | None:
        try:
            with self.storage.open_read(cancel_marker(self.control_url, job_id)) as handle:
                value = json.loads(handle.read(4096)).get("requested_at")
        except Exception:  # unreadable or written by hand: it still asks to cancel
            return None
        return float(value) if isinstance(value, int | float) else None
