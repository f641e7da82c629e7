"""Docker fixtures: a real engine or a clear skip (a failure under LANWORKER_REQUIRE_DOCKER=1)."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
