"""Process exit codes, one per failure kind, so systemd and scripts can tell them apart.

A leaf module: it imports nothing from lanworker, so every other module may import it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # validate: a message is invalid; submit --wait: the job did not succeed
EXIT_USAGE = 2  # bad command line, or a file named on it cannot be read
EXIT_QUEUE_UNREACHABLE = 69  # EX_UNAVAILABLE: the queue or its endpoint cannot be reached
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug
EXIT_STOPPED = 75  # stopped by SIGTERM/SIGINT after a graceful drain
EXIT_FORCED = 76  # stopped by a second signal before running jobs finished
EXIT_CONFIG = 78  # EX_CONFIG: bad flags, environment or files; restarting will not help
