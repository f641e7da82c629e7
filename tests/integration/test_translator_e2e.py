"""S3 notifications (raw and through SNS) become commands that a worker runs, all over HTTP."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from lanworker import cli
from lanworker.queues import SqsQueue
from tests.helpers.moto import MotoServer
from tests.helpers.processes import cli_env, run_cli
from tests.integration.conftest import receive_all


def queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


@pytest.fixture
def rules_file(tmp_path: Path):
    def make(bucket: str, jobs_url: str) -> Path:
        path = tmp_path / "rules.yaml"
        path.write_text(
            json.dumps(
                {
                    "queues": {"jobs": jobs_url},
                    "ignore_prefixes": ["processed/"],
                    "rules": [
                        {
                            "name": "uppercase-incoming",
                            "match": {"bucket": bucket, "key": "incoming/**"},
                            "target": "jobs",
                            "command": {
                                "service": "tool",
                                "command": {
                                    "arguments": [
                                        {"type": "input", "name": "--infile", "value": "{url}"},
                                        {
                                            "type": "output",
                                            "name": "--outfile",
                                            "value": "s3://{bucket}/processed/{stem}.upper.{ext}",
                                        },
                                    ]
                                },
                            },
                        }
                    ],
                }
            )
        )
        return path

    return make


def translate_once(moto_server: MotoServer, rules: Path, events_url: str, dead_url: str) -> None:
    completed = run_cli(
        "translate",
        "--rules",
        str(rules),
        "--queue",
        events_url,
        "--dead-letter-queue",
        dead_url,
        "--once",
        "--wait-time-s",
        "1",
        "--log-format",
        "json",
        env=cli_env(**moto_server.environment()),
    )
    assert completed.returncode == cli.EXIT_OK, completed.stderr


@pytest.mark.parametrize("delivery", ["raw", "sns"])
def test_upload_to_output_end_to_end(
    delivery: str, moto_server, s3, sqs, bucket_factory, queue_factory, worker_factory, rules_file
) -> None:
    bucket = bucket_factory()
    events, dead, jobs = queue_factory(), queue_factory(), queue_factory()
    if delivery == "raw":
        config = {
            "QueueConfigurations": [{"QueueArn": queue_arn(sqs, events), "Events": ["s3:ObjectCreated:*"]}]
        }
    else:
        sns = boto3.client("sns")
        topic = sns.create_topic(Name=f"{bucket}-topic")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, events))
        config = {"TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    key = "incoming/dir with space/ünï+code %.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"from an s3 event\n")
    rules = rules_file(bucket, jobs)

    translate_once(moto_server, rules, events, dead)

    [command_message] = SqsQueue(jobs).receive(10, 1, 30)
    command = json.loads(command_message.body)
    assert command["command"]["arguments"][0]["value"] == f"s3://{bucket}/{key}"
    assert len(command_message.attributes["lanworker-dedup-key"]) == 64
    SqsQueue(jobs).release(command_message)
    results = queue_factory()
    worker_factory(queue_url=jobs, results_url=results).run()
    [result] = receive_all(results)
    assert result["state"] == "succeeded", result
    output_key = "processed/ünï+code %.upper.txt"
    assert s3.get_object(Bucket=bucket, Key=output_key)["Body"].read().startswith(b"FROM AN S3 EVENT\n")

    # The output's own notification is ignored (no loop); nothing is left behind.
    translate_once(moto_server, rules, events, dead)
    assert SqsQueue(jobs).receive(10, 0, 30) == []
    assert SqsQueue(events).receive(10, 0, 30) == []
    assert SqsQueue(dead).receive(10, 0, 30) == []


def test_malformed_event_messages_are_dead_lettered(moto_server, queue_factory, rules_file) -> None:
    events, dead, jobs = queue_factory(), queue_factory(), queue_factory()
    bodies = [
        "not json at all",
        '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "k"}}}]}',
    ]
    for body in bodies:
        SqsQueue(events).send(body)
    translate_once(moto_server, rules_file("any-bucket", jobs), events, dead)
    letters = SqsQueue(dead).receive(10, 1, 30)
    assert sorted(m.body for m in letters) == sorted(bodies)
    reasons = " ".join(m.attributes["lanworker-dead-letter-reason"] for m in letters)
    assert "not valid JSON" in reasons and "s3.bucket must be an object" in reasons
    assert SqsQueue(events).receive(10, 0, 30) == []


def test_unreachable_target_releases_the_event(moto_server, s3, queue_factory, rules_file, tmp_path) -> None:
    events, dead = queue_factory(), queue_factory()
    missing_target = events.rsplit("/", 1)[0] + "/no-such-queue"
    SqsQueue(events).send(
        json.dumps(
            {
                "Records": [
                    {
                        "eventVersion": "2.1",
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "b1"}, "object": {"key": "incoming/x"}},
                    }
                ]
            }
        )
    )
    translate_once(moto_server, rules_file("b1", missing_target), events, dead)
    [still_there] = SqsQueue(events).receive(10, 1, 30)
    assert still_there.receive_count >= 1
    assert SqsQueue(dead).receive(10, 0, 30) == []


def test_a_command_the_target_refuses_dead_letters_its_event(moto_server, queue_factory, tmp_path) -> None:
    """SQS refuses a command larger than the target's MaximumMessageSize: the event goes to
    the dead-letter queue with the reason at once, instead of coming back until redrive."""
    events, dead = queue_factory(), queue_factory()
    jobs = queue_factory(attributes={"MaximumMessageSize": "1024"})
    rules = tmp_path / "rules.json"
    command = {"service": "tool", "env": {"PAD": "x" * 2000}, "command": {}}
    rules.write_text(
        json.dumps(
            {"rules": [{"name": "padded", "match": {"bucket": "b1"}, "target": jobs, "command": command}]}
        )
    )
    body = json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "b1"}, "object": {"key": "incoming/x", "size": 1}},
                }
            ]
        }
    )
    SqsQueue(events).send(body)
    translate_once(moto_server, rules, events, dead)
    [letter] = SqsQueue(dead).receive(10, 1, 30)
    assert letter.body == body
    reason = letter.attributes["lanworker-dead-letter-reason"]
    assert "rule padded" in reason and "refused the message" in reason
    assert SqsQueue(events).receive(10, 0, 30) == []
    assert SqsQueue(jobs).receive(10, 0, 30) == []


def test_check_and_dry_run_work_offline(tmp_path: Path) -> None:
    completed = run_cli("translate", "--check", "examples/rules/gen3.yaml")
    assert completed.returncode == 0 and "3 rule(s), ok" in completed.stdout
    event = Path(__file__).resolve().parents[1] / "unit" / "events" / "eventbridge-created.json"
    completed = run_cli("translate", "--dry-run", "--rules", "examples/rules/gen3.yaml", str(event))
    [line] = completed.stdout.splitlines()
    assert json.loads(line)["rule"] == "success-marker"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - name: broken\n    match: {bucket: b}\n    target: local:/tmp/x.db\n"
        "    command: {service: s, command: {arguments: [{type: output, value: 'http://{key}'}]}}\n"
    )
    completed = run_cli("translate", "--check", str(bad))
    assert (
        completed.returncode == cli.EXIT_CONFIG
        and "rule broken renders an invalid command" in completed.stdout
    )


def test_fifo_target_drops_a_redelivered_event(moto_server, queue_factory, rules_file) -> None:
    events, dead = queue_factory(), queue_factory()
    jobs = queue_factory(f"jobs-{uuid.uuid4().hex[:8]}.fifo", {"FifoQueue": "true"})
    event = json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "b2"}, "object": {"key": "incoming/x", "sequencer": "0A"}},
                }
            ]
        }
    )
    SqsQueue(events).send(event)
    SqsQueue(events).send(event)  # the same S3 change delivered twice (at-least-once)
    translate_once(moto_server, rules_file("b2", jobs), events, dead)
    commands = SqsQueue(jobs).receive(10, 1, 30)
    assert len(commands) == 1, "MessageDeduplicationId made SQS drop the duplicate"
    assert SqsQueue(events).receive(10, 0, 30) == []


def test_many_records_go_out_in_batches_each_once(moto_server, queue_factory, rules_file) -> None:
    """Twelve records in one event, and four more events, four at once: each command once,
    sent ten per SendMessageBatch to a FIFO queue (which needs each one's group and id)."""
    events, dead = queue_factory(), queue_factory()
    jobs = queue_factory(f"jobs-{uuid.uuid4().hex[:8]}.fifo", {"FifoQueue": "true"})
    keys = [f"incoming/{event}-{index}.txt" for event in range(5) for index in range(12 if event == 0 else 1)]
    records = {
        key: {
            "eventVersion": "2.1",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b3"}, "object": {"key": key, "sequencer": f"{n:04X}"}},
        }
        for n, key in enumerate(keys)
    }
    SqsQueue(events).send(json.dumps({"Records": [records[key] for key in keys[:12]]}))
    for key in keys[12:]:
        SqsQueue(events).send(json.dumps({"Records": [records[key]]}))
    completed = run_cli(
        "translate", "--rules", str(rules_file("b3", jobs)), "--queue", events, "--dead-letter-queue", dead,
        "--once", "--wait-time-s", "1", "--concurrency", "4", "--log-format", "json",
        env=cli_env(**moto_server.environment()),
    )  # fmt: skip
    assert completed.returncode == cli.EXIT_OK, completed.stderr
    values = sorted(body["command"]["arguments"][0]["value"] for body in receive_all(jobs))
    assert values == sorted(f"s3://b3/{key}" for key in keys)
    assert SqsQueue(events).receive(10, 0, 30) == [] and SqsQueue(dead).receive(10, 0, 30) == []
