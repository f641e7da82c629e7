"""Small S3 GETs and PUTs on a plain urllib3 pool, signed by botocore's own SigV4 signer:
the bytes for a fraction of a botocore call's CPU.

botocore spends about 2 ms of CPU on each GetObject: building the request, emitting a
dozen events, parsing forty-odd response headers. A presigned URL still costs 0.36 ms to
make and urllib3 re-encodes its long query on every request. Signing the headers of a
plain request with `S3SigV4Auth` costs about 0.1 ms, and the request goes out as it was
signed. That is most of what staging a prefix of small objects costs the worker.

What stays the same as a GetObject or PutObject call:
- the credentials: the botocore session's, from the standard chain, frozen per request
  so a refresh never mixes two key pairs; session tokens are signed in;
- the endpoint and addressing style (AWS_ENDPOINT_URL, path or virtual host): learned
  once per bucket from a URL the client itself builds; keys are percent-encoded as S3's
  canonical request expects;
- buckets in another region: the answers S3 gives a request signed for the wrong region
  (a redirect, PermanentRedirect, AuthorizationHeaderMalformed) send that bucket's
  transfers through botocore's own calls from then on, which follow the bucket's region;
  S3 Express directory buckets always go through botocore (session credentials);
- the errors: an answer other than 200 becomes the botocore ClientError the storage
  layer already maps (404 missing-object, 403 access-denied, 5xx and throttling
  transient); urllib3's connection and timeout errors are transient. A short body raises
  (urllib3 enforces Content-Length), and every byte is hashed by the caller as before;
- integrity: a PUT carries the caller's Content-MD5 and the body's sha256, both signed,
  so S3 refuses a body that changed on the way.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, BinaryIO, cast
from urllib.parse import quote, urlsplit

import botocore.exceptions
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

from lanworker.core.retries import client_error_code

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
ERROR_BODY_BYTES = 64 * 1024
_ERROR_FIELD = re.compile(rb"<(Code|Message)>([^<]*)</\1>")
_PROBE_KEY = "k"
# What S3 answers a request signed for the wrong region (besides a 3xx redirect).
ELSEWHERE_CODES = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)


class DirectS3:
    """Thread-safe; one per storage client, its pool shared by every job."""

    def __init__(self, client: Any, credentials: Any, pool_size: int) -> None:
        self.client = client
        self.credentials = credentials  # botocore Credentials (may refresh), or None
        self.region: str = client.meta.region_name or "us-east-1"
        self.pool = urllib3.PoolManager(
            maxsize=pool_size,
            retries=False,  # retries are the caller's (Backoff), so they obey the job's budget
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        )
        self._bases: dict[str, str] = {}
        self._elsewhere: set[str] = set()  # buckets only botocore's calls reach
        self._lock = threading.Lock()

    def open(self, bucket: str, key: str) -> BinaryIO:
        if self._direct(bucket):
            url, headers = self._signed("GET", bucket, key, b"", {})
            # decode_content=False: the object's bytes as stored, as GetObject gives them;
            # urllib3 would otherwise inflate an object stored with Content-Encoding: gzip.
            response = self.pool.request(
                "GET", url, headers=headers, preload_content=False, redirect=False, decode_content=False
            )
            if response.status == 200:
                return cast(BinaryIO, response)
            self._refused(bucket, response, "GetObject")
        return cast(BinaryIO, self.client.get_object(Bucket=bucket, Key=key)["Body"])

    def put(self, bucket: str, key: str, body: bytes, md5_base64: str) -> None:
        if self._direct(bucket):
            url, headers = self._signed(
                "PUT", bucket, key, body, {"Content-MD5": md5_base64, "Content-Length": str(len(body))}
            )
            response = self.pool.request(
                "PUT", url, body=body, headers=headers, preload_content=False, redirect=False
            )
            if response.status == 200:
                response.drain_conn()
                response.release_conn()
                return
            self._refused(bucket, response, "PutObject")
        self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5_base64)

    def _direct(self, bucket: str) -> bool:
        """False for buckets only botocore's calls reach: one in another region, and S3
        Express directory buckets (`--x-s3`), whose requests carry session credentials
        botocore makes."""
        return bucket not in self._elsewhere and not bucket.endswith("--x-s3")

    def _refused(self, bucket: str, response: urllib3.BaseHTTPResponse, operation: str) -> None:
        """Raise the refusal as botocore would; return (the caller then goes through
        botocore) when it says the bucket lives in another region."""
        error = _client_error(response, operation)
        if response.status in (301, 302, 307) or client_error_code(error) in ELSEWHERE_CODES:
            logger.info(
                "bucket %s is not in %s: its transfers go through botocore, which follows it",
                bucket,
                self.region,
            )
            with self._lock:
                self._elsewhere.add(bucket)
            return
        raise error

    def _signed(
        self, method: str, bucket: str, key: str, body: bytes, headers: dict[str, str]
    ) -> tuple[str, dict[str, str]]:
        if self.credentials is None:
            raise botocore.exceptions.NoCredentialsError()
        url = self.url(bucket, key)
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        return url, dict(request.headers.items())

    def url(self, bucket: str, key: str) -> str:
        """The object's URL as botocore's own calls address it (path percent-encoded
        except '/' and '~', as S3's canonical request expects)."""
        return self._base(bucket) + quote(key, safe="/~")

    def _base(self, bucket: str) -> str:
        """The URL of the bucket's keys, up to the key, as the client addresses it."""
        with self._lock:
            base = self._bases.get(bucket)
        if base is None:
            probe = urlsplit(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}, ExpiresIn=60
                )
            )
            if not probe.path.endswith("/" + _PROBE_KEY):
                raise ValueError(f"cannot tell how the S3 client addresses bucket {bucket!r}")
            base = f"{probe.scheme}://{probe.netloc}{probe.path[: -len(_PROBE_KEY)]}"
            with self._lock:
                self._bases[bucket] = base
        return base


def _client_error(response: urllib3.BaseHTTPResponse, operation: str) -> botocore.exceptions.ClientError:
    try:
        body = response.read(ERROR_BODY_BYTES)
    finally:
        response.release_conn()
    fields = {name.decode(): value.decode("utf-8", "replace") for name, value in _ERROR_FIELD.findall(body)}
    code = fields.get("Code") or str(response.status)
    error = {
        "Error": {"Code": code, "Message": fields.get("Message", response.reason or "")},
        "ResponseMetadata": {"HTTPStatusCode": response.status},
    }
    return botocore.exceptions.ClientError(error, operation)  # type: ignore[arg-type]
