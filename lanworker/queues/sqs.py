"""AWS SQS through botocore (any endpoint it is configured for, e.g. AWS_ENDPOINT_URL)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import botocore.config
import botocore.session

from lanworker.core.errors import (
    ConfigError,
    MessageRefused,
    QueueAccessDenied,
    QueueUnreachable,
    StaleReceipt,
)
from lanworker.core.retries import DENIED_CODES, Backoff, as_transient, client_error_code, is_transient
from lanworker.queues.base import MAX_BATCH, DeadLetterEntry, Outgoing, ReceivedMessage

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH_BYTES = 256 * 1024  # SendMessageBatch: the whole payload, bodies and attributes
CLASSIC_MESSAGE_BYTES = 256 * 1024
MAX_WAIT_S = 20
REASON_ATTRIBUTE = "lanworker-dead-letter-reason"
MAX_ATTRIBUTES = 10  # message attributes SQS takes on one message
STALE_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)
RECEIPT_ACTIONS = frozenset({"delete", "change visibility"})  # where a refusal means a stale receipt
# What SQS answers a send it will never take: too large, characters outside its set,
# bad attributes, a FIFO parameter missing.
REFUSED_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidMessageContents",
        "MissingParameter",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "AWS.SimpleQueueService.InvalidParameterValue",
    }
)
MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
BACKOFF = Backoff()
HEARTBEAT_BACKOFF = Backoff(attempts=3, budget_s=10.0)  # a heartbeat must not outlast its interval
ONE_ATTEMPT = Backoff(attempts=1)
ASK_LIMIT_AGAIN_S = 60.0
_REGION_IN_URL = re.compile(
    r"https?://(?:sqs\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|(?P<legacy>[a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?)/"
)


def _translate(exc: Exception, action: str, url: str) -> Exception:
    code = client_error_code(exc)
    if code in STALE_CODES and action in RECEIPT_ACTIONS:
        return StaleReceipt(f"{action} on {url}: receipt no longer valid ({code})")
    if code in REFUSED_CODES and action == "send":
        return MessageRefused(f"{url} refused the message: {exc}")
    if code in MISSING_QUEUE_CODES:
        return QueueUnreachable(f"{action} on {url}: queue does not exist")
    if code in DENIED_CODES:
        return QueueAccessDenied(
            f"{action} on {url}: access denied ({_denial(exc, code)}): check the AWS credentials "
            "and the queue's policy"
        )
    if is_transient(exc):
        return as_transient(exc, f"sqs {action} {url}")
    return exc


def _denial(exc: Exception, code: str) -> str:
    """The refusal's own code. An endpoint that answers a JSON request in XML (moto's
    authentication errors do) leaves botocore only the status: read the code from the body."""
    if code != "403":
        return code
    found = re.search(r"<Code>([^<]+)</Code>", str(exc))
    return found.group(1) if found else "HTTP 403"


def region_of(url: str) -> str | None:
    """The region an SQS queue URL names (`https://sqs.REGION.amazonaws.com/...`, or the
    legacy `https://REGION.queue.amazonaws.com/...`), if it names one."""
    found = _REGION_IN_URL.match(url)
    return found.group("region") or found.group("legacy") if found else None


def make_sqs_client(url: str | None = None) -> Any:
    """A client for the region the queue URL names (where the queue is), else the configured
    region; without either a ConfigError that says so (botocore's NoRegionError otherwise)."""
    session = botocore.session.get_session()
    region = (region_of(url) if url else None) or session.get_config_variable("region")
    if region is None:
        raise ConfigError(
            f"no AWS region for {url or 'SQS'}: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
        )
    return session.create_client(
        "sqs",
        region_name=region,
        config=botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            # A long poll holds the connection up to 20 s; leave headroom.
            read_timeout=MAX_WAIT_S + 10,
            max_pool_connections=50,
        ),
    )


def _attributes(raw: dict[str, Any]) -> dict[str, str]:
    return {name: str(value.get("StringValue", "")) for name, value in raw.items() if "StringValue" in value}


