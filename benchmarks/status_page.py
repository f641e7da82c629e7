"""Server time per status page with 10,000 jobs in the store (a real `serve` process, over HTTP).

    .venv/bin/python benchmarks/status_page.py [--jobs 10000] [--rounds 20]

Fills a SQLite task store with finished and running jobs (as the projection writes them),
starts `worker.py serve --workers 0` on it and times, per page, the median of `--rounds`
requests: the first list page, a filtered page, a search that scans the whole store, a
job page, the JSON the `jobs` command reads and the TES list (MINIMAL, 256 tasks).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from lanworker.tes.convert import rfc3339
from lanworker.tes.store import SqliteTaskStore
from tests.helpers.moto import free_port

STATES = ["COMPLETE"] * 6 + ["EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "RUNNING"]


def fill(store: SqliteTaskStore, count: int) -> None:
    now = time.time()
    db = store._db()
    db.execute("BEGIN")
    for index in range(count):
        created = now - (count - index) * 3
        state = STATES[index % len(STATES)]
        record = {
            "id": f"job-{index:06d}",
            "kind": "tes",
            "created_at": created,
            "creation_time": rfc3339(created),
            "name": f"sample-{index % 500}",
            "state": state,
            "tags": {"project": f"p{index % 7}"},
            "task": {"executors": [{"image": "biocontainers/samtools:1.17", "command": ["samtools", "index", "/data/in.bam"]}]},
            "events": [
                {"state": "received", "time": created + 1, "worker_id": f"worker-{index % 8}"},
                {"state": "running", "time": created + 2, "worker_id": f"worker-{index % 8}"},
            ],
            "log": {"worker_id": f"worker-{index % 8}", "start_time": rfc3339(created + 2),
                    **({"end_time": rfc3339(created + 40), "exit_code": 0 if state == "COMPLETE" else 1} if state != "RUNNING" else {})},
        }  # fmt: skip
        db.execute(
            "INSERT INTO tasks (id, created_at, state, doc) VALUES (?, ?, ?, ?)",
            (record["id"], created, state, json.dumps(record)),
        )
    db.execute("COMMIT")


def median_ms(url: str, rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = requests.get(url, timeout=60)
        response.raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        store = SqliteTaskStore(Path(state) / "tasks.db")
        fill(store, args.jobs)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "worker.py", "serve", "--workers", "0", "--port", str(port), "--state-dir", state,
             "--log-level", "WARNING"],
            cwd=Path(__file__).resolve().parents[1], stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if requests.get(f"{base}/healthz", timeout=1).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.1)
            pages = {
                "list page (newest 50, counts, workers, chart)": "/",
                "list page filtered by state": "/?state=EXECUTOR_ERROR",
                "search over all jobs (no match)": "/?q=nothing-matches",
                "job page": "/jobs/job-005000",
                "refresh fragment": "/fragments/jobs",
                "jobs CLI JSON (50)": "/api/jobs",
                "TES list, MINIMAL, 256": "/ga4gh/tes/v1/tasks",
            }
            print(f"{args.jobs} jobs in the store, median of {args.rounds} requests each")
            print(f"{'page':50} {'ms':>8}")
            for name, path in pages.items():
                print(f"{name:50} {median_ms(base + path, args.rounds):8.1f}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
