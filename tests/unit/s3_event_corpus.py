"""A corpus of S3 events as AWS delivers them, written from the AWS documentation of the
notification structure (event message version 2.x), SNS envelopes and EventBridge events.

Every event type comes in every shape AWS has for it: raw notification, SNS envelope,
SNS raw delivery and EventBridge. EventBridge has no replication or reduced-redundancy
events, so those come in three shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

BUCKET = "corpus-bucket"
KEY_ENCODED = "incoming/2026/my+report+%28final%29.csv"  # as notifications encode it
KEY = "incoming/2026/my report (final).csv"  # as EventBridge delivers it
TIME = "2026-11-26T12:00:00.000Z"


@dataclass(frozen=True)
class EventType:
    name: str  # the notification name without s3:, as rules match it
    detail_type: str | None  # EventBridge detail-type, or None where EventBridge has none
    detail: dict[str, Any]  # EventBridge detail fields beyond bucket and object
    record_extra: dict[str, Any]  # notification record fields beyond the common ones
    version: str = "2.1"


EVENT_TYPES = (
    EventType("ObjectCreated:Put", "Object Created", {"reason": "PutObject"}, {}),
    EventType("ObjectCreated:Post", "Object Created", {"reason": "POST Object"}, {}),
    EventType("ObjectCreated:Copy", "Object Created", {"reason": "CopyObject"}, {}),
    EventType(
        "ObjectCreated:CompleteMultipartUpload", "Object Created", {"reason": "CompleteMultipartUpload"}, {}
    ),
    EventType(
        "ObjectRemoved:Delete",
        "Object Deleted",
        {"reason": "DeleteObject", "deletion-type": "Permanently Deleted"},
        {},
    ),
    EventType(
        "ObjectRemoved:DeleteMarkerCreated",
        "Object Deleted",
        {"reason": "DeleteObject", "deletion-type": "Delete Marker Created"},
        {},
    ),
    EventType(
        "ObjectRestore:Post",
        "Object Restore Initiated",
        {"source-storage-class": "GLACIER"},
        {},
    ),
    EventType(
        "ObjectRestore:Completed",
        "Object Restore Completed",
        {"restore-expiry-time": "2026-12-03T00:00:00Z", "source-storage-class": "GLACIER"},
        {
            "glacierEventData": {
                "restoreEventData": {
                    "lifecycleRestorationExpiryTime": "2026-12-03T00:00:00.000Z",
                    "lifecycleRestoreStorageClass": "GLACIER",
                }
            }
        },
    ),
    EventType("ObjectRestore:Delete", "Object Restore Expired", {}, {}),
    EventType("ObjectTagging:Put", "Object Tags Added", {}, {}),
    EventType("ObjectTagging:Delete", "Object Tags Deleted", {}, {}),
    EventType("ObjectAcl:Put", "Object ACL Updated", {}, {}),
    EventType(
        "LifecycleExpiration:Delete",
        "Object Deleted",
        {"reason": "Lifecycle Expiration", "deletion-type": "Permanently Deleted"},
        {},
    ),
    EventType(
        "LifecycleExpiration:DeleteMarkerCreated",
        "Object Deleted",
        {"reason": "Lifecycle Expiration", "deletion-type": "Delete Marker Created"},
        {},
    ),
    EventType(
        "LifecycleTransition",
        "Object Storage Class Changed",
        {"destination-storage-class": "GLACIER"},
        {"lifecycleEventData": {"transitionEventData": {"destinationStorageClass": "GLACIER"}}},
        version="2.3",
    ),
    EventType(
        "IntelligentTiering",
        "Object Access Tier Changed",
        {"destination-access-tier": "ARCHIVE_CONFIGURATION"},
        {"intelligentTieringEventData": {"destinationAccessTier": "ARCHIVE_ACCESS"}},
        version="2.3",
    ),
    EventType(
        "Replication:OperationFailedReplication",
        None,
        {},
        {
            "replicationEventData": {
                "replicationRuleId": "rule-1",
                "destinationBucket": "arn:aws:s3:::corpus-replica",
                "s3Operation": "OBJECT_PUT",
                "requestTime": TIME,
                "failureReason": "AssumeRoleNotPermitted",
            }
        },
    ),
    EventType(
        "Replication:OperationMissedThreshold",
        None,
        {},
        {
            "replicationEventData": {
                "replicationRuleId": "rule-1",
                "s3Operation": "OBJECT_PUT",
                "threshold": "15",
            }
        },
    ),
    EventType(
        "Replication:OperationReplicatedAfterThreshold",
        None,
        {},
        {
            "replicationEventData": {
                "replicationRuleId": "rule-1",
                "s3Operation": "OBJECT_PUT",
                "threshold": "15",
            }
        },
    ),
    EventType(
        "Replication:OperationNotTracked",
        None,
        {},
        {"replicationEventData": {"replicationRuleId": "rule-1", "s3Operation": "OBJECT_PUT"}},
    ),
    EventType("ReducedRedundancyLostObject", None, {}, {}),
)


def notification_record(kind: EventType) -> dict[str, Any]:
    deletes = kind.name.startswith(("ObjectRemoved", "LifecycleExpiration"))
    obj: dict[str, Any] = {"key": KEY_ENCODED, "sequencer": "0A1B2C3D4E5F678901"}
    if not deletes:
        obj.update(size=1024, eTag="d41d8cd98f00b204e9800998ecf8427e")
    obj["versionId"] = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    return {
        "eventVersion": kind.version,
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": TIME,
        "eventName": kind.name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "corpus-config",
            "bucket": {
                "name": BUCKET,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{BUCKET}",
            },
            "object": obj,
        },
        **kind.record_extra,
    }


def raw(kind: EventType) -> str:
    return json.dumps({"Records": [notification_record(kind)]})


def sns_envelope(kind: EventType) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:corpus-topic",
            "Subject": "Amazon S3 Notification",
            "Message": raw(kind),
            "Timestamp": TIME,
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
    )


def sns_raw(kind: EventType) -> str:
    return raw(kind)  # raw message delivery: the S3 event itself is the body


def eventbridge(kind: EventType) -> str:
    assert kind.detail_type is not None
    obj: dict[str, Any] = {"key": KEY, "sequencer": "0A1B2C3D4E5F678901", "version-id": "3HL4kqtJlcpX"}
    if not kind.name.startswith(("ObjectRemoved", "LifecycleExpiration")):
        obj.update(size=1024, etag="d41d8cd98f00b204e9800998ecf8427e")
    return json.dumps(
        {
            "version": "0",
            "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": kind.detail_type,
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-11-26T12:00:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{BUCKET}"],
            "detail": {
                "version": "0",
                "bucket": {"name": BUCKET},
                "object": obj,
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": "123456789012",
                "source-ip-address": "203.0.113.7",
                **kind.detail,
            },
        }
    )


SHAPES = {"raw": raw, "sns-envelope": sns_envelope, "sns-raw": sns_raw, "eventbridge": eventbridge}


def corpus() -> list[tuple[EventType, str, str]]:
    """(event type, shape name, body) for every shape each type has."""
    return [
        (kind, shape, make(kind))
        for kind in EVENT_TYPES
        for shape, make in SHAPES.items()
        if shape != "eventbridge" or kind.detail_type is not None
    ]
