"""Bad input of every kind gets a clear error in the result and the log, and is dead-lettered."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from lanworker.queues import SqsQueue
from tests.integration.conftest import receive_all


@pytest.fixture
def queues(queue_factory) -> dict[str, str]:
    return {"queue": queue_factory(), "dead": queue_factory(), "results": queue_factory()}


def run(worker_factory, queues: dict[str, str], body: str, **flags: Any) -> dict:
    SqsQueue(queues["queue"]).send(body)
    worker_factory(
        queue_url=queues["queue"],
        dead_letter_queue_url=queues["dead"],
        results_url=queues["results"],
        **flags,
    ).run()
    [result] = receive_all(queues["results"])
    return result


def dead_letters(url: str) -> list[Any]:
    return SqsQueue(url).receive(10, 1, 30)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("{this is not json", "not valid JSON"),
        (
            '{"service": "s", "command": {"arguments": [{"type": "flag", "value": "x"}]}}',
            "'flag' is not one of",
        ),
        ('{"service": "s", "command": {"arguments": [{"type": "input", "value": "ftp://h/x"}]}}', "ftp://"),
        (
            '{"service": "s", "command": {"arguments": [{"type": "input", "value": "s3://b/../../etc/passwd"}]}}',
            "could escape the work dir",
        ),
        ('{"service": "s", "command": {"output": ["s3://bucket/a/../../x"]}}', "could escape the work dir"),
        (
            '{"service": "s", "command": {"arguments": [{"type": "input", "value": "s3://bkt//etc/passwd"}]}}',
            "is absolute",
        ),
    ],
)
def test_invalid_messages_are_reported_and_dead_lettered(
    worker_factory, queues, body: str, fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        result = run(worker_factory, queues, body)
    assert result["state"] == "failed" and result["reason"] == "invalid-message"
    assert fragment in result["error"]
    assert fragment in caplog.text
    [letter] = dead_letters(queues["dead"])
    assert letter.body == body
    assert fragment in letter.attributes["lanworker-dead-letter-reason"]
    assert SqsQueue(queues["queue"]).receive(10, 0, 30) == []


def test_reply_to_receives_the_result_of_an_invalid_message(worker_factory, queues, queue_factory) -> None:
    reply = queue_factory()
    body = json.dumps({"service": "s", "reply_to": reply, "id": "job-42", "command": {"argumnets": []}})
    SqsQueue(queues["queue"]).send(body)
    worker_factory(queue_url=queues["queue"], dead_letter_queue_url=queues["dead"]).run()
    [result] = receive_all(reply)
    assert result["job_id"] == "job-42" and "argumnets" in result["error"]


def test_local_paths_are_refused_on_sqs_by_default(worker_factory, queues) -> None:
    body = json.dumps({"service": "s", "command": {"arguments": [{"type": "input", "value": "/etc/passwd"}]}})
    result = run(worker_factory, queues, body, allow_local_files=False)
    assert "disabled" in result["error"]
