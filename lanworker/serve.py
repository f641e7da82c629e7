"""`worker.py serve`: the TES API, the projection of job events, and embedded workers.

On a fresh machine everything is embedded: a SQLite task store, the embedded queue for
tasks and events, and `--workers` docker workers in this process. Distributed, API nodes
share only the queue, the events queue and the store (`dynamodb://TABLE`); workers run
anywhere with the same --queue and --events.

Invariant: bound beyond loopback the API requires a bearer token (or an explicit
--insecure-no-auth); signals only set flags, and shutdown stops the HTTP server, lets the
embedded workers drain within their grace period, then stops the projection.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from lanworker.core.config import WorkerConfig, check_environment
from lanworker.core.errors import ConfigError
from lanworker.core.exitcodes import EXIT_INTERNAL, EXIT_STOPPED
from lanworker.core.logs import configure_logging
from lanworker.loop.assemble import build_worker
from lanworker.loop.signals import SignalFlag
from lanworker.loop.worker import Worker
from lanworker.message.policy import MessagePolicy
from lanworker.queues import open_queue
from lanworker.reporting.metrics import Metrics
from lanworker.storage import Storage
from lanworker.tes.app import create_app
from lanworker.tes.guard import is_loopback_host
from lanworker.tes.projection import Projector
from lanworker.tes.service import TesService
from lanworker.tes.store import TaskStore, open_store

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "~/.local/state/lanworker/serve"
PRUNE_INTERVAL_S = 3600.0
# The event loop and the embedded workers' threads share one GIL. A busy loop keeps it until
# the interpreter forces a switch, so at Python's default (5 ms) every worker thread back
# from a docker API call or a pipe read waited up to 5 ms for it, and the loop as long
# again for each of them. At 1 ms, under 5,000 polls/s, serve answered 4,000-4,180/s
# against 2,610 and the workers lost 13-14% of their tasks/s against 33%
# (benchmarks/polling.py, README "Performance").
GIL_SWITCH_INTERVAL_S = 0.001


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    host: str
    port: int
    workers: int
    store_url: str
    auth_token: str | None
    worker_config: WorkerConfig  # queue, events, control and the embedded workers' settings
    max_store_mb: int | None = None
    keep_days: float | None = None


def run_serve(settings: ServeSettings) -> int:
    config = settings.worker_config
    configure_logging(config.log_format, config.log_level)
    if settings.workers > 0:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    check_environment(config, os.environ)
    import uvicorn  # only the serve command needs the HTTP stack

    from lanworker.tes.server import uvicorn_config

    listener = listen(settings.host, settings.port)  # a port in use is a config error, here
    store = open_store(settings.store_url)
    queue = open_queue(config.queue_url, config.dead_letter_queue_url, config.max_receives)
    queue.check()
    events = open_queue(str(config.events_url), max_receives=config.max_receives)
    projector = Projector(events, store).start()
    metrics = Metrics()  # shared by the embedded workers, served at /metrics
    workers = [_embedded_worker(config, index, metrics) for index in range(settings.workers)]
    threads = [threading.Thread(target=w.run, name=f"worker-{i}", daemon=True) for i, w in enumerate(workers)]
    service = TesService(
        store=store,
        queue=queue,
        control_url=str(config.control_url),
        storage=Storage(retry_budget_s=config.retry_budget_s),
        policy=MessagePolicy.from_config(config),
        health=lambda: _health(projector, threads, workers),
        metrics=metrics.exposition,
        max_store_bytes=settings.max_store_mb * 1024 * 1024 if settings.max_store_mb else None,
        worker_terms=workers[0].executor.check_message if workers else None,
    )
    from lanworker.web import router as status_view

    service.extra_routes.append(status_view)
    app = create_app(service, settings.auth_token, loopback_only=is_loopback_host(settings.host))
    server = uvicorn.Server(uvicorn_config(app, settings.host, settings.port))
    http = threading.Thread(  # not main: no uvicorn signals
        target=server.run, kwargs={"sockets": [listener]}, name="http", daemon=True
    )
    stopping = threading.Event()

    def on_signal(count: int) -> None:
        stopping.set()
        server.should_exit = True
        for worker in workers:
            worker.request_shutdown()

    SignalFlag().install(on_signal)
    if settings.keep_days is not None:
        pruner = threading.Thread(
            target=prune_loop, args=(store, settings.keep_days, stopping), name="prune", daemon=True
        )
        pruner.start()
    for thread in threads:
        thread.start()
    http.start()
    logger.info(
        "TES on http://%s:%d/ga4gh/tes/v1 (store %s, queue %s, %d embedded worker(s))",
        settings.host,
        settings.port,
        store.url,
        config.queue_url,
        settings.workers,
        extra={"action": "start"},
    )
    while not stopping.is_set() and http.is_alive():
        stopping.wait(0.5)
    server.should_exit = True
    http.join(timeout=10)
    for thread in threads:
        thread.join(timeout=config.grace_period_s + 30)
    projector.stop()
    if not stopping.is_set():
        logger.error("the HTTP server stopped by itself", extra={"action": "stop"})
        return EXIT_INTERNAL
    return EXIT_STOPPED


def prune_loop(store: TaskStore, keep_days: float, stopping: threading.Event) -> None:
    """Remove finished tasks older than keep_days now and then every PRUNE_INTERVAL_S."""
    while not stopping.is_set():
        try:
            removed = store.prune(time.time() - keep_days * 86400)
            if removed:
                logger.info("pruned %d finished task(s) older than %g days", removed, keep_days,
                            extra={"action": "prune"})  # fmt: skip
        except Exception as exc:  # a store outage: try again at the next interval
            logger.warning("pruning old tasks failed: %s", exc, extra={"action": "prune"})
        stopping.wait(PRUNE_INTERVAL_S)


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so a port in use or a host this machine does not
    have is a ConfigError (uvicorn would log it in its thread and end)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, protocol)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _embedded_worker(config: WorkerConfig, index: int, metrics: Metrics) -> Worker:
    worker_id = f"{socket.gethostname()}-{os.getpid()}-w{index}"
    return build_worker(dataclasses.replace(config, worker_id=worker_id), metrics)


def _health(
    projector: Projector, threads: list[threading.Thread], workers: list[Worker]
) -> tuple[bool, dict[str, Any]]:
    alive = sum(thread.is_alive() for thread in threads)
    idle_s = time.monotonic() - projector.last_event_at
    paused = sorted({reason for worker in workers if (reason := worker.paused())})
    healthy = projector.is_alive() and alive == len(threads) and not paused
    details: dict[str, Any] = {
        "workers_alive": alive,
        "workers": len(threads),
        "seconds_since_event": round(idle_s, 1),
    }
    if paused:
        details["paused"] = paused
    return healthy, details
