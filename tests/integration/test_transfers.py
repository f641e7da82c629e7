"""Large and small objects on moto_server: ranged parallel GETs hashed in place, one GET/PUT
for small objects, and an object replaced mid-download failing instead of mixing versions."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from lanworker.errors import JobFailed
from lanworker.ranged import plan_parts
from lanworker.storage import Storage


def test_a_large_object_arrives_whole_with_its_checksums(s3: Any, bucket_factory, tmp_path: Path) -> None:
    bucket = bucket_factory()
    data = os.urandom(40 * 1024 * 1024 + 7)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    record = Storage().download(f"s3://{bucket}/big.bin", tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == data
    assert (record.size, record.sha256, record.md5) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        hashlib.md5(data).hexdigest(),
    )


def test_an_object_replaced_mid_download_fails_the_transfer(s3: Any, bucket_factory, tmp_path: Path) -> None:
    bucket = bucket_factory()
    s3.put_object(Bucket=bucket, Key="big.bin", Body=os.urandom(40 * 1024 * 1024))
    storage = Storage(transfer_concurrency=1, retry_budget_s=1)
    real = storage.s3
    calls: list[str] = []

    class ReplacedAfterTheFirstRange:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def get_object(self, **request: Any) -> Any:
            calls.append(request.get("Range", ""))
            if len(calls) == 2:  # another writer replaces the object between two parts
                s3.put_object(Bucket=bucket, Key="big.bin", Body=os.urandom(40 * 1024 * 1024))
            return real.get_object(**request)

    storage._client = ReplacedAfterTheFirstRange()
    with pytest.raises(JobFailed, match="PreconditionFailed"):
        storage.download(f"s3://{bucket}/big.bin", tmp_path / "big.bin")
    assert calls[0].startswith("bytes=0-")


def test_small_outputs_and_inputs_take_one_request_each(s3: Any, bucket_factory, tmp_path: Path) -> None:
    bucket = bucket_factory()
    storage = Storage()
    source = tmp_path / "small.txt"
    source.write_bytes(b"small payload")
    with source.open("rb") as handle:
        uploaded = storage.upload(handle, f"s3://{bucket}/small.txt")
    [listed] = storage.list_objects(f"s3://{bucket}/small")
    assert listed.size == 13
    downloaded = storage.download(listed.uri, tmp_path / "back.txt", size=listed.size)
    assert (tmp_path / "back.txt").read_bytes() == b"small payload"
    assert uploaded.sha256 == downloaded.sha256 == hashlib.sha256(b"small payload").hexdigest()


def test_parts_are_sized_by_the_object() -> None:
    assert len(plan_parts(20 * 1024 * 1024, 8)) == 2  # 16 MiB at least
    assert len(plan_parts(1024**3, 8)) == 8  # never more than 8, so 128 MiB each
    parts = plan_parts(1024**3 + 1, 8)
    assert parts[0][0] == 0 and parts[-1][1] == 1024**3 + 1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))


def test_small_transfers_map_errors_as_botocore_calls_do(s3: Any, bucket_factory, tmp_path: Path) -> None:
    """Small objects go through presigned URLs (presigned.py); their failures must read the
    same as before: a missing key is missing-object, a missing bucket too."""
    bucket = bucket_factory()
    storage = Storage(retry_budget_s=1)
    with pytest.raises(JobFailed, match="NoSuchKey") as missing:
        storage.download(f"s3://{bucket}/absent.txt", tmp_path / "a", size=10)
    assert missing.value.reason == "missing-object"
    with pytest.raises(JobFailed) as no_bucket:
        storage.download("s3://no-such-bucket-here/x.txt", tmp_path / "b", size=10)
    assert no_bucket.value.reason == "missing-object"
    source = tmp_path / "up.txt"
    source.write_bytes(b"x" * 1000)
    with source.open("rb") as handle:
        record = storage.upload(handle, f"s3://{bucket}/up.txt")
    head = s3.head_object(Bucket=bucket, Key="up.txt")
    assert head["ETag"].strip('"') == record.md5 == hashlib.md5(b"x" * 1000).hexdigest()
