"""Every S3 event type, through every shape AWS delivers it, fires the same rule; every
malformed record is refused with a reason naming the field."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lanworker.core.config import build_config
from lanworker.core.errors import QueueUnreachable
from lanworker.queues import QueueCache
from lanworker.queues.base import Outgoing
from lanworker.testing import InMemoryQueue
from lanworker.translator.loop import Translator, translate_body
from lanworker.translator.rules import Rule, RuleSet
from lanworker.translator.s3events import MalformedEvent, parse_notification
from tests.unit.s3_event_corpus import BUCKET, EVENT_TYPES, KEY, corpus


def rule_for(event_name: str) -> RuleSet:
    command = {"service": "tool", "command": {"arguments": [{"type": "input", "value": "{url}"}]}}
    return RuleSet([Rule("only", BUCKET, "local:/unused#jobs", command, events=(f"s3:{event_name}",))], {})


@pytest.mark.parametrize(
    "kind, shape, body",
    corpus(),
    ids=lambda v: getattr(v, "name", v) if not isinstance(v, str) or len(v) < 40 else "",
)
def test_each_event_type_arrives_the_same_whichever_the_shape(kind, shape: str, body: str) -> None:
    [event] = parse_notification(body).events
    assert (event.bucket, event.key, event.event) == (BUCKET, KEY, kind.name)
    [command] = translate_body(rule_for(kind.name), body, Counter()).commands
    assert json.loads(command.body)["command"]["arguments"][0]["value"] == f"s3://{BUCKET}/{KEY}"
    others = [other.name for other in EVENT_TYPES if other.name != kind.name]
    for other in others:
        assert translate_body(rule_for(other), body, Counter()).commands == []


def test_every_event_type_can_be_named_in_a_rule_file(tmp_path: Path) -> None:
    from lanworker.translator.rules import load_rules

    names = [kind.name for kind in EVENT_TYPES] + [f"s3:{kind.name}" for kind in EVENT_TYPES]
    names += ["ObjectRestore:*", "LifecycleExpiration:*", "Replication:*", "ObjectTagging:*", "*"]
    rules = {
        "rules": [
            {
                "name": "all",
                "match": {"bucket": "b", "events": names},
                "target": "local:/q#jobs",
                "command": {},
            }
        ]
    }
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    assert load_rules(path).rules[0].events == tuple(names)


def record(**s3_object: Any) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": "k", **s3_object}},
    }


@pytest.mark.parametrize(
    "document, fragment",
    [
        (
            {"Records": [{**record(), "s3": {"bucket": "b", "object": {"key": "k"}}}]},
            "Records[0].s3.bucket must be an object",
        ),
        (
            {"Records": [{**record(), "s3": {"bucket": {"name": "b"}, "object": ["k"]}}]},
            "Records[0].s3.object must be an object",
        ),
        ({"Records": [record(eTag=5)]}, "Records[0].s3.object.eTag must be a non-empty string"),
        ({"Records": [record(size="12")]}, "Records[0].s3.object.size must be a non-negative integer"),
        ({"Records": [record(size=True)]}, "size must be a non-negative integer"),
        ({"Records": [record(key=7)]}, "Records[0].s3.object.key"),
        ({"Records": [{**record(), "eventName": 3}]}, "Records[0].eventName"),
        ({"Records": [{**record(), "eventTime": {"t": 1}}]}, "Records[0].eventTime"),
        (
            {
                "source": "aws.s3",
                "detail-type": "Object Created",
                "detail": {"bucket": {"name": "b"}, "object": "k"},
            },
            "detail.object must be an object",
        ),
        ({"source": "aws.s3", "detail-type": "Object Created", "detail": "x"}, "$.detail must be an object"),
        (
            {
                "source": "aws.s3",
                "detail-type": "Bucket Created",
                "detail": {"bucket": {"name": "b"}, "object": {"key": "k"}},
            },
            "not an S3 object event",
        ),
        (
            {"Records": [{"messageId": "1", "body": "{}", "eventSource": "aws:sqs"}]},
            "Lambda batch record (SQS body",
        ),
        ({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "{}"}}]}, "Lambda batch record (SNS"),
        ({"Type": "Notification", "Message": 5}, "SNS Message must be a JSON string"),
    ],
)
def test_malformed_records_name_the_field(document: dict[str, Any], fragment: str) -> None:
    with pytest.raises(MalformedEvent) as refused:
        parse_notification(json.dumps(document))
    assert fragment in str(refused.value)


def test_size_rules_never_crash_on_a_string_size() -> None:
    rules = RuleSet([Rule("big", "b", "local:/q#jobs", {"service": "s", "command": {}}, min_size=10)], {})
    with pytest.raises(MalformedEvent, match="size"):
        translate_body(rules, json.dumps({"Records": [record(size="99")]}), Counter())


def test_the_live_translator_dead_letters_a_malformed_record_at_once(tmp_path: Path) -> None:
    events = InMemoryQueue("memory://events")
    message_id = events.send(json.dumps({"Records": [record(eTag=5)]}))
    config = build_config({"mode": "client", "once": True, "wait_time_s": 0}, {})
    Translator(rule_for("ObjectCreated:*"), events, QueueCache(), config).run()
    assert events.ops(message_id) == ["send", "receive", "dead-letter"]
    assert "eTag" in events.dead_letters[0].reason


def test_why_nothing_was_produced() -> None:
    rules = rule_for("ObjectCreated:*")
    removed = next(k for k in EVENT_TYPES if k.name == "ObjectRemoved:Delete")
    from tests.unit.s3_event_corpus import raw

    [note] = translate_body(rules, raw(removed), Counter()).notes
    assert "no rule fires on ObjectRemoved:Delete events" in note
    other_bucket = json.dumps({"Records": [record()]})
    [note] = translate_body(rules, other_bucket, Counter()).notes
    assert "no rule matches bucket 'b'" in note
    ignoring = RuleSet(rules.rules, {}, ("k",))
    [note] = translate_body(ignoring, other_bucket, Counter()).notes
    assert "ignored prefix" in note
    [note] = translate_body(rules, json.dumps({"Event": "s3:TestEvent"}), Counter()).notes
    assert "TestEvent" in note


def test_an_event_whose_command_the_target_refuses_is_dead_lettered_not_redelivered() -> None:
    events, jobs = InMemoryQueue("memory://events"), InMemoryQueue("memory://jobs")
    jobs.max_bytes = 200  # every command of this rule is larger
    message_id = events.send(json.dumps({"Records": [record()]}))
    config = build_config({"mode": "client", "once": True, "wait_time_s": 0}, {})
    rules = RuleSet(
        [Rule("fat", "b", "memory://jobs", {"service": "s", "env": {"PAD": "x" * 300}, "command": {}})], {}
    )
    Translator(rules, events, QueueCache(lambda _url: jobs), config).run()
    assert events.ops(message_id) == ["send", "receive", "dead-letter"]
    [letter] = events.dead_letters
    assert "rule fat" in letter.reason and "longer than 200 bytes" in letter.reason
    assert jobs.messages == {}


class CountingQueue(InMemoryQueue):
    """Records the size of each send_batch call; `down` makes every send unreachable."""

    def __init__(self, url: str, down: bool = False) -> None:
        super().__init__(url)
        self.batches: list[int] = []
        self.down = down

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        self.batches.append(len(messages))
        if self.down:
            return [QueueUnreachable(f"{self.url} is down")] * len(messages)
        return super().send_batch(messages)


def test_a_batch_of_events_shares_sends_and_each_event_keeps_its_own_outcome() -> None:
    events = InMemoryQueue("memory://events")
    targets = {
        "memory://jobs": CountingQueue("memory://jobs"),
        "memory://fat": CountingQueue("memory://fat"),
        "memory://down": CountingQueue("memory://down", down=True),
    }
    targets["memory://fat"].max_bytes = 200
    command = {"service": "s", "command": {"arguments": [{"type": "input", "value": "{url}"}]}}
    rules = RuleSet(
        [
            Rule("all", "b", "memory://jobs", command),
            Rule("fat", "b", "memory://fat", {**command, "env": {"PAD": "x" * 300}}, prefix="big/"),
            Rule("mirror", "b", "memory://down", command, prefix="m/"),
        ],
        {},
    )
    keys = ["a.txt", "big/x", None, "b.txt", "m/1"]
    ids = [events.send(json.dumps({"Records": [record(key=key) if key else record(eTag=5)]})) for key in keys]
    config = build_config({"mode": "client", "once": True, "wait_time_s": 0}, {})
    Translator(rules, events, QueueCache(targets.__getitem__), config).run()
    assert [events.ops(i)[-1] for i in ids] == ["delete", "dead-letter", "dead-letter", "delete", "release"]
    assert targets["memory://jobs"].batches == [4]  # every event's command in one call: a, big/x, b, m/1
    assert {json.loads(m.body)["command"]["arguments"][0]["value"] for m in targets["memory://jobs"].sent.values()} == {
        f"s3://b/{key}" for key in ("a.txt", "big/x", "b.txt", "m/1")
    }  # fmt: skip
    reasons = sorted(letter.reason for letter in events.dead_letters)
    assert "eTag" in reasons[0] and "rule fat" in reasons[1] and "longer than 200 bytes" in reasons[1]
