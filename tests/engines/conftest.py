"""One `serve` for the engine tests: four docker workers, tasks on the host network (their
job scripts reach moto_server at 127.0.0.1, and nothing else), images built here."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from lanworker.core import exitcodes
from tests.conftest import REPO_ROOT
from tests.helpers.moto import MotoServer, free_port
from tests.helpers.processes import answers, cli_env, start_cli, wait_until

BASE_IMAGE = "lanworker-base:bookworm"  # the project's debootstrap base: bash, coreutils, python3
DEBIAN_IMAGE = "lanworker-test/debian:bookworm"


@pytest.fixture(scope="session")
def engine_tes_url(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("serve-engines")
    port = free_port()
    process = start_cli(
        "serve", "--port", str(port), "--state-dir", str(state), "--work-root", str(state / "work"),
        "--allow-image", "lanworker-test/*", "--workers", "4", "--wait-time-s", "1",
        "--task-network", "host", "--log-format", "json",
        env=cli_env(**moto_server.environment()), log_path=state / "serve.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{url}/healthz"), 60, "serve to answer /healthz")
    yield url
    process.terminate()
    assert process.wait(timeout=120) == exitcodes.EXIT_STOPPED
    print((state / "serve.log").read_text()[-4000:])


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
