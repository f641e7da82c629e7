"""A worker from its parts: the one place that wires queue, executor, storage, runner,
results and events together, for `build_worker` (from the config) and for
`testing.fake_worker` (in-memory queues, a scripted executor) alike."""

from __future__ import annotations

from lanworker.core.config import WorkerConfig
from lanworker.core.states import EventState
from lanworker.executors.base import Executor
from lanworker.executors.native import NativeExecutor
from lanworker.loop.worker import Worker, WorkerParts
from lanworker.message.command import job_id_of
from lanworker.pipeline.runner import JobRunner
from lanworker.queues import LocalQueue, QueueCache, open_queue
from lanworker.reporting.metrics import Metrics
from lanworker.reporting.results import EventPublisher, Reports, ResultReporter
from lanworker.storage import Storage


def assemble(config: WorkerConfig, parts: WorkerParts) -> Worker:
    events = EventPublisher(config.events_url, config.worker_id, parts.queues)
    runner = JobRunner(config, parts.executor, parts.storage, events, parts.metrics)
    if isinstance(parts.queue, LocalQueue):
        parts.queue.on_exhausted = lambda message_id, body, reason: events.publish(
            job_id_of(body, message_id), EventState.DEAD_LETTERED, reason=reason
        )
    return Worker(config, parts, runner, Reports(ResultReporter(config.results_url, parts.queues), events))


def make_executor(config: WorkerConfig) -> Executor:
    if config.mode == "docker":
        from lanworker.executors.docker import DockerExecutor  # the docker SDK only when needed

        return DockerExecutor.from_config(config)
    return NativeExecutor(config.base_command, config.work_root)


def build_worker(config: WorkerConfig, metrics: Metrics | None = None) -> Worker:
    """A worker from its configuration; workers in one process may share one Metrics."""
    storage = Storage(
        transfer_concurrency=config.transfer_concurrency,
        retry_budget_s=config.retry_budget_s,
        allow_private_http=config.allow_private_http,
    )
    queue = open_queue(config.queue_url, config.dead_letter_queue_url, config.max_receives)
    queues = QueueCache(lambda url: open_queue(url, max_receives=config.max_receives))
    return assemble(config, WorkerParts(queue, queues, make_executor(config), storage, metrics or Metrics()))
