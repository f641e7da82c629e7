"""Translator rules: which S3 objects become which command messages, on which queue.

Globs and regexes match the whole key (anchored), never a substring. Templates use
`{placeholder}` (and `{{`/`}}` for literal braces); substitution is plain text replacement,
never `str.format`, so a key can never reach attributes or indexes.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lanworker.core.errors import ConfigError, InvalidMessage
from lanworker.message.command import schema_errors, validate_document
from lanworker.translator.s3events import ObjectEvent

DEFAULT_EVENTS = ("ObjectCreated:*",)
SYNTHETIC_SUFFIX = {
    "ObjectRemoved": "Delete",
    "LifecycleExpiration": "Delete",
    "ObjectRestore": "Completed",
    "Replication": "OperationFailedReplication",
}
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """`**` crosses '/', `*` and `?` do not; `[...]` classes as in fnmatch. Anchored."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")  # zero or more whole directories
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif char == "*":
            out.append("[^/]*")
            index += 1
        elif char == "?":
            out.append("[^/]")
            index += 1
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(re.escape(char))
                index += 1
            else:
                body = pattern[index + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                index = end + 1
        else:
            out.append(re.escape(char))
            index += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class Rule:
    name: str
    bucket: str
    target: str
    command: dict[str, Any]
    key_pattern: re.Pattern[str] | None = None
    prefix: str = ""
    suffix: str = ""
    events: tuple[str, ...] = DEFAULT_EVENTS
    min_size: int | None = None
    max_size: int | None = None
    stop: bool = False
    ignore_prefixes: tuple[str, ...] = ()

    def fires_on(self, event_name: str) -> bool:
        return any(fnmatch.fnmatchcase(event_name, pattern.removeprefix("s3:")) for pattern in self.events)

    def match(self, event: ObjectEvent) -> dict[str, str] | None:
        """The regex's named groups when the rule fires for this event, else None."""
        if not self.fires_on(event.event):
            return None
        if not fnmatch.fnmatchcase(event.bucket, self.bucket):
            return None
        if any(event.key.startswith(prefix) for prefix in self.ignore_prefixes):
            return None
        if not event.key.startswith(self.prefix) or not event.key.endswith(self.suffix):
            return None
        if self.min_size is not None and (event.size is None or event.size < self.min_size):
            return None
        if self.max_size is not None and (event.size is None or event.size > self.max_size):
            return None
        if self.key_pattern is None:
            return {}
        found = self.key_pattern.match(event.key)
        if found is None:
            return None
        return {name: value or "" for name, value in found.groupdict().items()}


@dataclass(frozen=True)
class RenderedCommand:
    rule: Rule
    target_url: str
    body: str
    deduplication_key: str
    group_key: str


def placeholder_values(event: ObjectEvent, groups: dict[str, str]) -> dict[str, str]:
    directory = posixpath.dirname(event.key)
    name = posixpath.basename(event.key)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    values = {
        "bucket": event.bucket,
        "key": event.key,
        "url": event.url,
        "dir_url": f"s3://{event.bucket}/{directory + '/' if directory else ''}",
        "name": name,
        "stem": stem,
        "ext": ext,
        "size": "" if event.size is None else str(event.size),
        "etag": (event.etag or "").strip('"'),
        "event": event.event,
        "time": event.time or "",
    }
    values.update(groups)
    return values


def render_template(template: Any, values: dict[str, str]) -> Any:
    """Substitute placeholders in every string of a JSON-like template."""
    if isinstance(template, str):

        def replace(found: re.Match[str]) -> str:
            token = found.group(0)
            if token in ("{{", "}}"):
                return token[0]
            name = found.group(1)
            if name not in values:
                raise KeyError(name)
            return values[name]

        return PLACEHOLDER.sub(replace, template)
    if isinstance(template, list):
        return [render_template(item, values) for item in template]
    if isinstance(template, dict):
        return {key: render_template(value, values) for key, value in template.items()}
    return copy.deepcopy(template)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:-]", "-", text)


