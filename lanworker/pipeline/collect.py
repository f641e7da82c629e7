"""Collect: after the command, which files are its outputs, read without following links.

A command job's outputs are its output arguments and prefixes under `out/`; a container
task's are its FILE, DIRECTORY and wildcard outputs, read from the writable mounts. Only
regular single-link files are collected: a link, a special file or a hardlink named as an
output fails the job (`unsafe-output`), and inside a directory it is skipped and named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lanworker.core.errors import JobFailed
from lanworker.message.command import OUTPUT_STREAMS, ContainerTask, TaskOutput, stream_spec
from lanworker.pipeline.context import JobContext, StagedJob
from lanworker.pipeline.workspace import TaskLayout
from lanworker.storage import child_uri
from lanworker.storage.safefs import list_tree, open_beneath

logger = logging.getLogger(__name__)


@dataclass
class Collected:
    """What to upload: (file relative to the job dir, destination URI), and for a container
    task's outputs the container path each came from (by URI)."""

    files: list[tuple[PurePosixPath, str]] = field(default_factory=list)
    container_paths: dict[str, str] = field(default_factory=dict)


def collect(job: JobContext, succeeded: bool) -> Collected:
    """Spooled streams always; outputs after success, or after a failure when asked to
    (then only what the command produced)."""
    message, staged = job.message, job.staged
    collected = Collected()
    for name in OUTPUT_STREAMS:
        spec = stream_spec(message, name)
        if spec is not None and spec.type == "uri" and spec.value:
            collected.files.append((PurePosixPath("streams", name), spec.value))
    task = message.work if isinstance(message.work, ContainerTask) else None
    if not (succeeded or job.tools.config.upload_on_failure or (task and task.upload_on_failure)):
        return collected
    uploads = collect_uploads(staged, job.workspace.root, produced_only=not succeeded)
    collected.files += uploads.files
    if task is not None and staged.task is not None:
        found, skipped = collect_task_outputs(task, staged.task, produced_only=not succeeded)
        collected.files += [(upload.relative, upload.url) for upload in found]
        collected.container_paths = {upload.url: upload.container_path for upload in found}
        uploads.skipped += skipped
    if uploads.skipped:
        job.result.extra["skipped_outputs"] = uploads.skipped
        logger.warning(
            "skipped %d output entries that are not regular single-link files: %s",
            len(uploads.skipped),
            "; ".join(uploads.skipped[:5]),
            extra={"action": "uploading"},
        )
    return collected


@dataclass
class Uploads:
    """What to upload (file relative to the job dir, destination URI), and what was skipped."""

    files: list[tuple[PurePosixPath, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


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


@dataclass(frozen=True)
class TaskUpload:
    relative: PurePosixPath  # below the job dir
    url: str
    container_path: str


def collect_task_outputs(
    task: ContainerTask, layout: TaskLayout, produced_only: bool
) -> tuple[list[TaskUpload], list[str]]:
    """Every output file (files, directories flattened, wildcard matches) and what was skipped.

    A wildcard that matches nothing is not an error; a missing FILE output is, unless
    produced_only (after a failed executor: upload what is there).
    """
    uploads: list[TaskUpload] = []
    skipped: list[str] = []
    for index, output in enumerate(task.outputs):
        label = f"output {index} ({output.path})"
        if output.has_wildcards:
            found, passed = _wildcard(output, layout, label)
        elif output.is_directory:
            found, passed = _directory(output, layout, label)
        else:
            found, passed = _file(output, layout, label, produced_only)
        uploads += found
        skipped += passed
    return uploads, skipped


def _file(
    output: TaskOutput, layout: TaskLayout, label: str, produced_only: bool
) -> tuple[list[TaskUpload], list[str]]:
    host = layout.writable_host(output.path)
    assert host is not None
    relative = layout.relative(host)
    try:
        open_beneath(layout.root, relative, label).close()
    except FileNotFoundError:
        if produced_only:
            return [], []
        raise JobFailed(f"{label} was not produced by the task", reason="missing-output") from None
    return [TaskUpload(relative, output.url, output.path)], []


def _directory(output: TaskOutput, layout: TaskLayout, label: str) -> tuple[list[TaskUpload], list[str]]:
    return _listed(output, layout, label, output.path.rstrip("/"), lambda container_path: True)


def _wildcard(output: TaskOutput, layout: TaskLayout, label: str) -> tuple[list[TaskUpload], list[str]]:
    pattern = output.path
    return _listed(
        output,
        layout,
        label,
        (output.path_prefix or "/").rstrip("/"),
        lambda path: PurePosixPath(path).match(pattern),
    )


def _listed(
    output: TaskOutput, layout: TaskLayout, label: str, base_dir: str, wanted: Callable[[str], bool]
) -> tuple[list[TaskUpload], list[str]]:
    """Files below a container directory that `wanted` accepts, each uploaded to url + its
    path below that directory. A directory that was never made yields nothing."""
    host = layout.writable_host(base_dir)
    assert host is not None
    base = layout.relative(host)
    try:
        listing = list_tree(layout.root, base, label)
    except FileNotFoundError:
        return [], []
    uploads = []
    for path in listing.files:
        tail = path.relative_to(base).as_posix()
        container_path = f"{base_dir}/{tail}"
        if wanted(container_path):
            uploads.append(TaskUpload(path, child_uri(output.url.rstrip("/") + "/", tail), container_path))
    return uploads, listing.skipped
