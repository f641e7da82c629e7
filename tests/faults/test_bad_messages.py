"""Poison messages, hostile keys and retry policies: nothing lost, nothing escapes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lanworker.queues import LocalQueue, SqsQueue
from tests.faults.conftest import tally, tool_job
from tests.helpers.aws_fixtures import receive_all
from tests.helpers.faults import summary
from tests.helpers.moto import free_port
from tests.helpers.processes import cli_env, run_cli


def by_job(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        found.setdefault(result["job_id"], []).append(result)
    return found


def test_poison_messages_are_dead_lettered_while_valid_ones_complete(
    queue_factory, worker_factory, request, moto_server
) -> None:
    queue, dead, results = queue_factory(), queue_factory(), queue_factory()
    image = request.getfixturevalue("busybox_image")
    poison = [
        "{not json",
        json.dumps({"service": "tool", "command": {"arguments": [{"type": "widget", "value": "x"}]}}),
        json.dumps(
            {
                "id": "cannot-start",
                "service": image,
                "command": {"arguments": [{"type": "parameter", "value": "/no/such/program"}]},
            }
        ),
    ]
    valid = [
        json.dumps(
            {
                "id": f"valid-{i}",
                "service": image,
                "command": {"arguments": [{"type": "parameter", "value": "true"}]},
            }
        )
        for i in range(4)
    ]
    sender = SqsQueue(queue)
    for body in [valid[0], poison[0], valid[1], poison[1], valid[2], poison[2], valid[3]]:
        sender.send(body)
    worker_factory(
        mode="docker",
        base_command=(),
        allow_images=("lanworker-test/*",),
        queue_url=queue,
        dead_letter_queue_url=dead,
        results_url=results,
    ).run()
    found = by_job(receive_all(results))
    letters = {
        m.body: m.attributes["lanworker-dead-letter-reason"] for m in SqsQueue(dead).receive(10, 1, 30)
    }
    assert set(letters) == set(poison), "bodies intact"
    assert "not valid JSON" in letters[poison[0]] and "'widget' is not one of" in letters[poison[1]]
    assert "/no/such/program" in letters[poison[2]]
    valid_ids = [f"valid-{i}" for i in range(4)]
    assert all(found[job][0]["state"] == "succeeded" for job in valid_ids)
    completed, lost, duplicates = tally(valid_ids, found)
    summary("poison-messages", len(valid_ids) + len(poison), completed + len(letters), lost, duplicates)
    assert lost == 0


def test_oversized_and_infrastructure_poison_on_the_local_queue(tmp_path: Path, worker_factory) -> None:
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs", max_receives=2)
    oversized = json.dumps({"service": "tool", "padding": "x" * 1_100_000})
    unreachable = f"http://127.0.0.1:{free_port()}/input.txt"  # nothing listens: a transient failure, forever
    infrastructure = json.dumps(
        {
            "id": "never-reachable",
            "service": "tool",
            "command": {"arguments": [{"type": "input", "name": "--infile", "value": unreachable}]},
        }
    )
    for body in (oversized, infrastructure, tool_job("fine")):
        queue.send(body)
    results = queue.sibling("results")
    # Each --once run handles a message at most once, and a message released after an
    # infrastructure failure comes back only after a backoff: keep running workers until
    # the receive counter has moved it to the dead letters.
    deadline = time.monotonic() + 60
    while len(queue.list_dead_letters(10)) < 2 and time.monotonic() < deadline:
        worker_factory(
            queue_url=queue.url,
            results_url=results.url,
            max_receives=2,
            retry_budget_s=2.0,
            allow_private_http=True,  # the unreachable address is a loopback one
        ).run()
        time.sleep(0.5)
    letters = {letter.body: letter.reason for letter in queue.list_dead_letters(10)}
    assert set(letters) == {oversized, infrastructure}
    assert "over the 1048576 byte limit" in letters[oversized]
    assert "received 2 times" in letters[infrastructure] and "last error:" in letters[infrastructure]
    assert "127.0.0.1" in letters[infrastructure]

    listed = run_cli("dead-letters", "--queue", queue.url, env=cli_env())
    assert listed.returncode == 0
    assert {json.loads(line)["body"] for line in listed.stdout.splitlines()} == {oversized, infrastructure}
    redriven = run_cli("dead-letters", "--queue", queue.url, "--redrive", env=cli_env())
    assert "re-queued 2 message(s)" in redriven.stdout
    assert queue.counts() == {"visible": 2, "in_flight": 0, "dead_letters": 0}
    summary("poison-local-queue", 3, 3, 0, 0)


def test_dead_letters_cli_on_sqs(moto_server, queue_factory, worker_factory) -> None:
    queue, dead = queue_factory(), queue_factory()
    SqsQueue(queue).send("{broken")
    worker_factory(queue_url=queue, dead_letter_queue_url=dead).run()
    env = cli_env(**moto_server.environment())
    listed = run_cli("dead-letters", "--queue", queue, "--dead-letter-queue", dead, env=env)
    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert letter["body"] == "{broken" and "not valid JSON" in letter["reason"]
    assert (
        "re-queued 1"
        in run_cli("dead-letters", "--queue", queue, "--dead-letter-queue", dead, "--redrive", env=env).stdout
    )
    assert [m.body for m in SqsQueue(queue).receive(10, 1, 30)] == ["{broken"]


def test_dead_lettering_within_what_the_dead_letter_queue_takes(
    moto_server, queue_factory, worker_factory
) -> None:
    """Ten sender attributes plus our two would be refused (SQS takes ten): the reason
    stays, sender attributes give way. A message larger than the dead-letter queue takes
    is released for the redrive policy, never deleted."""
    queue = queue_factory()
    dead = queue_factory(attributes={"MaximumMessageSize": str(256 * 1024)})
    attributes = {f"a{index}": str(index) for index in range(10)}
    SqsQueue(queue).send("{broken", attributes=attributes)
    worker_factory(queue_url=queue, dead_letter_queue_url=dead).run()
    [letter] = SqsQueue(dead).receive(10, 1, 30)
    assert letter.body == "{broken" and "not valid JSON" in letter.attributes["lanworker-dead-letter-reason"]
    assert len(letter.attributes) == 10 and letter.attributes["a0"] == "0"
    large = "{" + "x" * 300_000  # invalid, and over the dead-letter queue's 256 KiB
    SqsQueue(queue).send(large)
    worker_factory(queue_url=queue, dead_letter_queue_url=dead).run()
    assert SqsQueue(dead).receive(10, 1, 30) == []
    [kept] = SqsQueue(queue).receive(10, 2, 30)
    assert kept.body == large  # released whole for the queue's own redrive policy


def test_hostile_keys_are_rejected_and_nothing_escapes(
    s3, bucket_factory, queue_factory, worker_factory, tmp_path, work_root
) -> None:
    bucket = bucket_factory()
    for key in (
        "listed/ok.txt",
        "listed/../../../escaped.txt",
        "listed/a/../../x",
        "listed/..",
        "listed//abs",
        "listed/back\\..\\slash",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"hostile")
    messages = {
        "dotdot": f"s3://{bucket}/../x",
        "nested-dotdot": f"s3://{bucket}/a/../../x",
        "bare-dotdot": f"s3://{bucket}/..",
        "absolute": f"s3://{bucket}//etc/passwd",
        "backslash": f"s3://{bucket}/a\\..\\..\\x",
    }
    queue, results = queue_factory(), queue_factory()
    sender = SqsQueue(queue)
    for job_id, uri in messages.items():
        sender.send(
            json.dumps(
                {
                    "id": job_id,
                    "service": "tool",
                    "command": {"arguments": [{"type": "input", "name": "--infile", "value": uri}]},
                }
            )
        )
    sender.send(
        json.dumps(
            {"id": "listed-prefix", "service": "tool", "command": {"input": [f"s3://{bucket}/listed/"]}}
        )
    )
    sender.send(
        json.dumps(
            {
                "id": "planted-symlink",
                "service": "tool",
                "command": {
                    "arguments": [
                        {"type": "output", "name": "--outfile", "value": f"s3://{bucket}/out/link.txt"}
                    ]
                },
            }
        )
    )
    before = {p for p in tmp_path.rglob("*") if work_root not in p.parents}
    worker_factory(
        queue_url=queue, results_url=results, base_command=("sh", "-c", 'ln -s /etc/hostname "$2"', "plant")
    ).run()
    found = by_job(receive_all(results))
    for job_id in [*messages, "listed-prefix"]:
        assert found[job_id][0]["reason"] == "invalid-message", found[job_id]
    assert found["planted-symlink"][0]["reason"] == "unsafe-output"
    assert "out/link.txt" not in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    after = {p for p in tmp_path.rglob("*") if work_root not in p.parents}
    assert after == before, "nothing written outside the job dirs"
    assert not any(work_root.glob("*/*"))
    assert not Path("/escaped.txt").exists() and not os.path.exists(tmp_path.parent / "escaped.txt")
    job_ids = [*messages, "listed-prefix", "planted-symlink"]
    summary("hostile-keys", len(job_ids), *tally(job_ids, found))


def test_retry_policy_on_exit_code_3(queue_factory, worker_factory, tmp_path) -> None:
    queue, results = queue_factory(), queue_factory()
    counter = tmp_path / "attempts"
    SqsQueue(queue).send(
        tool_job(
            "flaky",
            ("--counter", str(counter)),
            ("--fail-until-attempt", 3),
            retry={"attempts": 3, "on_exit_codes": [3], "delay_s": 0},
        )
    )
    worker_factory(queue_url=queue, results_url=results).run()
    found = by_job(receive_all(results))
    states = [(r["state"], r["attempt"], r["exit_code"]) for r in found["flaky"]]
    assert states == [("retrying", 1, 3), ("retrying", 2, 3), ("succeeded", 3, 0)]
    assert counter.read_text() == "3"
    summary("retry-policy", 1, *tally(["flaky"], found))


def test_retry_policy_exhausted_and_other_codes_not_retried(queue_factory, worker_factory, tmp_path) -> None:
    queue, results = queue_factory(), queue_factory()
    SqsQueue(queue).send(tool_job("always-3", ("--exit", 3), retry={"attempts": 2, "on_exit_codes": [3]}))
    SqsQueue(queue).send(tool_job("exit-4", ("--exit", 4), retry={"attempts": 5, "on_exit_codes": [3]}))
    worker_factory(queue_url=queue, results_url=results).run()
    found = by_job(receive_all(results))
    assert [(r["state"], r["attempt"]) for r in found["always-3"]] == [("retrying", 1), ("failed", 2)]
    assert [(r["state"], r["attempt"]) for r in found["exit-4"]] == [("failed", 1)]
