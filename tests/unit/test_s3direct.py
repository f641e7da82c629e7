"""Which buckets the direct path leaves to botocore's own calls."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

from lanworker.storage.s3direct import DirectS3


class RecordingClient:
    meta = SimpleNamespace(region_name="us-east-1")

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_object(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("get_object", request))
        return {"Body": io.BytesIO(b"stored")}

    def put_object(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("put_object", request))
        return {}

    def generate_presigned_url(self, *args: Any, **kwargs: Any) -> str:
        raise AssertionError("a directory bucket must never be addressed directly")


def test_s3_express_directory_buckets_go_through_botocore() -> None:
    client = RecordingClient()
    direct = DirectS3(client, credentials=None, pool_size=1)
    assert direct.open("data--use1-az4--x-s3", "k.txt").read() == b"stored"
    direct.put("data--use1-az4--x-s3", "out.txt", b"body", "md5==")
    assert client.calls == [
        ("get_object", {"Bucket": "data--use1-az4--x-s3", "Key": "k.txt"}),
        (
            "put_object",
            {"Bucket": "data--use1-az4--x-s3", "Key": "out.txt", "Body": b"body", "ContentMD5": "md5=="},
        ),
    ]
