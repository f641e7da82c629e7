"""Prometheus metrics and a /healthz endpoint that fails when the receive loop stalls.

Each worker owns its metrics (no process-global collectors), so tests and several
workers in one process never collide.

Invariant: counting is a lock and an addition, and nothing more is loaded until someone
asks for the numbers. prometheus_client (which brings http.server, email, ssl and urllib
with it) and the HTTP server are imported by the exposition and by `HealthServer` alone:
a worker without a metrics port never loads them, which spares each worker process about
25-35 ms of CPU at start (a fifth of its start-up), and a job's counting takes 20 Python
calls where prometheus_client's took 47.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from lanworker.core.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

PHASE_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus's text format


class _Value:
    """One series' number, guarded by its metric's lock."""

    __slots__ = ("_lock", "value")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.value = 0.0

    def _add(self, amount: float) -> None:
        with self._lock:
            self.value += amount


class CounterValue(_Value):
    """One series of a counter: it only goes up."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up, not by {amount}")
        self._add(amount)


class GaugeValue(_Value):
    """One series of a gauge: up, down or set."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        self._add(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._add(-amount)

    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)


class HistogramValue:
    """One series of a histogram: a count per bucket (not cumulative here), and the sum."""

    __slots__ = ("_bounds", "_lock", "counts", "sum")

    def __init__(self, lock: threading.Lock, bounds: Sequence[float]) -> None:
        self._lock = lock
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self._bounds, value)  # a value on a bound counts in it (le)
        with self._lock:
            self.counts[index] += 1
            self.sum += value


V = TypeVar("V", CounterValue, GaugeValue, HistogramValue)


class _Family(Generic[V]):
    """A metric's series, one per combination of label values; unlabelled, it has one."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()  # shared by the series: a scrape reads them all at once
        self._series: dict[tuple[str, ...], V] = {}
        if not self.labelnames:
            self.labels()

    def labels(self, *values: str) -> V:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            with self._lock:
                series = self._series.setdefault(values, self._new_series())
        return series

    def _new_series(self) -> V:
        raise NotImplementedError

    def collect(self) -> Metric:
        """prometheus_client's family of this metric, read at one moment."""
        raise NotImplementedError


class Counter(_Family[CounterValue]):
    def _new_series(self) -> CounterValue:
        return CounterValue(self._lock)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def value(self, *labels: str) -> float:
        return self.labels(*labels).value

    def collect(self) -> Metric:
        from prometheus_client.metrics_core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        return _filled(family, self._lock, self._series)


class Gauge(_Family[GaugeValue]):
    def _new_series(self) -> GaugeValue:
        return GaugeValue(self._lock)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self.labels().dec(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def collect(self) -> Metric:
        from prometheus_client.metrics_core import GaugeMetricFamily

        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        return _filled(family, self._lock, self._series)


def _filled(
    family: CounterMetricFamily | GaugeMetricFamily,
    lock: threading.Lock,
    series: Mapping[tuple[str, ...], _Value],
) -> Metric:
    """family with each series' value, all read at one moment."""
    with lock:
        for labels, one in series.items():
            family.add_metric(labels, one.value)
    return family


class Histogram(_Family[HistogramValue]):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.bounds = tuple(float(bound) for bound in sorted(buckets))
        super().__init__(name, documentation, labelnames)

    def _new_series(self) -> HistogramValue:
        return HistogramValue(self._lock, self.bounds)

    def collect(self) -> Metric:
        from prometheus_client.metrics_core import HistogramMetricFamily

        edges = [repr(bound) for bound in self.bounds] + ["+Inf"]  # as prometheus_client writes them
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            for labels, series in self._series.items():
                cumulative, buckets = 0, []
                for edge, count in zip(edges, series.counts, strict=True):
                    cumulative += count
                    buckets.append((edge, float(cumulative)))
                family.add_metric(labels, buckets, series.sum)
        return family


class Metrics:
    def __init__(self) -> None:
        self.jobs = Counter("lanworker_jobs", "Messages settled, by outcome", ["outcome"])
        self.phase_seconds = Histogram(
            "lanworker_phase_seconds", "Time spent per job phase", ["phase"], PHASE_BUCKETS_S
        )
        self.bytes_staged = Counter("lanworker_bytes_staged", "Bytes downloaded into job dirs")
        self.bytes_uploaded = Counter("lanworker_bytes_uploaded", "Bytes uploaded from job dirs")
        self.in_flight = Gauge("lanworker_jobs_in_flight", "Jobs running now")
        self.heartbeat_failures = Counter("lanworker_heartbeat_failures", "Visibility extensions that failed")
        self.receive_errors = Counter("lanworker_receive_errors", "Queue receives that failed")
        self.work_root_free_bytes = Gauge(
            "lanworker_work_root_free_bytes", "Free space on the work root's filesystem"
        )
        self.receiving_paused = Gauge(
            "lanworker_receiving_paused",
            "1 while the worker does not receive, by reason (disk-full: below --min-free-mb)",
            ["reason"],
        )

    def collect(self) -> Iterator[Metric]:
        """Every metric, as prometheus_client's collectors yield them."""
        for family in (
            self.jobs,
            self.phase_seconds,
            self.bytes_staged,
            self.bytes_uploaded,
            self.in_flight,
            self.heartbeat_failures,
            self.receive_errors,
            self.work_root_free_bytes,
            self.receiving_paused,
        ):
            yield family.collect()

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return bytes(generate_latest(registry))


class HealthServer:
    """Serves /metrics and /healthz on a background thread."""

    def __init__(
        self, port: int, metrics: Metrics, health: Callable[[], tuple[bool, dict[str, object]]]
    ) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        metrics_ref, health_ref = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, metrics_ref.exposition(), CONTENT_TYPE)
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
