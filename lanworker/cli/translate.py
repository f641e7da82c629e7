"""`worker.py translate`: check rules, dry-run events from files, or translate from a queue."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from lanworker.core.config import build_config
from lanworker.core.errors import ConfigError, InvalidMessage
from lanworker.core.exitcodes import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from lanworker.translator.loop import check_rules, translate_body, translate_events
from lanworker.translator.rules import RuleSet, load_rules


def run(args: argparse.Namespace) -> int:
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
        return dry_run(rules, args.paths)
    config = build_config(
        {
            "mode": "client",
            "queue_url": args.queue_url,
            "dead_letter_queue_url": args.dead_letter_queue_url,
            "once": args.once,
            "concurrency": args.concurrency,
            "wait_time_s": args.wait_time_s,
            "visibility_timeout_s": args.visibility_timeout_s,
            "log_format": args.log_format,
        }
    )
    translate_events(rules, config)
    return EXIT_OK


def dry_run(rules: RuleSet, paths: list[str]) -> int:
    """Each event file's commands as JSON lines, nothing sent."""
    if not paths:
        print("translate --dry-run needs event files (or - for standard input)", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
    for name in paths:
        try:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
            translation = translate_body(rules, data.decode("utf-8"), Counter())
        except (OSError, UnicodeDecodeError, InvalidMessage) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        for note in translation.notes:
            print(f"{name}: {note}", file=sys.stderr)
        for command in translation.commands:
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
    return status
