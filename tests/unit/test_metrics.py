"""The worker's metrics: counted in plain numbers, written out in Prometheus's text format
as prometheus_client's own parser reads it back."""

from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lanworker.reporting.metrics import Counter, Histogram, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels."""
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_and_gauges_are_exposed_with_their_labels() -> None:
    metrics = Metrics()
    metrics.jobs.labels("succeeded").inc()
    metrics.jobs.labels("succeeded").inc()
    metrics.jobs.labels("failed").inc()
    metrics.bytes_staged.inc(4096)
    metrics.in_flight.inc()
    metrics.in_flight.inc()
    metrics.in_flight.dec()
    metrics.work_root_free_bytes.set(123_456_789)
    exposed = samples(metrics)
    assert exposed[("lanworker_jobs_total", (("outcome", "succeeded"),))] == 2
    assert exposed[("lanworker_jobs_total", (("outcome", "failed"),))] == 1
    assert exposed[("lanworker_bytes_staged_total", ())] == 4096
    assert exposed[("lanworker_bytes_uploaded_total", ())] == 0  # unlabelled series exist from the start
    assert exposed[("lanworker_jobs_in_flight", ())] == 1
    assert exposed[("lanworker_work_root_free_bytes", ())] == 123_456_789
    # A labelled series appears once it is first used, as with prometheus_client's own.
    assert not any(name == "lanworker_receiving_paused" for name, _ in exposed)
    metrics.receiving_paused.labels("disk-full").set(1)
    assert samples(metrics)[("lanworker_receiving_paused", (("reason", "disk-full"),))] == 1


def test_histogram_buckets_are_cumulative_and_a_value_on_a_bound_counts_in_it() -> None:
    metrics = Metrics()
    for seconds in (0.003, 0.01, 0.2, 7, 50_000):
        metrics.phase_seconds.labels("running").observe(seconds)
    exposed = samples(metrics)

    def bucket(le: str) -> float:
        return exposed[("lanworker_phase_seconds_bucket", (("le", le), ("phase", "running")))]

    assert bucket("0.01") == 2  # 0.003, and 0.01 itself (le: less than or equal)
    assert bucket("0.05") == 2
    assert bucket("0.5") == 3
    assert bucket("15.0") == 4
    assert bucket("43200.0") == 4
    assert bucket("+Inf") == 5
    assert exposed[("lanworker_phase_seconds_count", (("phase", "running"),))] == 5
    assert exposed[("lanworker_phase_seconds_sum", (("phase", "running"),))] == pytest.approx(50_007.213)


def test_misuse_is_refused() -> None:
    counter = Counter("c", "a counter", ["outcome"])
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="only goes up"):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        Histogram("h", "a histogram", ["phase"], [1.0]).labels()


def test_counts_from_many_threads_are_not_lost() -> None:
    metrics = Metrics()
    per_thread = 20_000

    def count() -> None:
        for _ in range(per_thread):
            metrics.jobs.labels("succeeded").inc()
            metrics.phase_seconds.labels("running").observe(0.2)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert metrics.jobs.value("succeeded") == 4 * per_thread
    assert samples(metrics)[("lanworker_phase_seconds_count", (("phase", "running"),))] == 4 * per_thread
