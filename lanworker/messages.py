"""Command messages: parsing, schema validation, and the typed view the worker uses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema

from lanworker.errors import InvalidMessage

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
MAX_MESSAGE_BYTES = 256 * 1024  # the SQS limit; the local queue enforces it too

READABLE_SCHEMES = ("s3", "file", "http", "https")
WRITABLE_SCHEMES = ("s3", "file")


@cache
def load_schema(name: str) -> dict[str, Any]:
    path = SCHEMAS_DIR / name
    with path.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(name))


def json_path(error: jsonschema.ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def schema_errors(document: Any, schema_name: str) -> list[str]:
    """Every schema violation as 'JSONPATH: message', sorted by path for stable output."""
    errors = sorted(
        validator(schema_name).iter_errors(document), key=lambda e: list(map(str, e.absolute_path))
    )
    return [f"{json_path(err)}: {err.message}" for err in errors]


def uri_scheme(uri: str) -> str:
    """'s3', 'file', 'http', 'https', or 'file' for a plain local path."""
    head, sep, _ = uri.partition("://")
    if not sep:
        return "file"
    return head.lower()


@dataclass(frozen=True)
class Stream:
    type: Literal["pipe", "uri"]
    value: str | None = None


@dataclass(frozen=True)
class Argument:
    type: Literal["input", "output", "parameter"]
    name: str | None = None
    value: str | None = None

    @property
    def is_directory(self) -> bool:
        return self.type in ("input", "output") and bool(self.value) and str(self.value).endswith("/")


@dataclass(frozen=True)
class Command:
    stdin: Stream | None = None
    stdout: Stream | None = None
    stderr: Stream | None = None
    arguments: tuple[Argument, ...] = ()
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    on_exit_codes: tuple[int, ...] = ()
    delay_s: float = 0.0


@dataclass(frozen=True)
class CommandMessage:
    service: str
    test: bool = False
    queue: str | None = None
    id: str | None = None
    reply_to: str | None = None
    timeout_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy | None = None
    attempt: int = 1
    command: Command = field(default_factory=Command)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _stream(data: dict[str, Any] | None) -> Stream | None:
    if data is None:
        return None
    return Stream(type=data["type"], value=data.get("value"))


def _argument_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_uris(command: dict[str, Any]) -> list[str]:
    problems: list[str] = []

    def check(path: str, uri: str, writable: bool) -> None:
        scheme = uri_scheme(uri)
        allowed = WRITABLE_SCHEMES if writable else READABLE_SCHEMES
        if scheme not in allowed:
            usage = "an output" if writable else "an input"
            problems.append(
                f"{path}: scheme '{scheme}://' is not supported for {usage} "
                f"(use one of: {', '.join(s + '://' for s in allowed)} or a local path)"
            )
        elif scheme == "s3":
            bucket, _, _ = uri[len("s3://") :].partition("/")
            if not bucket:
                problems.append(f"{path}: '{uri}' has no bucket")

    for index, argument in enumerate(command.get("arguments", [])):
        if argument["type"] in ("input", "output"):
            check(f"$.command.arguments[{index}].value", argument["value"], argument["type"] == "output")
    for index, uri in enumerate(command.get("input", [])):
        check(f"$.command.input[{index}]", uri, writable=False)
    for index, uri in enumerate(command.get("output", [])):
        check(f"$.command.output[{index}]", uri, writable=True)
    stdin = command.get("stdin")
    if stdin and stdin["type"] == "uri":
        check("$.command.stdin.value", stdin["value"], writable=False)
    for name in ("stdout", "stderr"):
        sink = command.get(name)
        if sink and sink["type"] == "uri":
            check(f"$.command.{name}.value", sink["value"], writable=True)
    return problems


def validate_document(document: Any) -> list[str]:
    """All problems with a decoded message: schema errors first, then URI checks."""
    problems = schema_errors(document, "command.schema.json")
    if problems:
        return problems
    return _check_uris(document.get("command", {}))


def decode(body: str | bytes) -> Any:
    if isinstance(body, bytes):
        if len(body) > MAX_MESSAGE_BYTES:
            raise InvalidMessage(f"message is {len(body)} bytes, over the {MAX_MESSAGE_BYTES} limit")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidMessage(f"message is not UTF-8: {exc}") from exc
    if len(body.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message is over the {MAX_MESSAGE_BYTES} byte limit")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"message is not valid JSON: {exc}") from exc


def from_document(document: dict[str, Any]) -> CommandMessage:
    problems = validate_document(document)
    if problems:
        raise InvalidMessage("message does not match the command schema: " + "; ".join(problems), problems)
    command = document.get("command", {})
    retry = document.get("retry")
    return CommandMessage(
        service=document["service"],
        test=bool(document.get("test", False)),
        queue=document.get("queue"),
        id=document.get("id"),
        reply_to=document.get("reply_to"),
        timeout_s=document.get("timeout_s"),
        env=dict(document.get("env", {})),
        resources=dict(document.get("resources", {})),
        retry=RetryPolicy(
            attempts=retry["attempts"],
            on_exit_codes=tuple(retry.get("on_exit_codes", ())),
            delay_s=float(retry.get("delay_s", 0.0)),
        )
        if retry
        else None,
        attempt=int(document.get("attempt", 1)),
        command=Command(
            stdin=_stream(command.get("stdin")),
            stdout=_stream(command.get("stdout")),
            stderr=_stream(command.get("stderr")),
            arguments=tuple(
                Argument(type=a["type"], name=a.get("name"), value=_argument_value(a.get("value")))
                for a in command.get("arguments", [])
            ),
            input=tuple(command.get("input", [])),
            output=tuple(command.get("output", [])),
        ),
        raw=document,
    )


def parse(body: str | bytes) -> CommandMessage:
    """Decode and validate a message body; raises InvalidMessage with every problem found."""
    document = decode(body)
    if not isinstance(document, dict):
        raise InvalidMessage(f"message must be a JSON object, got {type(document).__name__}")
    return from_document(document)
