"""One `serve` for the engine tests: four docker workers, tasks on the host network (their
job scripts reach moto_server at 127.0.0.1, and nothing else), images built here."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.moto import MotoServer
from tests.helpers.serve_fixtures import running_serve

BASE_IMAGE = "lanworker-base:bookworm"  # the project's debootstrap base: bash, coreutils, python3
DEBIAN_IMAGE = "lanworker-test/debian:bookworm"


@pytest.fixture(scope="session")
def engine_tes_url(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("serve-engines")
    with running_serve(moto_server, state, "--workers", "4", "--task-network", "host") as url:
        yield url


@pytest.fixture(scope="session")
def debian_image() -> str:
    """The Debian base (scripts/debian-base-image.sh, made once for every test that needs
    it), tagged where --allow-image admits it."""
    if not has_image(BASE_IMAGE):
        built = subprocess.run(
            ["bash", "scripts/debian-base-image.sh", BASE_IMAGE],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr[-4000:]
    subprocess.run(["docker", "tag", BASE_IMAGE, DEBIAN_IMAGE], check=True, timeout=60)
    return DEBIAN_IMAGE


def has_image(tag: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=60).returncode == 0
    )
