from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lanworker.core.errors import StaleReceipt
from lanworker.queues import LocalQueue
from lanworker.queues.base import Outgoing

QueueFactory = Callable[..., LocalQueue]


def test_send_receive_delete(local_queue_factory: QueueFactory) -> None:
    queue = local_queue_factory()
    message_id = queue.send("hello", attributes={"k": "v"})
    [message] = queue.receive(10, 0, 30)
    assert (message.message_id, message.body, message.receive_count) == (message_id, "hello", 1)
    assert message.attributes == {"k": "v"}
    assert queue.receive(10, 0, 30) == []  # hidden while in flight
    queue.delete(message)
    assert queue.counts() == {"visible": 0, "in_flight": 0, "dead_letters": 0}


def test_visibility_timeout_redelivers_and_stale_receipt_is_refused(
    local_queue_factory: QueueFactory,
) -> None:
    queue = local_queue_factory()
    queue.send("x")
    [first] = queue.receive(1, 0, 1)
    time.sleep(1.1)
    [second] = queue.receive(1, 0, 30)
    assert second.receive_count == 2
    with pytest.raises(StaleReceipt):
        queue.delete(first)
    with pytest.raises(StaleReceipt):
        queue.change_visibility(first, 30)
    queue.delete(second)


def test_release_makes_visible_at_once(local_queue_factory: QueueFactory) -> None:
    queue = local_queue_factory()
    queue.send("x")
    [message] = queue.receive(1, 0, 300)
    queue.release(message)
    assert len(queue.receive(1, 0, 300)) == 1


def test_max_receives_moves_to_dead_letters_with_body(local_queue_factory: QueueFactory) -> None:
    queue = local_queue_factory(max_receives=2)
    queue.send('{"body": "intact"}')
    for _ in range(2):
        [message] = queue.receive(1, 0, 30)
        queue.release(message)
    assert queue.receive(1, 0, 30) == []
    [letter] = queue.list_dead_letters(10)
    assert letter.body == '{"body": "intact"}' and "max_receives=2" in letter.reason
    assert queue.redrive(10) == 1
    assert queue.receive(1, 0, 30)[0].body == '{"body": "intact"}'


def test_explicit_dead_letter_keeps_reason(local_queue_factory: QueueFactory) -> None:
    queue = local_queue_factory()
    queue.send("not json")
    [message] = queue.receive(1, 0, 30)
    queue.dead_letter(message, "message is not valid JSON")
    assert queue.list_dead_letters(10)[0].reason == "message is not valid JSON"


def test_named_queues_share_a_file_but_not_messages(local_queue_factory: QueueFactory) -> None:
    jobs, results = local_queue_factory("jobs"), local_queue_factory("results")
    jobs.send("job")
    assert results.receive(10, 0, 30) == []
    assert jobs.sibling("results").url == results.url


def test_delay_and_long_poll(local_queue_factory: QueueFactory) -> None:
    queue = local_queue_factory()
    queue.send("later", delay_s=1)
    assert queue.receive(1, 0, 30) == []
    started = time.monotonic()
    assert len(queue.receive(1, 3, 30)) == 1
    assert time.monotonic() - started < 3


def test_two_connections_never_receive_the_same_message(local_queue_factory: QueueFactory) -> None:
    first, second = local_queue_factory(), local_queue_factory()
    for index in range(50):
        first.send(str(index))
    seen = [m.body for _ in range(10) for q in (first, second) for m in q.receive(3, 0, 60)]
    assert sorted(seen, key=int) == [str(i) for i in range(50)]


def test_a_waiting_receive_wakes_when_this_process_sends(
    local_queue_factory: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polling alone would look again only after 60 s: the send wakes the receiver, which
    another LocalQueue object on the same file and name (as serve's API and workers hold)."""
    from lanworker.queues import local

    monkeypatch.setattr(local, "POLL_MIN_S", 60.0)
    monkeypatch.setattr(local, "POLL_MAX_S", 60.0)
    queue = local_queue_factory()
    sender = LocalQueue(queue.url)
    other = sender.sibling("other")
    received: list[str] = []
    waiting = threading.Thread(target=lambda: received.extend(m.body for m in queue.receive(1, 120, 30)))
    waiting.start()
    other.send("not for this queue")  # a wake for another name leaves it waiting
    sender.send("hello")
    waiting.join(timeout=30)
    assert not waiting.is_alive() and received == ["hello"]


def _rows(queue: LocalQueue) -> dict[str, int]:
    """Messages per queue name as another connection (another process) sees them."""
    import sqlite3

    with sqlite3.connect(queue.path) as other:
        return dict(other.execute("SELECT queue, COUNT(*) FROM messages GROUP BY queue").fetchall())


def test_together_commits_a_result_and_a_delete_as_one(local_queue_factory: QueueFactory) -> None:
    jobs, results = local_queue_factory("jobs"), local_queue_factory("results")
    jobs.send("job")
    [message] = jobs.receive(1, 0, 30)
    with jobs.together([results.url]):
        assert results.send_batch([Outgoing("result")]) == [None]
        assert jobs.delete_batch([message]) == [None]
        assert _rows(jobs) == {"jobs": 1}  # nothing is seen until both are done
    assert _rows(jobs) == {"results": 1}


def test_together_undoes_everything_when_it_fails_and_an_inner_error_alone(
    local_queue_factory: QueueFactory,
) -> None:
    jobs, results = local_queue_factory("jobs"), local_queue_factory("results")
    jobs.send("job")
    [message] = jobs.receive(1, 0, 30)
    with pytest.raises(RuntimeError), jobs.together([results.url]):
        results.send("result")
        jobs.delete(message)
        raise RuntimeError("the commit did not happen")
    assert _rows(jobs) == {"jobs": 1}
    with jobs.together([results.url]):
        results.send("result")
        with pytest.raises(StaleReceipt):
            jobs.release(dataclasses.replace(message, receipt_handle="stale"))
    assert _rows(jobs) == {"jobs": 1, "results": 1}


def test_together_joins_nothing_when_a_destination_lives_in_another_file(
    local_queue_factory: QueueFactory, tmp_path: Path
) -> None:
    jobs = local_queue_factory("jobs")
    elsewhere = LocalQueue(f"local:{tmp_path / 'other.db'}#results")
    with jobs.together([elsewhere.url]):
        elsewhere.send("result")
        jobs.send("job")
        assert _rows(elsewhere) == {"results": 1} and _rows(jobs) == {"jobs": 1}  # each committed at once
