"""What a message may ask of this worker, decided in one place for every field.

Invariant: every URI a message holds (arguments, input and output prefixes, stdin,
stdout, stderr, reply_to) passes `MessagePolicy.problems` before anything is read,
written or run, and so does every environment variable it sets. A message refused here
is invalid: dead-lettered at once with the reason, never retried.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lanworker.core.addresses import literal_address_refused
from lanworker.core.config import WorkerConfig, is_local_queue
from lanworker.message.command import (
    Command,
    CommandMessage,
    ContainerTask,
    checked_document,
    local_path,
    message_of,
    uri_scheme,
    value_problems,
)

# Environment names a message may not set unless the operator allows them: they change
# what the operator's command loads or trusts (loader, interpreters, shells, proxies,
# CA bundles, AWS endpoints and credentials, lanworker's own configuration).
DANGEROUS_ENV = (
    "LD_*",
    "DYLD_*",
    "PATH",
    "PYTHON*",
    "PERL5*",
    "PERLLIB",
    "RUBY*",
    "GEM_*",
    "NODE_*",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "IFS",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "MALLOC_*",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "*_PROXY",
    "SSL_CERT_*",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_*",
    "LANWORKER_*",
    "HOME",
    "TMPDIR",
)


@dataclass(frozen=True)
class MessagePolicy:
    allow_local_files: bool
    local_file_roots: tuple[str, ...] = ()  # when allowed: only beneath these (empty: anywhere)
    allow_private_http: bool = False
    allow_env: tuple[str, ...] = ()  # globs of dangerous names the operator allows anyway

    @classmethod
    def from_config(cls, config: WorkerConfig) -> MessagePolicy:
        """The operator's policy, for the workers and for serve's API alike."""
        return cls(
            allow_local_files=config.local_files_allowed,
            local_file_roots=config.local_roots,
            allow_private_http=config.allow_private_http,
            allow_env=config.allow_env,
        )

    def problems(self, message: CommandMessage, extra_env: tuple[str, ...] = ()) -> list[str]:
        """Every refusal, as 'JSONPATH: why'; extra_env adds the service's own allowed names."""
        found = [problem for path, uri in _uris(message) if (problem := self.uri_problem(path, uri))]
        if message.reply_to is not None:
            problem = self.reply_to_problem(message.reply_to)
            if problem:
                found.append(f"$.reply_to: {problem}")
        allowed = (*self.allow_env, *extra_env)
        named = [(f"$.env.{name}", name) for name in message.env]
        if isinstance(message.work, ContainerTask):
            for index, executor in enumerate(message.work.executors):
                named += [(f"$.executors[{index}].env.{name}", name) for name in executor.env]
        for path, name in named:
            if is_dangerous_env(name) and not any(fnmatch.fnmatchcase(name, glob) for glob in allowed):
                found.append(
                    f"{path}: setting {name} is refused on this worker "
                    "(the operator may allow it with --allow-env or a service's allow_env)"
                )
        return found

    def uri_problem(self, path: str, uri: str) -> str | None:
        scheme = uri_scheme(uri)
        if scheme == "file" and not self.allow_local_files:
            return (
                f"{path}: local paths and file:// URIs are disabled on this worker (see --allow-local-files)"
            )
        if scheme == "file" and self.local_file_roots and not beneath(uri, self.local_file_roots):
            return f"{path}: {uri} is outside the directories local files are allowed in " + (
                ", ".join(self.local_file_roots)
            )
        if scheme in ("http", "https") and not self.allow_private_http:
            host = urlsplit(uri).hostname or ""
            if literal_address_refused(host) or host.lower() in ("localhost", "localhost.localdomain"):
                return f"{path}: {uri} names a non-public address (see --allow-private-http)"
        return None

    def reply_to_problem(self, url: str) -> str | None:
        """Why results may not go to url, or None. An embedded queue is a file on the worker."""
        if is_local_queue(url) and not self.allow_local_files:
            return f"{url!r} is a local queue (a file on the worker), refused without --allow-local-files"
        if not is_local_queue(url) and not url.startswith(("https://", "http://")):
            return f"{url!r} is neither an SQS queue URL nor local:PATH#NAME"
        return None


def admission_problems(document: Any, policy: MessagePolicy) -> list[str]:
    """Every problem a worker with this policy finds in a decoded message before it runs
    it, each with its JSON path: what `validate` and `submit` report (the executor's own
    terms, such as an image allowlist, are the worker's to know)."""
    if not isinstance(document, dict):  # our depth rule first, whatever the JSON parser allows
        return value_problems(document) or ["$: must be a JSON object"]
    problems, readable = checked_document(document)
    # The policy reads the message, which only a document of the schema's shape holds.
    return problems + policy.problems(message_of(document)) if readable else problems


def beneath(uri: str, roots: tuple[str, ...]) -> bool:
    """Whether the local path uri names lies in one of roots, links resolved on both sides."""
    try:
        real = os.path.realpath(local_path(uri))
    except (ValueError, OSError):
        return False
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip("/") + "/"):
            return True
    return False


def is_dangerous_env(name: str) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, glob) for glob in DANGEROUS_ENV)


def _uris(message: CommandMessage) -> Iterator[tuple[str, str]]:
    if isinstance(message.work, ContainerTask):
        yield from _task_uris(message.work)
    else:
        yield from _command_uris(message.work)


def _command_uris(command: Command) -> Iterator[tuple[str, str]]:
    for index, argument in enumerate(command.arguments):
        if argument.type in ("input", "output") and argument.value is not None:
            yield f"$.command.arguments[{index}].value", argument.value
    for index, uri in enumerate(command.input):
        yield f"$.command.input[{index}]", uri
    for index, uri in enumerate(command.output):
        yield f"$.command.output[{index}]", uri
    for name in ("stdin", "stdout", "stderr"):
        stream = getattr(command, name)
        if stream is not None and stream.type == "uri" and stream.value is not None:
            yield f"$.command.{name}.value", stream.value


def _task_uris(task: ContainerTask) -> Iterator[tuple[str, str]]:
    for index, item in enumerate(task.inputs):
        if item.url is not None:
            yield f"$.inputs[{index}].url", item.url
    for index, output in enumerate(task.outputs):
        yield f"$.outputs[{index}].url", output.url
