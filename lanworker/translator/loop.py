"""The translator: S3 event notifications in, command messages out, by rules.

An event message is deleted only after every command it produced was sent: `handle_batch`
decides an Outcome for each of up to ten event messages (their commands share sends), and
the worker's settler carries them out, under leases kept by the worker's heartbeats, deletes
batched as a worker's are. A crash in between re-sends on redelivery; each command carries a deduplication key (bucket, key,
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
from lanworker.core.errors import InvalidMessage, MessageRefused
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
    """Decides what becomes of each event message (`handle_batch` returns the Outcomes); the
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

    def handle_batch(self, messages: list[ReceivedMessage]) -> list[Outcome]:
        """Each event message's outcome, in order: Delete once every command it produced
        was sent. The batch's commands for one target go out together, ten per call."""
        outcomes: dict[int, Outcome] = {}
        sends: dict[str, list[tuple[int, RenderedCommand]]] = {}
        for index, message in enumerate(messages):
            try:
                commands = self.translate(message.body)
            except InvalidMessage as exc:
                outcomes[index] = self._dead_letter(message, str(exc))
                continue
            for command in commands:
                sends.setdefault(command.target_url, []).append((index, command))
        failed: dict[int, Exception] = {}
        sent: Counter[int] = Counter()
        for target_url, items in sends.items():
            errors = self._send(target_url, [(command, messages[i].message_id) for i, command in items])
            for (index, command), error in zip(items, errors, strict=True):
                if error is None:
                    sent[index] += 1
                elif isinstance(error, MessageRefused):  # what a human must see wins
                    failed[index] = MessageRefused(f"rule {command.rule.name}: {error}")
                else:
                    failed.setdefault(index, error)
        for index, message in enumerate(messages):
            if index not in outcomes:
                outcomes[index] = self._decide(message, failed.get(index), sent[index])
        return [outcomes[index] for index in range(len(messages))]

    def _send(self, target_url: str, commands: list[tuple[RenderedCommand, str]]) -> list[Exception | None]:
        """Send commands (each with its event message's id) to one target queue; never
        raises: None or why, per command."""
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
            for command, source in commands
        ]
        try:
            errors = self.targets.get(target_url).send_batch(outgoing)
        except Exception as exc:  # the target's queue could not even be opened
            return [exc] * len(commands)
        for (command, _source), error in zip(commands, errors, strict=True):
            if error is None:
                job_id = json.loads(command.body).get("id")
                logger.info(
                    "rule %s: sent %s to %s",
                    command.rule.name,
                    job_id,
                    target_url,
                    extra={"job_id": job_id, "action": "translated"},
                )
        return errors

    def _decide(self, message: ReceivedMessage, error: Exception | None, commands: int) -> Outcome:
        if isinstance(error, MessageRefused):
            # The same event would render the same command: only a human can help.
            return self._dead_letter(message, str(error))
        if error is not None:
            logger.error(
                "a command was not sent, releasing event message %s: %s",
                message.message_id,
                error,
                extra={"action": "released"},
            )
            self._count("released")
            return Release(str(error))
        self._count("commands", commands)
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

        def settle_batch(messages: list[ReceivedMessage]) -> None:
            leases = [heartbeats.lease(message) for message in messages]
            for message, lease, outcome in zip(messages, leases, self._outcomes(messages), strict=True):
                settler.settle(message, lease, outcome)

        try:
            ReceiveLoop(
                self.events,
                settle_batch,
                ReceivePlan(
                    concurrency,
                    config.wait_time_s,
                    config.visibility_timeout_s,
                    config.once,
                    "translate",
                    batch_size=MAX_BATCH,
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

    def _outcomes(self, messages: list[ReceivedMessage]) -> list[Outcome]:
        try:
            return self.handle_batch(messages)
        except Exception:
            ids = ", ".join(message.message_id for message in messages)
            logger.exception("unexpected error on event message(s) %s; they will be redelivered", ids)
            return [Release("unexpected error in the translator", TRANSIENT_BACKOFF_S)] * len(messages)


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
