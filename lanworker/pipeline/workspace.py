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

import contextlib
import functools
import itertools
import os
import posixpath
import secrets
import stat
import threading
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


class JobDirs:
    """A worker's job dirs, all under WORK_ROOT/WORKER_ID, each named after its job.

    An empty job dir left as it was made (this uid, the mode mkdir gives it, no extended
    attributes or ACLs) is set aside as a spare and renamed into place for a later job: on
    ext4 a mkdir and an rmdir per job cost a native worker about 0.1 ms of CPU (its own
    share of a trivial job is about 0.7 ms), the two renames about 20 us. A job cannot
    tell a spare from a new dir but by its inode number and timestamps. At most
    `keep` spares exist; they live in the worker's own dir, removed with it when the
    worker stops or is found dead.
    """

    def __init__(self, parent: Path, keep: int) -> None:
        self.parent = parent
        self._mode = _mkdir_mode()
        self._uid = os.geteuid()
        self.keep = keep if self._mode is not None else 0
        self._tag = secrets.token_hex(3)  # names stay unique across runs (--keep-workdir)
        self._serial = itertools.count()
        self._spares: list[Path] = []
        self._lock = threading.Lock()

    def workspace(self, job_id: str) -> Workspace:
        return Workspace(self.parent / f"{job_id}-{self._tag}{next(self._serial)}", self)

    def make(self, root: Path) -> None:
        with self._lock:
            spare = self._spares.pop() if self._spares else None
        if spare is not None:
            with contextlib.suppress(OSError):
                os.rename(spare, root)
                return
        root.mkdir(parents=True, exist_ok=True)

    def set_aside(self, root: Path) -> bool:
        """Whether root, empty and as made, is now a spare (else the caller removes it)."""
        if not self._as_made(root):
            return False
        with self._lock:  # the count and the rename together: never more than `keep`
            if len(self._spares) >= self.keep:
                return False
            spare = self.parent / f".spare-{self._tag}{next(self._serial)}"
            try:
                os.rename(root, spare)
            except OSError:
                return False
            self._spares.append(spare)
        return True

    def _as_made(self, root: Path) -> bool:
        try:
            info = os.lstat(root)
            if not (
                stat.S_ISDIR(info.st_mode)
                and info.st_uid == self._uid
                and stat.S_IMODE(info.st_mode) == self._mode
            ):
                return False
            if os.listxattr(root, follow_symlinks=False):
                return False  # an ACL or attribute the job set must not reach the next one
            with os.scandir(root) as entries:
                return next(entries, None) is None
        except OSError:
            return False


def _mkdir_mode() -> int | None:
    """The mode a new directory gets under this process's umask (read, never set: setting
    it would race every other thread), or None where that cannot be read (not Linux)."""
    if not hasattr(os, "listxattr"):
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o777 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


class Workspace:
    """One job's directory: `in/`, `out/`, `streams/`. Removal copes with foreign-owned files."""

    def __init__(self, root: Path, dirs: JobDirs | None = None) -> None:
        self.root = root
        self._dirs = dirs

    # Joined when first asked for: most native jobs never touch their subdirectories.
    @functools.cached_property
    def inputs(self) -> Path:
        return self.root / "in"

    @functools.cached_property
    def outputs(self) -> Path:
        return self.root / "out"

    @functools.cached_property
    def streams(self) -> Path:
        return self.root / "streams"

    def create(self, for_containers: bool) -> None:
        """The job dir. For containers also in/, out/ and streams/, writable by any uid: they
        run as the worker's uid by default, but a service may run as another user and must
        still write its outputs. A native job's subdirectories appear as it uses them."""
        if self._dirs is not None:
            self._dirs.make(self.root)
        else:
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
        if self._dirs is None or not self._dirs.set_aside(self.root):
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
