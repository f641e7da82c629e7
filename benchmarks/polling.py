"""A Nextflow-like polling load against one `serve` with 100,000 tasks in its store:
200 clients, each polling its 50 tasks with `GET /tasks/ID?view=MINIMAL` every 2 s (5,000
requests/s offered), for at least 60 s, while the embedded docker workers run a batch of tasks.

    .venv/bin/python benchmarks/polling.py [--tasks 100000] [--clients 200] [--per-client 50]
        [--interval-s 2] [--seconds 60] [--jobs 200] [--task-s 1] [--workers 2] [--concurrency 4]
        [--rounds 3]

Each of --rounds rounds runs the batch without polling (the baseline), then again under
the polling, which lasts the batch and at least --seconds. Printed, round by round and as
medians of the rounds: the polling requests' median, p95 and p99 (goal: p95 under 50 ms)
and the rate answered against the rate offered; the embedded workers' tasks/s without
polling and under it (goal: a drop under 10%); how busy the machine's cores were through
each batch (what the docker engine, the workers, serve and the clients leave each other);
serve's peak RSS (goal: under 300 MB). One pair of batches moves by about 5 points of drop
from one run to the next on this machine, so the rounds are what the goal is read from.

Each client is one keep-alive connection that sends its next request when the last is
answered, as an HTTP client pool does; the clients run in a process of their own (asyncio
on uvloop, `benchmarks/rawhttp.py`), so their cost is not serve's, though on one machine
they share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker
import requests

from benchmarks import ROOT
from benchmarks.front_door import TES, fill, peak_rss_mb, serving
from benchmarks.rawhttp import connect, exchange, request_bytes, run_clients
from lanworker.tes.store import SqliteTaskStore
from tests.helpers.docker_images import BUSYBOX_IMAGE, build_busybox_image

# ----------------------------------------------------------------- the polling clients


class Until:
    """When the polling ends (monotonic): after --seconds, or at a SIGTERM if sooner."""

    def __init__(self, at: float) -> None:
        self.at = at
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.now)

    def now(self) -> None:
        self.at = min(self.at, time.monotonic())


async def poll_client(port: int, ids: list[str], interval_s: float, until: Until, found: list[float]) -> int:
    """Poll ids every interval_s until `until`; latencies (ms) into found; errors returned."""
    transport, connection = await connect(port)
    requests_ = [request_bytes("GET", f"{TES}/{task_id}?view=MINIMAL", port) for task_id in ids]
    errors = 0
    next_round = time.monotonic() + random.uniform(0, interval_s)  # clients spread over the interval
    while next_round < until.at:
        await asyncio.sleep(max(0.0, next_round - time.monotonic()))
        for request in requests_:
            if time.monotonic() > until.at:
                break
            started = time.perf_counter()
            status = await exchange(transport, connection, request)
            found.append((time.perf_counter() - started) * 1000)
            errors += status != 200
        next_round += interval_s
    transport.close()
    return errors


async def poll_all(
    port: int, ids: list[str], clients: int, interval_s: float, seconds: float
) -> dict[str, float]:
    found: list[float] = []
    per_client = len(ids) // clients
    started = time.monotonic()
    until = Until(started + seconds)
    errors = await asyncio.gather(
        *(
            poll_client(port, ids[n * per_client : (n + 1) * per_client], interval_s, until, found)
            for n in range(clients)
        )
    )
    return {
        "requests": len(found),
        "errors": sum(errors),
        "median_ms": statistics.median(found),
        "p95_ms": statistics.quantiles(found, n=20)[-1],
        "p99_ms": statistics.quantiles(found, n=100)[-1],
        "rate": len(found) / (min(time.monotonic(), until.at) - started),
    }


def poller_main(args: argparse.Namespace) -> int:
    ids = json.loads(Path(args.poller).read_text())
    result = run_clients(
        poll_all(args.port, ids, args.clients, args.interval_s, args.seconds), args.seconds + 60
    )
    print(json.dumps(result))
    return 0


# ----------------------------------------------------------------- the run


def active_ids(total: int, wanted: int) -> list[str]:
    """The filled store's active tasks (every tenth, see front_door.task), newest first."""
    return [f"task-{index:07d}" for index in range((total - 1) // 10 * 10, -1, -10)][:wanted]


def machine_cpu_s() -> tuple[float, float]:
    """The whole machine's busy and elapsed CPU seconds (all cores) since boot (/proc/stat)."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    per_s = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / per_s, sum(ticks) / per_s


def busy_through(batch: Callable[[], float]) -> tuple[float, float]:
    """batch's tasks/s, and the share of the machine's cores busy while it ran."""
    busy, total = machine_cpu_s()
    rate = batch()
    busy_after, total_after = machine_cpu_s()
    return rate, (busy_after - busy) / (total_after - total)


def run_batch(base: str, store: SqliteTaskStore, jobs: int, task_s: float) -> float:
    """Submit `jobs` busybox tasks of task_s seconds at once; tasks/s from the first submit
    to the last completion."""
    before = store.counts().get("COMPLETE", 0)
    task = {"executors": [{"image": BUSYBOX_IMAGE, "command": ["sleep", f"{task_s:g}"]}]}
    started = time.monotonic()
    with requests.Session() as session:
        for _ in range(jobs):
            session.post(f"{base}{TES}", json=task, timeout=30).raise_for_status()
    deadline = started + 600
    while store.counts().get("COMPLETE", 0) < before + jobs:
        if time.monotonic() > deadline:
            raise SystemExit(f"the batch did not complete: {store.counts()}")
        time.sleep(0.1)
    return jobs / (time.monotonic() - started)


@dataclass(frozen=True)
class Round:
    quiet: float  # tasks/s without polling
    quiet_busy: float  # the share of the cores busy meanwhile
    polled: float
    polled_busy: float
    load: dict[str, float]  # the polling's figures (poll_all)

    @property
    def ratio(self) -> float:
        return self.polled / self.quiet


def one_round(args: argparse.Namespace, base: str, store: SqliteTaskStore, ids_file: Path) -> Round:
    """The batch without polling, then under a polling that lasts it and at least --seconds."""
    quiet, quiet_busy = busy_through(lambda: run_batch(base, store, args.jobs, args.task_s))
    started = time.monotonic()
    poller = subprocess.Popen(
        [sys.executable, __file__, "--poller", str(ids_file), "--port", base.rsplit(":", 1)[1],
         "--clients", str(args.clients), "--interval-s", str(args.interval_s),
         "--seconds", str(args.seconds + 600)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(min(5.0, args.seconds / 4))  # the load reaches its rate
    polled, polled_busy = busy_through(lambda: run_batch(base, store, args.jobs, args.task_s))
    time.sleep(max(0.0, started + args.seconds - time.monotonic()))
    poller.terminate()  # it stops polling and reports
    output, _ = poller.communicate(timeout=120)
    return Round(quiet, quiet_busy, polled, polled_busy, json.loads(output))


def report(args: argparse.Namespace, rounds: list[Round], rss_mb: float) -> None:
    offered = args.clients * args.per_client / args.interval_s
    print(f"{args.tasks} tasks in the SQLite store; {args.clients} clients x {args.per_client} tasks "
          f"every {args.interval_s:g} s, for each batch and at least {args.seconds:g} s "
          f"(offered {offered:.0f} requests/s); embedded workers {args.workers} x {args.concurrency}, "
          f"batches of {args.jobs} tasks of `sleep {args.task_s:g}`")  # fmt: skip
    for number, one in enumerate(rounds, 1):
        load = one.load
        print(f"  round {number}: {one.quiet:.2f} tasks/s without polling ({one.quiet_busy * 100:.0f}% of the "
              f"cores busy), {one.polled:.2f} under it ({one.polled_busy * 100:.0f}%): {one.ratio:.2f}x "
              f"({(1 - one.ratio) * 100:.0f}% drop); polls answered {load['rate']:.0f}/s, "
              f"{load['errors']:.0f} not 200, median {load['median_ms']:.1f} ms, p95 {load['p95_ms']:.1f} ms, "
              f"p99 {load['p99_ms']:.1f} ms")  # fmt: skip

    def median(name: str) -> float:
        return statistics.median(one.load[name] for one in rounds)

    ratio = statistics.median(one.ratio for one in rounds)
    print(f"medians of {len(rounds)} rounds: polling answered {median('rate'):.0f}/s "
          f"({median('rate') / offered:.2f}x offered), median {median('median_ms'):.1f} ms, "
          f"p95 {median('p95_ms'):.1f} ms, p99 {median('p99_ms'):.1f} ms; the workers under it "
          f"{ratio:.2f}x their tasks/s without it ({(1 - ratio) * 100:.0f}% drop); the cores "
          f"{statistics.median(one.quiet_busy for one in rounds) * 100:.0f}% busy without polling, "
          f"{statistics.median(one.polled_busy for one in rounds) * 100:.0f}% under it")  # fmt: skip
    print(f"serve's peak RSS: {rss_mb:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--interval-s", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="each polling's least length")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--task-s", type=float, default=1.0, help="each task's sleep")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="each embedded worker's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--poller", help=argparse.SUPPRESS)  # internal: the clients' process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poller:
        return poller_main(args)
    build_busybox_image(docker.from_env())
    with tempfile.TemporaryDirectory() as state:
        store_url = f"sqlite:{state}/tasks.db"
        fill(store_url, args.tasks)
        store = SqliteTaskStore(Path(state) / "tasks.db")
        ids_file = Path(state) / "ids.json"
        ids_file.write_text(json.dumps(active_ids(args.tasks, args.clients * args.per_client)))
        flags = ["--workers", str(args.workers), "--concurrency", str(args.concurrency),
                 "--allow-image", BUSYBOX_IMAGE, "--task-network", "none"]  # fmt: skip
        with serving(store_url, state, *flags) as (base, pid):
            run_batch(base, store, args.workers * args.concurrency, 0)  # warm: image, first containers
            rounds = [one_round(args, base, store, ids_file) for _ in range(args.rounds)]
            rss_mb = peak_rss_mb(pid)
    report(args, rounds, rss_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
