#!/usr/bin/env python3
"""lanworker entry point: `python3 worker.py native CMD ARGS...`, `python3 worker.py docker`, ..."""

import sys

from lanworker.cli import console

if __name__ == "__main__":
    sys.exit(console())
