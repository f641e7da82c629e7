"""Docker fixtures: a real engine or a clear skip (a failure under LANWORKER_REQUIRE_DOCKER=1)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.docker_images import build_busybox_image

# Read at import: the autouse fixture clears LANWORKER_* before each test.
REQUIRE_DOCKER = os.environ.get("LANWORKER_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        reason = f"no reachable Docker engine ({type(exc).__name__}); run scripts/docker-engine.sh as root"
        if REQUIRE_DOCKER:
            pytest.fail(f"LANWORKER_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: Any) -> str:
    return build_busybox_image(docker_client)


@pytest.fixture
def run_docker_message(tmp_path: Path, work_root: Path, busybox_image: str) -> Callable[..., dict[str, Any]]:
    """One message through a docker worker on the embedded queue (--once); its result."""
    from lanworker.core.config import build_config
    from lanworker.loop.assemble import build_worker
    from lanworker.queues import LocalQueue

    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    results = queue.sibling("results")

    def run(message: dict[str, Any], **flags: Any) -> dict[str, Any]:
        queue.send(json.dumps(message))
        config = build_config(
            {
                "mode": "docker",
                "queue_url": queue.url,
                "results_url": results.url,
                "once": True,
                "wait_time_s": 0,
                "work_root": work_root,
                "allow_images": ("lanworker-test/*",),
                "worker_id": f"docker-test-{uuid.uuid4().hex[:6]}",
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
