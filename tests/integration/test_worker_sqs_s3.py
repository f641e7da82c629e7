"""The worker end to end against moto_server over HTTP: SQS in, S3 staging, results out."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lanworker.core.errors import StaleReceipt
from lanworker.loop.worker import Worker
from lanworker.queues import Outgoing, SqsQueue
from tests.integration.conftest import receive_all

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed-message.json"


def put(s3: Any, bucket: str, key: str, body: bytes | str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)


def get(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def run_one(worker_factory: Callable[..., Worker], queue: str, results: str, body: str, **flags: Any) -> dict:
    SqsQueue(queue).send(body)
    worker = worker_factory(queue_url=queue, results_url=results, **flags)
    worker.run()
    [result] = receive_all(results)
    return result


def test_seed_message_end_to_end(s3, bucket_factory, queue_factory, worker_factory) -> None:
    bucket = bucket_factory("bucket")
    put(s3, bucket, "path/to/input.txt", "hello seed\n")
    put(s3, bucket, "path/to/some/input.shp", "shp")
    put(s3, bucket, "path/to/some/input.dbf", "dbf")
    put(s3, bucket, "path/to/some/inputs-are-prefix-matched.txt", "x")
    queue, results = queue_factory(), queue_factory()

    result = run_one(worker_factory, queue, results, SEED.read_text())

    assert result["state"] == "succeeded", result
    assert result["exit_code"] == 0
    assert result["stdout"]["text"] == "stdin='raw input data' arg1=myargvalue\n"
    output = get(s3, bucket, "path/to/output.txt").decode()
    assert output.startswith("HELLO SEED\n")
    assert "input.dbf,input.shp,inputs-are-prefix-matched.txt" in output
    assert get(s3, bucket, "path/to/some/output.dbf") == b"dbf for output.txt"
    assert get(s3, bucket, "path/to/some/output-extra.txt") == b"extra"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "path/to/some/unrelated.txt" not in keys
    stderr = get(s3, bucket, "path/to/stderr.txt").decode()
    assert stderr.startswith("diagnostics from tool\n")
    uploaded = {o["uri"]: o for o in result["outputs"]}
    assert uploaded["s3://bucket/path/to/output.txt"]["sha256"] == hashlib.sha256(output.encode()).hexdigest()
    assert uploaded["s3://bucket/path/to/output.txt"]["md5"] == hashlib.md5(output.encode()).hexdigest()
    assert set(result["timings_s"]) == {"staging", "running", "uploading"}
    assert SqsQueue(queue).receive(10, 0, 30) == []


def test_stdin_from_s3_and_stdout_to_s3(s3, bucket_factory, queue_factory, worker_factory) -> None:
    bucket = bucket_factory()
    put(s3, bucket, "stdin.txt", "streamed stdin")
    message = {
        "service": "tool",
        "command": {
            "stdin": {"type": "uri", "value": f"s3://{bucket}/stdin.txt"},
            "stdout": {"type": "uri", "value": f"s3://{bucket}/logs/stdout.txt"},
            "stderr": {"type": "pipe", "value": None},
            "arguments": [{"type": "parameter", "name": "--arg1", "value": "v"}],
        },
    }
    result = run_one(worker_factory, queue_factory(), queue_factory(), json.dumps(message))
    assert result["state"] == "succeeded", result
    assert get(s3, bucket, "logs/stdout.txt") == b"stdin='streamed stdin' arg1=v\n"
    assert result["stderr"]["text"].startswith("diagnostics from tool")
    assert result["stdout"] == {"bytes": 30, "spooled": True}


def test_directory_outputs_and_unicode_keys(s3, bucket_factory, queue_factory, worker_factory) -> None:
    bucket = bucket_factory()
    key = "dir with space/ünïcode+plus %25 file.txt"
    put(s3, bucket, key, "unicode body")
    message = {
        "service": "tool",
        "command": {
            "arguments": [
                {"type": "input", "name": "--infile", "value": f"s3://{bucket}/{key}"},
                {"type": "output", "name": "--outfile", "value": f"s3://{bucket}/out/ü result.txt"},
                {"type": "output", "name": "--outdir", "value": f"s3://{bucket}/out/tree/"},
            ]
        },
    }
    result = run_one(worker_factory, queue_factory(), queue_factory(), json.dumps(message))
    assert result["state"] == "succeeded", result
    assert get(s3, bucket, "out/ü result.txt").startswith(b"UNICODE BODY")
    assert get(s3, bucket, "out/tree/a.txt") == b"a"
    assert get(s3, bucket, "out/tree/nested/b.txt") == b"b"


def test_directory_input_downloads_a_whole_prefix(s3, bucket_factory, queue_factory, worker_factory) -> None:
    bucket = bucket_factory()
    for index in range(1200):  # more than one list page
        put(s3, bucket, f"many/{index:05d}.txt", str(index))
    # Folder markers, as the S3 console's "Create folder" leaves them: directories, not files.
    for marker in ("many/", "many/empty/", "many/sub/"):
        put(s3, bucket, marker, "")
    put(s3, bucket, "many/sub/c.txt", "c")
    message = {
        "service": "tool",
        "command": {"arguments": [{"type": "input", "name": "--arg1", "value": f"s3://{bucket}/many/"}]},
    }
    result = run_one(
        worker_factory, queue_factory(), queue_factory(), json.dumps(message), transfer_concurrency=16
    )
    assert result["state"] == "succeeded", result
    assert len(result["inputs"]) == 1201
    assert result["stdout"]["text"].endswith("/in/s3/" + bucket + "/many/\n")


def test_test_message_answers_listening(queue_factory, worker_factory) -> None:
    result = run_one(
        worker_factory,
        queue_factory(),
        queue_factory(),
        '{"test": true, "service": "svc", "queue": "docker"}',
    )
    assert result["state"] == "listening"
    assert result["service"] == "svc" and result["queue"] == "docker"
    assert result["version"] and result["host"] and result["worker_id"]


def test_failed_command_is_reported_and_deleted(s3, bucket_factory, queue_factory, worker_factory) -> None:
    bucket = bucket_factory()
    queue = queue_factory()
    message = {
        "service": "tool",
        "command": {
            "stderr": {"type": "uri", "value": f"s3://{bucket}/err.txt"},
            "arguments": [
                {"type": "parameter", "name": "--exit", "value": 7},
                {"type": "output", "name": "--outfile", "value": f"s3://{bucket}/never.txt"},
            ],
        },
    }
    result = run_one(worker_factory, queue, queue_factory(), json.dumps(message))
    assert (result["state"], result["exit_code"], result["reason"]) == ("failed", 7, "exit-code")
    assert "exited with code 7" in result["error"]
    assert get(s3, bucket, "err.txt").startswith(b"diagnostics")  # stderr uploaded whatever the exit code
    assert SqsQueue(queue).receive(10, 0, 30) == []


def test_timeout_kills_the_process_group(queue_factory, worker_factory) -> None:
    message = {
        "service": "tool",
        "timeout_s": 1,
        "command": {"arguments": [{"type": "parameter", "name": "--sleep", "value": 30}]},
    }
    result = run_one(worker_factory, queue_factory(), queue_factory(), json.dumps(message))
    assert (result["state"], result["reason"]) == ("failed", "timeout")
    assert result["timings_s"]["running"] < 15


def test_missing_input_object_fails_the_job(bucket_factory, queue_factory, worker_factory) -> None:
    bucket = bucket_factory()
    message = {
        "service": "tool",
        "command": {
            "arguments": [{"type": "input", "name": "--infile", "value": f"s3://{bucket}/does/not/exist.txt"}]
        },
    }
    result = run_one(worker_factory, queue_factory(), queue_factory(), json.dumps(message))
    assert (result["state"], result["reason"]) == ("failed", "missing-object")
    assert f"s3://{bucket}/does/not/exist.txt" in result["error"]


def test_missing_output_is_named(bucket_factory, queue_factory, worker_factory) -> None:
    bucket = bucket_factory()
    message = {
        "service": "tool",
        "command": {
            "arguments": [
                {"type": "output", "name": "--never-written", "value": f"s3://{bucket}/missing.txt"}
            ]
        },
    }
    result = run_one(
        worker_factory,
        queue_factory(),
        queue_factory(),
        json.dumps(message),
        base_command=("python3", "-c", "pass"),
    )
    assert result["reason"] == "missing-output"
    assert "--never-written" in result["error"] and "missing.txt" in result["error"]


def test_pipe_capture_is_capped(queue_factory, worker_factory) -> None:
    message = {
        "service": "tool",
        "command": {
            "stdout": {"type": "pipe", "value": None},
            "arguments": [{"type": "parameter", "name": "--stdout-bytes", "value": 50000}],
        },
    }
    result = run_one(
        worker_factory, queue_factory(), queue_factory(), json.dumps(message), capture_bytes=1000
    )
    assert result["stdout"]["truncated"] is True
    assert len(result["stdout"]["text"]) == 1000 and result["stdout"]["bytes"] > 50000


def test_results_go_out_in_batches_and_a_bad_one_fails_alone(queue_factory) -> None:
    """SendMessageBatch: 25 results in three calls' worth, on a standard and a FIFO queue;
    an entry over SQS's size limit fails on its own and the rest arrive."""
    for attributes in ({}, {"FifoQueue": "true"}):
        name = f"batch-{uuid.uuid4().hex[:8]}" + (".fifo" if attributes else "")
        queue = SqsQueue(queue_factory(name, attributes))
        outgoing = [Outgoing(json.dumps({"n": n}), {"lanworker-job-id": f"job-{n}"}) for n in range(25)]
        outgoing.insert(7, Outgoing("x" * (1024 * 1024 + 1)))  # over any SQS message limit
        errors = queue.send_batch(outgoing)
        assert [index for index, error in enumerate(errors) if error is not None] == [7]
        received = []
        while batch := queue.receive(10, 0, 30):
            received += [json.loads(message.body)["n"] for message in batch]
            queue.delete_batch(batch)
        assert sorted(received) == list(range(25))


