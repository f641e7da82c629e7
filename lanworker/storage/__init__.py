"""Object storage behind one small API: s3:// through botocore, file:// and paths, http(s):// read-only.

Every transfer computes sha256 and md5 of the bytes as they pass, because an S3 ETag is
not an MD5 for multipart objects and a second read of a large file is wasted I/O. Every
transfer takes a checkpoint, called once per chunk, that raises Interrupted when the job
must stop (timeout, shutdown, cancel), so no phase outlives its job.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

from lanworker.core.errors import AddressRefused, InvalidMessage, JobFailed, LanworkerError, disk_full
from lanworker.core.retries import (
    DENIED_CODES,
    Backoff,
    as_transient,
    client_error_code,
    is_botocore_failure,
    is_transient,
)
from lanworker.message.command import local_path, uri_scheme
from lanworker.storage.ranged import CHUNK_BYTES, RangeControl, RangedDownload

if TYPE_CHECKING:
    import requests

    from lanworker.storage.s3direct import DirectS3

logger = logging.getLogger(__name__)


PROGRESS_INTERVAL_S = 10.0
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})

# Called once per chunk of a transfer; raises Interrupted when the job must stop.
Checkpoint = Callable[[], None]


def no_checkpoint() -> None:
    return None


@dataclass(frozen=True)
class TransferRecord:
    uri: str
    size: int
    sha256: str
    md5: str

    def as_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "size": self.size, "sha256": self.sha256, "md5": self.md5}


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int | None  # from the listing; None where it does not say

    @property
    def is_folder(self) -> bool:
        """A key ending in '/': a folder marker (the S3 console's "Create folder", s3fs,
        Hadoop), staged as a directory, never as a file."""
        return self.uri.endswith("/")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        rest = uri[len("s3://") :]
        bucket, _, key = rest.partition("/")
        return cls(bucket=bucket, key=key)

    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def child_uri(base: str, tail: str) -> str:
    """The URI of `tail` (a path below a directory, or the rest of a name) after `base`.

    Each file name stays one name: for file:// it is percent-encoded, so a file named
    '..%2f..%2fx' is written as that very name, never two levels up.
    """
    if base.startswith("file://"):
        return base + quote(tail, safe="/")
    return base + tail


class _Progress:
    """Logs bytes and rate of a long transfer at a steady interval, not per chunk."""

    def __init__(self, action: str, uri: str) -> None:
        self.action = action
        self.uri = uri
        self.started = time.monotonic()
        self.last_report = self.started
        self.bytes = 0

    def add(self, count: int) -> None:
        self.bytes += count
        now = time.monotonic()
        if now - self.last_report >= PROGRESS_INTERVAL_S:
            self.last_report = now
            rate = self.bytes / max(now - self.started, 1e-6)
            logger.info(
                "%s %s: %d bytes so far, %.1f MB/s",
                self.action,
                self.uri,
                self.bytes,
                rate / 1e6,
                extra={"action": self.action},
            )


class HashingReader:
    """A read-only, deliberately non-seekable view that hashes what passes through.

    Being non-seekable makes s3transfer read it sequentially, so the digest is right.
    """

    def __init__(
        self, raw: IO[bytes], progress: _Progress | None = None, checkpoint: Checkpoint = no_checkpoint
    ) -> None:
        self._raw = raw
        self._progress = progress
        self._checkpoint = checkpoint
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._consume(data)
        return data

    def _consume(self, data: bytes) -> None:
        self._checkpoint()
        if data:
            self.sha256.update(data)
            self.md5.update(data)
            self.size += len(data)
            if self._progress:
                self._progress.add(len(data))

    def record(self, uri: str) -> TransferRecord:
        return TransferRecord(uri, self.size, self.sha256.hexdigest(), self.md5.hexdigest())


class HashingWriter(HashingReader):
    """A write-only, non-seekable sink that hashes; s3transfer then writes parts in order."""

    def read(self, size: int = -1) -> bytes:  # pragma: no cover - a writer is never read
        raise OSError("HashingWriter is write-only")

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self._consume(bytes(data))
        return len(data)


class Storage:
    """Thread-safe: one instance is shared by all jobs of a worker."""

    def __init__(
        self,
        transfer_concurrency: int = 8,
        multipart_threshold_mb: int = 16,
        retry_budget_s: float = 60.0,
        allow_private_http: bool = False,
    ) -> None:
        self.backoff = Backoff(budget_s=retry_budget_s)
        self._lock = threading.Lock()
        self._client: Any = None
        self._credentials: Any = None
        self._direct: DirectS3 | None = None
        self._pool_size = max(10, transfer_concurrency * 4)
        self._threshold = multipart_threshold_mb * 1024 * 1024
        self._concurrency = transfer_concurrency
        self._allow_private_http = allow_private_http
        self._http: requests.Session | None = None

    # botocore, urllib3 and requests are imported on first use: a worker whose jobs never
    # name s3:// or http(s):// never loads them (0.1 s of start-up).
    def _direct_client(self) -> DirectS3:
        from lanworker.storage.s3direct import DirectS3

        client = self.s3
        with self._lock:
            if self._direct is None:
                self._direct = DirectS3(client, self._credentials, self._pool_size)
            return self._direct

    def _http_session(self) -> requests.Session:
        from lanworker.storage.http import make_session

        with self._lock:
            if self._http is None:
                self._http = make_session(self._allow_private_http)
            return self._http

    def _multipart_upload(self, reader: HashingReader, location: S3Location) -> None:
        from s3transfer.manager import TransferConfig, TransferManager  # only for large uploads

        config = TransferConfig(
            multipart_threshold=self._threshold,
            multipart_chunksize=self._threshold,
            max_request_concurrency=self._concurrency,
        )
        with TransferManager(self.s3, config) as manager:
            manager.upload(reader, location.bucket, location.key).result()

    @property
    def s3(self) -> Any:
        # Lazy so that a worker with only file:// jobs never needs AWS configuration.
        with self._lock:
            if self._client is None:
                import botocore.config
                import botocore.session

                core = botocore.session.get_session()
                # Timestamps stay strings: the worker reads none, and dateutil's parser
                # cost more CPU per listed object than the rest of the listing.
                core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
                # botocore itself: boto3 would import s3transfer at start-up (0.1 s).
                self._client = core.create_client(
                    "s3",
                    config=botocore.config.Config(
                        retries={"mode": "standard", "max_attempts": 3},
                        connect_timeout=5,
                        read_timeout=60,
                        max_pool_connections=self._pool_size,
                        signature_version="s3v4",  # as s3direct.py signs
                    ),
                )
                # The same object the client signs with (the session caches it), so a
                # refresh reaches both.
                self._credentials = core.get_credentials()
            return self._client

    # ----------------------------------------------------------------- listing
    def list_objects(self, uri: str) -> list[ObjectInfo]:
        """Every object under a prefix with its size when the listing gives it."""
        scheme = uri_scheme(uri)
        if scheme == "s3":
            return self.backoff.call(self._s3_list, S3Location.parse(uri))
        if scheme == "file":
            return [ObjectInfo(found, None) for found in self._local_list(uri)]
        raise JobFailed(f"cannot list '{uri}': listing is supported for s3:// and local paths only")

    def _s3_list(self, location: S3Location) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        request = {"Bucket": location.bucket, "Prefix": location.key}
        try:
            # Pages by hand: a paginator loads a model of its own (17 ms of a job's start).
            while True:
                page = self.s3.list_objects_v2(**request)
                for item in page.get("Contents", []):
                    found.append(
                        ObjectInfo(f"s3://{location.bucket}/{item['Key']}", int(item.get("Size", 0)))
                    )
                if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                    return found
                request["ContinuationToken"] = page["NextContinuationToken"]
        except Exception as exc:
            raise self._translate(exc, "list", location.uri()) from exc

    @staticmethod
    def _local_list(uri: str) -> list[str]:
        prefix = str(local_path(uri))
        base = Path(prefix if prefix.endswith("/") else os.path.dirname(prefix) or ".")
        if not base.is_dir():
            return []
        found: list[str] = []
        for root, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                if path.startswith(prefix) and not os.path.islink(path):
                    found.append(("file://" + quote(path)) if uri.startswith("file://") else path)
        return found

    # ----------------------------------------------------------------- transfers
    def download(
        self, uri: str, destination: Path, checkpoint: Checkpoint = no_checkpoint, size: int | None = None
    ) -> TransferRecord:
        """size, when a listing gave it: an object below the multipart threshold then takes
        one streamed GET (no HEAD), which is most of a prefix's cost."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        if uri_scheme(uri) == "s3" and (size is None or size >= self._threshold):
            return self.backoff.call(self._s3_download, uri, destination, checkpoint)
        return self.backoff.call(self._stream_download, uri, destination, checkpoint)

    def _s3_download(self, uri: str, destination: Path, checkpoint: Checkpoint) -> TransferRecord:
        """An object of unknown or large size: HEAD, then one streamed GET below the
        threshold, or parallel ranged GETs (ranged.py) above it."""
        location = S3Location.parse(uri)
        try:
            head = self.s3.head_object(Bucket=location.bucket, Key=location.key)
        except Exception as exc:
            raise self._translate(exc, "stat", uri) from exc
        size = int(head["ContentLength"])
        if size < self._threshold:
            return self._stream_download(uri, destination, checkpoint)
        progress = _Progress("download", uri)

        def get_range(first: int, last: int) -> Any:
            return self.s3.get_object(
                Bucket=location.bucket, Key=location.key, Range=f"bytes={first}-{last}", IfMatch=head["ETag"]
            )["Body"]

        def retried(fetch: Callable[[], None]) -> None:
            def translated() -> None:
                try:
                    fetch()
                except Exception as exc:
                    raise self._translate(exc, "download", uri) from exc

            self.backoff.call(translated)

        control = RangeControl(self._concurrency, checkpoint, retried, progress.add)
        download = RangedDownload(get_range, size, destination, control)
        sha256, md5 = download.run()
        return TransferRecord(uri, size, sha256, md5)

    def _stream_download(self, uri: str, destination: Path, checkpoint: Checkpoint) -> TransferRecord:
        try:
            with self.open_read(uri) as source, destination.open("wb") as handle:
                writer = HashingWriter(handle, _Progress("download", uri), checkpoint)
                # read1 returns what has arrived, so a trickling server meets the checkpoint
                # (and the job's timeout) at every read, not once per full chunk.
                read = getattr(source, "read1", source.read)
                while chunk := read(CHUNK_BYTES):
                    writer.write(chunk)
        except Exception as exc:
            raise self._translate(exc, "download", uri) from exc
        return writer.record(uri)

    def upload(self, source: BinaryIO, uri: str, checkpoint: Checkpoint = no_checkpoint) -> TransferRecord:
        """Upload an open, seekable file (opened by the caller, who vouches for what it is)."""
        scheme = uri_scheme(uri)
        if scheme == "s3":
            return self.backoff.call(self._s3_upload, source, uri, checkpoint)
        if scheme == "file":
            return self._local_upload(source, uri, checkpoint)
        raise JobFailed(f"cannot upload to '{uri}': only s3:// and local paths are writable")

    def _s3_upload(self, source: BinaryIO, uri: str, checkpoint: Checkpoint) -> TransferRecord:
        location = S3Location.parse(uri)
        if os.fstat(source.fileno()).st_size < self._threshold:
            return self._s3_put_small(source, location, checkpoint)
        try:
            # s3transfer aborts the multipart upload when a part fails, so a failed
            # upload never leaves a partial object at the final key.
            source.seek(0)
            reader = HashingReader(source, _Progress("upload", uri), checkpoint)
            self._multipart_upload(reader, location)
        except Exception as exc:
            raise self._translate(exc, "upload", uri) from exc
        return reader.record(uri)

    def _s3_put_small(self, source: BinaryIO, location: S3Location, checkpoint: Checkpoint) -> TransferRecord:
        """Below the multipart threshold: one PUT of the bytes, hashed as they are read."""
        uri = location.uri()
        try:
            source.seek(0)
            reader = HashingReader(source, None, checkpoint)
            body = reader.read()
            md5 = base64.b64encode(reader.md5.digest()).decode("ascii")
            self._direct_client().put(location.bucket, location.key, body, md5)
        except Exception as exc:
            raise self._translate(exc, "upload", uri) from exc
        return reader.record(uri)

    @staticmethod
    def _local_upload(source: BinaryIO, uri: str, checkpoint: Checkpoint) -> TransferRecord:
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary sibling and renamed, so readers never see half a file.
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as dst:
                reader = HashingReader(source, _Progress("upload", uri), checkpoint)
                shutil.copyfileobj(reader, dst, CHUNK_BYTES)  # type: ignore[misc]
            os.replace(temporary, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            full = disk_full(exc, str(target)) if isinstance(exc, OSError) else None
            if full is not None:
                raise full from exc
            raise
        return reader.record(uri)

    # ----------------------------------------------------------------- small objects
    def open_read(self, uri: str) -> BinaryIO:
        """A streaming reader; the object is never held whole in memory."""
        scheme = uri_scheme(uri)
        try:
            if scheme == "s3":
                location = S3Location.parse(uri)
                return self._direct_client().open(location.bucket, location.key)
            if scheme in ("http", "https"):
                from lanworker.storage.http import open_http

                return open_http(self._http_session(), uri)
            return local_path(uri).open("rb")
        except Exception as exc:
            raise self._translate(exc, "read", uri) from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        self.backoff.call(self._write_bytes, uri, data)

    def _write_bytes(self, uri: str, data: bytes) -> None:
        scheme = uri_scheme(uri)
        try:
            if scheme == "s3":
                location = S3Location.parse(uri)
                self.s3.put_object(Bucket=location.bucket, Key=location.key, Body=data)
                return
            target = local_path(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.part")
            temporary.write_bytes(data)
            os.replace(temporary, target)
        except Exception as exc:
            raise self._translate(exc, "write", uri) from exc

    def exists(self, uri: str) -> bool:
        if uri_scheme(uri) != "s3":
            return local_path(uri).exists()
        return self.backoff.call(self._s3_exists, uri)

    def _s3_exists(self, uri: str) -> bool:
        location = S3Location.parse(uri)
        try:
            self.s3.head_object(Bucket=location.bucket, Key=location.key)
            return True
        except Exception as exc:
            if client_error_code(exc) in NOT_FOUND_CODES:
                return False
            raise self._translate(exc, "stat", uri) from exc

    def delete(self, uri: str) -> None:
        if uri_scheme(uri) != "s3":
            with contextlib.suppress(OSError):
                local_path(uri).unlink()
            return
        self.backoff.call(self._s3_delete, uri)

    def _s3_delete(self, uri: str) -> None:
        location = S3Location.parse(uri)
        try:
            self.s3.delete_object(Bucket=location.bucket, Key=location.key)
        except Exception as exc:
            raise self._translate(exc, "delete", uri) from exc

    # ----------------------------------------------------------------- errors
    @staticmethod
    def _translate(exc: BaseException, action: str, uri: str) -> Exception:
        """Map a low-level failure to what the worker must do about it."""
        if isinstance(exc, LanworkerError):
            return exc
        if isinstance(exc, AddressRefused):
            return InvalidMessage(f"{action} {uri}: {exc}")
        if isinstance(exc, FileNotFoundError):
            return JobFailed(f"{action} {uri}: not found", reason="missing-object")
        code = client_error_code(exc)
        if code in NOT_FOUND_CODES:
            return JobFailed(f"{action} {uri}: object or bucket not found ({code})", reason="missing-object")
        if code in DENIED_CODES:
            return JobFailed(f"{action} {uri}: access denied ({code})", reason="access-denied")
        if is_transient(exc) or is_botocore_failure(exc):
            return as_transient(exc, f"{action} {uri}")
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            return JobFailed(f"{action} {uri}: not found (HTTP 404)", reason="missing-object")
        if isinstance(status, int) and status >= 500:
            return as_transient(exc, f"{action} {uri}")
        if isinstance(exc, OSError):
            return disk_full(exc, uri) or JobFailed(f"{action} {uri}: {exc}", reason="io-error")
        return JobFailed(f"{action} {uri}: {type(exc).__name__}: {exc}", reason="storage-error")
