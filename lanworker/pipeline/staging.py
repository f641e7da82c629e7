"""Per-job work directories: where inputs land, where outputs are collected, and argv resolution.

Staged files mirror scheme, bucket and key inside the job dir (`in/s3/BUCKET/KEY`), so a
sidecar named by a prefix in `command.input` lands next to the file named in the arguments.
Inputs and outputs live in separate trees (`in/`, `out/`), so an output upload never
re-uploads an input. Whatever the command left in the job dir is read through `safefs`:
no link is followed and only regular single-link files are uploaded.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from lanworker.core.errors import InvalidMessage, JobFailed
from lanworker.message.command import CommandMessage, key_problem, uri_scheme
from lanworker.storage import (
    Checkpoint,
    S3Location,
    Storage,
    TransferRecord,
    child_uri,
    local_path,
    no_checkpoint,
)
from lanworker.storage.safefs import list_tree, open_beneath, remove_tree

if TYPE_CHECKING:
    from lanworker.pipeline.tasks import TaskLayout

logger = logging.getLogger(__name__)

PathMapper = Callable[[Path], str]
T = TypeVar("T")
R = TypeVar("R")


def safe_relative(key: str, what: str) -> PurePosixPath:
    """A key as a relative path that cannot leave the directory it is joined to."""
    problem = key_problem(key)
    if problem is not None:
        raise InvalidMessage(f"{what}: {problem}")
    return PurePosixPath(*key.rstrip("/").split("/"))


def mirror_parts(uri: str, what: str) -> PurePosixPath:
    """scheme/bucket/key for a URI, checked to be safe to join under a job dir.

    Whether the URI may be used at all is MessagePolicy's decision, made before staging.
    """
    scheme = uri_scheme(uri)
    if scheme == "s3":
        location = S3Location.parse(uri)
        bucket = safe_relative(location.bucket, what)
        if len(bucket.parts) != 1:
            raise InvalidMessage(f"{what}: bad bucket name {location.bucket!r}")
        key = safe_relative(location.key, what) if location.key.rstrip("/") else PurePosixPath()
        return PurePosixPath("s3", bucket, key)
    if scheme == "file":
        absolute = os.path.abspath(local_path(uri))
        relative = absolute.lstrip("/")
        return PurePosixPath("file", safe_relative(relative, what)) if relative else PurePosixPath("file")
    parts = urlsplit(uri)
    return PurePosixPath(
        scheme, safe_relative(parts.netloc, what), safe_relative(parts.path.lstrip("/") or "index", what)
    )


@dataclass(frozen=True)
class PlannedUpload:
    """An output argument: the path the command writes (a file, or a directory)."""

    local: PurePosixPath  # relative to the job dir
    uri: str
    label: str
    is_directory: bool = False


@dataclass
class StagedJob:
    argv: list[str]
    uploads: list[PlannedUpload]
    output_prefixes: list[tuple[str, str]]  # (path prefix relative to the job dir, URI prefix)
    downloads: list[TransferRecord] = field(default_factory=list)
    task: TaskLayout | None = None  # a container task's mounts


@dataclass
class Uploads:
    """What to upload (file relative to the job dir, destination URI), and what was skipped."""

    files: list[tuple[PurePosixPath, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Workspace:
    """One job's directory: `in/`, `out/`, `streams/`. Removal copes with foreign-owned files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inputs = root / "in"
        self.outputs = root / "out"
        self.streams = root / "streams"

    def create(self, for_containers: bool) -> None:
        """The job dir. For containers also in/, out/ and streams/, writable by any uid: they
        run as the worker's uid by default, but a service may run as another user and must
        still write its outputs. A native job's subdirectories appear as it uses them."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not for_containers:
            return
        for directory in (self.inputs, self.outputs, self.streams):
            directory.mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.inputs, self.outputs, self.streams):
            os.chmod(directory, 0o777)

    def input_path(self, uri: str, what: str) -> Path:
        return self._inside(self.inputs / mirror_parts(uri, what), what)

    def output_path(self, uri: str, what: str) -> Path:
        return self._inside(self.outputs / mirror_parts(uri, what), what)

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

    def relative(self, path: Path) -> PurePosixPath:
        return PurePosixPath(path.relative_to(self.root).as_posix())

    def remove(self) -> None:
        remove_tree(self.root)


def _argument_label(index: int, name: str | None, uri: str) -> str:
    return f"argument {index}{f' ({name})' if name else ''} {uri}"


def stage_inputs(
    message: CommandMessage,
    workspace: Workspace,
    storage: Storage,
    transfer_concurrency: int,
    path_mapper: PathMapper = str,
    checkpoint: Checkpoint = no_checkpoint,
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
            uploads.append(
                PlannedUpload(workspace.relative(local), argument.value, label, argument.is_directory)
            )
        argv.append(path_mapper(local) + ("/" if argument.is_directory else ""))

    for index, prefix in enumerate(command.input):
        workspace.input_path(prefix, f"input[{index}] {prefix}")
        prefix_listings.append((prefix, False))

    output_prefixes: list[tuple[str, str]] = []
    for index, prefix in enumerate(command.output):
        local = workspace.output_path(prefix, f"output[{index}] {prefix}")
        (local if prefix.endswith("/") else local.parent).mkdir(parents=True, exist_ok=True)
        output_prefixes.append(
            (workspace.relative(local).as_posix() + ("/" if prefix.endswith("/") else ""), prefix)
        )

    sizes: dict[str, int | None] = {}
    listings = parallel(lambda item: storage.list_objects(item[0]), prefix_listings, transfer_concurrency)
    for (prefix, required), found in zip(prefix_listings, listings, strict=True):
        if not found:
            if required:
                raise JobFailed(f"input directory {prefix} matched no objects", reason="missing-object")
            logger.warning("input prefix %s matched no objects", prefix, extra={"action": "staging"})
        for item in found:
            local = workspace.input_path(item.uri, f"object {item.uri} under {prefix}")
            if item.is_folder:
                local.mkdir(parents=True, exist_ok=True)
                continue
            downloads.setdefault(item.uri, local)
            sizes[item.uri] = item.size
    records = parallel(
        lambda item: storage.download(item[0], item[1], checkpoint, sizes.get(item[0])),
        list(downloads.items()),
        transfer_concurrency,
    )

    return StagedJob(argv=argv, uploads=uploads, output_prefixes=output_prefixes, downloads=records)


def collect_uploads(staged: StagedJob, root: Path, produced_only: bool = False) -> Uploads:
    """Every output file to upload, read without following links.

    A named output file that is missing fails the job (`missing-output`) unless
    produced_only (after a failed command: upload what is there); one that is a link, a
    special file or a hardlink fails it (`unsafe-output`). Inside output directories and
    prefixes such entries are skipped and named in `skipped`.
    """
    found: dict[str, PurePosixPath] = {}
    skipped: list[str] = []
    for upload in staged.uploads:
        try:
            if upload.is_directory:
                listing = list_tree(root, upload.local, upload.label)
                skipped += listing.skipped
                for path in listing.files:
                    found[child_uri(upload.uri, path.relative_to(upload.local).as_posix())] = path
            else:
                open_beneath(root, upload.local, upload.label).close()
                found[upload.uri] = upload.local
        except FileNotFoundError:
            if not produced_only:
                raise JobFailed(
                    f"{upload.label} was not produced by the command", reason="missing-output"
                ) from None
    for local_prefix, uri_prefix in staged.output_prefixes:
        base = PurePosixPath(local_prefix if local_prefix.endswith("/") else os.path.dirname(local_prefix))
        try:
            listing = list_tree(root, base, f"output prefix {uri_prefix}")
        except FileNotFoundError:
            continue
        skipped += [entry for entry in listing.skipped if entry.startswith(local_prefix)]
        for path in listing.files:
            text = path.as_posix()
            if text.startswith(local_prefix):
                found.setdefault(child_uri(uri_prefix, text[len(local_prefix) :]), path)
    return Uploads([(path, uri) for uri, path in found.items()], skipped)


def in_context(function: Callable[[T], R]) -> Callable[[T], R]:
    """Run a pool task in the submitting thread's context (its job id for the logs)."""
    context = contextvars.copy_context()
    return lambda item: context.copy().run(function, item)


def upload_outputs(
    files: list[tuple[PurePosixPath, str]],
    root: Path,
    storage: Storage,
    transfer_concurrency: int,
    checkpoint: Checkpoint = no_checkpoint,
) -> list[TransferRecord]:
    """Upload job-dir files; each is opened beneath root without following links."""

    def upload(pair: tuple[PurePosixPath, str]) -> TransferRecord:
        relative, uri = pair
        with open_beneath(root, relative, f"output {relative}") as source:
            return storage.upload(source, uri, checkpoint)

    return parallel(upload, files, transfer_concurrency)


def parallel(function: Callable[[T], R], items: list[T], concurrency: int) -> list[R]:
    """function over items on up to `concurrency` threads, in the caller's context, results
    in order; no threads at all for one item or none (most jobs)."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(
        max_workers=max(1, min(concurrency, len(items))), thread_name_prefix="transfer"
    ) as pool:
        return list(pool.map(in_context(function), items))
