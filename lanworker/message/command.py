"""Command messages: parsing, schema validation, and the typed view the worker uses."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import fastjsonschema

from lanworker.core.errors import InvalidMessage
from lanworker.message.schemacode import OPTIONS, precompiled

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

MAX_MESSAGE_BYTES = 1024 * 1024  # the largest message SQS takes (1 MiB since 2025): larger is refused unread
MAX_INT_DIGITS = 4300  # as CPython's default int-from-text limit, but worded and held here
MAX_NESTING = 32  # no message needs more; deeper documents are refused before the schema runs

READABLE_SCHEMES = ("s3", "file", "http", "https")
WRITABLE_SCHEMES = ("s3", "file")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema from package data (the top-level `schemas/` links to it). Whether each is
    a valid 2020-12 schema is checked by the tests, not at every start-up (150 ms)."""
    text = resources.files("lanworker").joinpath("schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def validator(name: str) -> Draft202012Validator:
    """jsonschema, imported when first needed: it explains refusals (and checks the
    rules and services files), so a worker fed valid messages never loads it."""
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema(name))


@cache
def fast_check(name: str) -> Callable[[Any], Any]:
    """The schema compiled to Python (fastjsonschema): 10-20x faster than jsonschema on the
    valid documents that are most of a queue. It only says yes or no; any no is explained
    by jsonschema. The schemas use only keywords both read alike, which a test checks on
    thousands of variants of real messages. Shipped compiled (`schemacode`) unless the
    schema changed since."""
    return precompiled(name) or fastjsonschema.compile(load_schema(name), **OPTIONS)


