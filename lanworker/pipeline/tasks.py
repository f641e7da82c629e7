"""Container tasks (GA4GH TES shaped messages): where each container path lives on the host.

A task's executors see the same files: its inputs (read-only) and a set of writable
directories (its volumes, the directories its outputs are written in, its executors'
working directories and stdout/stderr directories). Each writable directory is one bind
mount of a directory under the job dir; nested ones share their outer mount. Inputs that
fall inside a writable directory are placed there; the others are mounted read-only.

Layout inside the job dir:
    task/fs/ABSOLUTE/PATH   the host side of every writable mount
    task/in/N/NAME          input N, when it is not inside a writable mount

Invariant: every host path is the job dir plus a normalised container path (messages
refuse '..'), and everything read back from it goes through `safefs`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from lanworker.core.errors import JobFailed
from lanworker.message.command import CommandMessage, TaskInput, TaskOutput
from lanworker.pipeline.staging import Workspace, parallel, safe_relative
from lanworker.storage import Checkpoint, Storage, TransferRecord, child_uri
from lanworker.storage.safefs import create_beneath, list_tree, open_beneath


@dataclass(frozen=True)
class Mount:
    container: str
    host: Path
    read_only: bool


@dataclass(frozen=True)
class TaskUpload:
    relative: PurePosixPath  # below the job dir
    url: str
    container_path: str


@dataclass
class TaskLayout:
    root: Path  # the job dir
    mounts: list[Mount] = field(default_factory=list)

    def writable_host(self, container_path: str) -> Path | None:
        """The host path of a container path inside a writable mount, else None."""
        for mount in self.mounts:
            if mount.read_only:
                continue
            if container_path == mount.container or container_path.startswith(
                mount.container.rstrip("/") + "/"
            ):
                return mount.host / posixpath.relpath(container_path, mount.container)
        return None

    def readable_host(self, container_path: str) -> Path | None:
        """The host path a container path is read from: an input (or a path inside a
        DIRECTORY input, where nested inputs are placed) or a writable path."""
        for mount in self.mounts:
            if mount.read_only and within(container_path, mount.container):
                return mount.host / posixpath.relpath(container_path, mount.container)
        return self.writable_host(container_path)

    def relative(self, host: Path) -> PurePosixPath:
        return PurePosixPath(host.relative_to(self.root).as_posix())

    def create(self, container_path: str, label: str) -> BinaryIO:
        """Open a new file at a writable container path, safely (see safefs.create_beneath)."""
        host = self.writable_host(container_path)
        if host is None:
            raise JobFailed(f"{label} {container_path} is not inside a volume or an output directory")
        return create_beneath(self.root, self.relative(host), label)  # parents made without links

    def open_input(self, container_path: str, label: str) -> BinaryIO:
        host = self.readable_host(container_path)
        if host is None:
            raise JobFailed(f"{label} {container_path} is neither an input nor inside a volume")
        return open_beneath(self.root, self.relative(host), label)


def _writable_dirs(message: CommandMessage) -> list[str]:
    wanted = [volume.rstrip("/") or "/" for volume in message.volumes]
    for output in message.outputs:
        if output.has_wildcards:
            wanted.append((output.path_prefix or "/").rstrip("/") or "/")
        elif output.is_directory:
            wanted.append(output.path.rstrip("/") or "/")
        else:
            wanted.append(posixpath.dirname(output.path))
    for executor in message.executors:
        if executor.workdir:
            wanted.append(executor.workdir)
        for path in (executor.stdout, executor.stderr):
            if path:
                wanted.append(posixpath.dirname(path))
    chosen: list[str] = []
    for path in sorted(set(wanted), key=len):
        if path == "/":
            raise JobFailed("a container task cannot mount its root directory '/'", reason="invalid-task")
        if not any(path == outer or path.startswith(outer + "/") for outer in chosen):
            chosen.append(path)
    return chosen


def within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def plan_layout(message: CommandMessage, workspace: Workspace) -> TaskLayout:
    """One bind mount per writable directory, one read-only mount per outermost input; an
    input at or inside another input's path (a FILE in a DIRECTORY input, or two inputs at
    one path) is placed in that input's tree, so nested inputs merge into one mount."""
    layout = TaskLayout(workspace.root)
    for directory in _writable_dirs(message):
        host = workspace.root / "task" / "fs" / directory.lstrip("/")
        host.mkdir(parents=True, exist_ok=True)
        layout.mounts.append(Mount(directory, host, read_only=False))
    by_depth = sorted(enumerate(message.inputs), key=lambda pair: (pair[1].path.count("/"), pair[0]))
    for index, item in by_depth:
        if layout.readable_host(item.path) is None:
            host = workspace.root / "task" / "in" / str(index) / (posixpath.basename(item.path) or "input")
            layout.mounts.append(Mount(item.path, host, read_only=True))
    return layout


