"""Per-job work directories: where inputs land, where outputs are collected, and argv resolution.

Staged files mirror scheme, bucket and key inside the job dir (`in/s3/BUCKET/KEY`), so a
sidecar named by a prefix in `command.input` lands next to the file named in the arguments.
Inputs and outputs live in separate trees (`in/`, `out/`), so an output upload never
re-uploads an input.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

from lanworker.errors import InvalidMessage, JobFailed
from lanworker.messages import CommandMessage, uri_scheme
from lanworker.storage import S3Location, Storage, TransferRecord, local_path

logger = logging.getLogger(__name__)

PathMapper = Callable[[Path], str]
T = TypeVar("T")
R = TypeVar("R")


def safe_relative(key: str, what: str) -> PurePosixPath:
    """A key as a relative path that cannot leave the directory it is joined to."""
    if not key:
        raise InvalidMessage(f"{what}: empty object key")
    if "\x00" in key or "\\" in key:
        raise InvalidMessage(f"{what}: key {key!r} contains a NUL byte or a backslash")
    if key.startswith("/"):
        raise InvalidMessage(f"{what}: key {key!r} is absolute")
    segments = key.rstrip("/").split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidMessage(
                f"{what}: key {key!r} has an empty, '.' or '..' segment and could escape the work dir"
            )
    return PurePosixPath(*segments)


def mirror_parts(uri: str, what: str, allow_local: bool) -> PurePosixPath:
    """scheme/bucket/key for a URI, checked to be safe to join under a job dir."""
    scheme = uri_scheme(uri)
    if scheme == "s3":
        location = S3Location.parse(uri)
        bucket = safe_relative(location.bucket, what)
        if len(bucket.parts) != 1:
            raise InvalidMessage(f"{what}: bad bucket name {location.bucket!r}")
        key = safe_relative(location.key, what) if location.key.rstrip("/") else PurePosixPath()
        return PurePosixPath("s3", bucket, key)
    if scheme == "file":
        if not allow_local:
            raise InvalidMessage(
                f"{what}: local paths and file:// URIs are disabled on this worker (see --allow-local-files)"
            )
        absolute = os.path.abspath(local_path(uri))
        relative = absolute.lstrip("/")
        return PurePosixPath("file", safe_relative(relative, what)) if relative else PurePosixPath("file")
    parts = urlsplit(uri)
    return PurePosixPath(
        scheme, safe_relative(parts.netloc, what), safe_relative(parts.path.lstrip("/") or "index", what)
    )


@dataclass(frozen=True)
class PlannedUpload:
    local: Path
    uri: str
    label: str
    is_directory: bool = False


@dataclass
class StagedJob:
    argv: list[str]
    uploads: list[PlannedUpload]
    output_prefixes: list[tuple[str, str]]
    downloads: list[TransferRecord] = field(default_factory=list)


class Workspace:
    """One job's directory: `in/`, `out/`, `streams/`. Removal copes with foreign-owned files."""

    def __init__(self, root: Path, allow_local_files: bool) -> None:
        self.root = root
        self.inputs = root / "in"
        self.outputs = root / "out"
        self.streams = root / "streams"
        self.allow_local_files = allow_local_files

    def create(self) -> None:
        for directory in (self.inputs, self.outputs, self.streams):
            directory.mkdir(parents=True, exist_ok=True)
        # Containers run as the worker's uid by default, but a service may run as another
        # user; it still has to be able to write its outputs.
        for directory in (self.root, self.inputs, self.outputs, self.streams):
            os.chmod(directory, 0o777)

    def input_path(self, uri: str, what: str) -> Path:
        return self._inside(self.inputs / mirror_parts(uri, what, self.allow_local_files), what)

    def output_path(self, uri: str, what: str) -> Path:
        return self._inside(self.outputs / mirror_parts(uri, what, self.allow_local_files), what)

    def _inside(self, path: Path, what: str) -> Path:
        # Resolving the nearest existing ancestor catches symlinks planted in the job dir.
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        real_root = os.path.realpath(self.root)
        real_probe = os.path.realpath(probe)
        if os.path.commonpath([real_root, real_probe]) != real_root:
            raise InvalidMessage(f"{what}: {path} would resolve outside the job dir")
        return path

    def remove(self) -> None:
        remove_tree(self.root)


def remove_tree(root: Path) -> None:
    """rm -rf that also handles read-only directories a command left behind."""

    def make_writable_and_retry(function: Callable[..., object], path: str, _exc: object) -> None:
        parent = os.path.dirname(path)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, stat.S_IRWXU)
            function(path)
        except OSError as exc:
            logger.warning("could not remove %s: %s", path, exc, extra={"action": "cleanup"})

    if root.exists():
        shutil.rmtree(root, onerror=make_writable_and_retry)


def _argument_label(index: int, name: str | None, uri: str) -> str:
    return f"argument {index}{f' ({name})' if name else ''} {uri}"


