"""Error kinds, grouped by what the worker loop must do with the message.

- InvalidMessage: the message can never succeed; report it and dead-letter it.
- JobFailed: the job ran (or tried to) and failed; report it and delete the message.
- TransientError: infrastructure trouble; leave the message for redelivery.
- ConfigError: the worker itself is misconfigured; refuse to start.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import botocore.exceptions
import requests.exceptions
import urllib3.exceptions
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LanworkerError(Exception):
    """Base of every error lanworker raises on purpose."""

    kind = "error"


class ConfigError(LanworkerError):
    kind = "config"


class QueueUnreachable(LanworkerError):
    kind = "queue-unreachable"


class InvalidMessage(LanworkerError):
    """The message is malformed, breaks the schema, or asks for something forbidden."""

    kind = "invalid-message"

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class JobFailed(LanworkerError):
    """The job could not complete: missing input, command failure, timeout, missing output."""

    kind = "job-failed"

    def __init__(self, message: str, reason: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason


class TransientError(LanworkerError):
    """S3, SQS or docker unreachable or throttling: worth retrying later."""

    kind = "transient"


class StaleReceipt(TransientError):
    """The message's receipt is no longer ours: another worker may own it now."""

    kind = "stale-receipt"


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

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    ConnectionError,
    TimeoutError,
    # http(s) inputs (smart_open) and the docker SDK speak requests/urllib3.
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
)


def client_error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_transient(exc: BaseException) -> bool:
    """True for failures that may go away by themselves (network, throttling, 5xx)."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        if client_error_code(exc) in THROTTLING_CODES:
            return True
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
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


def retry_transient(
    attempts: int = 12, max_wait_s: float = 10.0, max_total_s: float = 60.0
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Retry a method on TransientError with exponential backoff plus jitter.

    The waits grow 0.5, 1, 2, 4, 8, 10, 10 ... s (each plus up to 0.5 s of jitter), so an
    outage of several seconds is ridden out, until `max_total_s`, or the instance's own
    `retry_budget_s` when it has one (the worker's --retry-budget-s). The wrapped call must
    translate its low-level exceptions into TransientError itself, so only failures known
    to be retryable are retried.
    """

    def decorator(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            budget = getattr(args[0], "retry_budget_s", None) if args else None
            retrying = Retrying(
                retry=retry_if_exception_type(TransientError),
                wait=wait_exponential(multiplier=0.5, max=max_wait_s) + wait_random(0, 0.5),
                stop=stop_after_attempt(attempts) | stop_after_delay(min(max_total_s, budget or max_total_s)),
                before_sleep=_log_retry,
                reraise=True,
            )
            return retrying(fn, *args, **kwargs)

        return wrapper

    return decorator
