"""The compiled fast check and jsonschema must give the same verdict on every message.

`messages.schema_errors` accepts a document when the fast check (fastjsonschema) does, so
a document the fast check accepts and jsonschema refuses would slip through. Thousands
of variants of real messages - every value replaced by values of every type, every key
dropped, an unknown key added everywhere - are judged by both.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from lanworker.message.command import fast_check, validator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 1.5, 2**40, "", "x", "s3://b/k", "file:///tmp/x",
    "-" * 300, [], ["x"], [{}], {}, {"type": "pipe"}, {"value": "x"},
]  # fmt: skip

NATIVE = {
    "id": "job-1",
    "service": "tool",
    "queue": "jobs",
    "reply_to": "s3://bucket/replies/",
    "timeout_s": 60,
    "attempt": 2,
    "env": {"MODE": "fast"},
    "resources": {"memory_mb": 512, "cpus": 1.5, "pids": 64},
    "retry": {"attempts": 3, "delay_s": 5, "on_exit_codes": [1, 2]},
    "upload_on_failure": True,
    "command": {
        "stdin": {"type": "uri", "value": "s3://bucket/in.txt"},
        "stdout": {"type": "uri", "value": "s3://bucket/out.txt"},
        "stderr": {"type": "pipe", "value": None},
        "arguments": [
            {"type": "input", "name": "--in", "value": "s3://bucket/a.txt"},
            {"type": "input", "value": "s3://bucket/dir/"},
            {"type": "parameter", "name": "--n", "value": 3},
            {"type": "parameter", "value": "-v"},
            {"type": "output", "name": "--out", "value": "s3://bucket/o/"},
        ],
        "input": ["s3://bucket/prefix/"],
        "output": ["s3://bucket/results/"],
    },
}
TASK = {
    "id": "task-1",
    "service": "tes",
    "inputs": [
        {"path": "/inputs/greeting.txt", "content": "hello\n"},
        {"path": "/inputs/data", "url": "s3://bucket/data/", "type": "DIRECTORY"},
    ],
    "volumes": ["/vol"],
    "executors": [
        {"image": "busybox", "command": ["sh", "-c", "true"], "env": {"A": "1"}, "ignore_error": True},
        {
            "image": "busybox",
            "command": ["cat"],
            "stdin": "/inputs/greeting.txt",
            "stdout": "/vol/o",
            "workdir": "/vol",
        },
    ],
    "outputs": [
        {"path": "/vol/o", "url": "s3://bucket/o"},
        {"path": "/vol/*.txt", "path_prefix": "/vol/", "url": "s3://bucket/glob/"},
        {"path": "/vol", "url": "s3://bucket/dir", "type": "DIRECTORY"},
    ],
}


def samples() -> list[Any]:
    found = [NATIVE, TASK, {"service": "true", "command": {"arguments": []}}]
    for path in [EXAMPLES / "seed-message.json", *sorted((EXAMPLES / "local").glob("*.json"))]:
        found.append(json.loads(path.read_text()))
    return found


def paths(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*here, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*here, index))


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    changed = copy.deepcopy(document)
    parent = changed
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return changed


def variants(document: Any) -> Iterator[Any]:
    yield document
    for path in paths(document):
        for value in ODD_VALUES:
            yield replaced(document, path, value)
        if path:
            changed = copy.deepcopy(document)
            parent = changed
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
            yield changed
    for path in paths(document):
        target = document
        for part in path:
            target = target[part]
        if isinstance(target, dict):
            yield replaced(document, path, {**target, "unexpected": 1})


def fast_accepts(document: Any) -> bool:
    try:
        fast_check("command.schema.json")(document)
        return True
    except fastjsonschema.JsonSchemaValueException:
        return False


@pytest.mark.parametrize("index", range(len(samples())))
def test_fast_check_and_jsonschema_agree(index: int) -> None:
    full = validator("command.schema.json")
    assert full.is_valid(samples()[index]), "each sample is a valid message, so its variants sit on the edge"
    judged = 0
    for document in variants(samples()[index]):
        before = json.dumps(document, sort_keys=True)
        assert fast_accepts(document) == full.is_valid(document), json.dumps(document)[:500]
        assert json.dumps(document, sort_keys=True) == before, "the fast check must not change the document"
        judged += 1
    assert judged > 50


def test_the_shipped_validator_is_the_schema_compiled_and_a_stale_one_is_never_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lanworker.message import schemacode

    shipped = schemacode.precompiled("command.schema.json")
    assert shipped is not None and shipped.__module__ == "lanworker.message.compiled.command"
    edited = schemacode.schema_text("command.schema.json").replace('"type"', '"type" ', 1)
    monkeypatch.setattr(schemacode, "schema_text", lambda name: edited)
    assert schemacode.precompiled("command.schema.json") is None  # the digest no longer matches
