"""S3 or SQS unreachable for a few seconds while jobs stage, run and upload."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lanworker.queues import SqsQueue
from tests.faults.conftest import tally, wait_for_results
from tests.helpers.aws_fixtures import receive_all
from tests.helpers.faults import summary
from tests.helpers.moto import MotoServer
from tests.helpers.proxy import FlakyProxy


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(moto_server.port)
    yield flaky
    flaky.close()


def outage(proxy: FlakyProxy, start_after_s: float, duration_s: float) -> threading.Thread:
    def run() -> None:
        time.sleep(start_after_s)
        proxy.down()
        time.sleep(duration_s)
        proxy.up()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_worker_with_outage(worker: Any, proxy: FlakyProxy, start_after_s: float, duration_s: float) -> None:
    cut = outage(proxy, start_after_s, duration_s)
    worker.run()
    cut.join()


def test_s3_down_mid_staging(monkeypatch, proxy, s3, bucket_factory, queue_factory, worker_factory) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    bucket = bucket_factory()
    payload = b"staged through an outage\n" * 4000
    s3.put_object(Bucket=bucket, Key="in/data.txt", Body=payload)
    queue, results = queue_factory(), queue_factory()
    SqsQueue(queue).send(
        json.dumps(
            {
                "id": "s3-down-staging",
                "service": "tool",
                "command": {
                    "arguments": [
                        {"type": "input", "name": "--infile", "value": f"s3://{bucket}/in/data.txt"},
                        {"type": "output", "name": "--outfile", "value": f"s3://{bucket}/out/data.txt"},
                    ]
                },
            }
        )
    )
    proxy.down()
    threading.Timer(3.0, proxy.up).start()
    worker_factory(queue_url=queue, results_url=results).run()
    [result] = receive_all(results)
    assert result["state"] == "succeeded", result
    assert result["inputs"][0]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert proxy.refused > 0, "staging must have met the outage"
    summary("s3-down-mid-staging", 1, *tally(["s3-down-staging"], {"s3-down-staging": [result]}))


def test_s3_down_mid_upload_leaves_no_partial_object(
    monkeypatch, proxy, s3, bucket_factory, queue_factory, worker_factory, tmp_path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    bucket = bucket_factory()
    big = tmp_path / "big.bin"
    big.write_bytes(b"0123456789abcdef" * (40 * 1024 * 1024 // 16))  # multipart: over the 16 MiB threshold
    queue, results = queue_factory(), queue_factory()
    SqsQueue(queue).send(
        json.dumps(
            {
                "id": "s3-down-upload",
                "service": "tool",
                "command": {
                    "arguments": [
                        {"type": "parameter", "name": "--sleep", "value": 2},
                        {"type": "input", "name": "--infile", "value": str(big)},
                        {"type": "output", "name": "--outfile", "value": f"s3://{bucket}/out/big.txt"},
                    ]
                },
            }
        )
    )
    worker = worker_factory(queue_url=queue, results_url=results, allow_local_files=True)
    run_worker_with_outage(worker, proxy, start_after_s=1.0, duration_s=4.0)
    [result] = receive_all(results)
    assert result["state"] == "succeeded", result
    [uploaded] = result["outputs"]
    body = s3.get_object(Bucket=bucket, Key="out/big.txt")["Body"].read()
    assert len(body) == uploaded["size"] and hashlib.sha256(body).hexdigest() == uploaded["sha256"]
    assert proxy.refused + proxy.cut > 0, "the upload must have met the outage"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["out/big.txt"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    summary("s3-down-mid-upload", 1, *tally(["s3-down-upload"], {"s3-down-upload": [result]}))


def test_sqs_down_while_jobs_run(monkeypatch, proxy, queue_factory, worker_factory) -> None:
    queue, results = queue_factory(), queue_factory()
    # botocore sends SQS requests to the endpoint, whatever host the queue URL names.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.endpoint)
    job_ids = [f"sqs-down-{index}" for index in range(3)]
    for job_id in job_ids:
        SqsQueue(queue).send(
            json.dumps(
                {
                    "id": job_id,
                    "service": "tool",
                    "command": {"arguments": [{"type": "parameter", "name": "--sleep", "value": 6}]},
                }
            )
        )
    worker = worker_factory(
        queue_url=queue, results_url=results, concurrency=3, visibility_timeout_s=8, heartbeat_interval_s=1.0
    )
    run_worker_with_outage(worker, proxy, start_after_s=2.0, duration_s=3.0)
    found: dict[str, list[dict[str, Any]]] = {}
    for result in receive_all(results):
        found.setdefault(result["job_id"], []).append(result)
    completed, lost, duplicates = tally(job_ids, found)
    summary("sqs-down-while-running", len(job_ids), completed, lost, duplicates)
    assert proxy.refused + proxy.cut > 0, "the outage must have hit the worker's SQS calls"
    assert lost == 0 and all(
        r[0]["state"] == "succeeded" and r[0]["receive_count"] == 1 for r in found.values()
    )
    assert SqsQueue(queue).receive(10, 0, 30) == []


def test_receive_loop_survives_an_sqs_outage(monkeypatch, proxy, queue_factory, worker_factory) -> None:
    queue, results = queue_factory(), queue_factory()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.endpoint)
    worker = worker_factory(queue_url=queue, results_url=results, once=False, wait_time_s=1)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    time.sleep(1)
    proxy.down()
    time.sleep(5)
    errors_during_outage = worker.metrics.receive_errors.value()
    proxy.up()
    SqsQueue(queue).send(json.dumps({"id": "after-outage", "service": "tool", "command": {"arguments": []}}))
    found = wait_for_results(results, ["after-outage"], 60)
    worker.request_shutdown()
    runner.join(timeout=60)
    assert errors_during_outage > 0 or proxy.refused > 0, "the outage must have hit the receive loop"
    assert not runner.is_alive()
    summary("sqs-down-while-idle", 1, *tally(["after-outage"], found))
    assert found["after-outage"][0]["state"] == "succeeded"


def test_docker_engine_down_then_back(
    monkeypatch, busybox_image, queue_factory, worker_factory, tmp_path
) -> None:
    engine = FlakyProxy(target_socket="/var/run/docker.sock", listen_socket=str(tmp_path / "docker.sock"))
    monkeypatch.setenv("DOCKER_HOST", engine.endpoint)
    queue, results = queue_factory(), queue_factory()
    SqsQueue(queue).send(
        json.dumps(
            {
                "id": "engine-outage",
                "service": busybox_image,
                "command": {
                    "stdout": {"type": "pipe", "value": None},
                    "arguments": [
                        {"type": "parameter", "value": "echo"},
                        {"type": "parameter", "value": "engine is back"},
                    ],
                },
            }
        )
    )
    worker = worker_factory(
        mode="docker",
        base_command=(),
        allow_images=("lanworker-test/*",),
        queue_url=queue,
        results_url=results,
        once=False,
        wait_time_s=1,
    )
    engine.down()
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    time.sleep(3)  # the job meets the outage and is released with a backoff
    engine.up()
    found = wait_for_results(results, ["engine-outage"], 60)
    worker.request_shutdown()
    runner.join(timeout=60)
    engine.close()
    assert engine.refused > 0, "the outage must have hit the worker's docker calls"
    summary("docker-engine-down", 1, *tally(["engine-outage"], found))
    [result] = found["engine-outage"]
    assert result["state"] == "succeeded" and result["stdout"]["text"] == "engine is back\n"
    assert result["receive_count"] == 2
