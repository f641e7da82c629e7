"""Job dirs: each job gets a dir of its own name; an empty dir left as it was made is
reused for a later job (renamed, not made again), anything a job changed is removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lanworker.pipeline.workspace import JobDirs


def made(dirs: JobDirs, job_id: str) -> Path:
    workspace = dirs.workspace(job_id)
    workspace.create(for_containers=False)
    assert workspace.root.is_dir() and workspace.root.parent == dirs.parent
    assert job_id in workspace.root.name and list(workspace.root.iterdir()) == []
    return workspace.root


def test_an_empty_job_dir_is_renamed_into_place_for_the_next_job(tmp_path: Path) -> None:
    dirs = JobDirs(tmp_path, keep=2)
    first = dirs.workspace("a")
    first.create(for_containers=False)
    inode = first.root.stat().st_ino
    first.remove()
    assert not first.root.exists()
    second = made(dirs, "b")
    assert second.stat().st_ino == inode and second.name != first.root.name
    assert [p.name for p in tmp_path.iterdir()] == [second.name]  # no spare left beside it


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "left-behind").write_text("x"),
        lambda root: (root / "sub").mkdir(),
        lambda root: os.chmod(root, 0o700),
        lambda root: os.setxattr(root, "user.mark", b"1"),
    ],
    ids=["a file", "a subdirectory", "its mode", "an extended attribute"],
)
def test_a_job_dir_the_job_changed_is_removed_never_reused(tmp_path: Path, change: object) -> None:
    dirs = JobDirs(tmp_path, keep=2)
    workspace = dirs.workspace("a")
    workspace.create(for_containers=False)
    try:
        change(workspace.root)  # type: ignore[operator]
    except OSError as exc:  # a filesystem without user xattrs: nothing to check there
        pytest.skip(f"cannot change the dir this way here: {exc}")
    workspace.remove()
    assert list(tmp_path.iterdir()) == []  # removed, nothing set aside
    made(dirs, "b")


def test_no_more_spares_are_kept_than_jobs_run_at_once(tmp_path: Path) -> None:
    dirs = JobDirs(tmp_path, keep=2)
    workspaces = [dirs.workspace(f"j{index}") for index in range(5)]
    for workspace in workspaces:
        workspace.create(for_containers=False)
    for workspace in workspaces:
        workspace.remove()
    assert len(list(tmp_path.iterdir())) == 2
    roots = [made(dirs, f"k{index}") for index in range(3)]  # two renamed spares, one made
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(root.name for root in roots)


def test_container_job_dirs_are_never_kept(tmp_path: Path) -> None:
    dirs = JobDirs(tmp_path, keep=2)
    workspace = dirs.workspace("c")
    workspace.create(for_containers=True)
    workspace.remove()
    assert list(tmp_path.iterdir()) == []