@dataclass(frozen=True)
class BatchCall(Generic[T]):
    """One of SQS's batch operations: its name in errors, the API call, an item's entry,
    the single call that does the same for one item, and the retries."""

    action: str
    operation: str
    entry: Callable[[T], dict[str, Any]]
    alone: Callable[[T], object]
    backoff: Backoff


def _receipt(message: ReceivedMessage) -> dict[str, Any]:
    return {"ReceiptHandle": message.receipt_handle}


class SqsQueue:
    remote = True

    def __init__(
        self, url: str, dead_letter_url: str | None = None, client: Any = None, backoff: Backoff = BACKOFF
    ) -> None:
        self.url = url
        self.backoff = backoff  # how long a call rides out an outage (clients: seconds, not a minute)
        self.dead_letter_url = dead_letter_url
        self.client = client if client is not None else make_sqs_client(url)
        self.fifo = url.endswith(".fifo")
        self._max_message_bytes: int | None = None  # asked once
        self._ask_limit_at = 0.0

    def check(self) -> None:
        try:
            attributes = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["RedrivePolicy"])
        except Exception as exc:
            translated = _translate(exc, "check", self.url)
            if isinstance(translated, QueueUnreachable):
                raise translated from exc
            raise QueueUnreachable(f"SQS queue {self.url} is not usable: {exc}") from exc
        if not self.dead_letter_url and "RedrivePolicy" not in attributes.get("Attributes", {}):
            logger.warning(
                "queue %s has no redrive policy and no --dead-letter-queue was given: "
                "invalid messages will be retried until they expire",
                self.url,
            )

    def max_message_bytes(self) -> int:
        """The queue's MaximumMessageSize (1 KiB to 1 MiB), asked once. While it cannot be
        asked, 256 KiB (the classic limit), asking again at most once a minute so an outage
        adds no calls to every send."""
        if self._max_message_bytes is None and time.monotonic() >= self._ask_limit_at:
            try:
                attributes = self._call(
                    "get attributes",
                    "get_queue_attributes",
                    ONE_ATTEMPT,
                    AttributeNames=["MaximumMessageSize"],
                )["Attributes"]
                self._max_message_bytes = int(attributes["MaximumMessageSize"])
            except Exception as exc:
                logger.warning("cannot read the message size limit of %s: %s", self.url, exc)
                self._ask_limit_at = time.monotonic() + ASK_LIMIT_AGAIN_S
        return self._max_message_bytes or CLASSIC_MESSAGE_BYTES

    def together(self, urls: Iterable[str]) -> AbstractContextManager[object]:
        return nullcontext()  # SQS has no transactions: each call stands alone

    def depth(self) -> dict[str, int]:
        attributes = self._call(
            "get attributes",
            "get_queue_attributes",
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        }

    def _call(self, action: str, operation: str, backoff: Backoff | None = None, **request: Any) -> Any:
        """One SQS API call on this queue, its failures translated, transient ones retried."""

        def once() -> Any:
            try:
                return getattr(self.client, operation)(QueueUrl=self.url, **request)
            except Exception as exc:
                raise _translate(exc, action, self.url) from exc

        return (backoff or self.backoff).call(once)

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int
    ) -> list[ReceivedMessage]:
        response = self._call(
            "receive",
            "receive_message",
            MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
            WaitTimeSeconds=int(max(0, min(MAX_WAIT_S, wait_time_s))),
            VisibilityTimeout=visibility_timeout_s,
            MessageSystemAttributeNames=[
                "ApproximateReceiveCount",
                "ApproximateFirstReceiveTimestamp",
                "SentTimestamp",
                "MessageGroupId",
            ],
            MessageAttributeNames=["All"],
        )
        messages = []
        for raw in response.get("Messages", []):
            system = raw.get("Attributes", {})
            first = system.get("ApproximateFirstReceiveTimestamp")
            sent = system.get("SentTimestamp")
            messages.append(
                ReceivedMessage(
                    message_id=raw["MessageId"],
                    receipt_handle=raw["ReceiptHandle"],
                    body=raw["Body"],
                    receive_count=int(system.get("ApproximateReceiveCount", 1)),
                    attributes=_attributes(raw.get("MessageAttributes", {})),
                    first_received_at=int(first) / 1000.0 if first else None,
                    group_id=system.get("MessageGroupId"),
                    sent_at=int(sent) / 1000.0 if sent else None,
                )
            )
        return messages

    def delete(self, message: ReceivedMessage) -> None:
        self._call("delete", "delete_message", ReceiptHandle=message.receipt_handle)

    def delete_batch(self, messages: Sequence[ReceivedMessage]) -> list[Exception | None]:
        call = BatchCall("delete", "delete_message_batch", _receipt, self.delete, BACKOFF)
        return self._each_in_batches(messages, call)

    def _each_in_batches(
        self, items: Sequence[T], call: BatchCall[T], groups: list[list[int]] | None = None
    ) -> list[Exception | None]:
        """One call per group of indexes (default: ten at a time); a group of one goes
        alone. An entry a successful call could not take is tried again alone (which tells
        a stale receipt from a passing failure); when the call itself failed (after its
        retries) every entry carries that error: retrying each alone through an outage
        would hold settling for minutes."""
        errors: list[Exception | None] = [None] * len(items)
        if groups is None:
            groups = [
                list(range(start, min(start + MAX_BATCH, len(items))))
                for start in range(0, len(items), MAX_BATCH)
            ]
        for group in groups:
            if len(group) == 1:
                errors[group[0]] = _attempt(call.alone, items[group[0]])
                continue
            entries = [{"Id": str(index), **call.entry(items[index])} for index in group]
            try:
                response = self._call(call.action, call.operation, call.backoff, Entries=entries)
            except Exception as exc:
                for index in group:
                    errors[index] = exc
                continue
            for failed in response.get("Failed", []):
                index = int(failed["Id"])
                errors[index] = _attempt(call.alone, items[index])
        return errors

    def change_visibility(self, message: ReceivedMessage, timeout_s: int) -> None:
        self._call(
            "change visibility",
            "change_message_visibility",
            HEARTBEAT_BACKOFF,
            ReceiptHandle=message.receipt_handle,
            VisibilityTimeout=int(timeout_s),
        )

    def change_visibility_batch(
        self, messages: Sequence[ReceivedMessage], timeout_s: int
    ) -> list[Exception | None]:
        call: BatchCall[ReceivedMessage] = BatchCall(
            "change visibility",
            "change_message_visibility_batch",
            lambda message: {**_receipt(message), "VisibilityTimeout": int(timeout_s)},
            lambda message: self.change_visibility(message, timeout_s),
            HEARTBEAT_BACKOFF,
        )
        return self._each_in_batches(messages, call)

    def release(self, message: ReceivedMessage, error: str | None = None, delay_s: int = 0) -> None:
        # SQS cannot annotate a message in flight; the error is in the log and the events.
        self.change_visibility(message, max(0, delay_s))

    def send(
        self,
        body: str,
        attributes: dict[str, str] | None = None,
        delay_s: int = 0,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> str:
        request = self._send_request(body, attributes, delay_s, group_id, deduplication_id)
        return str(self._call("send", "send_message", **request)["MessageId"])

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        """Ten per call, and no more than MAX_BATCH_BYTES of payload, as deletes go."""
        entry: Callable[[Outgoing], dict[str, Any]] = lambda message: self._send_request(  # noqa: E731
            message.body,
            message.attributes,
            group_id=message.group_id,
            deduplication_id=message.deduplication_id,
        )
        call = BatchCall("send", "send_message_batch", entry, self._send_one, BACKOFF)
        return self._each_in_batches(messages, call, groups=_batches(messages))

    def _send_one(self, message: Outgoing) -> None:
        self.send(
            message.body,
            message.attributes,
            group_id=message.group_id,
            deduplication_id=message.deduplication_id,
        )

    def _send_request(
        self,
        body: str,
        attributes: dict[str, str] | None,
        delay_s: int = 0,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"MessageBody": body}
        if attributes:
            request["MessageAttributes"] = {
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
            }
        if self.fifo:
            # FIFO queues ignore per-message delays and require a group.
            request["MessageGroupId"] = group_id or "lanworker"
            request["MessageDeduplicationId"] = deduplication_id or str(uuid.uuid4())
        elif delay_s:
            request["DelaySeconds"] = int(min(900, max(0, delay_s)))
        return request

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        if self.dead_letter_url:
            ours = {REASON_ATTRIBUTE: reason[:1000], "lanworker-source-queue": self.url}
            # SQS takes ten attributes a message: ours say why, so the sender's give way.
            kept = dict(list(message.attributes.items())[: MAX_ATTRIBUTES - len(ours)])
            try:
                SqsQueue(self.dead_letter_url, client=self.client).send(message.body, {**kept, **ours})
            except MessageRefused as exc:  # e.g. a dead-letter queue still at 256 KiB
                logger.error(
                    "dead-letter queue refused message %s (%s); released for the queue's redrive policy",
                    message.message_id,
                    exc,
                    extra={"action": "dead-letter"},
                )
                self.release(message)
                return
            self.delete(message)
            logger.warning(
                "message %s sent to dead-letter queue %s: %s",
                message.message_id,
                self.dead_letter_url,
                reason,
                extra={"action": "dead-letter"},
            )
            return
        # Without our own dead-letter queue the queue's redrive policy does the moving;
        # releasing now gets it there after max receives instead of after many timeouts.
        logger.warning(
            "message %s is invalid (%s); released for the queue's redrive policy",
            message.message_id,
            reason,
            extra={"action": "dead-letter"},
        )
        self.release(message)

    def _dead_letter_queue(self) -> SqsQueue:
        if self.dead_letter_url:
            return SqsQueue(self.dead_letter_url, client=self.client)
        try:
            policy = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["RedrivePolicy"])
        except Exception as exc:
            raise _translate(exc, "get attributes", self.url) from exc
        raw = policy.get("Attributes", {}).get("RedrivePolicy")
        if not raw:
            raise ConfigError(
                f"{self.url} has no dead-letter queue: give --dead-letter-queue URL, or set a redrive policy"
            )
        arn = json.loads(raw)["deadLetterTargetArn"]
        name = arn.rsplit(":", 1)[-1]
        url = self.client.get_queue_url(QueueName=name)["QueueUrl"]
        return SqsQueue(url, client=self.client)

    def list_dead_letters(self, limit: int) -> list[DeadLetterEntry]:
        """Peeks: messages are received with a short timeout and made visible again."""
        dead_letters = self._dead_letter_queue()
        peeked: list[ReceivedMessage] = []
        try:
            # Received messages stay hidden until the end, so none is counted twice.
            while len(peeked) < limit:
                batch = dead_letters.receive(min(MAX_BATCH, limit - len(peeked)), 1, 60)
                if not batch:
                    break
                peeked.extend(batch)
        finally:
            for message in peeked:
                dead_letters.release(message)
        return [
            DeadLetterEntry(
                message.message_id,
                message.body,
                message.attributes.get(REASON_ATTRIBUTE, "(moved by redrive policy)"),
                message.receive_count,
                message.attributes,
            )
            for message in peeked
        ]

    def redrive(self, limit: int) -> int:
        dead_letters = self._dead_letter_queue()
        moved = 0
        while moved < limit:
            batch = dead_letters.receive(min(MAX_BATCH, limit - moved), 1, 60)
            if not batch:
                break
            for message in batch:
                attributes = {k: v for k, v in message.attributes.items() if k != REASON_ATTRIBUTE}
                self.send(message.body, attributes=attributes)
                dead_letters.delete(message)
                moved += 1
        return moved


def _batches(messages: Sequence[Outgoing]) -> list[list[int]]:
    """Indexes of messages in sendable groups: at most MAX_BATCH each and MAX_BATCH_BYTES
    of payload; a message too large to share a call goes alone (and fails as it would)."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, message in enumerate(messages):
        weight = len(message.body.encode()) + sum(
            len(name.encode()) + len(value.encode()) + len("String")
            for name, value in message.attributes.items()
        )
        if current and (len(current) == MAX_BATCH or size + weight > MAX_BATCH_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(index)
        size += weight
    if current:
        groups.append(current)
    return groups


def _attempt(operation: Callable[[T], object], item: T) -> Exception | None:
    """None when operation(item) succeeded, else why not."""
    try:
        operation(item)
        return None
    except Exception as exc:
        return exc
