"""Which failures are worth retrying."""

from __future__ import annotations

import botocore.exceptions
import pytest

from lanworker.core.errors import StaleReceipt, TransientError
from lanworker.core.retries import Backoff, is_botocore_failure, is_transient


def test_botocore_refusing_a_request_is_not_a_passing_failure() -> None:
    refused = botocore.exceptions.ParamValidationError(report="Invalid length for parameter Key")
    assert not is_botocore_failure(refused) and not is_transient(refused)
    assert is_botocore_failure(botocore.exceptions.NoCredentialsError())
    assert is_transient(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"))


def _engine_error(status: int, explanation: str) -> Exception:
    import docker
    import requests

    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("engine said no", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("status", "explanation", "transient"),
    [
        (500, "OCI runtime create failed: error mounting /x to rootfs: read-only file system", False),
        (500, "Duplicate mount point: /tmp", False),
        (500, "invalid mount config for type bind: invalid mount path", False),
        (500, "failed to create shim task: not a directory: unknown", False),
        (500, "context deadline exceeded", True),
        (502, "Bad Gateway", True),
        (503, "OCI runtime busy", True),
        (400, "invalid volume specification", False),
    ],
)
def test_only_an_unavailable_engine_is_transient(status: int, explanation: str, transient: bool) -> None:
    from lanworker.executors.docker import _is_transient_docker_error

    assert _is_transient_docker_error(_engine_error(status, explanation)) is transient


def test_the_scratch_tmpfs_never_collides_with_a_mount_at_tmp() -> None:
    from lanworker.executors.docker import ServiceSpec, scratch_tmpfs

    spec = ServiceSpec(image="i")
    assert scratch_tmpfs(spec, {"/host/job": {"bind": "/job", "mode": "rw"}}) == {
        "/tmp": "rw,noexec,nosuid,size=64m"
    }
    assert scratch_tmpfs(spec, {"/host/fs/tmp": {"bind": "/tmp", "mode": "rw"}}) is None
    assert scratch_tmpfs(ServiceSpec(image="i", read_only_rootfs=False), {}) is None


def test_a_stale_receipt_is_not_retried_but_an_outage_is() -> None:
    """A heartbeat retrying a receipt that was gone for good held the one heartbeat thread
    for two seconds, and the other leases it should have extended lapsed."""
    calls: list[str] = []

    def stale() -> None:
        calls.append("stale")
        raise StaleReceipt("change visibility on q: receipt no longer valid (ReceiptHandleIsInvalid)")

    def outage() -> None:
        calls.append("outage")
        raise TransientError("connection refused")

    with pytest.raises(StaleReceipt):
        Backoff(attempts=3, max_wait_s=0.01).call(stale)
    with pytest.raises(TransientError):
        Backoff(attempts=3, max_wait_s=0.01).call(outage)
    assert calls == ["stale", "outage", "outage", "outage"]
