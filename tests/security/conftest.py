"""Hostile commands and messages against a real worker on the embedded queue."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lanworker.core.config import build_config
from lanworker.loop.assemble import build_worker
from lanworker.queues import LocalQueue

RunJob = Callable[..., dict[str, Any]]


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """Stands for the host's files: nothing in it may ever be uploaded or overwritten."""
    secret = tmp_path / "host"
    secret.mkdir()
    (secret / "a.txt").write_text("host secret")
    return secret


@pytest.fixture
def run_job(tmp_path: Path, work_root: Path) -> RunJob:
    """Run one message through a native worker whose command is `sh -c SCRIPT sh ARGS...`."""
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    results = queue.sibling("results")

    def run(script: str, document: dict[str, Any] | str, **flags: Any) -> dict[str, Any]:
        """The result of one message: a document (service added) or a raw body."""
        queue.send(document if isinstance(document, str) else json.dumps({"service": "hostile", **document}))
        config = build_config(
            {
                "mode": "native",
                "base_command": ("sh", "-c", script, "sh"),
                "queue_url": queue.url,
                "results_url": results.url,
                "work_root": work_root,
                "worker_id": f"sec-{uuid.uuid4().hex[:6]}",
                "once": True,
                "wait_time_s": 0,
                **flags,
            },
            {},
        )
        build_worker(config).run()
        [reply] = results.receive(1, 0, 30)
        results.delete(reply)
        return dict(json.loads(reply.body))

    run.queue = queue  # type: ignore[attr-defined]
    return run


def output_arg(value: str, name: str = "--out") -> dict[str, str]:
    return {"type": "output", "name": name, "value": value}
