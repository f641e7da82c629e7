"""Jobs per second through SQS on a local moto_server: lanworker at concurrency 1 and 8
against a naive loop (receive one, subprocess.run, delete) measured in the same run.

    .venv/bin/python benchmarks/throughput.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3

from lanworker.config import build_config
from lanworker.queues import LocalQueue
from lanworker.worker import build_worker
from tests.helpers.moto import MotoServer, apply_environment, free_port

TRIVIAL_JOB = json.dumps({"service": "true", "command": {"arguments": []}})


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


def processes_on_one_file(
    scratch: str, jobs: int, processes: int, concurrency: int
) -> tuple[float, int, int]:
    """(seconds, jobs with exactly one result, jobs with more) for worker processes sharing one SQLite file."""
    queue = LocalQueue(f"local:{scratch}/shared.db#jobs")
    for index in range(jobs):
        queue.send(json.dumps({"id": f"j{index}", "service": "true", "command": {"arguments": []}}))
    results = f"local:{scratch}/shared.db#results"
    root = Path(__file__).resolve().parents[1]
    started = time.perf_counter()
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
                f"{scratch}/w{index}",
                "--log-level",
                "WARNING",
                "--",
                "true",
            ],
            cwd=root,
            stderr=subprocess.DEVNULL,
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.wait()
    elapsed = time.perf_counter() - started
    seen: dict[str, int] = {}
    reader = LocalQueue(results)
    while batch := reader.receive(10, 0, 60):
        for message in batch:
            job = json.loads(message.body)["job_id"]
            seen[job] = seen.get(job, 0) + 1
            reader.delete(message)
    return elapsed, sum(1 for n in seen.values() if n == 1), sum(1 for n in seen.values() if n > 1)


def naive_local_loop(queue: LocalQueue, count: int) -> float:
    started = time.perf_counter()
    done = 0
    while done < count:
        for message in queue.receive(1, 1, 300):
            json.loads(message.body)
            subprocess.run(["true"], check=False)
            queue.delete(message)
            done += 1
    return time.perf_counter() - started


def lanworker_run(url: str, concurrency: int, work_root: Path) -> float:
    config = build_config(
        {
            "mode": "native",
            "base_command": ("true",),
            "queue_url": url,
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--shared-jobs", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        server = MotoServer(free_port(), Path(scratch) / "moto.log")
        server.start()
        apply_environment(server)
        try:
            sqs = boto3.client("sqs")
            rows = []
            url = sqs.create_queue(QueueName="bench-naive")["QueueUrl"]
            fill(sqs, url, args.jobs)
            baseline = naive_loop(sqs, url, args.jobs)
            rows.append(("naive loop (receive 1, run, delete)", baseline))
            url = sqs.create_queue(QueueName="bench-batch")["QueueUrl"]
            fill(sqs, url, args.jobs)
            rows.append(("batch loop (receive 10, parallel, batch delete)", batch_loop(sqs, url, args.jobs)))
            for concurrency in (1, 8):
                url = sqs.create_queue(QueueName=f"bench-lanworker-{concurrency}")["QueueUrl"]
                fill(sqs, url, args.jobs)
                elapsed = lanworker_run(url, concurrency, Path(scratch) / f"work-{concurrency}")
                rows.append((f"lanworker --concurrency {concurrency}", elapsed))
        finally:
            server.stop()
        # The same on the embedded queue, which separates the worker's own overhead from
        # moto_server's (a single Python process sharing the two cores).
        local_rows = []
        queue = LocalQueue(f"local:{scratch}/bench.db#naive")
        for _ in range(args.jobs):
            queue.send(TRIVIAL_JOB)
        local_baseline = naive_local_loop(queue, args.jobs)
        local_rows.append(("naive loop (receive 1, run, delete)", local_baseline))
        for concurrency in (1, 4, 8):
            queue = LocalQueue(f"local:{scratch}/bench.db#c{concurrency}")
            for _ in range(args.jobs):
                queue.send(TRIVIAL_JOB)
            elapsed = lanworker_run(queue.url, concurrency, Path(scratch) / f"work-local-{concurrency}")
            local_rows.append((f"lanworker --concurrency {concurrency}", elapsed))
        shared = processes_on_one_file(scratch, args.shared_jobs, 4, 4)
    for title, table, base in (
        ("through SQS on moto_server", rows, baseline),
        ("through the embedded local queue", local_rows, local_baseline),
    ):
        print(f"{args.jobs} trivial jobs (`true`) {title}")
        for name, elapsed in table:
            print(f"  {name:48s} {args.jobs / elapsed:8.1f} jobs/s  ratio vs naive {base / elapsed:5.2f}x")
    elapsed, once, more = shared
    print(f"{args.shared_jobs} jobs, 4 worker processes x concurrency 4 on one SQLite file")
    print(f"  {args.shared_jobs / elapsed:8.1f} jobs/s; exactly once: {once}, more than once: {more}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
