"""Benchmarks: each script measures lanworker against other tools in the same run."""

from __future__ import annotations

import compileall
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def byte_compile_lanworker() -> None:
    """Write lanworker's bytecode, as `pip install` does, so worker processes start as an
    installed lanworker does even where PYTHONDONTWRITEBYTECODE is set (a checkout would
    otherwise compile every module at every start: 0.15 s here)."""
    compileall.compile_dir(ROOT / "lanworker", quiet=1)


@contextmanager
def moto_server(scratch: str) -> Iterator[None]:
    """A moto_server on 127.0.0.1 for the benchmark's boto3 clients (environment set), stopped after."""
    from tests.helpers.moto import MotoServer, apply_environment, free_port

    server = MotoServer(free_port(), Path(scratch) / "moto.log")
    server.start()
    apply_environment(server)
    try:
        yield
    finally:
        server.stop()
