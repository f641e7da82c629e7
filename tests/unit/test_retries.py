"""Which failures are worth retrying."""

from __future__ import annotations

import botocore.exceptions

from lanworker.retries import is_botocore_failure, is_transient


def test_botocore_refusing_a_request_is_not_a_passing_failure() -> None:
    refused = botocore.exceptions.ParamValidationError(report="Invalid length for parameter Key")
    assert not is_botocore_failure(refused) and not is_transient(refused)
    assert is_botocore_failure(botocore.exceptions.NoCredentialsError())
    assert is_transient(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"))
