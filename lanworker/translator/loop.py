"""The translator: S3 event notifications in, command messages out, by rules.

An event message is deleted only after every command it produced was sent: `handle`
decides (an Outcome) and the worker's settler carries it out, under a lease kept by the
worker's heartbeats, deletes batched as a worker's are. A crash in
between re-sends on redelivery; each command carries a deduplication key (bucket, key,
version/sequencer/etag, rule) as the `lanworker-dedup-key` attribute and, on FIFO
targets, as MessageDeduplicationId, so consumers can drop duplicates. An event message that
is not an S3 event, or whose command a target queue refuses (too large, say), is
dead-lettered whole with the reason: sending it again could not help.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from lanworker.core.config import WorkerConfig
from lanworker.core.errors import (
    InvalidMessage,
    MessageRefused,
    QueueUnreachable,
    TransientError,
)
from lanworker.core.logs import configure_logging
from lanworker.core.outcomes import TRANSIENT_BACKOFF_S, DeadLetter, Delete, Outcome, Release
from lanworker.loop.leases import Heartbeats, LeaseTerms
from lanworker.loop.settle import Settler
from lanworker.loop.signals import SignalFlag
from lanworker.queues import Queue, QueueCache, ReceivedMessage, open_queue
from lanworker.queues.base import MAX_BATCH, Outgoing
from lanworker.queues.receive import ReceiveHooks, ReceiveLoop, ReceivePlan
from lanworker.reporting.metrics import Metrics
from lanworker.reporting.results import EventPublisher, Reports, ResultReporter
from lanworker.translator.rules import RenderedCommand, RuleSet, synthetic_event
from lanworker.translator.s3events import MalformedEvent, parse_notification

logger = logging.getLogger(__name__)

DEDUP_ATTRIBUTE = "lanworker-dedup-key"
RULE_ATTRIBUTE = "lanworker-rule"
SOURCE_ATTRIBUTE = "lanworker-source"


@dataclass
class Translation:
    """The commands one event message produces, and why the rest of it produced none."""

    commands: list[RenderedCommand] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def translate_body(rules: RuleSet, body: str, counts: Counter[str]) -> Translation:
    """Raises MalformedEvent (an InvalidMessage) for anything that is not a readable S3 event."""
    try:
        notification = parse_notification(body)
    except InvalidMessage:
        raise
    except Exception as exc:  # a shape no check foresaw must still be a reason, not a crash
        raise MalformedEvent(f"unreadable event message: {type(exc).__name__}: {exc}") from exc
    translation = Translation()
    if notification.is_test:
        logger.info("s3:TestEvent acknowledged", extra={"action": "test-event"})
        counts["test-events"] += 1
        translation.notes.append("s3:TestEvent: acknowledged, nothing to do")
        return translation
    for index, event in enumerate(notification.events):
        produced = rules.render(event)
        if not produced:
            counts["unmatched"] += 1
            why = rules.why_nothing(event)
            logger.info("%s %s: %s", event.event, event.url, why, extra={"action": "unmatched"})
            translation.notes.append(f"record {index} ({event.event} {event.url}): {why}")
        translation.commands.extend(produced)
    return translation


def commands_for(rules: RuleSet, body: str, counts: Counter[str]) -> list[RenderedCommand]:
    """The commands one event message produces; raises InvalidMessage for malformed input."""
    return translate_body(rules, body, counts).commands


class Translator:
    """Decides what becomes of each event message (`handle` returns an Outcome); the
    worker's settler (`loop.settle`) carries that out, under the worker's leases."""

    def __init__(self, rules: RuleSet, events: Queue, targets: QueueCache, config: WorkerConfig) -> None:
        self.rules = rules
        self.events = events
        self.targets = targets
        self.config = config
        self.shutdown = threading.Event()
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self.metrics = Metrics()

    def translate(self, body: str) -> list[RenderedCommand]:
        counts: Counter[str] = Counter()
        commands = translate_body(self.rules, body, counts).commands
        with self._counts_lock:
            self.counts.update(counts)
        return commands

    def send(self, target_url: str, commands: list[RenderedCommand], source: str) -> None:
        """Send these commands to one target queue, ten per call. Raises MessageRefused
        (naming the rule) for a command the queue refuses, or the first other error."""
        outgoing = [
            Outgoing(
                command.body,
                {
                    DEDUP_ATTRIBUTE: command.deduplication_key,
                    RULE_ATTRIBUTE: command.rule.name,
                    SOURCE_ATTRIBUTE: source,
                },
                group_id=command.group_key,
                deduplication_id=command.deduplication_key,
            )
            for command in commands
        ]
        errors = self.targets.get(target_url).send_batch(outgoing)
        for command, error in zip(commands, errors, strict=True):
            if isinstance(error, MessageRefused):
                raise MessageRefused(f"rule {command.rule.name}: {error}") from error
        for command, error in zip(commands, errors, strict=True):
            if error is not None:
                raise error
            job_id = json.loads(command.body).get("id")
            logger.info(
                "rule %s: sent %s to %s",
                command.rule.name,
                job_id,
                target_url,
                extra={"job_id": job_id, "action": "translated"},
            )

    def handle(self, message: ReceivedMessage) -> Outcome:
        """Send every command the event produces; Delete only once all were sent."""
        try:
            commands = self.translate(message.body)
        except InvalidMessage as exc:
            return self._dead_letter(message, str(exc))
        by_target: dict[str, list[RenderedCommand]] = {}
        for command in commands:
            by_target.setdefault(command.target_url, []).append(command)
        try:
            for target_url, group in by_target.items():
                self.send(target_url, group, message.message_id)
        except MessageRefused as exc:
            # The same event would render the same command: only a human can help.
            return self._dead_letter(message, str(exc))
        except (TransientError, QueueUnreachable) as exc:
            logger.error(
                "target queue unreachable, releasing event message %s: %s",
                message.message_id,
                exc,
                extra={"action": "released"},
            )
            self._count("released")
            return Release(str(exc))
        self._count("commands", len(commands))
        return Delete()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counts_lock:  # handlers run in several threads
            self.counts[name] += amount

    def _dead_letter(self, message: ReceivedMessage, reason: str) -> DeadLetter:
        logger.error(
            "event message %s dead-lettered: %s", message.message_id, reason, extra={"action": "dead-letter"}
        )
        self._count("dead-lettered")
        return DeadLetter(why=reason)

    def run(self) -> None:
        self.events.check()
        config = self.config
        terms = LeaseTerms(
            config.visibility_timeout_s, config.effective_heartbeat_s, config.max_job_runtime_s
        )
        heartbeats = Heartbeats(self.events, terms, threading.Event(), self.metrics)
        reports = Reports(
            ResultReporter(None, self.targets), EventPublisher(None, config.worker_id, self.targets)
        )
        concurrency = self.concurrency()
        settler = Settler(self.events, reports, heartbeats, self.metrics, backlog=max(MAX_BATCH, concurrency))
        try:
            ReceiveLoop(
                self.events,
                lambda message: settler.settle(message, heartbeats.lease(message), self._outcome(message)),
                ReceivePlan(
                    concurrency, config.wait_time_s, config.visibility_timeout_s, config.once, "translate"
                ),
                self.shutdown,
                ReceiveHooks(settling=settler.busy),
            ).run(config.grace_period_s, threading.Event(), lambda: None)
        finally:
            settler.close()
            heartbeats.close()
        logger.info("translator stopped: %s", dict(self.counts), extra={"action": "stop"})

    def concurrency(self) -> int:
        """Event messages handled at once: --concurrency, but one for a FIFO events queue,
        whose order within a group is the point of it."""
        return 1 if (self.config.queue_url or "").endswith(".fifo") else self.config.concurrency

    def _outcome(self, message: ReceivedMessage) -> Outcome:
        try:
            return self.handle(message)
        except Exception:
            logger.exception(
                "unexpected error on event message %s; it will be redelivered", message.message_id
            )
            return Release("unexpected error in the translator", TRANSIENT_BACKOFF_S)


# --------------------------------------------------------------------- CLI
def check_rules(rules: RuleSet) -> list[str]:
    problems = []
    for rule in rules.rules:
        event, groups = synthetic_event(rule)
        try:
            rules.render_rule(rule, event, groups)
        except InvalidMessage as exc:
            problems.append(str(exc))
    return problems


def translate_events(rules: RuleSet, config: WorkerConfig) -> None:
    """Translate events from config's queue until a signal (or, with once, an empty queue)."""
    configure_logging(config.log_format, config.log_level)
    events = open_queue(config.queue_url, config.dead_letter_queue_url, config.max_receives)
    translator = Translator(rules, events, QueueCache(), config)
    SignalFlag().install(lambda _count: translator.shutdown.set())
    started = time.monotonic()
    translator.run()
    logger.info("translated for %.1f s", time.monotonic() - started)
