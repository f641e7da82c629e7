"""The TES 1.1 task document as a client sends it, validated; written from the spec.

Read-only fields a client may echo back (id, state, logs, creation_time) are ignored, as
are fields this server does not know, so engines that send extensions still work.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class State(str, enum.Enum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TesInput(_Model):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str = Field(min_length=2, pattern=r"^/")
    type: Literal["FILE", "DIRECTORY"] = "FILE"
    content: str | None = Field(default=None, max_length=131072)
    streamable: bool | None = None


class TesOutput(_Model):
    name: str | None = None
    description: str | None = None
    url: str = Field(min_length=1)
    path: str = Field(min_length=2, pattern=r"^/")
    path_prefix: str | None = None
    type: Literal["FILE", "DIRECTORY"] = "FILE"


class TesResources(_Model):
    cpu_cores: int | None = Field(default=None, ge=1)
    preemptible: bool | None = None
    ram_gb: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    disk_gb: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = False


class TesExecutor(_Model):
    image: str = Field(min_length=1, max_length=512)
    command: list[str] = Field(min_length=1)
    workdir: str | None = Field(default=None, pattern=r"^/")
    stdin: str | None = Field(default=None, pattern=r"^/")
    stdout: str | None = Field(default=None, pattern=r"^/")
    stderr: str | None = Field(default=None, pattern=r"^/")
    env: dict[str, str] | None = None
    ignore_error: bool | None = False


class TesTask(_Model):
    name: str | None = Field(default=None, max_length=1024)
    description: str | None = Field(default=None, max_length=65536)
    inputs: list[TesInput] | None = None
    outputs: list[TesOutput] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1, max_length=100)
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
