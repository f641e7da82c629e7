from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lanworker.core.errors import ConfigError, InvalidMessage
from lanworker.translator.loop import check_rules, commands_for
from lanworker.translator.rules import glob_to_regex, load_rules, render_template
from lanworker.translator.s3events import ObjectEvent, parse_notification

ROOT = Path(__file__).resolve().parents[2]
GEN3 = ROOT / "examples" / "rules" / "gen3.yaml"
EVENTS = Path(__file__).parent / "events"


@pytest.mark.parametrize(
    "pattern, key, matches",
    [
        ("**", "a/b/c.txt", True),
        ("*.txt", "a.txt", True),
        ("*.txt", "dir/a.txt", False),
        ("incoming/**/*.csv", "incoming/x.csv", True),
        ("incoming/**/*.csv", "incoming/2026/11/x.csv", True),
        ("incoming/**/*.csv", "incoming/x.csv.bak", False),
        ("incoming/**/*.csv", "other/incoming/x.csv", False),
        ("user.yaml", "user.yaml", True),
        ("user.yaml", "old/user.yaml", False),
        ("file?.[ch]", "file1.c", True),
        ("file?.[!ch]", "file1.c", False),
    ],
)
def test_globs_are_anchored(pattern: str, key: str, matches: bool) -> None:
    assert bool(glob_to_regex(pattern).match(key)) is matches


def write_rules(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(document))
    return path


def rule(name: str = "r", **match: object) -> dict:
    return {
        "name": name,
        "match": {"bucket": "b", **match},
        "target": "local:/tmp/q.db#t",
        "command": {"service": "s", "command": {"arguments": [{"type": "input", "value": "{url}"}]}},
    }


def created(key: str, event: str = "ObjectCreated:Put", size: int = 10) -> ObjectEvent:
    return ObjectEvent("b", key, event, size=size, etag='"e"', sequencer="01", time="t")


def test_example_rules_pass_check() -> None:
    assert check_rules(load_rules(GEN3)) == []


def test_seed_flows_from_the_event_corpus() -> None:
    rules = load_rules(GEN3)
    [usersync] = commands_for(rules, (EVENTS / "sns-envelope.json").read_text(), Counter())
    assert usersync.rule.name == "usersync"  # and stop: true kept index-upload from firing
    [index] = commands_for(rules, (EVENTS / "raw-put-two-records.json").read_text(), Counter())
    message = json.loads(index.body)
    assert message["env"]["GUID"] == "0e6ebd3c-2cb5-4b65-9e85-3b5d6a28a6d3"
    assert message["command"]["arguments"][1]["value"].endswith("/my file (v2)+%.bam")
    [workflow] = commands_for(rules, (EVENTS / "eventbridge-created.json").read_text(), Counter())
    assert (
        json.loads(workflow.body)["command"]["arguments"][1]["value"]
        == "datapath=s3://sf-landing/events/2026/11/25/"
    )
    counts: Counter[str] = Counter()
    assert commands_for(rules, (EVENTS / "eventbridge-deleted.json").read_text(), counts) == []
    assert commands_for(rules, (EVENTS / "raw-removed.json").read_text(), counts) == []
    assert counts["unmatched"] == 2


def test_every_matching_rule_fires_in_order_unless_stop(tmp_path: Path) -> None:
    rules = load_rules(
        write_rules(tmp_path, {"rules": [rule("first", key="**"), rule("second", suffix=".txt")]})
    )
    assert [c.rule.name for c in rules.render(created("a.txt"))] == ["first", "second"]
    stopping = {"rules": [dict(rule("first", key="**"), stop=True), rule("second")]}
    assert [c.rule.name for c in load_rules(write_rules(tmp_path, stopping)).render(created("a.txt"))] == [
        "first"
    ]


def test_event_filter_size_bounds_and_ignore_prefixes(tmp_path: Path) -> None:
    document = {
        "ignore_prefixes": ["out/"],
        "rules": [
            rule("sized", min_size=5, max_size=100),
            dict(rule("deletes", events=["ObjectRemoved:*"]), ignore_prefixes=["keep/"]),
        ],
    }
    rules = load_rules(write_rules(tmp_path, document))
    assert [c.rule.name for c in rules.render(created("x", size=50))] == ["sized"]
    assert rules.render(created("x", size=500)) == []
    assert rules.render(created("out/x", size=50)) == []
    assert [c.rule.name for c in rules.render(created("x", "ObjectRemoved:Delete"))] == ["deletes"]
    assert rules.render(created("keep/x", "ObjectRemoved:Delete")) == []


def test_placeholders_and_regex_groups(tmp_path: Path) -> None:
    template = {
        "service": "s",
        "command": {
            "arguments": [
                {
                    "type": "parameter",
                    "value": "{bucket}|{key}|{url}|{dir_url}|{name}|{stem}|{ext}|{size}|{etag}|{event}|{time}|{run}|{{literal}}",
                }
            ]
        },
    }
    document = {"rules": [dict(rule(key_regex=r"data/(?P<run>\d+)/.*"), command=template)]}
    [command] = load_rules(write_rules(tmp_path, document)).render(created("data/42/reads.fq.gz"))
    value = json.loads(command.body)["command"]["arguments"][0]["value"]
    assert value == (
        "b|data/42/reads.fq.gz|s3://b/data/42/reads.fq.gz|s3://b/data/42/|reads.fq.gz|reads.fq|gz|10|e"
        "|ObjectCreated:Put|t|42|{literal}"
    )


def test_dedup_key_is_stable_per_object_version_and_rule(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path, {"rules": [rule("a"), rule("b")]}))
    first, second = rules.render(created("k"))
    again = rules.render(created("k"))[0]
    assert first.deduplication_key == again.deduplication_key != second.deduplication_key
    other_version = ObjectEvent("b", "k", "ObjectCreated:Put", sequencer="02")
    assert rules.render(other_version)[0].deduplication_key != first.deduplication_key
    assert json.loads(first.body)["id"].startswith("a-")


def test_invalid_rendering_is_found_by_check(tmp_path: Path) -> None:
    bad = dict(
        rule(),
        command={"service": "s", "command": {"arguments": [{"type": "input", "value": "ftp://{key}"}]}},
    )
    rules = load_rules(write_rules(tmp_path, {"rules": [bad]}))
    [problem] = check_rules(rules)
    assert "rule r renders an invalid command" in problem and "ftp://" in problem
    unknown = dict(rule(), command={"service": "{nope}"})
    with pytest.raises(InvalidMessage, match=r"unknown placeholder \{nope\}"):
        load_rules(write_rules(tmp_path, {"rules": [unknown]})).render(created("k"))


@pytest.mark.parametrize(
    "document, fragment",
    [
        ({"rules": [{"name": "no-match", "target": "q", "command": {}}]}, "rule 'no-match'"),
        ({"rules": [rule(key="a", key_regex="b")]}, "rule 'r'"),
        ({"rules": [dict(rule(), target="not-a-queue")]}, "neither a queue URL nor a name"),
        ({"rules": [rule(key_regex="(unclosed")]}, "bad key pattern"),
        ({"rules": [rule(), rule()]}, "duplicate rule names: r"),
    ],
)
def test_rules_errors_name_the_rule_and_field(tmp_path: Path, document: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_rules(write_rules(tmp_path, document))


def test_template_rendering_leaves_non_strings_alone() -> None:
    assert render_template({"a": [1, True, None, "{x}"]}, {"x": "y"}) == {"a": [1, True, None, "y"]}


def test_dry_run_corpus_parses() -> None:
    for path in EVENTS.glob("*.json"):
        parse_notification(path.read_text())
