"""The heartbeat thread: due leases are extended together, and one lease's failure is its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from lanworker.core.stops import StopReason
from lanworker.loop.leases import Heartbeats, Lease, LeaseTerms
from lanworker.queues import ReceivedMessage
from lanworker.reporting.metrics import Metrics
from lanworker.testing import InMemoryQueue
from tests.helpers.processes import wait_until


class CountingQueue(InMemoryQueue):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def change_visibility_batch(
        self, messages: Sequence[ReceivedMessage], timeout_s: int
    ) -> list[Exception | None]:
        self.batches.append(len(messages))
        return super().change_visibility_batch(messages, timeout_s)


def test_due_leases_are_extended_ten_at_a_time_and_a_stale_one_is_lost_alone() -> None:
    queue = CountingQueue()
    for n in range(25):
        queue.send(f"job {n}")
    messages = queue.receive(25, 0, 30)
    stolen = messages[7]
    queue.delete(stolen)  # gone from under its lease: the next extension finds it stale
    heartbeats = Heartbeats(queue, LeaseTerms(30, 0.01, 3600.0), threading.Event(), Metrics())
    with heartbeats._changed:  # the thread looks only once every lease is made and due
        leases = [heartbeats.lease(message) for message in messages]
        time.sleep(0.05)
    try:
        wait_until(lambda: sum(queue.batches) >= 50, what="two rounds of heartbeats")
        assert queue.batches[:3] == [10, 10, 5] and max(queue.batches) == 10
        assert leases[7].should_stop() is StopReason.LEASE_LOST
        assert all(lease.should_stop() is None for n, lease in enumerate(leases) if n != 7)
        assert queue.ops(messages[0].message_id).count("extend") >= 2
    finally:
        for lease in leases:
            heartbeats.end(lease)
        heartbeats.close()


class SettlingQueue(InMemoryQueue):
    """Settles (marks, then deletes) a message while the heartbeat's first extension of it is
    in flight, as the settling thread does when a beat falls due between the two."""

    def __init__(self) -> None:
        super().__init__()
        self.settle_during_beat: tuple[Lease, ReceivedMessage] | None = None

    def change_visibility_batch(
        self, messages: Sequence[ReceivedMessage], timeout_s: int
    ) -> list[Exception | None]:
        if self.settle_during_beat is not None:
            lease, message = self.settle_during_beat
            self.settle_during_beat = None
            lease.settling()
            self.delete(message)
        return super().change_visibility_batch(messages, timeout_s)


def test_a_lease_being_settled_is_never_extended_and_a_beat_it_raced_is_not_a_lost_lease() -> None:
    queue = SettlingQueue()
    queue.send("raced")
    queue.send("settled first")
    raced, settled_first = queue.receive(2, 0, 30)
    metrics = Metrics()
    heartbeats = Heartbeats(queue, LeaseTerms(30, 0.01, 3600.0), threading.Event(), metrics)
    racing = heartbeats.lease(raced)
    queue.settle_during_beat = (racing, raced)
    quiet = heartbeats.lease(settled_first)
    quiet.settling()  # marked before any beat: its release must never be undone by one
    queue.release(settled_first)
    try:
        wait_until(lambda: queue.settle_during_beat is None, what="the raced beat")
        time.sleep(0.1)  # ten more intervals: neither lease is extended again
        assert racing.should_stop() is None  # not LEASE_LOST: the settle took it, as it should
        assert metrics.heartbeat_failures.value() == 0
        assert "extend" not in queue.ops(settled_first.message_id)
        assert queue.ops(raced.message_id).count("extend") == 0  # the one in flight found it gone
    finally:
        heartbeats.end(racing)
        heartbeats.end(quiet)
        heartbeats.close()
