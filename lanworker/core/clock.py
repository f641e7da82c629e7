"""Times as the TES API and the logs write them: RFC 3339, UTC, microseconds, `Z`."""

from __future__ import annotations

import datetime
import time


def rfc3339(epoch_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return rfc3339(time.time())
