"""Jobs per second: lanworker against a naive loop (receive one, subprocess.run, delete)
and a batch loop, on SQS (a local moto_server) and on the embedded queue, in alternated
rounds of one run; jobs that take 20 ms each (where concurrency pays); and worker
processes sharing one SQLite file, every job exactly once.

    .venv/bin/python benchmarks/throughput.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3

from benchmarks import ROOT, byte_compile_lanworker, moto_server
from lanworker.core.config import build_config
from lanworker.loop.assemble import build_worker
from lanworker.queues import LocalQueue

NAIVE = "naive loop (receive 1, run, delete)"
BATCH = "batch loop (receive 10, parallel, batch delete)"
TRIVIAL_JOB = json.dumps({"service": "true", "command": {"arguments": []}})
WORK_S = 0.02  # the "working job": a command that takes this long (sleep), as real jobs take time


def fill(sqs: object, url: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": TRIVIAL_JOB} for i in range(start, min(count, start + 10))]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[attr-defined]


def naive_loop(sqs: object, url: str, count: int) -> float:
    started = time.perf_counter()
    done = 0
    while done < count:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1)  # type: ignore[attr-defined]
        for message in response.get("Messages", []):
            json.loads(message["Body"])
            subprocess.run(["true"], check=False)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])  # type: ignore[attr-defined]
            done += 1
    return time.perf_counter() - started


def batch_loop(sqs: object, url: str, count: int) -> float:
    """The ceiling of a hand-written SQS loop: receive 10, run them in parallel, delete in one batch."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    done = 0
    with ThreadPoolExecutor(10) as pool:
        while done < count:
            response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)  # type: ignore[attr-defined]
            messages = response.get("Messages", [])
            list(pool.map(lambda m: subprocess.run(["true"], check=False), messages))
            if messages:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                ]
                sqs.delete_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[attr-defined]
            done += len(messages)
    return time.perf_counter() - started


SHARED_SCRIPT = 'echo "$0" >> "$1"'  # sh -c SCRIPT ID FILE: each job appends its id to one file
NAIVE_PROCESS = """
import json, subprocess, sys
from lanworker.queues import LocalQueue
queue = LocalQueue(sys.argv[1])
while batch := queue.receive(1, 0, 300):
    for message in batch:
        job = json.loads(message.body)
        subprocess.run(["sh", "-c", *(a["value"] for a in job["command"]["arguments"])], check=False)
        queue.delete(message)
"""


def shared_queue(scratch: str, jobs: int, tag: str) -> tuple[LocalQueue, Path]:
    """A queue of `jobs` messages, each appending its id to one file (as the issue's jobs do)."""
    queue = LocalQueue(f"local:{scratch}/shared{tag}.db#jobs")
    ledger = Path(scratch) / f"ledger{tag}.txt"
    for index in range(jobs):
        arguments = [
            {"type": "parameter", "value": value} for value in (SHARED_SCRIPT, f"j{index}", str(ledger))
        ]
        queue.send(json.dumps({"id": f"j{index}", "service": "sh", "command": {"arguments": arguments}}))
    return queue, ledger


