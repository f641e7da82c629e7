"""S3 event notifications in every shape AWS delivers them, as one record type.

Shapes: raw S3 notifications (`Records[]`), SNS envelopes (`Type: Notification`, the S3
event as a JSON string in `Message`), SNS raw delivery (the S3 event itself), EventBridge
(`source: aws.s3`, a `detail-type` per event kind), and `s3:TestEvent`.

Invariant: every field is type-checked before use, so any malformed record raises
MalformedEvent naming the field (dead-lettered at once), never another exception.
Event names are normalised to the notification form without `s3:` (for example
`ObjectRestore:Completed`), whichever shape delivered them, so one rule fires for one
kind of event however it arrives. Keys in S3 notifications are form-URL-encoded (`+` is
a space); EventBridge delivers them as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from lanworker.core.errors import InvalidMessage

SUPPORTED_EVENT_VERSION_MAJOR = "2"

# EventBridge `detail.reason` of "Object Created" -> the notification's event name.
EVENTBRIDGE_CREATED_REASONS = {
    "PutObject": "Put",
    "POST Object": "Post",
    "PostObject": "Post",
    "CopyObject": "Copy",
    "CompleteMultipartUpload": "CompleteMultipartUpload",
}
# EventBridge detail-types whose notification name does not depend on the detail.
EVENTBRIDGE_TYPES = {
    "Object Restore Initiated": "ObjectRestore:Post",
    "Object Restore Completed": "ObjectRestore:Completed",
    "Object Restore Expired": "ObjectRestore:Delete",
    "Object Tags Added": "ObjectTagging:Put",
    "Object Tags Deleted": "ObjectTagging:Delete",
    "Object ACL Updated": "ObjectAcl:Put",
    "Object Storage Class Changed": "LifecycleTransition",
    "Object Access Tier Changed": "IntelligentTiering",
}


class MalformedEvent(InvalidMessage):
    """Not an S3 event notification we can read; dead-lettered with the reason."""


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str
    event: str  # without the "s3:" prefix, e.g. "ObjectCreated:Put"
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    time: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def identity(self) -> str:
        """What tells two deliveries of one change apart from two changes of one key."""
        return self.version_id or self.sequencer or self.etag or self.time or ""


@dataclass(frozen=True)
class Notification:
    events: tuple[ObjectEvent, ...]
    is_test: bool = False


def _load(text: Any, where: str) -> Any:
    if not isinstance(text, (str, bytes)):
        raise MalformedEvent(f"{where} must be a JSON string, got {type(text).__name__}")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"{where} is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise MalformedEvent(f"{where} is not usable JSON: {exc}") from None


def _object(container: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = container.get(name)
    if not isinstance(value, dict):
        raise MalformedEvent(f"{where}.{name} must be an object, got {_type(value)}")
    return value


def _text(container: dict[str, Any], name: str, where: str, required: bool = False) -> str | None:
    value = container.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise MalformedEvent(f"{where}.{name} must be a non-empty string, got {_type(value)}")
    return value


def _size(container: dict[str, Any], name: str, where: str) -> int | None:
    value = container.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedEvent(f"{where}.{name} must be a non-negative integer, got {_type(value)}")
    return value


def _type(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {json.dumps(value)[:60]}"


def _normalise_event_name(name: str) -> str:
    return name[3:] if name.startswith("s3:") else name


def _record(record: Any, index: int) -> ObjectEvent:
    where = f"Records[{index}]"
    if not isinstance(record, dict):
        raise MalformedEvent(f"{where} must be an object, got {_type(record)}")
    if "s3" not in record and ("body" in record or "Sns" in record):
        raise MalformedEvent(
            f"{where} is a Lambda batch record ({'SQS body' if 'body' in record else 'SNS'} envelope), "
            "not an S3 event: point the translator at the queue the S3 notifications arrive on, "
            "or send each record's body (or Sns.Message) as its own message"
        )
    version = record.get("eventVersion", SUPPORTED_EVENT_VERSION_MAJOR + ".0")
    if not isinstance(version, str) or version.split(".")[0] != SUPPORTED_EVENT_VERSION_MAJOR:
        raise MalformedEvent(
            f"{where}: unsupported eventVersion {version!r} (major {SUPPORTED_EVENT_VERSION_MAJOR} expected)"
        )
    s3 = _object(record, "s3", where)
    bucket = _text(_object(s3, "bucket", f"{where}.s3"), "name", f"{where}.s3.bucket", required=True)
    obj = _object(s3, "object", f"{where}.s3")
    at = f"{where}.s3.object"
    raw_key = _text(obj, "key", at, required=True)
    name = _text(record, "eventName", where, required=True)
    assert bucket is not None and raw_key is not None and name is not None
    return ObjectEvent(
        bucket=bucket,
        key=unquote_plus(raw_key),
        event=_normalise_event_name(name),
        size=_size(obj, "size", at),
        etag=_text(obj, "eTag", at) or _text(obj, "etag", at),
        version_id=_text(obj, "versionId", at),
        sequencer=_text(obj, "sequencer", at),
        time=_text(record, "eventTime", where),
    )


def eventbridge_event_name(detail_type: str, detail: dict[str, Any]) -> str:
    """The notification-form name of an EventBridge S3 event (see the README's table)."""
    reason = _text(detail, "reason", "detail") or ""
    if detail_type == "Object Created":
        return "ObjectCreated:" + EVENTBRIDGE_CREATED_REASONS.get(reason, "Put")
    if detail_type == "Object Deleted":
        marker = _text(detail, "deletion-type", "detail") == "Delete Marker Created"
        kind = "DeleteMarkerCreated" if marker else "Delete"
        family = "LifecycleExpiration" if reason == "Lifecycle Expiration" else "ObjectRemoved"
        return f"{family}:{kind}"
    if detail_type in EVENTBRIDGE_TYPES:
        return EVENTBRIDGE_TYPES[detail_type]
    raise MalformedEvent(f"EventBridge detail-type {detail_type!r} is not an S3 object event")


def _eventbridge(document: dict[str, Any]) -> ObjectEvent:
    detail = _object(document, "detail", "$")
    bucket = _text(_object(detail, "bucket", "detail"), "name", "detail.bucket", required=True)
    obj = _object(detail, "object", "detail")
    key = _text(obj, "key", "detail.object", required=True)
    detail_type = _text(document, "detail-type", "$", required=True)
    assert bucket is not None and key is not None and detail_type is not None
    return ObjectEvent(
        bucket=bucket,
        key=key,
        event=eventbridge_event_name(detail_type, detail),
        size=_size(obj, "size", "detail.object"),
        etag=_text(obj, "etag", "detail.object"),
        version_id=_text(obj, "version-id", "detail.object"),
        sequencer=_text(obj, "sequencer", "detail.object"),
        time=_text(document, "time", "$"),
    )


def parse_notification(body: str) -> Notification:
    document = _load(body, "event message")
    if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
        document = _load(document["Message"], "SNS Message")  # SNS envelope
    if not isinstance(document, dict):
        raise MalformedEvent(f"event message must be a JSON object, got {type(document).__name__}")
    if document.get("Event") == "s3:TestEvent":
        return Notification((), is_test=True)
    if "Records" in document:
        records = document["Records"]
        if not isinstance(records, list) or not records:
            raise MalformedEvent("event message has no records")
        return Notification(tuple(_record(record, index) for index, record in enumerate(records)))
    if document.get("source") == "aws.s3" and "detail-type" in document:
        return Notification((_eventbridge(document),))
    raise MalformedEvent("not an S3 event notification: no Records, no EventBridge detail, no s3:TestEvent")
