"""What a job leaves behind is untrusted: links, special files, deep trees, a full disk."""

from __future__ import annotations

import os
from pathlib import Path

from lanworker.storage.safefs import remove_tree
from tests.security.conftest import RunJob, output_arg


def test_a_symlinked_parent_of_an_output_file_is_refused(
    run_job: RunJob, host_dir: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "dest"
    script = f'd=$(dirname "$2"); rm -rf "$d"; ln -s {host_dir} "$d"'
    result = run_job(script, {"command": {"arguments": [output_arg(f"file://{destination}/sub/a.txt")]}})
    assert (result["state"], result["reason"]) == ("failed", "unsafe-output")
    assert not destination.exists()


def test_a_symlinked_output_directory_is_refused(run_job: RunJob, host_dir: Path, tmp_path: Path) -> None:
    destination = tmp_path / "dest"
    script = f'rm -rf "$2"; ln -s {host_dir} "${{2%/}}"'
    result = run_job(script, {"command": {"arguments": [output_arg(f"{destination}/dir/")]}})
    assert (result["state"], result["reason"]) == ("failed", "unsafe-output")
    assert not destination.exists()


def test_a_symlinked_output_prefix_directory_is_refused(
    run_job: RunJob, host_dir: Path, tmp_path: Path, work_root: Path
) -> None:
    destination = tmp_path / "dest"
    script = f"cd out/file{tmp_path}; rm -rf dest; ln -s {host_dir} dest"
    result = run_job(script, {"command": {"output": [f"{destination}/a"]}})
    assert (result["state"], result["reason"]) == ("failed", "unsafe-output")
    assert not destination.exists()


def test_an_encoded_slash_in_a_file_name_stays_in_the_destination(run_job: RunJob, tmp_path: Path) -> None:
    destination = tmp_path / "deep" / "dest"
    script = 'echo escaped > "$2/..%2f..%2fescaped.txt"'
    result = run_job(script, {"command": {"arguments": [output_arg(f"file://{destination}/")]}})
    assert result["state"] == "succeeded", result
    assert (destination / "..%2f..%2fescaped.txt").read_text() == "escaped\n"
    assert not (tmp_path / "escaped.txt").exists()


def test_hardlinks_and_special_files_are_skipped_with_a_warning(
    run_job: RunJob, host_dir: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "dest"
    script = (
        f'ln {host_dir}/a.txt "$2/hard.txt"; mkfifo "$2/fifo"; '
        f'(cd "$2" && python3 -c "import socket; socket.socket(socket.AF_UNIX).bind(\'sock\')"); '
        f'ln -s {host_dir}/a.txt "$2/link.txt"; echo ok > "$2/real.txt"'
    )
    result = run_job(script, {"timeout_s": 60, "command": {"arguments": [output_arg(f"{destination}/")]}})
    assert result["state"] == "succeeded", result
    assert sorted(p.name for p in destination.iterdir()) == ["real.txt"]
    skipped = " ".join(result["skipped_outputs"])
    for name, kind in (
        ("hard.txt", "hard links"),
        ("fifo", "FIFO"),
        ("sock", "socket"),
        ("link.txt", "link"),
    ):
        assert name in skipped and kind in skipped
    assert (host_dir / "a.txt").read_text() == "host secret"


def test_a_named_output_that_is_a_fifo_fails_the_job_without_hanging(run_job: RunJob, tmp_path: Path) -> None:
    result = run_job('mkfifo "$2"', {"command": {"arguments": [output_arg(str(tmp_path / "out.txt"))]}})
    assert (result["state"], result["reason"]) == ("failed", "unsafe-output")


def test_a_deep_output_tree_fails_the_job_and_the_worker_goes_on(run_job: RunJob, tmp_path: Path) -> None:
    script = (
        'python3 -c "import os,sys\nos.chdir(sys.argv[1])\nfor _ in range(1900):\n'
        "    os.mkdir('d'); os.chdir('d')\nopen('f','w').write('x')\" \"$2\""
    )
    result = run_job(script, {"command": {"arguments": [output_arg(f"{tmp_path}/dest/")]}})
    assert (result["state"], result["reason"]) == ("failed", "output-too-large")
    assert "deeper than" in result["error"]
    # The worker's own clean-up coped with the tree: the next job runs.
    assert run_job("true", {"command": {"arguments": []}})["state"] == "succeeded"


def test_start_up_cleanup_survives_a_deep_tree_left_by_a_dead_worker(
    run_job: RunJob, work_root: Path
) -> None:
    leftover = work_root / "dead-worker" / "job-1" / "out"
    leftover.mkdir(parents=True)
    (work_root / "dead-worker.lock").write_text("")
    fd = os.open(leftover, os.O_RDONLY)
    for _ in range(1900):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    assert run_job("true", {"command": {"arguments": []}})["state"] == "succeeded"
    assert not (work_root / "dead-worker").exists()


def test_remove_tree_never_raises(tmp_path: Path) -> None:
    assert remove_tree(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    assert remove_tree(tmp_path / "file") and not (tmp_path / "file").exists()


def test_a_job_that_fills_its_job_dir_is_stopped_at_the_disk_limit(run_job: RunJob, tmp_path: Path) -> None:
    script = "python3 -c \"import time\nf=open('big','wb')\nwhile True:\n    f.write(b'x'*(1<<20)); f.flush(); time.sleep(0.005)\""
    result = run_job(script, {"timeout_s": 120, "command": {"arguments": []}}, max_job_disk_mb=50)
    assert (result["state"], result["reason"]) == ("failed", "disk-limit")
    assert result["timings_s"]["running"] < 60


def test_a_sparse_output_counts_at_its_apparent_size(run_job: RunJob, tmp_path: Path) -> None:
    destination = tmp_path / "dest"
    script = 'truncate -s 5G "$2"'
    result = run_job(
        script, {"command": {"arguments": [output_arg(f"{destination}/big.bin")]}}, max_output_mb=64
    )
    assert (result["state"], result["reason"]) == ("failed", "output-too-large"), result
    assert "5368709120 bytes" in result["error"]
    assert not destination.exists()  # refused before any upload


def test_a_sparse_file_counts_for_the_disk_limit(run_job: RunJob, tmp_path: Path) -> None:
    script = 'truncate -s 2G "$2"; sleep 30'
    result = run_job(
        script,
        {"timeout_s": 60, "command": {"arguments": [output_arg(f"{tmp_path}/dest/big.bin")]}},
        max_job_disk_mb=64,
    )
    assert (result["state"], result["reason"]) == ("failed", "disk-limit"), result


def test_outputs_within_max_output_mb_upload(run_job: RunJob, tmp_path: Path) -> None:
    result = run_job(
        'head -c 1000 /dev/zero > "$2"',
        {"command": {"arguments": [output_arg(f"{tmp_path}/dest/small.bin")]}},
        max_output_mb=1,
    )
    assert result["state"] == "succeeded", result
    assert (tmp_path / "dest" / "small.bin").stat().st_size == 1000