def children_cpu_s() -> float:
    """User and system CPU of every child process waited for so far (children of children too)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def each_once(ledger: Path, jobs: int) -> tuple[int, int]:
    """(ids written exactly once, ids written more than once) in the ledger."""
    counts: dict[str, int] = {}
    for line in ledger.read_text().split():
        counts[line] = counts.get(line, 0) + 1
    return sum(1 for n in counts.values() if n == 1), sum(1 for n in counts.values() if n > 1)


@dataclass(frozen=True)
class SharedRun:
    """One run of processes sharing one SQLite file."""

    elapsed_s: float
    cpu_s: float  # every process's CPU, the jobs' commands included
    exactly_once: int  # job ids found once in the ledger
    more_than_once: int


def naive_processes_on_one_file(scratch: str, jobs: int, processes: int, tag: str) -> SharedRun:
    """The baseline for processes_on_one_file: `processes` naive loops (receive one, run
    the same command, delete) on one SQLite queue."""
    queue, ledger = shared_queue(scratch, jobs, f"n{tag}")
    cpu_before, started = children_cpu_s(), time.perf_counter()
    loops = [
        subprocess.Popen([sys.executable, "-c", NAIVE_PROCESS, queue.url], cwd=ROOT) for _ in range(processes)
    ]
    for loop in loops:
        loop.wait()
    elapsed_s, cpu_s = time.perf_counter() - started, children_cpu_s() - cpu_before
    return SharedRun(elapsed_s, cpu_s, *each_once(ledger, jobs))


def processes_on_one_file(
    scratch: str, jobs: int, processes: int, concurrency: int, tag: str = ""
) -> SharedRun:
    """Worker processes sharing one SQLite file, each job delivering a result."""
    queue, ledger = shared_queue(scratch, jobs, tag)
    results = f"local:{scratch}/shared{tag}.db#results"
    cpu_before, started = children_cpu_s(), time.perf_counter()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "worker.py",
                "native",
                "--queue",
                queue.url,
                "--results",
                results,
                "--once",
                "--wait-time-s",
                "0",
                "--concurrency",
                str(concurrency),
                "--work-root",
                f"{scratch}/w{tag}-{index}",
                "--log-level",
                "WARNING",
                "--",
                "sh",
                "-c",
            ],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.wait()
    elapsed_s, cpu_s = time.perf_counter() - started, children_cpu_s() - cpu_before
    delivered = 0
    reader = LocalQueue(results)
    while batch := reader.receive(10, 0, 60):
        delivered += len(batch)
        reader.delete_batch(batch)
    if delivered != jobs:
        raise SystemExit(f"{delivered} results for {jobs} jobs")
    return SharedRun(elapsed_s, cpu_s, *each_once(ledger, jobs))


def naive_local_loop(queue: LocalQueue, count: int, command: tuple[str, ...] = ("true",)) -> float:
    started = time.perf_counter()
    done = 0
    while done < count:
        for message in queue.receive(1, 1, 300):
            json.loads(message.body)
            subprocess.run(command, check=False)
            queue.delete(message)
            done += 1
    return time.perf_counter() - started


def lanworker_run(
    url: str,
    concurrency: int,
    work_root: Path,
    results_url: str | None = None,
    command: tuple[str, ...] = ("true",),
) -> float:
    config = build_config(
        {
            "mode": "native",
            "base_command": command,
            "queue_url": url,
            "results_url": results_url,
            "once": True,
            "wait_time_s": 0,  # everything is queued already: no long poll before exiting
            "concurrency": concurrency,
            "work_root": work_root,
            "log_level": "WARNING",
        },
        {},
    )
    worker = build_worker(config)
    started = time.perf_counter()
    worker.run()
    return time.perf_counter() - started


def median_rates(jobs: int, rounds: list[dict[str, float]]) -> dict[str, float]:
    return {name: jobs / statistics.median(r[name] for r in rounds) for name in rounds[0]}


def sqs_round(sqs: object, jobs: int, tag: str, scratch: str) -> dict[str, float]:
    def queue(name: str) -> str:
        url: str = sqs.create_queue(QueueName=f"bench-{name}-{tag}")["QueueUrl"]  # type: ignore[attr-defined]
        fill(sqs, url, jobs)
        return url

    times = {NAIVE: naive_loop(sqs, queue("naive"), jobs), BATCH: batch_loop(sqs, queue("batch"), jobs)}
    for concurrency in (1, 8):
        url = queue(f"lanworker-{concurrency}")
        times[f"lanworker --concurrency {concurrency}"] = lanworker_run(
            url, concurrency, Path(scratch) / f"work-{concurrency}-{tag}"
        )
    # Results delivered too (the loops above deliver none): one SendMessageBatch per batch.
    results: str = sqs.create_queue(QueueName=f"bench-results-{tag}")["QueueUrl"]  # type: ignore[attr-defined]
    times["lanworker --concurrency 8 --results"] = lanworker_run(
        queue("lanworker-results"), 8, Path(scratch) / f"work-results-{tag}", results
    )
    return times


def local_round(jobs: int, tag: str, scratch: str) -> dict[str, float]:
    def queue(name: str) -> LocalQueue:
        filled = LocalQueue(f"local:{scratch}/bench.db#{name}-{tag}")
        for _ in range(jobs):
            filled.send(TRIVIAL_JOB)
        return filled

    times = {NAIVE: naive_local_loop(queue("naive"), jobs)}
    for concurrency in (1, 4, 8):
        url = queue(f"c{concurrency}").url
        times[f"lanworker --concurrency {concurrency}"] = lanworker_run(
            url, concurrency, Path(scratch) / f"work-local-{concurrency}-{tag}"
        )
    return times


def working_round(jobs: int, tag: str, scratch: str) -> dict[str, float]:
    """Jobs that take WORK_S each: what concurrency is for."""
    command = ("sleep", str(WORK_S))

    def queue(name: str) -> LocalQueue:
        filled = LocalQueue(f"local:{scratch}/bench.db#work-{name}-{tag}")
        for _ in range(jobs):
            filled.send(TRIVIAL_JOB)
        return filled

    times = {NAIVE: naive_local_loop(queue("naive"), jobs, command)}
    for concurrency in (1, 4):
        times[f"lanworker --concurrency {concurrency}"] = lanworker_run(
            queue(f"c{concurrency}").url,
            concurrency,
            Path(scratch) / f"work-{concurrency}-{tag}",
            command=command,
        )
    return times


def report_shared(jobs: int, naive: list[SharedRun], lanworker: list[SharedRun]) -> None:
    """Rates from the median round; the ratio also round by round (each round runs the two
    back to back, so a ratio compares runs that met the same machine); CPU per job."""
    naive_rate = jobs / statistics.median(run.elapsed_s for run in naive)
    for name, runs in (
        ("4 naive loops (receive 1, run, delete)", naive),
        ("lanworker, 4 processes x c=4", lanworker),
    ):
        rate = jobs / statistics.median(run.elapsed_s for run in runs)
        once = min(run.exactly_once for run in runs)
        more = max(run.more_than_once for run in runs)
        cpu_ms = 1000 * statistics.median(run.cpu_s for run in runs) / jobs
        print(
            f"  {name:40s} {rate:8.1f} jobs/s  {rate / naive_rate:5.2f}x naive; {cpu_ms:.2f} ms CPU a job; "
            f"exactly once (worst round): {once}, more: {more}"
        )
    ratios = sorted(n.elapsed_s / w.elapsed_s for n, w in zip(naive, lanworker, strict=True))
    print(
        f"  round by round: lanworker {ratios[0]:.2f}x to {ratios[-1]:.2f}x the naive loops, "
        f"median {statistics.median(ratios):.2f}x ({len(ratios)} rounds)"
    )
    # The machine's own drift: the same contender, the same work, round after round.
    rates = sorted(jobs / run.elapsed_s for run in naive)
    print(
        f"  the naive loops alone, round by round: {rates[0]:.0f} to {rates[-1]:.0f} jobs/s "
        f"({rates[-1] / rates[0] - 1:.0%} apart): a single round's ratio moves by as much"
    )


def main() -> int:
    byte_compile_lanworker()
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--shared-jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds; medians are printed")
    parser.add_argument("--shared-only", action="store_true", help="only the processes sharing one file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sqs_rounds: list[dict[str, float]] = []
        local_rounds: list[dict[str, float]] = []
        working_rounds: list[dict[str, float]] = []
        if not args.shared_only:
            with moto_server(scratch):
                sqs = boto3.client("sqs")
                sqs_rounds = [sqs_round(sqs, args.jobs, str(r), scratch) for r in range(args.rounds)]
            # The same on the embedded queue, which separates the worker's own overhead from
            # moto_server's (a single Python process sharing the two cores).
            local_rounds = [local_round(args.jobs, str(r), scratch) for r in range(args.rounds)]
            working_rounds = [working_round(args.jobs, str(r), scratch) for r in range(args.rounds)]
        shared, naive_shared = [], []
        for r in range(args.rounds):  # which goes first alternates: neither always meets a warmer machine
            if r % 2:
                shared.append(processes_on_one_file(scratch, args.shared_jobs, 4, 4, str(r)))
            naive_shared.append(naive_processes_on_one_file(scratch, args.shared_jobs, 4, str(r)))
            if not r % 2:
                shared.append(processes_on_one_file(scratch, args.shared_jobs, 4, 4, str(r)))
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; medians of {args.rounds} alternated rounds"
    )
    for title, rounds in (
        ("trivial jobs (`true`) through SQS on moto_server", sqs_rounds),
        ("trivial jobs (`true`) through the embedded local queue", local_rounds),
        (
            f"jobs of {WORK_S * 1000:.0f} ms (`sleep {WORK_S}`) through the embedded local queue",
            working_rounds,
        ),
    ):
        if not rounds:
            continue
        rates = median_rates(args.jobs, rounds)
        print(f"{args.jobs} {title}")
        for name, rate in rates.items():
            ratios = f"{rate / rates[NAIVE]:5.2f}x naive"
            if BATCH in rates and name != BATCH:
                ratios += f", {rate / rates[BATCH]:5.2f}x batch loop"
            print(f"  {name:48s} {rate:8.1f} jobs/s  {ratios}")
    print(f"{args.shared_jobs} jobs (sh -c 'echo ID >> file') on one SQLite file")
    report_shared(args.shared_jobs, naive_shared, shared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