def stage_inputs(
    message: CommandMessage,
    workspace: Workspace,
    storage: Storage,
    transfer_concurrency: int,
    path_mapper: PathMapper = str,
) -> StagedJob:
    """Download every input, prepare output locations, and resolve the argv tail."""
    command = message.command
    downloads: dict[str, Path] = {}
    argv: list[str] = []
    uploads: list[PlannedUpload] = []
    prefix_listings: list[tuple[str, bool]] = []

    for index, argument in enumerate(command.arguments):
        if argument.name:
            argv.append(argument.name)
        if argument.type == "parameter":
            if argument.value is not None:
                argv.append(argument.value)
            continue
        assert argument.value is not None  # the schema requires it for input and output
        label = _argument_label(index, argument.name, argument.value)
        if argument.type == "input":
            local = workspace.input_path(argument.value, label)
            if argument.is_directory:
                local.mkdir(parents=True, exist_ok=True)
                prefix_listings.append((argument.value, True))
            else:
                downloads[argument.value] = local
        else:
            local = workspace.output_path(argument.value, label)
            if argument.is_directory:
                local.mkdir(parents=True, exist_ok=True)
            else:
                local.parent.mkdir(parents=True, exist_ok=True)
            uploads.append(PlannedUpload(local, argument.value, label, argument.is_directory))
        argv.append(path_mapper(local) + ("/" if argument.is_directory else ""))

    for index, prefix in enumerate(command.input):
        workspace.input_path(prefix, f"input[{index}] {prefix}")
        prefix_listings.append((prefix, False))

    output_prefixes: list[tuple[str, str]] = []
    for index, prefix in enumerate(command.output):
        local = workspace.output_path(prefix, f"output[{index}] {prefix}")
        (local if prefix.endswith("/") else local.parent).mkdir(parents=True, exist_ok=True)
        output_prefixes.append((str(local) + ("/" if prefix.endswith("/") else ""), prefix))

    with ThreadPoolExecutor(max_workers=max(1, transfer_concurrency), thread_name_prefix="stage") as pool:
        for (prefix, required), found in zip(
            prefix_listings,
            pool.map(_in_context(lambda item: storage.list_prefix(item[0])), prefix_listings),
            strict=True,
        ):
            if not found:
                if required:
                    raise JobFailed(f"input directory {prefix} matched no objects", reason="missing-object")
                logger.warning("input prefix %s matched no objects", prefix, extra={"action": "staging"})
            for uri in found:
                downloads.setdefault(uri, workspace.input_path(uri, f"object {uri} under {prefix}"))
        records = list(
            pool.map(_in_context(lambda item: storage.download(item[0], item[1])), downloads.items())
        )

    return StagedJob(argv=argv, uploads=uploads, output_prefixes=output_prefixes, downloads=records)


def _regular_file(path: Path, label: str) -> Path:
    """Refuse symlinks: a command (or container) could point one at a host file."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise JobFailed(f"{label} was not produced by the command", reason="missing-output") from None
    if stat.S_ISLNK(info.st_mode):
        raise JobFailed(f"{label} is a symlink; refusing to upload it", reason="unsafe-output")
    if not stat.S_ISREG(info.st_mode):
        raise JobFailed(f"{label} is not a regular file", reason="unsafe-output")
    return path


def _walk_files(base: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(base, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if not path.is_symlink():
                yield path


def collect_uploads(staged: StagedJob) -> list[tuple[Path, str]]:
    """(local file, destination URI) for every output, checked to exist and be regular files."""
    pairs: dict[str, Path] = {}
    for upload in staged.uploads:
        if upload.is_directory:
            if not upload.local.is_dir():
                raise JobFailed(f"{upload.label} was not produced by the command", reason="missing-output")
            for path in _walk_files(upload.local):
                pairs[upload.uri + path.relative_to(upload.local).as_posix()] = path
        else:
            pairs[upload.uri] = _regular_file(upload.local, upload.label)
    for local_prefix, uri_prefix in staged.output_prefixes:
        base = Path(local_prefix if local_prefix.endswith("/") else os.path.dirname(local_prefix))
        if not base.is_dir():
            continue
        for path in _walk_files(base):
            if str(path).startswith(local_prefix):
                pairs.setdefault(uri_prefix + str(path)[len(local_prefix) :], path)
    return [(path, uri) for uri, path in pairs.items()]


def _in_context(function: Callable[[T], R]) -> Callable[[T], R]:
    """Run a pool task in the submitting thread's context (its job id for the logs)."""
    context = contextvars.copy_context()
    return lambda item: context.copy().run(function, item)


def upload_outputs(
    pairs: list[tuple[Path, str]], storage: Storage, transfer_concurrency: int
) -> list[TransferRecord]:
    with ThreadPoolExecutor(max_workers=max(1, transfer_concurrency), thread_name_prefix="upload") as pool:
        return list(pool.map(_in_context(lambda pair: storage.upload(pair[0], pair[1])), pairs))
