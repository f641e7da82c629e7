"""Reading and removing what a job left in its job dir, which is untrusted.

Invariant: nothing here follows a symbolic link, at any level, or opens anything but a
regular file; nothing recurses, so a tree of any depth cannot exhaust the stack. Every
path is opened relative to a directory file descriptor with O_NOFOLLOW, starting at the
job dir, so a command that swaps a directory for a link to a host path (before or while
the worker reads) makes the open fail instead of reading the host's file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from lanworker.core.errors import JobFailed

logger = logging.getLogger(__name__)

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
MAX_DEPTH = 128  # directory levels below an output directory
MAX_ENTRIES = 200_000  # files and directories in one output tree
FLATTEN_DEPTH = 64  # remove_tree moves deeper subtrees up instead of holding more fds


class UnsafeOutput(JobFailed):
    """A job output is a link, a special file, a hardlink, or lies behind a link."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="unsafe-output")


class TreeTooLarge(JobFailed):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="output-too-large")


def apparent_bytes(info: os.stat_result) -> int:
    """What an entry weighs for limits: its length or its blocks, whichever is more. A
    sparse file of 5 GB occupies a few blocks here but uploads (and downloads) as 5 GB."""
    return max(info.st_size, info.st_blocks * 512)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _open_dir(name: str | Path, dir_fd: int | None, label: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeOutput(
                f"{label}: {name} is a link or not a directory; refusing to follow it"
            ) from None
        raise


def open_dir_beneath(root: Path, relative: PurePosixPath, label: str, create: bool = False) -> int:
    """A descriptor of root/relative, reached without following any link. With create, a
    missing level is made relative to its parent's descriptor on the way (mkdir -p that a
    planted link stops before anything is made behind it, as pathlib's mkdir would not)."""
    fd = _open_dir(root, None, label)
    try:
        for part in relative.parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            child = _open_dir(part, fd, label)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_beneath(root: Path, relative: PurePosixPath, label: str) -> BinaryIO:
    """Open root/relative for reading: a regular file with one link, reached without links.

    Raises FileNotFoundError when it does not exist, UnsafeOutput when it is anything else.
    """
    if not relative.parts:
        raise UnsafeOutput(f"{label}: the job dir itself is not a file")
    dir_fd = open_dir_beneath(root, relative.parent, label)
    try:
        info = os.stat(relative.name, dir_fd=dir_fd, follow_symlinks=False)
        _check_regular(info, label)
        fd = os.open(relative.name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeOutput(f"{label} is a symbolic link; refusing to read it") from None
        raise
    finally:
        os.close(dir_fd)
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise UnsafeOutput(f"{label} was replaced while it was opened")
    return os.fdopen(fd, "rb")


def create_beneath(root: Path, relative: PurePosixPath, label: str) -> BinaryIO:
    """Create (or truncate) root/relative for writing, reached and opened without links.

    For files the worker writes into a directory a container could write too (an
    executor's stdout file): a planted link or FIFO there makes this fail, never write
    through to the host. Missing parent directories are made the same way.
    """
    dir_fd = open_dir_beneath(root, relative.parent, label, create=True)
    try:
        fd = os.open(
            relative.name,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            0o666,
            dir_fd=dir_fd,
        )
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise UnsafeOutput(f"{label} is a link or a FIFO; refusing to write through it") from None
        raise
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeOutput(f"{label} is not a regular file; refusing to write it")
    return os.fdopen(fd, "wb")


def _check_regular(info: os.stat_result, label: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeOutput(f"{label} is {_kind(info.st_mode)}; only regular files are uploaded")
    if info.st_nlink != 1:
        raise UnsafeOutput(f"{label} has {info.st_nlink} hard links; only files with one link are uploaded")


@dataclass
class TreeListing:
    """Regular single-link files under a directory, and what was skipped, with why."""

    files: list[PurePosixPath] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_used: int = 0


def _entries(fd: int) -> list[tuple[str, os.stat_result]]:
    with os.scandir(fd) as scan:
        return sorted((entry.name, entry.stat(follow_symlinks=False)) for entry in scan)


def list_tree(
    root: Path,
    relative: PurePosixPath,
    label: str,
    max_depth: int = MAX_DEPTH,
    max_entries: int = MAX_ENTRIES,
) -> TreeListing:
    """Every file under root/relative (paths relative to root), depth-first in name order.

    Links, special files and hardlinked files are skipped (named in `skipped`); a tree
    deeper than max_depth or larger than max_entries raises TreeTooLarge.
    """
    listing = TreeListing()
    seen = 0
    top = open_dir_beneath(root, relative, label)
    stack: list[tuple[int, PurePosixPath, Iterator[tuple[str, os.stat_result]]]] = [
        (top, relative, iter(_entries(top)))
    ]
    try:
        while stack:
            fd, where, entries = stack[-1]
            item = next(entries, None)
            if item is None:
                os.close(fd)
                stack.pop()
                continue
            name, info = item
            seen += 1
            if seen > max_entries:
                raise TreeTooLarge(f"{label} holds more than {max_entries} entries")
            path = where / name
            listing.bytes_used += apparent_bytes(info)
            if stat.S_ISDIR(info.st_mode):
                if len(stack) >= max_depth:
                    raise TreeTooLarge(f"{label} is nested deeper than {max_depth} directories")
                child = _open_dir(name, fd, label)
                stack.append((child, path, iter(_entries(child))))
            elif stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                listing.files.append(path)
            elif stat.S_ISREG(info.st_mode):
                listing.skipped.append(f"{path}: {info.st_nlink} hard links")
            else:
                listing.skipped.append(f"{path}: {_kind(info.st_mode)}")
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return listing


def disk_usage_bytes(root: Path, max_entries: int = 10 * MAX_ENTRIES) -> int:
    """Bytes under root (links not followed), as apparent_bytes counts them; stops counting
    at max_entries."""
    total, seen = 0, 0
    try:
        stack = [os.open(root, DIR_FLAGS)]
    except OSError:
        return 0
    try:
        while stack and seen < max_entries:
            fd = stack.pop()
            try:
                entries = _entries(fd)
            except OSError:
                entries = []
            for name, info in entries:
                seen += 1
                total += apparent_bytes(info)
                if stat.S_ISDIR(info.st_mode):
                    with contextlib.suppress(OSError):
                        stack.append(os.open(name, DIR_FLAGS, dir_fd=fd))
            os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return total


# --------------------------------------------------------------------- removal
def remove_tree(path: Path) -> bool:
    """rm -rf that never recurses, never follows links and never raises.

    Copes with read-only directories a command left behind, and with trees of any depth:
    a subtree deeper than FLATTEN_DEPTH is moved up beside `path` and removed on its own,
    so neither the stack nor the open descriptors grow with the depth. Returns whether
    everything is gone; what could not be removed is logged.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc, extra={"action": "cleanup"})
        return False
    if not stat.S_ISDIR(info.st_mode):
        return _quietly(lambda: os.unlink(path), path)
    try:
        os.rmdir(path)  # an empty directory (most job dirs of jobs without files): one call
        return True
    except OSError:
        pass  # not empty, or not ours to remove this way: walk it
    pending = [path]
    complete = True
    while pending:
        top = pending.pop()
        try:
            complete = _remove_directory(top, path.parent, pending) and complete
        except OSError as exc:
            logger.warning("could not remove %s: %s", top, exc, extra={"action": "cleanup"})
            complete = False
    return complete


def _quietly(action: Callable[[], None], path: object) -> bool:
    """Run a removal; a missing entry is removed already, any other failure is logged."""
    try:
        action()
        return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc, extra={"action": "cleanup"})
        return False


def _retry_writable(action: Callable[[], None], fd: int) -> None:
    """Run action(); on EACCES/EPERM make the directory fd writable and try once more."""
    try:
        action()
    except PermissionError:
        os.fchmod(fd, stat.S_IRWXU)
        action()


def _open_for_removal(name: str, parent_fd: int) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        os.chmod(name, stat.S_IRWXU, dir_fd=parent_fd)
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)


def _remove_directory(top: Path, spill: Path, pending: list[Path]) -> bool:
    complete = True
    parent_fd = os.open(top.parent, DIR_FLAGS)
    try:
        top_fd = _open_for_removal(top.name, parent_fd)
    except BaseException:
        os.close(parent_fd)
        raise
    stack: list[tuple[int, str, Iterator[tuple[str, bool]]]] = [(top_fd, top.name, iter(_names(top_fd)))]
    try:
        while stack:
            fd, own_name, entries = stack[-1]
            item = next(entries, None)
            if item is None:
                stack.pop()
                os.close(fd)
                owner_fd = stack[-1][0] if stack else parent_fd
                complete = _remove_name(owner_fd, own_name, True) and complete
                continue
            name, is_dir = item
            if not is_dir:
                complete = _remove_name(fd, name, False) and complete
            elif len(stack) >= FLATTEN_DEPTH:
                moved = spill / f".lanworker-deep-{uuid.uuid4().hex}"
                os.rename(name, moved, src_dir_fd=fd)
                pending.append(moved)
            else:
                try:
                    child = _open_for_removal(name, fd)
                except OSError as exc:
                    logger.warning("could not remove %s/%s: %s", top, name, exc, extra={"action": "cleanup"})
                    complete = False
                    continue
                stack.append((child, name, iter(_names(child))))
    finally:
        for fd, _, _ in stack:
            os.close(fd)
        os.close(parent_fd)
    return complete


def _names(fd: int) -> list[tuple[str, bool]]:
    with os.scandir(fd) as scan:
        return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan]


def _remove_name(dir_fd: int, name: str, is_dir: bool) -> bool:
    def remove() -> None:
        if is_dir:
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    return _quietly(lambda: _retry_writable(remove, dir_fd), name)
