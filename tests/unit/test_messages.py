from __future__ import annotations

import json
from pathlib import Path

import pytest

from lanworker.core.errors import InvalidMessage
from lanworker.message import command as messages

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed-message.json"


def seed() -> dict:
    return json.loads(SEED.read_text())


def test_seed_example_validates_and_parses_in_order() -> None:
    message = messages.parse(SEED.read_text())
    assert message.service == "my_service"
    command = message.work
    assert isinstance(command, messages.Command)
    assert [a.type for a in command.arguments] == ["input", "parameter", "output"]
    assert command.arguments[0].name == "--infile"
    assert command.stdin is not None and command.stdin.value == "raw input data"
    assert command.input == ("s3://bucket/path/to/some/input",)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"command": {}}', "'service' is a required property"),
        ('{"service": "s"}', "'command' is a required property"),
    ],
)
def test_malformed_messages_are_invalid(body: str, fragment: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        messages.parse(body)
    assert fragment in str(caught.value)


def test_unknown_argument_type_names_its_json_path() -> None:
    document = seed()
    document["command"]["arguments"][1]["type"] = "flag"
    problems = messages.validate_document(document)
    assert any(p.startswith("$.command.arguments[1].type:") and "'flag' is not one of" in p for p in problems)


def test_unknown_top_level_field_is_rejected() -> None:
    document = seed()
    document["argumnets"] = []
    assert any("argumnets" in p for p in messages.validate_document(document))


@pytest.mark.parametrize("uri", ["ftp://host/file", "gs://bucket/key", "s3:///no-bucket"])
def test_unsupported_input_schemes_are_invalid(uri: str) -> None:
    document = seed()
    document["command"]["arguments"][0]["value"] = uri
    problems = messages.validate_document(document)
    assert problems and problems[0].startswith("$.command.arguments[0].value:")


def test_http_is_readable_but_not_writable() -> None:
    document = seed()
    document["command"]["arguments"][0]["value"] = "https://example.invalid/input.txt"
    assert messages.validate_document(document) == []
    document["command"]["arguments"][2]["value"] = "https://example.invalid/output.txt"
    assert "not supported for an output" in messages.validate_document(document)[0]


def test_test_message_needs_no_command() -> None:
    message = messages.parse('{"test": true, "service": "s"}')
    assert message.test


def test_env_names_are_validated() -> None:
    document = seed()
    document["env"] = {"GOOD_NAME": "1", "bad-name": "2"}
    assert any("bad-name" in p for p in messages.validate_document(document))


def test_pipe_sink_value_must_be_null() -> None:
    document = seed()
    document["command"]["stdout"] = {"type": "pipe", "value": "something"}
    assert any(p.startswith("$.command.stdout.value") for p in messages.validate_document(document))


def test_parameter_values_become_strings_and_bare_flags_have_none() -> None:
    document = {
        "service": "s",
        "command": {
            "arguments": [
                {"type": "parameter", "name": "--n", "value": 3},
                {"type": "parameter", "name": "--verbose"},
                {"type": "parameter", "value": True},
            ]
        },
    }
    command = messages.from_document(document).work
    assert isinstance(command, messages.Command)
    arguments = command.arguments
    assert [a.value for a in arguments] == ["3", None, "true"]


def test_oversized_message_is_invalid() -> None:
    with pytest.raises(InvalidMessage, match="limit"):
        messages.parse(b'{"service": "' + b"x" * (messages.MAX_MESSAGE_BYTES + 1) + b'"}')


def test_messages_up_to_the_sqs_maximum_of_1_mib_are_read() -> None:
    """SQS has taken messages up to 1 MiB since 2025: one of 900 KB must run, not be dead-lettered."""
    body = json.dumps({"service": "s", "env": {"PAD": "x" * 900_000}, "command": {"arguments": []}})
    assert messages.parse(body.encode()).env["PAD"] == "x" * 900_000


def test_two_inputs_at_one_path_are_valid_and_staged_in_order() -> None:
    """As TESK does: applied in order, the later one wins (issue 20; it was a 400)."""
    from lanworker.pipeline.stage import input_waves

    task = {
        "service": "task",
        "executors": [{"image": "busybox", "command": ["cat", "/d/a"]}],
        "inputs": [
            {"path": "/d/a", "content": "1"},
            {"path": "/d/b", "content": "2"},
            {"path": "/d/a", "url": "s3://bucket/a"},
            {"path": "/e", "url": "s3://bucket/e/", "type": "DIRECTORY"},
            {"path": "/e/x", "content": "inside"},
        ],
    }
    assert messages.validate_document(task) == []
    container_task = messages.from_document(task).work
    assert isinstance(container_task, messages.ContainerTask)
    assert input_waves(container_task) == [[0, 1], [2, 3], [4]]


def test_a_bucket_is_not_an_object() -> None:
    def problems(**command: object) -> list[str]:
        return messages.validate_document({"service": "s", "command": {"arguments": [], **command}})

    assert problems(arguments=[{"type": "input", "value": "s3://bucket"}]) == [
        "$.command.arguments[0].value: 's3://bucket' names a bucket, not an object"
    ]
    assert problems(arguments=[{"type": "output", "value": "s3://bucket"}]) != []
    assert problems(stdin={"type": "uri", "value": "s3://bucket/"}) != []
    # A prefix may be a whole bucket.
    assert problems(arguments=[{"type": "input", "value": "s3://bucket/"}]) == []
    assert problems(input=["s3://bucket"], output=["s3://bucket/out/"]) == []
    task = {"service": "t", "executors": [{"image": "i", "command": ["x"]}]}
    file_input = {**task, "inputs": [{"path": "/in", "url": "s3://bucket"}]}
    assert messages.validate_document(file_input) == [
        "$.inputs[0].url: 's3://bucket' names a bucket, not an object"
    ]
    directory = {**task, "inputs": [{"path": "/in", "url": "s3://bucket", "type": "DIRECTORY"}]}
    assert messages.validate_document(directory) == []


def test_value_problems_name_each_bad_value_by_its_path() -> None:
    document = {
        "service": "s",
        "env": {"A\x00": "ok", "B": "x\udc80"},
        "command": {"arguments": [{"type": "parameter", "value": "fine"}, [1.5, float("inf"), "a\x00"]]},
    }
    assert messages.value_problems(document) == [
        "$.command.arguments[1][1]: inf is not a finite number",
        "$.command.arguments[1][2]: contains a NUL byte",
        "$.env (key 'A\\x00'): contains a NUL byte",
        "$.env.B: contains a lone surrogate (not valid Unicode)",
    ]
    assert messages.value_problems("a\x00") == ["$: contains a NUL byte"]
    assert messages.value_problems({"a": [[["x"]]]}, max_nesting=2) == ["$.a[0]: nested deeper than 2 levels"]
    assert messages.value_problems({"text": "é ü", "n": 1.0, "none": None}) == []
