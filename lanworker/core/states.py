"""The states a job passes through, as the worker reports them and the TES projection reads
them: one enum each, imported by both sides, so renaming a state cannot silently break the
projection. Both are str enums: they travel in JSON as their values."""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    """How one attempt ended: a job result's `state`."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    RETRYING = "retrying"  # failed, and a next attempt was queued
    LISTENING = "listening"  # the answer to a test message

    def __str__(self) -> str:
        return self.value


class EventState(str, Enum):
    """A job state event's `state`, in the order a job meets them."""

    SUBMITTED = "submitted"  # the API took a task (its own timeline entry, never published)
    RECEIVED = "received"
    STAGING = "staging"
    RUNNING = "running"
    UPLOADING = "uploading"
    RELEASED = "released"  # given back to the queue for another attempt
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    DEAD_LETTERED = "dead-lettered"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, value: object) -> EventState | None:
        """The state an event names, or None for one this version does not know."""
        try:
            return cls(value)
        except ValueError:
            return None
