"""Small S3 GETs and PUTs through presigned URLs on a plain urllib3 pool: the bytes for a
fraction of botocore's CPU per request.

botocore spends about 2 ms of CPU on each GetObject: building and signing the request,
emitting a dozen events, parsing forty-odd response headers and a date. Signing a URL
costs about 0.3 ms and a urllib3 GET about 0.7 ms, which is most of what staging a
prefix of small objects costs the worker (s5cmd's advantage is exactly this). A PUT
carries the Content-MD5 the caller computed, signed into the URL, so S3 refuses a body
that changed on the way.

What stays the same as a GetObject call: the credentials (the client's, from the
standard chain, session tokens included), the endpoint (AWS_ENDPOINT_URL too), and the
errors: an answer other than 200 becomes the botocore ClientError the storage layer
already maps (404 missing-object, 403 access-denied, 5xx and throttling transient), and
urllib3's connection and timeout errors are transient. A short body raises (urllib3
enforces Content-Length), and every byte is hashed by the caller as before.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO, cast

import botocore.exceptions
import urllib3

URL_LIFETIME_S = 900
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
ERROR_BODY_BYTES = 64 * 1024
_ERROR_FIELD = re.compile(rb"<(Code|Message)>([^<]*)</\1>")


class Presigned:
    """Thread-safe; one per storage client, its pool shared by every job."""

    def __init__(self, client: Any, pool_size: int) -> None:
        self.client = client
        self.pool = urllib3.PoolManager(
            maxsize=pool_size,
            retries=False,  # retries are the caller's (Backoff), so they obey the job's budget
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        )

    def open(self, bucket: str, key: str) -> BinaryIO:
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=URL_LIFETIME_S
        )
        response = self.pool.request("GET", url, preload_content=False, redirect=False)
        if response.status != 200:
            raise _client_error(response, "GetObject")
        return cast(BinaryIO, response)

    def put(self, bucket: str, key: str, body: bytes, md5_base64: str) -> None:
        url = self.client.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": key, "ContentMD5": md5_base64},
            ExpiresIn=URL_LIFETIME_S,
        )
        response = self.pool.request(
            "PUT",
            url,
            body=body,
            headers={"Content-MD5": md5_base64, "Content-Length": str(len(body))},
            preload_content=False,
            redirect=False,
        )
        if response.status != 200:
            raise _client_error(response, "PutObject")
        response.drain_conn()
        response.release_conn()


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