class RuleSet:
    def __init__(
        self, rules: list[Rule], queues: dict[str, str], ignore_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.rules = rules
        self.queues = queues
        self.ignore_prefixes = ignore_prefixes

    def target_url(self, rule: Rule) -> str:
        return self.queues.get(rule.target, rule.target)

    def why_nothing(self, event: ObjectEvent) -> str:
        """Why no rule fired for this event, for people (`--dry-run`) and the log."""
        for prefix in self.ignore_prefixes:
            if event.key.startswith(prefix):
                return f"key is under the ignored prefix {prefix!r}"
        if not any(rule.fires_on(event.event) for rule in self.rules):
            kinds = sorted({pattern for rule in self.rules for pattern in rule.events})
            return f"no rule fires on {event.event} events (the rules fire on {', '.join(kinds)})"
        return f"no rule matches bucket {event.bucket!r} and key {event.key!r}"

    def render(self, event: ObjectEvent) -> list[RenderedCommand]:
        """Every command this event produces, in file order; raises InvalidMessage if one is invalid."""
        if any(event.key.startswith(prefix) for prefix in self.ignore_prefixes):
            return []
        commands = []
        for rule in self.rules:
            groups = rule.match(event)
            if groups is None:
                continue
            commands.append(self.render_rule(rule, event, groups))
            if rule.stop:
                break
        return commands

    def render_rule(self, rule: Rule, event: ObjectEvent, groups: dict[str, str]) -> RenderedCommand:
        try:
            document = render_template(rule.command, placeholder_values(event, groups))
        except KeyError as exc:
            raise InvalidMessage(f"rule {rule.name}: unknown placeholder {{{exc.args[0]}}}") from exc
        dedup = hashlib.sha256(
            "\x00".join((event.bucket, event.key, event.identity, rule.name)).encode()
        ).hexdigest()
        document.setdefault("id", _safe_id(f"{rule.name[:40]}-{dedup[:24]}"))
        problems = validate_document(document)
        if problems:
            raise InvalidMessage(
                f"rule {rule.name} renders an invalid command: " + "; ".join(problems), problems
            )
        group = hashlib.sha256(f"{event.bucket}/{event.key}".encode()).hexdigest()[:64]
        return RenderedCommand(rule, self.target_url(rule), json.dumps(document), dedup, group)


def _rule(raw: dict[str, Any], queues: dict[str, str], where: str) -> Rule:
    match = raw["match"]
    pattern = None
    try:
        if "key" in match:
            pattern = glob_to_regex(match["key"])
        elif "key_regex" in match:
            pattern = re.compile(match["key_regex"] + r"\Z", re.DOTALL)
    except re.error as exc:
        raise ConfigError(f"{where}.match: bad key pattern: {exc}") from exc
    target = raw["target"]
    if target not in queues and not target.startswith(("https://", "http://", "local:")):
        raise ConfigError(f"{where}.target: {target!r} is neither a queue URL nor a name in `queues`")
    return Rule(
        name=raw["name"],
        bucket=match["bucket"],
        target=target,
        command=raw["command"],
        key_pattern=pattern,
        prefix=match.get("prefix", ""),
        suffix=match.get("suffix", ""),
        events=tuple(match.get("events", DEFAULT_EVENTS)),
        min_size=match.get("min_size"),
        max_size=match.get("max_size"),
        stop=bool(raw.get("stop", False)),
        ignore_prefixes=tuple(raw.get("ignore_prefixes", ())),
    )


def load_rules(path: Path) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"rules file {path}: {exc}") from exc
    problems = schema_errors(document, "rules.schema.json")
    if problems:
        named = []
        for problem in problems:
            found = re.match(r"\$\.rules\[(\d+)\]", problem)
            if found and isinstance(document, dict):
                index = int(found.group(1))
                name = (
                    (document["rules"][index] or {}).get("name", "?")
                    if index < len(document["rules"])
                    else "?"
                )
                problem = f"rule {name!r}: {problem}"
            named.append(problem)
        raise ConfigError(f"rules file {path}: " + "; ".join(named))
    queues = dict(document.get("queues", {}))
    rules = [
        _rule(raw, queues, f"$.rules[{index}] ({raw['name']})") for index, raw in enumerate(document["rules"])
    ]
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"rules file {path}: duplicate rule names: {', '.join(duplicates)}")
    return RuleSet(rules, queues, tuple(document.get("ignore_prefixes", ())))


def synthetic_event(rule: Rule) -> tuple[ObjectEvent, dict[str, str]]:
    """An event the rule would match, for `translate --check` (groups filled with 'example')."""
    bucket = rule.bucket if not any(c in rule.bucket for c in "*?[") else "example-bucket"
    groups: dict[str, str] = {}
    if rule.key_pattern is not None:
        groups = dict.fromkeys(rule.key_pattern.groupindex, "example")
    key = f"{rule.prefix}example/dir/object{rule.suffix or '.txt'}"
    event_name = rule.events[0].removeprefix("s3:")
    if event_name == "*":
        event_name = "ObjectCreated:Put"
    event_name = event_name.replace(":*", ":" + SYNTHETIC_SUFFIX.get(event_name.split(":")[0], "Put"))
    event = ObjectEvent(
        bucket,
        key,
        event_name,
        size=rule.min_size or 1024,
        etag="0123456789abcdef",
        sequencer="00000000000000000001",
        time="2026-01-01T00:00:00.000Z",
    )
    return event, groups
