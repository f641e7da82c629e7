"""Which failures are transient, and how long to retry them.

`is_transient` reads AWS error codes, connection errors of boto, requests and urllib3;
`Backoff` retries a call on TransientError with exponential backoff and full jitter within
an explicit time budget (the worker's --retry-budget-s for storage calls).

Invariant: this module imports none of those libraries. An exception of a library's type
can only exist once the library is loaded, so classifying against the libraries already in
`sys.modules` is exact, and a worker that never touches S3 or HTTP never pays their import
(botocore alone is a third of a worker's start-up).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from lanworker.core.errors import StaleReceipt, TransientError

logger = logging.getLogger(__name__)

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "AWS.SimpleQueueService.ServiceUnavailable",
    }
)

# What AWS answers a request whose credentials are wrong, expired or not allowed to do it.
DENIED_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "KMS.AccessDeniedException",
    }
)

# Connection failures by the module that defines them: the standard library's, then those
# of botocore, and of requests/urllib3 (http(s) inputs, the docker SDK, direct S3 calls).
CONNECTION_ERROR_NAMES = {
    "botocore.exceptions": (
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ResponseStreamingError",
        "IncompleteReadError",
    ),
    "requests.exceptions": ("ConnectionError", "Timeout"),
    "urllib3.exceptions": ("ProtocolError", "TimeoutError"),
}


def _loaded(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes of module, or none when nothing has imported it."""
    found = sys.modules.get(module)
    return tuple(getattr(found, name) for name in names) if found is not None else ()


def connection_errors() -> tuple[type[BaseException], ...]:
    classes: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    for module, names in CONNECTION_ERROR_NAMES.items():
        classes += _loaded(module, *names)
    return classes


def is_botocore_failure(exc: BaseException) -> bool:
    """A BotoCoreError: botocore failed without an answer (no credentials, a connection
    it gave up on, ...), as opposed to a ClientError, which is S3's or SQS's answer.
    Not a ParamValidationError: botocore refused the request itself, and always will."""
    return isinstance(exc, _loaded("botocore.exceptions", "BotoCoreError")) and not isinstance(
        exc, _loaded("botocore.exceptions", "ParamValidationError")
    )


def client_error_code(exc: BaseException) -> str:
    if isinstance(exc, _loaded("botocore.exceptions", "ClientError")):
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return ""


def is_transient(exc: BaseException) -> bool:
    """True for failures that may go away by themselves (network, throttling, 5xx)."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, connection_errors()):
        return True
    if isinstance(exc, _loaded("botocore.exceptions", "ClientError")):
        if client_error_code(exc) in THROTTLING_CODES:
            return True
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return isinstance(status, int) and status >= 500
    return False


def as_transient(exc: BaseException, what: str) -> TransientError:
    return TransientError(f"{what}: {type(exc).__name__}: {exc}")


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning(
        "transient failure in %s (attempt %d), retrying: %s",
        getattr(state.fn, "__qualname__", "call"),
        state.attempt_number,
        exc,
        extra={"action": "retry"},
    )


@dataclass(frozen=True)
class Backoff:
    """Retry a call on TransientError with exponential backoff plus jitter.

    The waits grow 0.5, 1, 2, 4, 8, 10, 10 ... s (each plus up to 0.5 s of jitter), so an
    outage of several seconds is ridden out, until `budget_s` or `attempts` runs out. The
    call must translate its low-level exceptions into TransientError itself, so only
    failures known to be retryable are retried. A StaleReceipt is not retried: no wait makes
    a receipt ours again (and the heartbeat thread, retrying one, left other leases to lapse).
    """

    attempts: int = 12
    max_wait_s: float = 10.0
    budget_s: float = 60.0

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError) & retry_if_not_exception_type(StaleReceipt),
            wait=wait_exponential(multiplier=0.5, max=self.max_wait_s) + wait_random(0, 0.5),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.budget_s),
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(fn, *args, **kwargs)