def json_path(error: ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def schema_errors(document: Any, schema_name: str) -> list[str]:
    """Every schema violation as 'JSONPATH: message', sorted by path for stable output."""
    try:
        fast_check(schema_name)(document)
        return []
    except fastjsonschema.JsonSchemaValueException as refusal:
        fast_refusal = f"{refusal.name}: {refusal.message}"
    errors = sorted(
        validator(schema_name).iter_errors(document), key=lambda e: list(map(str, e.absolute_path))
    )
    # Never let a disagreement pass a document: the faster check's refusal stands alone.
    return [f"{json_path(err)}: {err.message}" for err in errors] or [fast_refusal]


def uri_scheme(uri: str) -> str:
    """'s3', 'file', 'http', 'https', or 'file' for a plain local path."""
    head, sep, _ = uri.partition("://")
    if not sep:
        return "file"
    return head.lower()


def local_path(uri: str) -> Path:
    """The filesystem path of a file:// URI or plain path; ValueError for another scheme
    (which would otherwise become a relative path named after it)."""
    if uri_scheme(uri) != "file":
        raise ValueError(f"{uri!r} is not a local path (s3://, file:// and paths are)")
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        return Path(
            unquote(parts.netloc + parts.path)
            if parts.netloc not in ("", "localhost")
            else unquote(parts.path)
        )
    return Path(uri)


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
class TaskExecutor:
    """One step of a container task: an image and its full argv (the entrypoint replaced)."""

    image: str
    command: tuple[str, ...]
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ignore_error: bool = False


@dataclass(frozen=True)
class TaskInput:
    path: str  # absolute, inside the container
    url: str | None = None
    content: str | None = None
    is_directory: bool = False


@dataclass(frozen=True)
class TaskOutput:
    path: str  # absolute, inside the container; may hold POSIX wildcards
    url: str
    path_prefix: str | None = None
    is_directory: bool = False

    @property
    def has_wildcards(self) -> bool:
        return any(char in self.path for char in "*?[")


@dataclass(frozen=True)
class ContainerTask:
    """The other job shape (GA4GH TES shaped): executors run in order in one workspace,
    inputs placed at container paths, outputs collected from them."""

    executors: tuple[TaskExecutor, ...]
    inputs: tuple[TaskInput, ...] = ()
    outputs: tuple[TaskOutput, ...] = ()
    volumes: tuple[str, ...] = ()
    upload_on_failure: bool = False


@dataclass(frozen=True)
class CommandMessage:
    """One message: what every job has (its service, id, retry policy, env, ...) and its
    work, one of the two job shapes: a `Command` (ordered arguments and streams, run by
    either executor) or a `ContainerTask`."""

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
    work: Command | ContainerTask = field(default_factory=Command)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


OUTPUT_STREAMS: tuple[Literal["stdout", "stderr"], ...] = ("stdout", "stderr")


def stream_spec(message: CommandMessage, name: Literal["stdin", "stdout", "stderr"]) -> Stream | None:
    """Where a command's stream comes from or goes (a container task's are files)."""
    return getattr(message.work, name) if isinstance(message.work, Command) else None


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


MAX_SEGMENT_BYTES = 255  # NAME_MAX: a longer key segment cannot be a file name


def key_problem(key: str) -> str | None:
    """Why an object key cannot become a relative path beneath a job dir, or None."""
    if not key:
        return "empty object key"
    if "\x00" in key or "\\" in key:
        return f"key {key!r} contains a NUL byte or a backslash"
    if key.startswith("/"):
        return f"key {key!r} is absolute"
    for segment in key.rstrip("/").split("/"):
        if segment in ("", ".", ".."):
            return f"key {key!r} has an empty, '.' or '..' segment and could escape the work dir"
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            return (
                f"key segment {segment[:40]!r}... is over {MAX_SEGMENT_BYTES} bytes, too long for a file name"
            )
    return None


def _uri_problems(path: str, uri: str, writable: bool, an_object: bool = False) -> list[str]:
    """an_object: the URI must name one object, not a bucket (a prefix may be a bucket)."""
    scheme = uri_scheme(uri)
    allowed = WRITABLE_SCHEMES if writable else READABLE_SCHEMES
    if scheme not in allowed:
        usage = "an output" if writable else "an input"
        return [
            f"{path}: scheme '{scheme}://' is not supported for {usage} "
            f"(use one of: {', '.join(s + '://' for s in allowed)} or a local path)"
        ]
    bucket, _, key = uri[len("s3://") :].partition("/")
    if scheme == "s3" and not bucket:
        return [f"{path}: '{uri}' has no bucket"]
    if scheme == "s3" and an_object and not key:
        return [f"{path}: '{uri}' names a bucket, not an object"]
    problem = key_problem(key) if scheme == "s3" and key.rstrip("/") else None
    return [f"{path}: {problem}"] if problem else []


def _check_uris(command: Any) -> list[str]:
    """The command's URIs, wherever they can be read: also in a document the schema refuses
    for other reasons, so that one pass reports every problem."""
    problems: list[str] = []
    if not isinstance(command, dict):
        return problems

    def check(path: str, uri: Any, writable: bool, an_object: bool = True) -> None:
        if isinstance(uri, str):
            problems.extend(_uri_problems(path, uri, writable, an_object))

    def items(name: str) -> list[Any]:
        value = command.get(name)
        return value if isinstance(value, list) else []

    for index, argument in enumerate(items("arguments")):
        if isinstance(argument, dict) and argument.get("type") in ("input", "output"):
            value = argument.get("value")
            where = f"$.command.arguments[{index}].value"
            writable = argument["type"] == "output"
            check(where, value, writable, an_object=not (isinstance(value, str) and value.endswith("/")))
    for index, uri in enumerate(items("input")):  # prefixes
        check(f"$.command.input[{index}]", uri, writable=False, an_object=False)
    for index, uri in enumerate(items("output")):
        check(f"$.command.output[{index}]", uri, writable=True, an_object=False)
    for name in ("stdin", "stdout", "stderr"):
        stream = command.get(name)
        if isinstance(stream, dict) and stream.get("type") == "uri":
            check(f"$.command.{name}.value", stream.get("value"), writable=name != "stdin")
    return problems


def value_problems(document: Any, max_nesting: int = MAX_NESTING) -> list[str]:
    """Values no command can carry, whatever the schema says: nesting deeper than
    max_nesting, NUL bytes and lone surrogates in strings or keys, non-finite numbers.

    Iterative, so a hostile document cannot exhaust the stack here either. A value's JSON
    path is spelled out only for containers and for values with a problem: the usual
    document has none, and every job is checked.
    """
    problems: list[str] = []
    stack: list[tuple[str, Any, int]] = [("$", document, 0)]
    while stack and len(problems) < 20:
        path, value, depth = stack.pop()
        if not isinstance(value, (dict, list)):
            problem = _scalar_problem(value)
            problems += [f"{path}: {problem}"] if problem else []
            continue
        if depth >= max_nesting:
            problems.append(f"{path}: nested deeper than {max_nesting} levels")
            continue
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str) and (problem := _string_problem(key)):
                problems.append(f"{path} (key {key[:40]!r}): {problem}")
            if isinstance(item, (dict, list)) or _scalar_problem(item):
                stack.append((f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]", item, depth + 1))
    return sorted(problems)


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return _string_problem(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL byte"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def _check_task(document: dict[str, Any]) -> list[str]:
    """URIs and container paths of a container task: absolute, normalised, no '..'."""
    problems: list[str] = []

    def path_problem(where: str, path: str) -> None:
        parts = path.split("/")[1:]
        if any(part in ("", ".", "..") for part in parts) and path != "/":
            problems.append(f"{where}: {path!r} must be a normalised absolute path (no '.', '..' or '//')")

    for index, item in enumerate(document.get("inputs", [])):
        path_problem(f"$.inputs[{index}].path", item["path"])  # two at one path: the later wins
        if "url" in item:
            a_file = item.get("type", "FILE") == "FILE"
            problems.extend(_uri_problems(f"$.inputs[{index}].url", item["url"], False, a_file))
    for index, item in enumerate(document.get("outputs", [])):
        path_problem(f"$.outputs[{index}].path", item["path"].rstrip("/") or "/")
        wildcards = any(char in item["path"] for char in "*?[")
        a_file = item.get("type", "FILE") == "FILE" and not wildcards
        problems.extend(_uri_problems(f"$.outputs[{index}].url", item["url"], True, a_file))
        if wildcards and not item.get("path_prefix"):
            problems.append(f"$.outputs[{index}]: a path with wildcards needs a path_prefix")
        if wildcards and not item["path"].startswith(item.get("path_prefix") or "/"):
            problems.append(f"$.outputs[{index}].path_prefix: must be a prefix of path")
    for index, volume in enumerate(document.get("volumes", [])):
        path_problem(f"$.volumes[{index}]", volume.rstrip("/") or "/")
    for index, executor in enumerate(document.get("executors", [])):
        for name in ("workdir", "stdin", "stdout", "stderr"):
            if name in executor:
                path_problem(f"$.executors[{index}].{name}", executor[name])
    return problems


def validate_document(document: Any) -> list[str]:
    return checked_document(document)[0]


def checked_document(document: Any) -> tuple[list[str], bool]:
    """All problems with a decoded message, in one pass: unusable values (alone: nothing
    else can be read safely), else schema errors with the URI checks of what can be read,
    and a container task's checks once the schema holds; and whether it holds (so that
    `message_of` can read the document)."""
    problems = value_problems(document)
    if problems:
        return problems, False
    schema = schema_errors(document, "command.schema.json")
    uris = _check_uris(document.get("command")) if isinstance(document, dict) else []
    if schema:
        return schema + uris, False
    return uris + _check_task(document), True


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
        return json.loads(
            body, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"message is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidMessage("message is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer over Python's 4300-digit limit, NaN
        raise InvalidMessage(f"message is not usable JSON: {exc}") from None


def _bounded_int(text: str) -> int:
    """Our own limit on integer literals, the same on every Python (3.10's and 3.11's int()
    word their 4300-digit refusals differently; older ones have none)."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"a number of {digits} digits, over the {MAX_INT_DIGITS} digits a message may hold")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def from_document(document: dict[str, Any]) -> CommandMessage:
    problems = validate_document(document)
    if problems:
        raise InvalidMessage("message does not match the command schema: " + "; ".join(problems), problems)
    return message_of(document)


def message_of(document: dict[str, Any]) -> CommandMessage:
    """The message a document holds; the document must match the schema (schema_errors)."""
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
        work=_task_of(document) if "executors" in document else _command_of(document.get("command", {})),
        raw=document,
    )


def _command_of(command: dict[str, Any]) -> Command:
    return Command(
        stdin=_stream(command.get("stdin")),
        stdout=_stream(command.get("stdout")),
        stderr=_stream(command.get("stderr")),
        arguments=tuple(
            Argument(type=a["type"], name=a.get("name"), value=_argument_value(a.get("value")))
            for a in command.get("arguments", [])
        ),
        input=tuple(command.get("input", [])),
        output=tuple(command.get("output", [])),
    )


def _task_of(document: dict[str, Any]) -> ContainerTask:
    return ContainerTask(
        executors=tuple(
            TaskExecutor(
                image=e["image"],
                command=tuple(e["command"]),
                workdir=e.get("workdir"),
                stdin=e.get("stdin"),
                stdout=e.get("stdout"),
                stderr=e.get("stderr"),
                env=dict(e.get("env", {})),
                ignore_error=bool(e.get("ignore_error", False)),
            )
            for e in document["executors"]
        ),
        inputs=tuple(
            TaskInput(i["path"], i.get("url"), i.get("content"), i.get("type") == "DIRECTORY")
            for i in document.get("inputs", [])
        ),
        outputs=tuple(
            TaskOutput(o["path"], o["url"], o.get("path_prefix"), o.get("type") == "DIRECTORY")
            for o in document.get("outputs", [])
        ),
        volumes=tuple(document.get("volumes", [])),
        upload_on_failure=bool(document.get("upload_on_failure", False)),
    )


def parse(body: str | bytes) -> CommandMessage:
    """Decode and validate a message body; raises InvalidMessage with every problem found."""
    document = decode(body)
    if not isinstance(document, dict):
        raise InvalidMessage(f"message must be a JSON object, got {type(document).__name__}")
    return from_document(document)


JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # as in the command schema


def well_formed_id(value: Any) -> str | None:
    """The message's own id when it is one the schema accepts; never an unchecked string."""
    if isinstance(value, str) and JOB_ID.fullmatch(value):
        return value
    return None


def job_id_of(body: str, message_id: str) -> str:
    """The job id a message body names, when it is well-formed; else the queue's id."""
    try:
        document = json.loads(body)
    except ValueError:
        return message_id
    return (well_formed_id(document.get("id")) if isinstance(document, dict) else None) or message_id
