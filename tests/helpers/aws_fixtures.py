"""AWS fixtures for every suite: one moto_server per session, buckets and queues that clean up,
and a worker factory. Registered as a plugin by tests/conftest.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from lanworker.core.config import WorkerConfig, build_config
from lanworker.loop.assemble import build_worker
from lanworker.loop.worker import Worker
from lanworker.queues import SqsQueue
from tests.helpers.moto import MotoServer, apply_environment, free_port, restore_environment

TOOL = str(Path(__file__).resolve().parent / "tool.py")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    previous = apply_environment(server)
    yield server
    restore_environment(previous)
    server.stop()


@pytest.fixture
def s3(moto_server: MotoServer) -> Any:
    return boto3.client("s3")


@pytest.fixture
def sqs(moto_server: MotoServer) -> Any:
    return boto3.client("sqs")


@pytest.fixture
def bucket_factory(s3: Any) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(name: str | None = None) -> str:
        bucket = name or f"test-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        made.append(bucket)
        return bucket

    yield make
    for bucket in made:
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)


@pytest.fixture
def queue_factory(sqs: Any) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(name: str | None = None, attributes: dict[str, str] | None = None) -> str:
        queue_name = name or f"test-{uuid.uuid4().hex[:12]}"
        url = str(sqs.create_queue(QueueName=queue_name, Attributes=attributes or {})["QueueUrl"])
        made.append(url)
        return url

    yield make
    for url in made:
        sqs.delete_queue(QueueUrl=url)


def receive_all(url: str, wait_s: int = 0) -> list[dict[str, Any]]:
    """Every body on an SQS queue as JSON (consumes them)."""
    queue = SqsQueue(url)
    bodies = []
    while batch := queue.receive(10, wait_s, 30):
        for message in batch:
            bodies.append(json.loads(message.body))
            queue.delete(message)
    return bodies


@pytest.fixture
def worker_factory(work_root: Path) -> Callable[..., Worker]:
    def make(**flags: Any) -> Worker:
        defaults: dict[str, Any] = {
            "mode": "native",
            "base_command": ("python3", TOOL),
            "once": True,
            "work_root": work_root,
            "worker_id": f"test-{uuid.uuid4().hex[:8]}",
            "allow_local_files": True,
            "wait_time_s": 0,
        }
        config: WorkerConfig = build_config({**defaults, **flags}, {})
        return build_worker(config)

    return make
