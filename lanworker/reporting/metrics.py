"""Prometheus metrics and a /healthz endpoint that fails when the receive loop stalls.

Each worker owns its registry (no process-global collectors), so tests and several
workers in one process never collide.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lanworker.core.errors import ConfigError

PHASE_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "lanworker_jobs", "Messages settled, by outcome", ["outcome"], registry=self.registry
        )
        self.phase_seconds = Histogram(
            "lanworker_phase_seconds",
            "Time spent per job phase",
            ["phase"],
            buckets=PHASE_BUCKETS_S,
            registry=self.registry,
        )
        self.bytes_staged = Counter(
            "lanworker_bytes_staged", "Bytes downloaded into job dirs", registry=self.registry
        )
        self.bytes_uploaded = Counter(
            "lanworker_bytes_uploaded", "Bytes uploaded from job dirs", registry=self.registry
        )
        self.in_flight = Gauge("lanworker_jobs_in_flight", "Jobs running now", registry=self.registry)
        self.heartbeat_failures = Counter(
            "lanworker_heartbeat_failures", "Visibility extensions that failed", registry=self.registry
        )
        self.receive_errors = Counter(
            "lanworker_receive_errors", "Queue receives that failed", registry=self.registry
        )
        self.work_root_free_bytes = Gauge(
            "lanworker_work_root_free_bytes",
            "Free space on the work root's filesystem",
            registry=self.registry,
        )
        self.receiving_paused = Gauge(
            "lanworker_receiving_paused",
            "1 while the worker does not receive, by reason (disk-full: below --min-free-mb)",
            ["reason"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))


class HealthServer:
    """Serves /metrics and /healthz on a background thread."""

    def __init__(
        self, port: int, metrics: Metrics, health: Callable[[], tuple[bool, dict[str, object]]]
    ) -> None:
        metrics_ref, health_ref = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, metrics_ref.exposition(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    healthy, details = health_ref()
                    body = json.dumps({"healthy": healthy, **details}).encode()
                    self._send(200 if healthy else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None  # scrapes every few seconds would drown the job log

        try:
            self.server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        except OSError as exc:  # in use, or a privileged port
            raise ConfigError(f"metrics port {port}: {exc.strerror or exc}") from exc
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def receive_loop_health(
    last_receive_at: Callable[[], float],
    stall_after_s: float,
    paused: Callable[[], str | None] = lambda: None,
) -> Callable[[], tuple[bool, dict[str, object]]]:
    def check() -> tuple[bool, dict[str, object]]:
        idle = time.monotonic() - last_receive_at()
        details: dict[str, object] = {"seconds_since_receive": round(idle, 1), "stall_after_s": stall_after_s}
        reason = paused()
        if reason is not None:
            details["paused"] = reason
        return idle < stall_after_s and reason is None, details

    return check
