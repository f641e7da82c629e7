"""The front door at scale: every listing, filter, task view and status page with 100,000
tasks in the store, 10% of them active (a real `serve` process, over HTTP).

    .venv/bin/python benchmarks/front_door.py [--tasks 100000] [--rounds 40] [--store sqlite|dynamodb|both]

Per request: the median and p95 of `--rounds` requests, one after another. The goal on
SQLite is a p95 under 50 ms. On DynamoDB (moto_server) the baseline, measured in the same
run, is one boto3 `Query` of the table's newest-first index for a page of 50 items: each
request's p95 is printed as a ratio to that call's p95 (goal: 3x or less).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from benchmarks import ROOT, moto_server
from lanworker.tes.convert import rfc3339
from lanworker.tes.store import DynamoTaskStore, Record, SqliteTaskStore, open_store
from tests.helpers.moto import free_port

FINAL = ["COMPLETE"] * 7 + ["EXECUTOR_ERROR", "SYSTEM_ERROR"]
ACTIVE = ["QUEUED", "INITIALIZING", "RUNNING"]
TES = "/ga4gh/tes/v1/tasks"


def task(index: int, total: int, now: float) -> Record:
    """Task `index` of `total`: every tenth one active (the newest tenth mostly), a name
    shared by 200 tasks, a run tag shared by 1,000, a project tag shared by a seventh."""
    created = now - (total - index) * 0.5
    active = index % 10 == 0
    state = ACTIVE[index % 3] if active else FINAL[index % len(FINAL)]
    worker = f"worker-{index % 8}"
    log = {"worker_id": worker, "start_time": rfc3339(created + 2)}
    if not active:
        log |= {"end_time": rfc3339(created + 40), "exit_code": 0 if state == "COMPLETE" else 1}
    return {
        "id": f"task-{index:07d}",
        "kind": "tes",
        "created_at": created,
        "creation_time": rfc3339(created),
        "name": f"sample-{index % 500}",
        "state": state,
        "tags": {"project": f"p{index % 7}", "run": f"run-{index // 1000}"},
        "task": {
            "name": f"sample-{index % 500}",
            "executors": [
                {"image": "biocontainers/samtools:1.17", "command": ["samtools", "index", "/data/in.bam"]}
            ],
            "inputs": [{"url": f"s3://bucket/in/{index}.bam", "path": "/data/in.bam"}],
            "outputs": [{"url": f"s3://bucket/out/{index}.bai", "path": "/data/in.bam.bai"}],
        },
        "events": [
            {"state": "received", "time": created + 1, "worker_id": worker},
            {"state": "running", "time": created + 2, "worker_id": worker},
        ],
        "log": log,  # type: ignore[typeddict-item]
    }


def fill(url: str, total: int) -> None:
    store = open_store(url)
    assert isinstance(store, SqliteTaskStore | DynamoTaskStore)  # both bulk-load
    now = time.time()
    for start in range(0, total, 5000):  # a bounded batch in memory at a time
        store.create_many([task(index, total, now) for index in range(start, min(total, start + 5000))])


def requests_to_time(total: int) -> dict[str, str]:
    some = f"task-{total // 2 + 3:07d}"
    return {
        "TES list, newest 256, MINIMAL": f"{TES}",
        "TES list, BASIC": f"{TES}?view=BASIC",
        "TES list, state=RUNNING (3%)": f"{TES}?state=RUNNING",
        "TES list, state=SYSTEM_ERROR (10%)": f"{TES}?state=SYSTEM_ERROR",
        "TES list, name_prefix (200 match)": f"{TES}?name_prefix=sample-42",
        "TES list, name_prefix (none match)": f"{TES}?name_prefix=nothing",
        "TES list, name_prefix (all match)": f"{TES}?name_prefix=sample",
        "TES list, tag run (1,000 match)": f"{TES}?tag_key=run&tag_value=run-{total // 2000}",
        "TES list, tag project (1/7)": f"{TES}?tag_key=project&tag_value=p3",
        "TES list, tag key only": f"{TES}?tag_key=run",
        "TES list, state + tag": f"{TES}?state=RUNNING&tag_key=run&tag_value=run-{total // 2000}",
        "TES list, state + name_prefix": f"{TES}?state=QUEUED&name_prefix=sample-42",
        "TES list, second page": "PAGE2",
        "TES task, MINIMAL": f"{TES}/{some}",
        "TES task, BASIC": f"{TES}/{some}?view=BASIC",
        "TES task, FULL": f"{TES}/{some}?view=FULL",
        "status page": "/",
        "status page, state=RUNNING": "/?state=RUNNING",
        "status refresh fragment": "/fragments/jobs",
        "status search (one task)": f"/?q={some}",
        "status search (a name, 200)": "/?q=sample-42",
        "status search (no match)": "/?q=nothing-matches",
        "jobs CLI JSON": "/api/jobs",
    }


def timings_ms(get: Callable[[], None], rounds: int) -> list[float]:
    get()  # warm
    found = []
    for _ in range(rounds):
        started = time.perf_counter()
        get()
        found.append((time.perf_counter() - started) * 1000)
    return found


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def fetcher(session: requests.Session, base: str, path: str) -> Callable[[], None]:
    if path == "PAGE2":
        token = session.get(f"{base}{TES}", timeout=60).json()["next_page_token"]
        path = f"{TES}?page_token={token}"

    def get() -> None:
        response = session.get(base + path, timeout=60)
        response.raise_for_status()

    return get


@contextmanager
def serving(store_url: str, state: str, *flags: str) -> Iterator[tuple[str, int]]:
    """A `serve` on the store (API only unless flags name --workers); its URL and pid."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "worker.py", "serve", "--workers", "0", "--port", str(port), "--state-dir", state,
         "--store", store_url, "--log-level", "WARNING", *flags],
        cwd=ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def query_baseline(table: str) -> Callable[[], None]:
    import boto3

    client = boto3.client("dynamodb")

    def query() -> None:
        client.query(
            TableName=table,
            IndexName=DynamoTaskStore.INDEX,
            KeyConditionExpression="kind = :k",
            ExpressionAttributeValues={":k": {"S": "task"}},
            ScanIndexForward=False,
            Limit=50,
        )

    return query


