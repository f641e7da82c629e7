"""The translator: S3 event notifications in, command messages out, by rules.

An event message is deleted only after every command it produced was sent. A crash in
between re-sends on redelivery; each command carries a deduplication key (bucket, key,
version/sequencer/etag, rule) as the `lanworker-dedup-key` attribute and, on FIFO
targets, as MessageDeduplicationId, so consumers can drop duplicates.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lanworker.config import WorkerConfig, build_config
from lanworker.errors import ConfigError, InvalidMessage, QueueUnreachable, TransientError
from lanworker.logs import configure_logging
from lanworker.queues import Queue, ReceivedMessage, SinglePass, open_queue
from lanworker.results import QueueCache
from lanworker.rules import RenderedCommand, RuleSet, load_rules, synthetic_event
from lanworker.s3events import MalformedEvent, parse_notification
from lanworker.signals import SignalFlag

logger = logging.getLogger(__name__)

DEDUP_ATTRIBUTE = "lanworker-dedup-key"
RULE_ATTRIBUTE = "lanworker-rule"
SOURCE_ATTRIBUTE = "lanworker-source"


def commands_for(rules: RuleSet, body: str, counts: Counter[str]) -> list[RenderedCommand]:
    """The commands one event message produces; raises InvalidMessage for malformed input."""
    notification = parse_notification(body)
    if notification.is_test:
        logger.info("s3:TestEvent acknowledged", extra={"action": "test-event"})
        counts["test-events"] += 1
        return []
    commands: list[RenderedCommand] = []
    for event in notification.events:
        produced = rules.render(event)
        if not produced:
            counts["unmatched"] += 1
            logger.info("no rule matches %s %s", event.event, event.url, extra={"action": "unmatched"})
        commands.extend(produced)
    return commands


class Translator:
    def __init__(self, rules: RuleSet, events: Queue, targets: QueueCache, config: WorkerConfig) -> None:
        self.rules = rules
        self.events = events
        self.targets = targets
        self.config = config
        self.shutdown = threading.Event()
        self.counts: Counter[str] = Counter()

    def translate(self, body: str) -> list[RenderedCommand]:
        return commands_for(self.rules, body, self.counts)

    def send(self, command: RenderedCommand, source: str) -> None:
        self.targets.get(command.target_url).send(
            command.body,
            attributes={
                DEDUP_ATTRIBUTE: command.deduplication_key,
                RULE_ATTRIBUTE: command.rule.name,
                SOURCE_ATTRIBUTE: source,
            },
            group_id=command.group_key,
            deduplication_id=command.deduplication_key,
        )

    def handle(self, message: ReceivedMessage) -> None:
        try:
            commands = self.translate(message.body)
        except InvalidMessage as exc:
            logger.error(
                "event message %s dead-lettered: %s", message.message_id, exc, extra={"action": "dead-letter"}
            )
            self.counts["dead-lettered"] += 1
            self.events.dead_letter(message, str(exc))
            return
        try:
            for command in commands:
                self.send(command, message.message_id)
                logger.info(
                    "rule %s: sent %s to %s",
                    command.rule.name,
                    json.loads(command.body).get("id"),
                    command.target_url,
                    extra={"job_id": json.loads(command.body).get("id"), "action": "translated"},
                )
        except (TransientError, QueueUnreachable) as exc:
            logger.error(
                "target queue unreachable, releasing event message %s: %s",
                message.message_id,
                exc,
                extra={"action": "released"},
            )
            self.counts["released"] += 1
            self.events.release(message)
            return
        self.counts["commands"] += len(commands)
        self.events.delete(message)

    def run(self) -> None:
        self.events.check()
        config = self.config
        single_pass = SinglePass(self.events)
        while not self.shutdown.is_set():
            try:
                messages = self.events.receive(
                    10,
                    min(config.wait_time_s, 1) if config.once else config.wait_time_s,
                    config.visibility_timeout_s,
                )
            except (TransientError, QueueUnreachable) as exc:
                logger.error("receive failed: %s", exc, extra={"action": "receive"})
                self.shutdown.wait(5)
                continue
            drained = not messages
            if config.once:
                messages = single_pass.first_sightings(messages)
            for message in messages:
                if self.shutdown.is_set():
                    self.events.release(message)
                    continue
                try:
                    self.handle(message)
                except Exception:
                    logger.exception(
                        "unexpected error on event message %s; it will be redelivered", message.message_id
                    )
            if config.once and drained:
                break
        single_pass.finish()
        logger.info("translator stopped: %s", dict(self.counts), extra={"action": "stop"})


# --------------------------------------------------------------------- CLI
def add_translate_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "translate", help="turn S3 event notifications into command messages by rules"
    )
    parser.add_argument("--rules", type=Path, help="rules file (YAML or JSON)")
    parser.add_argument("--queue", dest="queue_url", help="events queue (SQS URL or local:PATH#NAME)")
    parser.add_argument("--dead-letter-queue", dest="dead_letter_queue_url")
    parser.add_argument("--once", action="store_true", default=None)
    parser.add_argument("--wait-time-s", type=int)
    parser.add_argument("--visibility-timeout-s", type=int)
    parser.add_argument("--log-format", choices=("json", "text"))
    parser.add_argument(
        "--check", action="store_true", help="validate rules and render each against a synthetic event"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands that EVENT files would produce"
    )
    parser.add_argument("paths", nargs="*", help="with --check: the rules file; with --dry-run: event files")


def check_rules(rules: RuleSet) -> list[str]:
    problems = []
    for rule in rules.rules:
        event, groups = synthetic_event(rule)
        try:
            rules.render_rule(rule, event, groups)
        except InvalidMessage as exc:
            problems.append(str(exc))
    return problems


def run_translate(args: argparse.Namespace) -> int:
    from lanworker.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

    rules_path = args.rules or (Path(args.paths[0]) if args.check and args.paths else None)
    if rules_path is None:
        raise ConfigError("translate needs --rules FILE")
    rules = load_rules(rules_path)
    if args.check:
        problems = check_rules(rules)
        for problem in problems:
            print(f"{rules_path}: {problem}")
        print(
            f"{rules_path}: {len(rules.rules)} rule(s), {'ok' if not problems else f'{len(problems)} problem(s)'}"
        )
        return EXIT_CONFIG if problems else EXIT_OK
    if args.dry_run:
        status = EXIT_OK
        for name in args.paths:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
            try:
                for command in commands_for(rules, text, Counter()):
                    print(
                        json.dumps(
                            {
                                "rule": command.rule.name,
                                "queue": command.target_url,
                                "dedup_key": command.deduplication_key,
                                "message": json.loads(command.body),
                            }
                        )
                    )
            except MalformedEvent as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                status = EXIT_FAILED
        return status
    config = build_config(
        {
            "mode": "client",
            "queue_url": args.queue_url,
            "dead_letter_queue_url": args.dead_letter_queue_url,
            "once": args.once,
            "wait_time_s": args.wait_time_s,
            "visibility_timeout_s": args.visibility_timeout_s,
            "log_format": args.log_format,
        }
    )
    configure_logging(config.log_format, config.log_level)
    events = open_queue(config.queue_url, config.dead_letter_queue_url, config.max_receives)
    translator = Translator(rules, events, QueueCache(), config)
    SignalFlag().install(lambda _count: translator.shutdown.set())
    started = time.monotonic()
    translator.run()
    logger.info("translated for %.1f s", time.monotonic() - started)
    return EXIT_OK