def input_waves(message: CommandMessage) -> list[list[int]]:
    """Input indexes in order, cut where an input overlaps one before it in the same wave
    (one at, inside or around the other's path): waves run one after another, so a later
    input wins where two write the same file, as TESK applies them; each wave in parallel."""
    waves: list[list[int]] = [[]]
    for index, item in enumerate(message.inputs):
        current = waves[-1]
        if any(within(item.path, message.inputs[i].path) or within(message.inputs[i].path, item.path)
               for i in current):  # fmt: skip
            waves.append([])
        waves[-1].append(index)
    return [wave for wave in waves if wave]


def stage_task_inputs(
    message: CommandMessage,
    layout: TaskLayout,
    storage: Storage,
    transfer_concurrency: int,
    checkpoint: Checkpoint,
) -> list[TransferRecord]:
    """Write content inputs, download url inputs (a DIRECTORY is a prefix, listed), wave
    by wave (input_waves): a later input overwrites what an earlier one put at its path."""
    records: list[TransferRecord] = []
    for wave in input_waves(message):
        downloads: list[tuple[str, Path, int | None]] = []
        for index in wave:
            downloads += _stage_input(index, message.inputs[index], layout, storage)
        records += parallel(
            lambda job: storage.download(job[0], job[1], checkpoint, job[2]), downloads, transfer_concurrency
        )
    return records


def _stage_input(
    index: int, item: TaskInput, layout: TaskLayout, storage: Storage
) -> list[tuple[str, Path, int | None]]:
    """Writes a content input now; the downloads a url input needs (uri, host path, size)."""
    host = layout.readable_host(item.path)
    assert host is not None  # plan_layout gave every input a place
    label = f"input {index} ({item.path})"
    if item.content is not None:
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_text(item.content, encoding="utf-8")
        return []
    assert item.url is not None
    if not item.is_directory:
        host.parent.mkdir(parents=True, exist_ok=True)
        return [(item.url, host, None)]
    prefix = item.url.rstrip("/") + "/"
    host.mkdir(parents=True, exist_ok=True)
    downloads: list[tuple[str, Path, int | None]] = []
    for found in storage.list_objects(prefix):
        relative = found.uri[len(prefix) :]
        if found.is_folder:
            if relative:
                (host / safe_relative(relative, label)).mkdir(parents=True, exist_ok=True)
            continue
        downloads.append((found.uri, host / safe_relative(relative, label), found.size))
    return downloads


def collect_task_outputs(
    message: CommandMessage, layout: TaskLayout, produced_only: bool
) -> tuple[list[TaskUpload], list[str]]:
    """Every output file (files, directories flattened, wildcard matches) and what was skipped.

    A wildcard that matches nothing is not an error; a missing FILE output is, unless
    produced_only (after a failed executor: upload what is there).
    """
    uploads: list[TaskUpload] = []
    skipped: list[str] = []
    for index, output in enumerate(message.outputs):
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
