"""Where job results and job state events go: a reply queue, a results queue, SNS, the log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lanworker.core.errors import TransientError
from lanworker.core.outcomes import CORE_FIELDS, JobResult
from lanworker.core.retries import Backoff, as_transient, is_transient
from lanworker.core.states import EventState
from lanworker.queues import Outgoing, QueueCache

logger = logging.getLogger(__name__)

EVENT_BACKOFF = Backoff(attempts=3, budget_s=10.0)  # events are advisory: never hold a job up long
SNS_MESSAGE_BYTES = 256 * 1024
ATTRIBUTES_ROOM_BYTES = 1024  # message attributes count towards a queue's limit too


@dataclass(frozen=True)
class Reports:
    """Where a worker's job results and state events go."""

    results: ResultReporter
    events: EventPublisher


class ResultReporter:
    def __init__(self, results_url: str | None, queues: QueueCache) -> None:
        self.results_url = results_url
        self.queues = queues

    def target_of(self, reply_to: str | None) -> str | None:
        """Where a result goes: the message's reply_to, else the worker's results queue."""
        return reply_to or self.results_url

    def prepare(self, results: Sequence[tuple[JobResult, str | None]]) -> list[ReadyResult]:
        """Log each (result, reply_to) and make its message, cut to fit its queue's limit
        if it must be (the log keeps it whole): everything but the sending, so a caller
        can do this before it opens the transaction the sends join."""
        ready: list[ReadyResult] = []
        limits: dict[str, int | Exception | None] = {}
        for result, reply_to in results:
            document = result.as_dict()
            logger.info(
                "%s%s",
                result.state,
                f": {result.error}" if result.error else "",
                extra={"job_id": result.job_id, "action": "result", "result": document},
            )
            target = self.target_of(reply_to)
            if not target:
                ready.append(ReadyResult(result.job_id, None, None))
                continue
            if target not in limits:
                try:
                    limits[target] = self.queues.get(target).max_message_bytes()
                except Exception as exc:  # the queue could not even be opened
                    limits[target] = exc
            limit = limits[target]
            if isinstance(limit, Exception):
                ready.append(ReadyResult(result.job_id, target, None, limit))
            else:
                ready.append(ReadyResult(result.job_id, target, _outgoing(document, limit, target)))
        return ready

    def deliver(self, ready: Sequence[ReadyResult]) -> list[TransientError | None]:
        """Send prepared results in as few calls per target queue as it allows. Never
        raises: per result None (delivered, or only logged: an unusable reply_to must not
        block deletion forever) or the TransientError that says to try again later."""
        outcome: list[TransientError | None] = [None] * len(ready)
        targets: dict[str, list[int]] = {}
        for index, item in enumerate(ready):
            if item.target is not None:
                targets.setdefault(item.target, []).append(index)
        for target, indexes in targets.items():
            errors = self._send(target, [ready[index] for index in indexes])
            for index, error in zip(indexes, errors, strict=True):
                if isinstance(error, TransientError):
                    outcome[index] = error
                elif error is not None:
                    logger.error(
                        "could not deliver the result to %s: %s",
                        target,
                        error,
                        extra={"job_id": ready[index].job_id, "action": "result"},
                    )
        return outcome

    def _send(self, target: str, items: list[ReadyResult]) -> list[Exception | None]:
        messages = [item.message for item in items if item.message is not None]
        try:
            sent = iter(self.queues.get(target).send_batch(messages) if messages else [])
        except Exception as exc:
            sent = iter([exc for _ in messages])
        return [next(sent) if item.message is not None else item.error for item in items]


@dataclass(frozen=True)
class ReadyResult:
    """A result made ready to send: its message for its target queue, or the error that
    stops it (the queue could not be opened); no target when it is only logged."""

    job_id: str
    target: str | None
    message: Outgoing | None
    error: Exception | None = None


def _outgoing(document: dict[str, Any], limit_bytes: int | None, target: str) -> Outgoing:
    """The result as a message; serialised once, and again only when it must be cut."""
    attributes = {"lanworker-job-id": str(document["job_id"])}
    body = json.dumps(document)
    if limit_bytes is not None and len(body) > limit_bytes - ATTRIBUTES_ROOM_BYTES:
        fitted = fit_result(document, limit_bytes - ATTRIBUTES_ROOM_BYTES)
        logger.warning(
            "result cut to fit the %d-byte messages of %s: %s",
            limit_bytes,
            target,
            ", ".join(fitted["cut"]),
            extra={"job_id": document["job_id"], "action": "result"},
        )
        body = json.dumps(fitted)
    return Outgoing(body, attributes)


