"""Staging speed: lanworker against `aws s3 cp`, `s5cmd cp` and a raw boto3 script, on one
moto_server started here, in alternated rounds; medians, ratios and lanworker's peak RSS.

    .venv/bin/python benchmarks/staging.py [--rounds 3] [--files 1000] [--big-mb 256 1024]

lanworker runs as users run it: a real `worker.py native --once` process on the embedded
queue whose message names s3:// inputs (a prefix, or one big object), outputs (a directory
the command fills with `cp`) or stdin. Each tool is a whole process, start-up included.
Ratios above 1 mean lanworker is faster. Needs `pip install -e '.[dev,bench]'`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3

from benchmarks import byte_compile_lanworker
from lanworker.queues import LocalQueue
from tests.helpers.moto import MotoServer, apply_environment, free_port

ROOT = Path(__file__).resolve().parents[1]
SMALL_BYTES = 64 * 1024
Run = Callable[[], tuple[float, int]]  # -> (seconds, peak RSS in KiB)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Seconds, and the peak RSS in KiB of the program itself: VmHWM sampled from /proc
    while it runs (the kernel's ru_maxrss would include this large benchmark process,
    which the child is forked from before it execs)."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors, cwd=ROOT)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _high_water_kib(process.pid))
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            error = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{argv[:3]} exited {process.returncode}: {error}")
    return elapsed, peak


def _high_water_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def lanworker_job(work: Path, message: dict[str, object], command: list[str]) -> Run:
    def run() -> tuple[float, int]:
        state = Path(tempfile.mkdtemp(dir=work))
        queue = LocalQueue(f"local:{state / 'q.db'}#jobs")
        queue.send(json.dumps({"service": "bench", **message}))
        results = f"local:{state / 'q.db'}#results"
        seconds, rss = timed(
            [sys.executable, "worker.py", "native", "--queue", queue.url, "--results", results, "--once",
             "--wait-time-s", "0", "--work-root", str(state / "work"), "--log-level", "WARNING", "--", *command]
        )  # fmt: skip
        [reply] = LocalQueue(results).receive(1, 0, 30)
        result = json.loads(reply.body)
        if result["state"] != "succeeded":
            raise RuntimeError(f"lanworker job failed: {result.get('error')}")
        shutil.rmtree(state, ignore_errors=True)
        return seconds, rss

    return run


def fresh_dir(work: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=work))


def main() -> int:
    byte_compile_lanworker()
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--big-mb", type=int, nargs="*", default=[256])
    parser.add_argument("--stdin-mb", type=int, default=0, help="also stream an object of this size to stdin")
    args = parser.parse_args()
    aws = shutil.which("aws") or str(Path(sys.executable).parent / "aws")
    s5cmd = shutil.which("s5cmd") or str(Path(sys.executable).parent / "s5cmd")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        server = MotoServer(free_port(), work / "moto.log")
        server.start()
        apply_environment(server)
        env = {**os.environ}
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        payload = os.urandom(SMALL_BYTES)
        for index in range(args.files):
            s3.put_object(Bucket="bench", Key=f"prefix/f{index:05d}.bin", Body=payload)
        local_files = work / "local-files"
        local_files.mkdir()
        for index in range(args.files):
            (local_files / f"f{index:05d}.bin").write_bytes(payload)
        for size_mb in args.big_mb:
            with (work / "big.bin").open("wb") as handle:
                for _ in range(size_mb):
                    handle.write(os.urandom(1024 * 1024))
            s3.upload_file(str(work / "big.bin"), "bench", f"big-{size_mb}.bin")
        (work / "big.bin").unlink(missing_ok=True)
        endpoint = ["--endpoint-url", server.endpoint]
        boto_script = ROOT / "benchmarks" / "boto3_get.py"

        def aws_cp(*arguments: str) -> tuple[float, int]:
            return timed([aws, *endpoint, "s3", "cp", "--quiet", *arguments], env)

        cases: dict[str, dict[str, Run]] = {
            f"prefix download {args.files} x 64 KiB": {
                "lanworker": lanworker_job(work, {"command": {"input": ["s3://bench/prefix/"]}}, ["true"]),
                "aws s3 cp": lambda: aws_cp("--recursive", "s3://bench/prefix/", str(fresh_dir(work))),
                "s5cmd cp": lambda: timed(
                    [s5cmd, *endpoint, "cp", "s3://bench/prefix/*", str(fresh_dir(work)) + "/"], env
                ),
                "boto3 16 threads": lambda: timed(
                    [sys.executable, str(boto_script), "bench", "prefix/", str(fresh_dir(work))], env
                ),
            },
            f"upload {args.files} x 64 KiB outputs": {
                "lanworker": lanworker_job(
                    work,
                    {"command": {"arguments": [{"type": "output", "value": "s3://bench/up-lw/"}]}},
                    [
                        "cp",
                        "-r",
                        f"{local_files}/.",
                    ],
                ),
                "aws s3 cp": lambda: aws_cp("--recursive", str(local_files), "s3://bench/up-aws/"),
                "s5cmd cp": lambda: timed(
                    [s5cmd, *endpoint, "cp", f"{local_files}/", "s3://bench/up-s5/"], env
                ),
            },
        }
        for size_mb in args.big_mb:
            key = f"s3://bench/big-{size_mb}.bin"
            cases[f"one {size_mb} MB input object"] = {
                "lanworker": lanworker_job(
                    work, {"command": {"arguments": [{"type": "input", "value": key}]}}, ["true"]
                ),
                "aws s3 cp": lambda key=key: aws_cp(key, str(fresh_dir(work) / "o")),
                "s5cmd cp": lambda key=key: timed(
                    [s5cmd, *endpoint, "cp", key, str(fresh_dir(work) / "o")], env
                ),
                "boto3 one GET": lambda key=key: timed(
                    [
                        sys.executable,
                        str(boto_script),
                        "bench",
                        key.split("/", 3)[3],
                        str(fresh_dir(work)),
                        "--single",
                    ],
                    env,
                ),
            }
        if args.stdin_mb:
            s3.upload_fileobj(_Zeros(args.stdin_mb * 1024 * 1024), "bench", "stdin.bin")
            cases[f"{args.stdin_mb} MB object to stdin"] = {
                "lanworker": lanworker_job(
                    work,
                    {"command": {"stdin": {"type": "uri", "value": "s3://bench/stdin.bin"}}},
                    ["wc", "-c"],
                ),
                "aws s3 cp - | wc": lambda: timed(
                    [
                        "sh",
                        "-c",
                        f"{aws} --endpoint-url {server.endpoint} s3 cp s3://bench/stdin.bin - | wc -c",
                    ],
                    env,
                ),
                "s5cmd cat | wc": lambda: timed(
                    [
                        "sh",
                        "-c",
                        f"{s5cmd} --endpoint-url {server.endpoint} cat s3://bench/stdin.bin | wc -c",
                    ],
                    env,
                ),
            }
        report(cases, args.rounds, work)
        server.stop()
    return 0


class _Zeros:
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, amount: int = -1) -> bytes:
        amount = self.left if amount < 0 else min(amount, self.left)
        self.left -= amount
        return b"\0" * amount


def report(cases: dict[str, dict[str, Run]], rounds: int, work: Path) -> None:
    print(
        f"machine: {os.cpu_count()} cores, {sys.platform}; one moto_server; medians of {rounds} alternated rounds"
    )
    for case, tools in cases.items():
        timings: dict[str, list[float]] = {name: [] for name in tools}
        rss: list[int] = []
        for _ in range(rounds):
            for name, run in tools.items():  # alternated: every tool once per round
                seconds, peak = run()
                timings[name].append(seconds)
                if name == "lanworker":
                    rss.append(peak)
            for leftover in work.glob("tmp*"):
                shutil.rmtree(leftover, ignore_errors=True)
        medians = {name: statistics.median(values) for name, values in timings.items()}
        print(f"\n{case}")
        for name, seconds in medians.items():
            ratio = seconds / medians["lanworker"]
            print(f"  {name:20} {seconds:7.2f} s   lanworker is {ratio:4.2f}x")
        print(f"  lanworker peak RSS {max(rss) / 1024:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
