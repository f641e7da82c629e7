from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lanworker.core.errors import InvalidMessage, JobFailed
from lanworker.message import command as messages
from lanworker.message.policy import MessagePolicy
from lanworker.pipeline.collect import collect_uploads
from lanworker.pipeline.stage import stage_inputs
from lanworker.pipeline.workspace import Workspace, safe_relative
from lanworker.storage import Storage
from lanworker.storage.pool import Transfers


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "..", "/etc/passwd", "a//b", "a\\..\\b", "./a", "", "a/\x00"]
)
def test_hostile_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidMessage):
        safe_relative(key, "test")


@pytest.mark.parametrize("key", ["a", "a/b/c.txt", "with space/ünïcode+plus%20.txt", "dir/"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert str(safe_relative(key, "test")) == key.rstrip("/")


def make_workspace(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "job")
    workspace.create(for_containers=True)
    return workspace


def command_of(document: dict[str, Any]) -> messages.Command:
    command = messages.from_document(document).work
    assert isinstance(command, messages.Command)
    return command


def test_s3_uris_mirror_bucket_and_key(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    assert (
        workspace.input_path("s3://bucket/path/to/poly.shp", "t")
        == workspace.inputs / "s3/bucket/path/to/poly.shp"
    )
    assert workspace.output_path("s3://bucket/out/x", "t") == workspace.outputs / "s3/bucket/out/x"


def test_planted_symlink_cannot_redirect_staging(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace.inputs / "s3").mkdir()
    os.symlink(outside, workspace.inputs / "s3" / "bucket")
    with pytest.raises(InvalidMessage, match="outside the job dir"):
        workspace.input_path("s3://bucket/evil.txt", "t")


def test_local_files_can_be_disabled() -> None:
    message = messages.from_document(
        {"service": "s", "command": {"arguments": [{"type": "input", "value": "/etc/passwd"}]}}
    )
    [problem] = MessagePolicy(allow_local_files=False).problems(message)
    assert "$.command.arguments[0].value" in problem and "disabled" in problem


def test_stage_local_inputs_sidecars_and_outputs(tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.mkdir()
    (source / "poly.shp").write_text("shp")
    (source / "poly.dbf").write_text("dbf")
    (source / "polygon.txt").write_text("also matches the plain prefix")
    (source / "other.txt").write_text("not staged")
    document = {
        "service": "s",
        "command": {
            "arguments": [
                {"type": "input", "name": "--in", "value": f"file://{source}/poly.shp"},
                {"type": "parameter", "name": "--flag"},
                {"type": "output", "value": str(tmp_path / "results" / "out.txt")},
            ],
            "input": [f"file://{source}/poly"],
        },
    }
    workspace = make_workspace(tmp_path)
    staged = stage_inputs(command_of(document), workspace, Transfers(Storage(), 4))
    local_input = Path(staged.argv[1])
    assert staged.argv[0] == "--in" and staged.argv[2] == "--flag"
    assert sorted(p.name for p in local_input.parent.iterdir()) == ["poly.dbf", "poly.shp", "polygon.txt"]
    assert {r.size for r in staged.downloads} == {3, 29}
    Path(staged.argv[3]).write_text("result")
    uploads = collect_uploads(staged, workspace.root)
    assert uploads.files == [
        (workspace.relative(Path(staged.argv[3])), str(tmp_path / "results" / "out.txt"))
    ]


def test_missing_output_and_symlinked_output_fail(tmp_path: Path) -> None:
    document = {
        "service": "s",
        "command": {"arguments": [{"type": "output", "value": "s3://bucket/out.txt"}]},
    }
    workspace = make_workspace(tmp_path)
    staged = stage_inputs(command_of(document), workspace, Transfers(Storage(), 1))
    with pytest.raises(JobFailed, match="not produced"):
        collect_uploads(staged, workspace.root)
    os.symlink("/etc/passwd", staged.argv[0])
    with pytest.raises(JobFailed, match="symbolic link") as refused:
        collect_uploads(staged, workspace.root)
    assert refused.value.reason == "unsafe-output"


def test_missing_local_input_is_a_job_failure(tmp_path: Path) -> None:
    document = {
        "service": "s",
        "command": {"arguments": [{"type": "input", "value": str(tmp_path / "nope.txt")}]},
    }
    with pytest.raises(JobFailed, match="not found"):
        stage_inputs(command_of(document), make_workspace(tmp_path), Transfers(Storage(), 1))


def test_workspace_removal_handles_read_only_dirs(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path)
    locked = workspace.outputs / "locked"
    locked.mkdir()
    (locked / "file").write_text("x")
    locked.chmod(0o500)
    workspace.remove()
    assert not workspace.root.exists()


def test_docker_host_workdir_maps_bind_mount_sources(tmp_path: Path) -> None:
    from lanworker.executors.docker import DockerExecutor, DockerSettings

    work_root = tmp_path / "work"
    workspace = Workspace(work_root / "worker-1" / "job-1")
    same_path = DockerExecutor(DockerSettings(("*",), "worker-1", work_root))
    assert same_path.host_path(workspace) == str(workspace.root)
    mapped = DockerExecutor(
        DockerSettings(("*",), "worker-1", work_root, host_workdir=Path("/srv/lanworker"))
    )
    assert mapped.host_path(workspace) == "/srv/lanworker/worker-1/job-1"
    to_container = mapped.path_mapper(workspace)
    assert to_container(workspace.inputs / "s3" / "b" / "k.txt") == "/job/in/s3/b/k.txt"


def test_storage_never_takes_another_scheme_for_a_local_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobFailed, match="not a local path"):
        Storage().write_bytes("ftp://host/control/cancel/j", b"{}")
    assert list(tmp_path.iterdir()) == []  # no directory named 'ftp:' appeared
