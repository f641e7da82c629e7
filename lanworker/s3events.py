"""S3 event notifications in every shape AWS delivers them, as one record type.

Shapes: raw S3 notifications (`Records[]`), SNS envelopes (`Type: Notification`, the S3
event as a JSON string in `Message`), SNS raw delivery (the S3 event itself), EventBridge
(`detail-type: Object Created|Object Deleted`), and `s3:TestEvent`.

Keys in S3 notifications are form-URL-encoded (`+` is a space); EventBridge delivers them
as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from lanworker.errors import InvalidMessage

SUPPORTED_EVENT_VERSION_MAJOR = "2"
EVENTBRIDGE_CREATED_REASONS = {
    "PutObject": "Put",
    "POST Object": "Post",
    "PostObject": "Post",
    "CopyObject": "Copy",
    "CompleteMultipartUpload": "CompleteMultipartUpload",
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


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MalformedEvent(f"event message is not valid JSON: {exc}") from exc


def _normalise_event_name(name: str) -> str:
    return name[3:] if name.startswith("s3:") else name


def _record(record: Any, index: int) -> ObjectEvent:
    where = f"Records[{index}]"
    if not isinstance(record, dict):
        raise MalformedEvent(f"{where} is not an object")
    version = str(record.get("eventVersion", SUPPORTED_EVENT_VERSION_MAJOR + ".0"))
    if version.split(".")[0] != SUPPORTED_EVENT_VERSION_MAJOR:
        raise MalformedEvent(
            f"{where}: unsupported eventVersion {version} (major {SUPPORTED_EVENT_VERSION_MAJOR} expected)"
        )
    s3 = record.get("s3")
    if not isinstance(s3, dict):
        raise MalformedEvent(f"{where} has no s3 section")
    bucket = (s3.get("bucket") or {}).get("name")
    raw_key = (s3.get("object") or {}).get("key")
    if not isinstance(bucket, str) or not bucket:
        raise MalformedEvent(f"{where} has no bucket name")
    if not isinstance(raw_key, str) or not raw_key:
        raise MalformedEvent(f"{where} has no object key")
    name = record.get("eventName")
    if not isinstance(name, str) or not name:
        raise MalformedEvent(f"{where} has no eventName")
    obj = s3["object"]
    return ObjectEvent(
        bucket=bucket,
        key=unquote_plus(raw_key),
        event=_normalise_event_name(name),
        size=obj.get("size"),
        etag=obj.get("eTag") or obj.get("etag"),
        version_id=obj.get("versionId"),
        sequencer=obj.get("sequencer"),
        time=record.get("eventTime"),
    )


def _eventbridge(document: dict[str, Any]) -> ObjectEvent:
    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEvent("EventBridge event has no detail")
    bucket = (detail.get("bucket") or {}).get("name")
    obj = detail.get("object") or {}
    key = obj.get("key")
    if not isinstance(bucket, str) or not bucket:
        raise MalformedEvent("EventBridge event has no detail.bucket.name")
    if not isinstance(key, str) or not key:
        raise MalformedEvent("EventBridge event has no detail.object.key")
    kind = document["detail-type"]
    if kind == "Object Created":
        event = "ObjectCreated:" + EVENTBRIDGE_CREATED_REASONS.get(str(detail.get("reason")), "Put")
    elif kind == "Object Deleted":
        deletion = detail.get("deletion-type", "Permanently Deleted")
        event = (
            "ObjectRemoved:DeleteMarkerCreated"
            if deletion == "Delete Marker Created"
            else "ObjectRemoved:Delete"
        )
    else:
        event = kind.replace(" ", "")
    return ObjectEvent(
        bucket=bucket,
        key=key,
        event=event,
        size=obj.get("size"),
        etag=obj.get("etag"),
        version_id=obj.get("version-id"),
        sequencer=obj.get("sequencer"),
        time=document.get("time"),
    )


def parse_notification(body: str) -> Notification:
    document = _load(body)
    if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
        document = _load(document["Message"])  # SNS envelope
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
