"""A real `serve` with embedded docker workers against moto_server, for a test module; or
the service behind it alone, on a given store, for an app run in-process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lanworker.core import exitcodes
from lanworker.core.config import WorkerConfig
from lanworker.message.policy import MessagePolicy
from lanworker.queues import open_queue
from lanworker.storage import Storage
from lanworker.tes.service import TesService
from lanworker.tes.store import TaskStore
from tests.helpers.moto import MotoServer, free_port
from tests.helpers.processes import answers, cli_env, start_cli, wait_until


@contextmanager
def running_serve(moto_server: MotoServer, state: Path, *flags: str) -> Iterator[str]:
    """`worker.py serve` on a free port with its state in `state`, admitting the test
    images; yields its URL, and at the end checks that it stopped as it should."""
    port = free_port()
    process = start_cli(
        "serve", "--port", str(port), "--state-dir", str(state), "--work-root", str(state / "work"),
        "--allow-image", "lanworker-test/*", "--wait-time-s", "1", "--log-format", "json", *flags,
        env=cli_env(**moto_server.environment()), log_path=state / "serve.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{url}/healthz"), 60, "serve to answer /healthz")
    yield url
    process.terminate()
    assert process.wait(timeout=120) == exitcodes.EXIT_STOPPED
    print((state / "serve.log").read_text()[-4000:])


@pytest.fixture(scope="module")
def tes_url(
    moto_server: MotoServer, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    state = tmp_path_factory.mktemp("serve")
    with running_serve(moto_server, state, "--workers", "2", "--heartbeat-interval-s", "1") as url:
        yield url


def in_process_service(tmp_path: Path, store: TaskStore) -> TesService:
    """A TesService on `store`, its queue and cancel markers under tmp_path, no workers."""
    return TesService(
        store=store,
        queue=open_queue(f"local:{tmp_path}/serve.db#tasks"),
        control_url=str(tmp_path / "control"),
        storage=Storage(),
        policy=MessagePolicy.from_config(WorkerConfig()),
    )