def fit_result(document: dict[str, Any], limit_bytes: int) -> dict[str, Any]:
    """The result itself when its JSON fits in limit_bytes; otherwise a copy cut to fit.

    Cut in this order until it fits: the stream texts (to 64, 16, 4 and 0 KiB; stdout
    keeps its head, stderr its tail, as errors come last), then the input and output
    records (to the first 100, 10, none; `inputs_omitted` and `outputs_omitted` count the
    rest), then everything but the fields that say what happened. `cut` names what was cut.
    """
    if _json_bytes(document) <= limit_bytes:
        return document
    fitted = dict(document)
    cut: list[str] = []
    for keep in (64 * 1024, 16 * 1024, 4 * 1024, 0):
        for name in ("stdout", "stderr"):
            stream = fitted.get(name)
            if (
                isinstance(stream, dict)
                and isinstance(stream.get("text"), str)
                and len(stream["text"]) > keep
            ):
                text = stream["text"]
                fitted[name] = {
                    **stream,
                    "text": text[:keep] if name == "stdout" else text[len(text) - keep :],
                }
                fitted[name]["truncated"] = True
                cut += [name] if name not in cut else []
        if _json_bytes({**fitted, "cut": cut}) <= limit_bytes:
            return {**fitted, "cut": cut}
    for keep in (100, 10, 0):
        for name in ("inputs", "outputs"):
            records = document.get(name)
            if isinstance(records, list) and len(records) > keep:
                fitted[name] = records[:keep]
                fitted[f"{name}_omitted"] = len(records) - keep
                cut += [name] if name not in cut else []
        if _json_bytes({**fitted, "cut": cut}) <= limit_bytes:
            return {**fitted, "cut": cut}
    core = {name: fitted[name] for name in CORE_FIELDS if name in fitted}
    if isinstance(core.get("error"), str):
        core["error"] = core["error"][:4096]
    return {**core, "cut": [*cut, "everything else"]}


def _json_bytes(document: dict[str, Any]) -> int:
    return len(json.dumps(document))  # ASCII (ensure_ascii), so characters are bytes


class EventPublisher:
    """FOQUS-style job state events, to an SQS queue or an SNS topic, always to the log.

    Events are advisory: a failure to publish one is logged, never fails the job.
    """

    def __init__(self, target: str | None, worker_id: str, queues: QueueCache) -> None:
        self.target = target
        self.worker_id = worker_id
        self.queues = queues
        self._sns: Any = None

    def publish(self, job_id: str, state: EventState, **details: Any) -> None:
        if not self.target and not logger.isEnabledFor(logging.DEBUG):
            return  # nowhere to go: a job's five events cost nothing
        event = {
            "job_id": job_id,
            "worker_id": self.worker_id,
            "state": state.value,
            "timestamp": time.time(),
            **details,
        }
        logger.debug("state: %s", state, extra={"job_id": job_id, "action": state.value})
        if not self.target:
            return
        try:
            body = json.dumps(event)
            if isinstance(event.get("result"), dict):
                limit_bytes = self._limit_bytes() - ATTRIBUTES_ROOM_BYTES
                if len(body) > limit_bytes:
                    room = limit_bytes - _json_bytes({**event, "result": {}})
                    body = json.dumps({**event, "result": fit_result(event["result"], room)})
            self._send(body)
        except Exception as exc:
            logger.warning("could not publish the %s event: %s", state, exc, extra={"job_id": job_id})

    def _limit_bytes(self) -> int:
        assert self.target is not None
        if self.target.startswith("arn:aws:sns:"):
            return SNS_MESSAGE_BYTES
        return self.queues.get(self.target).max_message_bytes() or SNS_MESSAGE_BYTES

    def _send(self, body: str) -> None:
        EVENT_BACKOFF.call(self._send_once, body)

    def _send_once(self, body: str) -> None:
        assert self.target is not None
        if self.target.startswith("arn:aws:sns:"):
            if self._sns is None:
                import botocore.session  # only for SNS targets

                # The topic's own region, from its ARN (arn:aws:sns:REGION:ACCOUNT:NAME).
                region = self.target.split(":")[3] or None
                self._sns = botocore.session.get_session().create_client("sns", region_name=region)
            try:
                self._sns.publish(TopicArn=self.target, Message=body)
            except Exception as exc:
                if is_transient(exc):
                    raise as_transient(exc, "sns publish") from exc
                raise
            return
        self.queues.get(self.target).send(body)
