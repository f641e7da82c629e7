"""New tasks written together: TesService.create_batch (stored, then queued, each task's
own outcome) and the API's Intake (the POSTs of one loop iteration in one write)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from lanworker.core.config import build_config
from lanworker.core.errors import MessageRefused
from lanworker.executors.docker import DockerExecutor
from lanworker.message.policy import MessagePolicy
from lanworker.storage import Storage
from lanworker.tes import intake as intake_module
from lanworker.tes.convert import TaskRefused, new_record
from lanworker.tes.intake import Intake
from lanworker.tes.models import TesTask
from lanworker.tes.service import StoreFull, TesService
from lanworker.tes.store import Record, RecordFilter
from lanworker.tes.store.sqlite import SqliteTaskStore
from lanworker.testing import InMemoryQueue

ECHO = {"name": "echo", "executors": [{"image": "busybox", "command": ["echo", "hi"]}]}


def task(**changes: Any) -> TesTask:
    return TesTask.model_validate({**ECHO, **changes})


def refused() -> TesTask:
    """A task the conversion refuses (an input with neither url nor content): a 400."""
    return task(inputs=[{"path": "/in/x"}])


class CountingService(TesService):
    """The real service, counting the batches it is given."""

    batches: list[int]

    def create_batch(self, tasks: list[TesTask]) -> list[str | Exception]:
        self.batches.append(len(tasks))
        return super().create_batch(tasks)


def make_service(tmp_path: Path, queue: InMemoryQueue | None = None, **changes: Any) -> CountingService:
    config = build_config({"queue_url": "memory://jobs", "mode": "client", "allow_local_files": False})
    service = CountingService(
        store=SqliteTaskStore(tmp_path / "tasks.db"),
        queue=queue or InMemoryQueue(),
        control_url=str(tmp_path / "control"),
        storage=Storage(),
        policy=MessagePolicy.from_config(config),
        **changes,
    )
    service.batches = []
    return service


def stored(service: TesService, task_id: str) -> Record:
    record = service.store.get(task_id)
    assert record is not None
    return record


def queued_ids(queue: InMemoryQueue) -> set[str]:
    return {json.loads(message.body)["id"] for message in queue.sent.values()}


# ----------------------------------------------------------------- create_batch


def test_a_batch_is_stored_then_queued_each_task_with_its_own_id(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    service = make_service(tmp_path, queue)
    outcomes = service.create_batch([task(name=f"t{index}") for index in range(5)])
    assert all(isinstance(outcome, str) for outcome in outcomes)
    ids = [str(outcome) for outcome in outcomes]
    assert len(set(ids)) == 5
    assert [stored(service, task_id)["name"] for task_id in ids] == [f"t{index}" for index in range(5)]
    assert all(stored(service, task_id)["state"] == "QUEUED" for task_id in ids)
    assert queued_ids(queue) == set(ids)


def test_a_refused_task_fails_alone(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    service = make_service(tmp_path, queue)
    first, bad, last = service.create_batch([task(), refused(), task()])
    assert isinstance(bad, TaskRefused) and "url or content" in str(bad)
    assert isinstance(first, str) and isinstance(last, str)
    assert queued_ids(queue) == {first, last}


def test_a_message_the_queue_refuses_makes_its_task_a_system_error(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    queue.max_bytes = 2000
    service = make_service(tmp_path, queue)
    small, large = service.create_batch(
        [task(), task(executors=[{"image": "busybox", "command": ["echo", "x" * 5000]}])]
    )
    assert isinstance(small, str) and stored(service, small)["state"] == "QUEUED"
    assert isinstance(large, MessageRefused)
    (large_id,) = [r["id"] for r in service.store.page(_all(), 10, None)[0] if r["id"] != small]
    record = stored(service, large_id)
    assert record["state"] == "SYSTEM_ERROR"
    assert any("not queued" in line for line in record["system_logs"])
    assert queued_ids(queue) == {small}


def test_a_store_that_fails_fails_the_whole_batch_and_nothing_is_queued(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    service = make_service(tmp_path, queue)
    (tmp_path / "tasks.db").mkdir()  # the store's file cannot be opened
    outcomes = service.create_batch([task(), task()])
    assert all(isinstance(outcome, Exception) for outcome in outcomes)
    assert queue.sent == {}


def test_max_store_mb_refuses_the_tasks_beyond_the_room_left(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    service.create_batch([task()])  # the file exists; its size is what it uses
    used = service.store.stored_bytes()
    size = len(json.dumps(new_record(task(), "0" * 27, [])))
    service.max_store_bytes = used + size * 3 // 2  # room for one more task, not two
    outcomes = service.create_batch([task(), task(), task()])
    assert isinstance(outcomes[0], str)
    assert all(isinstance(outcome, StoreFull) for outcome in outcomes[1:])
    assert "--max-store-mb" in str(outcomes[1])


def test_create_raises_what_refused_the_task(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    with pytest.raises(TaskRefused):
        service.create(refused())
    assert stored(service, service.create(task()))["state"] == "QUEUED"


def _all() -> RecordFilter:
    return RecordFilter(None, None, {})


# ----------------------------------------------------------------- Intake


def test_posts_of_one_loop_iteration_are_written_together(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    intake = Intake(service)

    async def post_ten() -> list[str]:
        return await asyncio.gather(*(intake.create(task()) for _ in range(10)))

    ids = asyncio.run(post_ten())
    assert service.batches == [10]
    assert len(set(ids)) == 10 and all(stored(service, i)["state"] == "QUEUED" for i in ids)


def test_a_lone_post_is_written_at_once(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    intake = Intake(service)

    async def one_after_another() -> None:
        for _ in range(3):
            await asyncio.wait_for(intake.create(task()), timeout=10)

    asyncio.run(one_after_another())
    assert service.batches == [1, 1, 1]


def test_more_than_a_batch_goes_in_several(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "MAX_BATCH", 4)
    service = make_service(tmp_path)
    intake = Intake(service)

    async def post(count: int) -> list[str]:
        return await asyncio.gather(*(intake.create(task()) for _ in range(count)))

    assert len(set(asyncio.run(post(10)))) == 10
    assert service.batches == [4, 4, 2]


def test_each_post_gets_its_own_outcome_and_a_gone_client_keeps_its_task(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    intake = Intake(service)

    async def mixed() -> tuple[list[Any], asyncio.Task[str]]:
        gone = asyncio.ensure_future(intake.create(task(name="gone")))
        others = [intake.create(task()), intake.create(refused())]
        await asyncio.sleep(0)  # every POST is waiting now
        gone.cancel()
        return await asyncio.gather(*others, return_exceptions=True), gone

    (good, bad), gone = asyncio.run(mixed())
    assert gone.cancelled()
    assert isinstance(bad, TaskRefused)
    assert stored(service, good)["state"] == "QUEUED"
    names = [record.get("name") for record in service.store.page(_all(), 10, None)[0]]
    assert "gone" in names  # written with its batch


def test_an_unexpected_error_answers_every_post(tmp_path: Path) -> None:
    class Broken(CountingService):
        def create_batch(self, tasks: list[TesTask]) -> list[str | Exception]:
            raise RuntimeError("a bug")

    service = make_service(tmp_path)
    service.__class__ = Broken
    intake = Intake(service)

    async def post_two() -> list[Any]:
        posts = [intake.create(task()) for _ in range(2)]
        return await asyncio.wait_for(asyncio.gather(*posts, return_exceptions=True), timeout=10)

    assert [str(outcome) for outcome in asyncio.run(post_two())] == ["a bug", "a bug"]


def test_with_a_queue_over_the_network_the_batch_is_written_in_a_thread(tmp_path: Path) -> None:
    senders: list[str] = []

    class Remote(InMemoryQueue):
        def send_batch(self, messages: Any) -> list[Exception | None]:
            senders.append(threading.current_thread().name)
            return super().send_batch(messages)

    service = make_service(tmp_path, Remote(remote=True))
    intake = Intake(service)

    async def post_three() -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(intake.create(task()) for _ in range(3))), 10)

    ids = asyncio.run(post_three())
    assert len(set(ids)) == 3 and service.batches == [3]
    assert senders and threading.main_thread().name not in senders


def test_what_the_embedded_workers_would_refuse_is_refused_at_submit(tmp_path: Path) -> None:
    """An image outside their allowlist, or more memory than their maximum, was accepted and
    then ended SYSTEM_ERROR when a worker dead-lettered it."""
    config = build_config(
        {"mode": "docker", "queue_url": "memory://jobs", "allow_images": ("busybox*",), "max_memory_mb": 1024}
    )
    queue = InMemoryQueue()
    service = make_service(tmp_path, queue, worker_terms=DockerExecutor.from_config(config).check_message)
    fits, image, memory = service.create_batch(
        [
            task(resources={"ram_gb": 0.5}),
            task(executors=[{"image": "evil/miner:1", "command": ["mine"]}]),
            task(resources={"ram_gb": 64}),
        ]
    )
    assert isinstance(image, TaskRefused) and "image 'evil/miner:1' is not allowed" in str(image)
    assert isinstance(memory, TaskRefused) and "is over this worker's maximum 1024" in str(memory)
    assert isinstance(fits, str) and queued_ids(queue) == {fits}
    assert [record["id"] for record in service.store.page(_all(), 10, None)[0]] == [fits]


def test_without_embedded_workers_the_workers_that_take_a_task_decide(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    (task_id,) = make_service(tmp_path, queue).create_batch(
        [task(executors=[{"image": "evil/miner:1", "command": ["mine"]}])]
    )
    assert isinstance(task_id, str) and queued_ids(queue) == {task_id}
