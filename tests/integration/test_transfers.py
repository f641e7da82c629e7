"""Large and small objects on moto_server: ranged parallel GETs hashed in place, one GET/PUT
for small objects, and an object replaced mid-download failing instead of mixing versions."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import itertools
import json
import os
import threading
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from lanworker.core.errors import JobFailed
from lanworker.storage import Storage
from lanworker.storage.ranged import plan_parts
from tests.helpers.moto import MotoServer, free_port


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
    """Small objects go through signed urllib3 requests (s3direct.py); their failures must read the
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


def test_small_transfers_are_signed_as_s3_checks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A moto_server of its own that verifies every SigV4 signature, as S3 does: small GETs
    and PUTs pass with the right secret and are refused with a wrong one. (moto's own
    check fails botocore's requests too for keys with '+' or non-ASCII; the next test
    holds those keys' URLs to botocore's.)"""
    server = MotoServer(free_port(), tmp_path / "moto.log")
    server.start()
    try:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        iam = boto3.client("iam")
        iam.create_user(UserName="stager")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="stager", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="stager")["AccessKey"]
        boto3.client("s3").create_bucket(Bucket="signed")
        enforce = urllib.request.Request(
            f"{server.endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(enforce, timeout=10).close()  # from now on every request is checked
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)  # a user's key pair has none
        monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)

        storage = Storage(retry_budget_s=1)
        names = ["plain.txt", "dir/with space~tilde.txt"]
        for index, name in enumerate(names):
            source = tmp_path / f"source-{index}"
            source.write_bytes(name.encode() * 100)
            with source.open("rb") as handle:
                storage.upload(handle, f"s3://signed/{name}")
        listed = storage.list_objects("s3://signed/")
        assert sorted(found.uri for found in listed) == sorted(f"s3://signed/{name}" for name in names)
        for index, found in enumerate(listed):
            record = storage.download(found.uri, tmp_path / f"back-{index}", size=found.size)
            data = (tmp_path / f"back-{index}").read_bytes()
            assert data == found.uri.removeprefix("s3://signed/").encode() * 100
            assert record.sha256 == hashlib.sha256(data).hexdigest()

        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with pytest.raises(JobFailed, match="SignatureDoesNotMatch") as refused:
            Storage(retry_budget_s=1).download("s3://signed/plain.txt", tmp_path / "refused", size=1300)
        assert refused.value.reason == "access-denied"
    finally:
        server.stop()


def test_small_transfers_address_objects_as_botocore_does(s3: Any, bucket_factory) -> None:
    """The URL of a direct GET or PUT is the one botocore's own PutObject sends, for keys
    that need percent-encoding: what S3 signs and serves is the path as sent."""
    bucket = bucket_factory()
    storage = Storage()
    client = storage.s3
    sent: list[str] = []
    client.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(request.url))
    direct = storage._direct_client()
    for key in ["plain.txt", "a b+c~d.txt", "ünï/ключ.bin", "q?a=b&c=%41.txt", "dir//x/./y", "*(!)'$,;:@"]:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert direct.url(bucket, key) == sent[-1].split("?")[0]


def test_an_object_stored_gzip_encoded_arrives_as_stored(s3: Any, bucket_factory, tmp_path: Path) -> None:
    """Content-Encoding: gzip is how the object is stored, not a transfer detail: the staged
    file (and a stdin stream) holds the stored bytes, as GetObject returns them."""
    bucket = bucket_factory()
    stored = gzip.compress(b"hello world\n" * 1000)
    s3.put_object(Bucket=bucket, Key="a.gz", Body=stored, ContentEncoding="gzip")
    storage = Storage()
    record = storage.download(f"s3://{bucket}/a.gz", tmp_path / "a.gz", size=len(stored))
    assert (tmp_path / "a.gz").read_bytes() == stored
    assert record.md5 == hashlib.md5(stored).hexdigest()
    with storage.open_read(f"s3://{bucket}/a.gz") as stream:
        assert stream.read() == stored


class _BucketInEuWest1(http.server.BaseHTTPRequestHandler):
    """Answers as S3 does for a bucket in eu-west-1: a request signed for another region
    gets 301 PermanentRedirect naming the bucket's region; one signed for eu-west-1 is served."""

    objects: dict[str, bytes] = {}

    def do_GET(self) -> None:
        if self._elsewhere():
            return
        data = self.objects.get(self.path)
        if data is None:
            self._answer(404, b"<Error><Code>NoSuchKey</Code><Message>none</Message></Error>")
        else:
            self._answer(200, data, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def do_PUT(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self._elsewhere():
            return
        self.objects[self.path] = data
        self._answer(200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def _elsewhere(self) -> bool:
        if "/eu-west-1/s3/" in self.headers.get("Authorization", ""):
            return False
        body = b"<Error><Code>PermanentRedirect</Code><Message>use the eu-west-1 endpoint</Message></Error>"
        self._answer(301, body, {"x-amz-bucket-region": "eu-west-1"})
        return True

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_bucket_in_another_region_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker signs for us-east-1, the bucket is in eu-west-1: small uploads, downloads
    and stdin streams still arrive, through botocore's calls that follow the bucket."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BucketInEuWest1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        storage = Storage(retry_budget_s=1)
        source = tmp_path / "up.txt"
        source.write_bytes(b"far away" * 100)
        with source.open("rb") as handle:
            sent = storage.upload(handle, "s3://faraway/dir/up.txt")
        assert _BucketInEuWest1.objects["/faraway/dir/up.txt"] == b"far away" * 100
        back = storage.download("s3://faraway/dir/up.txt", tmp_path / "back.txt", size=800)
        assert (tmp_path / "back.txt").read_bytes() == b"far away" * 100 and back.md5 == sent.md5
        with storage.open_read("s3://faraway/dir/up.txt") as stream:
            assert stream.read() == b"far away" * 100
    finally:
        server.shutdown()