def measure(store_url: str, state: str, total: int, rounds: int, baseline: Callable[[], None] | None) -> None:
    started = time.monotonic()
    fill(store_url, total)
    print(
        f"\n{store_url.split(':')[0]}: {total} tasks, 10% active, filled in {time.monotonic() - started:.0f} s"
    )
    query = timings_ms(baseline, rounds) if baseline else None
    if query:
        print(
            f"baseline: one Query of 50 items, median {statistics.median(query):.1f} ms, p95 {p95(query):.1f} ms"
        )
    print(f"{'request':40} {'median ms':>10} {'p95 ms':>8}" + ("  median/Query  p95/Query" if query else ""))
    with serving(store_url, state) as (base, pid), requests.Session() as session:
        for name, path in requests_to_time(total).items():
            found = timings_ms(fetcher(session, base, path), rounds)
            ratio = ""
            if query:
                ratio = f"  {statistics.median(found) / statistics.median(query):11.2f}x {p95(found) / p95(query):9.2f}x"
            print(f"{name:40} {statistics.median(found):10.1f} {p95(found):8.1f}{ratio}")
        print(f"serve's peak RSS: {peak_rss_mb(pid):.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--store", choices=["sqlite", "dynamodb", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        if args.store in ("sqlite", "both"):
            measure(f"sqlite:{state}/tasks.db", state, args.tasks, args.rounds, None)
        if args.store in ("dynamodb", "both"):
            with moto_server(state):
                table = f"tasks-{uuid.uuid4().hex[:8]}"
                measure(f"dynamodb://{table}", state, args.tasks, args.rounds, query_baseline(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