def test_a_result_larger_than_the_results_queue_allows_arrives_cut(queue_factory, worker_factory) -> None:
    """A results queue that takes 64 KiB messages, a command that prints 500 KB into the
    result: the result arrives, its stdout cut to fit and marked so, and the job is not
    run again (an oversized send is no stale receipt and no transient failure)."""
    message = {
        "service": "tool",
        "command": {
            "stdout": {"type": "pipe", "value": None},
            "arguments": [{"type": "parameter", "name": "--stdout-bytes", "value": 500_000}],
        },
    }
    results = queue_factory(attributes={"MaximumMessageSize": str(64 * 1024)})
    jobs = queue_factory()
    result = run_one(worker_factory, jobs, results, json.dumps(message))
    assert result["state"] == "succeeded" and result["cut"] == ["stdout"]
    assert result["stdout"]["truncated"] is True and result["stdout"]["bytes"] > 500_000
    assert 0 < len(result["stdout"]["text"]) <= 64 * 1024
    assert SqsQueue(jobs).depth() == {"visible": 0, "in_flight": 0}


def test_heartbeats_extend_in_batches_and_a_stale_receipt_is_told_apart(queue_factory) -> None:
    queue = SqsQueue(queue_factory())
    for n in range(12):
        queue.send(f"job {n}")
    held = []
    while len(held) < 12 and (batch := queue.receive(10, 1, 30)):
        held += batch
    queue.delete(held[3])  # its receipt is no longer any good
    errors = queue.change_visibility_batch(held, 60)
    assert isinstance(errors[3], StaleReceipt)
    assert [index for index, error in enumerate(errors) if error is not None] == [3]


def test_a_fifo_message_is_received_with_its_group(queue_factory) -> None:
    queue = queue_factory(f"grouped-{uuid.uuid4().hex[:8]}.fifo", {"FifoQueue": "true"})
    SqsQueue(queue).send('{"service": "s"}', group_id="tenant-7", deduplication_id="d1")
    [message] = SqsQueue(queue).receive(1, 1, 30)
    assert message.group_id == "tenant-7"  # what a retry is sent back with
