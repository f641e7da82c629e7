from __future__ import annotations

import json
from pathlib import Path

import pytest

from lanworker.translator.s3events import MalformedEvent, parse_notification

EVENTS = Path(__file__).parent / "events"


def load(name: str) -> str:
    return (EVENTS / name).read_text()


def test_raw_notification_with_several_records_and_encoded_keys() -> None:
    notification = parse_notification(load("raw-put-two-records.json"))
    first, second = notification.events
    assert first.key == "0e6ebd3c-2cb5-4b65-9e85-3b5d6a28a6d3/my file (v2)+%.bam"
    assert (first.bucket, first.event, first.size, first.sequencer) == (
        "gen3-upload",
        "ObjectCreated:Put",
        1024,
        "0055AED6DCD90281E5",
    )
    assert second.key == "deep/a/b/c/d/ünicøde name.txt"
    assert second.event == "ObjectCreated:CompleteMultipartUpload" and second.version_id == "v-123"
    assert first.identity == "0055AED6DCD90281E5" and second.identity == "v-123"


def test_sns_envelope_is_unwrapped() -> None:
    [event] = parse_notification(load("sns-envelope.json")).events
    assert (event.bucket, event.key, event.event) == ("gen3-bucket", "user.yaml", "ObjectCreated:Put")


def test_sns_raw_delivery_is_the_s3_event_itself() -> None:
    envelope = json.loads(load("sns-envelope.json"))
    [event] = parse_notification(envelope["Message"]).events
    assert event.key == "user.yaml"


def test_eventbridge_created_and_deleted() -> None:
    [created] = parse_notification(load("eventbridge-created.json")).events
    assert (created.bucket, created.key, created.event) == (
        "sf-landing",
        "events/2026/11/25/_SUCCESS",
        "ObjectCreated:Put",
    )
    assert created.etag == "d41d8cd98f00b204e9800998ecf8427e" and created.version_id == "ro5.Z6f3"
    [deleted] = parse_notification(load("eventbridge-deleted.json")).events
    assert deleted.event == "ObjectRemoved:Delete"


def test_eventbridge_keys_are_taken_as_delivered() -> None:
    document = json.loads(load("eventbridge-created.json"))
    document["detail"]["object"]["key"] = "a+b/c%20d.txt"
    [event] = parse_notification(json.dumps(document)).events
    assert event.key == "a+b/c%20d.txt"


def test_test_event_is_recognised() -> None:
    notification = parse_notification(load("test-event.json"))
    assert notification.is_test and notification.events == ()


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"Records": []}', "no records"),
        (
            '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "k"}}}]}',
            "s3.bucket must be an object",
        ),
        (
            '{"Records": [{"eventVersion": "3.0", "eventName": "x", "s3": {}}]}',
            "unsupported eventVersion '3.0'",
        ),
        ('{"hello": "world"}', "not an S3 event notification"),
        ('{"Type": "Notification", "Message": "{oops"}', "not valid JSON"),
    ],
)
def test_malformed_messages(body: str, fragment: str) -> None:
    with pytest.raises(MalformedEvent, match=fragment):
        parse_notification(body)
