"""Job state events, JSON log lines that carry their job id, and progress of long transfers."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from lanworker import cli
from lanworker.queues import SqsQueue
from tests.helpers.aws_fixtures import TOOL, receive_all
from tests.helpers.processes import cli_env, start_cli, wait_until


def test_state_events_are_published_in_order(queue_factory, worker_factory) -> None:
    queue, events = queue_factory(), queue_factory()
    SqsQueue(queue).send(json.dumps({"id": "evented", "service": "tool", "command": {"arguments": []}}))
    SqsQueue(queue).send("{not json")
    worker_factory(queue_url=queue, events_url=events).run()
    published = receive_all(events)
    states = [e["state"] for e in published if e["job_id"] == "evented"]
    assert states == ["received", "staging", "running", "uploading", "succeeded"]
    assert all(e["worker_id"] and e["timestamp"] for e in published)
    assert any(e["state"] == "dead-lettered" for e in published if e["job_id"] != "evented")


def test_every_log_line_of_a_job_carries_its_job_id(
    moto_server, s3, bucket_factory, queue_factory, tmp_path
) -> None:
    bucket = bucket_factory()
    s3.put_object(Bucket=bucket, Key="in/a.txt", Body=b"a")
    queue = queue_factory()
    SqsQueue(queue).send(
        json.dumps(
            {
                "id": "logged-job",
                "service": "tool",
                "command": {
                    "input": [f"s3://{bucket}/in/nothing-here"],  # logs a warning from the staging module
                    "arguments": [{"type": "input", "name": "--infile", "value": f"s3://{bucket}/in/a.txt"}],
                },
            }
        )
    )
    log = tmp_path / "worker.log"
    worker = start_cli(
        "native",
        "--queue",
        queue,
        "--work-root",
        str(tmp_path / "work"),
        "--log-format",
        "json",
        "--once",
        "--wait-time-s",
        "1",
        "--",
        "python3",
        TOOL,
        env=cli_env(**moto_server.environment()),
        log_path=log,
    )
    assert worker.wait(timeout=60) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    during_job = [
        line
        for line in lines
        if "logged-job" in line["message"] or line["logger"] == "lanworker.pipeline.stage"
    ]
    assert any(line["logger"] == "lanworker.pipeline.stage" for line in during_job)
    assert all(line.get("job_id") == "logged-job" for line in during_job), during_job


def test_sigterm_exit_code_with_json_logs(tmp_path: Path) -> None:
    queue = f"local:{tmp_path / 'q.db'}#jobs"
    log = tmp_path / "worker.log"
    worker = start_cli(
        "native",
        "--queue",
        queue,
        "--work-root",
        str(tmp_path / "w"),
        "--log-format",
        "json",
        "--",
        "true",
        log_path=log,
    )
    wait_until(lambda: log.exists() and "listening" in log.read_text(), what="the worker to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == cli.EXIT_STOPPED
    assert all(json.loads(line)["level"] for line in log.read_text().splitlines())


def test_events_to_an_sns_topic(sqs, queue_factory, worker_factory) -> None:
    import boto3

    queue, subscriber = queue_factory(), queue_factory()
    sns = boto3.client("sns")
    topic = sns.create_topic(Name="lanworker-events")["TopicArn"]
    arn = sqs.get_queue_attributes(QueueUrl=subscriber, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    SqsQueue(queue).send(json.dumps({"id": "via-sns", "service": "tool", "command": {"arguments": []}}))
    worker_factory(queue_url=queue, events_url=topic).run()
    states = [e["state"] for e in receive_all(subscriber) if e["job_id"] == "via-sns"]
    assert states == ["received", "staging", "running", "uploading", "succeeded"]
