"""Where a job's files live: its work dir, and for a container task where each container
path lives on the host.

A command job's dir has `in/` (inputs, mirroring scheme, bucket and key: `in/s3/BUCKET/KEY`,
so a sidecar named by a prefix lands next to the file named in the arguments), `out/`
(outputs: an upload never re-uploads an input) and `streams/`.

A container task's executors see the same files: its inputs (read-only) and a set of
writable directories (its volumes, the directories its outputs are written in, its
executors' working directories and stdout/stderr directories). Each writable directory is
one bind mount of a directory under the job dir; nested ones share their outer mount.
Inputs that fall inside a writable directory are placed there; the others are mounted
read-only:

    task/fs/ABSOLUTE/PATH   the host side of every writable mount
    task/in/N/NAME          input N, when it is not inside a writable mount

Invariant: every host path is the job dir plus a checked relative path (messages refuse
'..', symlinks planted in the job dir are caught), and everything read back from it goes
through `storage.safefs`. Executors import this module and nothing else of the pipeline.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

from lanworker.core.errors import InvalidMessage, JobFailed
from lanworker.message.command import ContainerTask, key_problem, local_path, uri_scheme
from lanworker.storage import S3Location
from lanworker.storage.safefs import create_beneath, open_beneath, remove_tree

PathMapper = Callable[[Path], str]


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


@dataclass(frozen=True)
class Mount:
    container: str
    host: Path
    read_only: bool


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


def _writable_dirs(task: ContainerTask) -> list[str]:
    wanted = [volume.rstrip("/") or "/" for volume in task.volumes]
    for output in task.outputs:
        if output.has_wildcards:
            wanted.append((output.path_prefix or "/").rstrip("/") or "/")
        elif output.is_directory:
            wanted.append(output.path.rstrip("/") or "/")
        else:
            wanted.append(posixpath.dirname(output.path))
    for executor in task.executors:
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


def plan_layout(task: ContainerTask, workspace: Workspace) -> TaskLayout:
    """One bind mount per writable directory, one read-only mount per outermost input; an
    input at or inside another input's path (a FILE in a DIRECTORY input, or two inputs at
    one path) is placed in that input's tree, so nested inputs merge into one mount."""
    layout = TaskLayout(workspace.root)
    for directory in _writable_dirs(task):
        host = workspace.root / "task" / "fs" / directory.lstrip("/")
        host.mkdir(parents=True, exist_ok=True)
        layout.mounts.append(Mount(directory, host, read_only=False))
    by_depth = sorted(enumerate(task.inputs), key=lambda pair: (pair[1].path.count("/"), pair[0]))
    for index, item in by_depth:
        if layout.readable_host(item.path) is None:
            host = workspace.root / "task" / "in" / str(index) / (posixpath.basename(item.path) or "input")
            layout.mounts.append(Mount(item.path, host, read_only=True))
    return layout
