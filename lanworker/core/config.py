"""Worker configuration: built once from flags, then LANWORKER_* variables, then defaults."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
import tempfile
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lanworker.core.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_PREFIX = "LANWORKER_"
DEFAULT_LOCAL_QUEUE = "local:~/.local/state/lanworker/queue.db#jobs"
SQS_MAX_VISIBILITY_S = 12 * 3600
PULL_POLICIES = ("if-missing", "always", "never")
TASK_NETWORKS = ("bridge", "none", "host")
LOG_FORMATS = ("json", "text")


def is_local_queue(url: str) -> bool:
    """The embedded SQLite queue (`local:PATH[#NAME]`), as opposed to an SQS URL."""
    return url.startswith("local:")


def is_control_location(url: str) -> bool:
    """Where cancel markers may live: S3 or the local filesystem (any other scheme would
    become a relative directory named after it, which no worker looks in)."""
    scheme, separator, _ = url.partition("://")
    return not separator or scheme in ("s3", "file")


def default_worker_id() -> str:
    """HOST-PID; in a container (PID 1, and with --network host every container has the
    host's name) HOST and a random suffix, so two containers never share an id."""
    pid = os.getpid()
    return f"{socket.gethostname()}-{pid if pid != 1 else secrets.token_hex(4)}"


@dataclass(frozen=True)
class WorkerConfig:
    mode: str = "native"
    base_command: tuple[str, ...] = ()
    queue_url: str = DEFAULT_LOCAL_QUEUE
    dead_letter_queue_url: str | None = None
    results_url: str | None = None
    events_url: str | None = None
    control_url: str | None = None
    worker_id: str = field(default_factory=default_worker_id)
    concurrency: int = 1
    once: bool = False
    visibility_timeout_s: int = 60  # heartbeats extend it: a killed worker's job runs again within a minute
    wait_time_s: int = 20
    max_receives: int = 5
    heartbeat_interval_s: float = 0.0  # 0 means a third of the visibility timeout
    cancel_check_s: float = 2.0  # how often a worker looks for cancel markers while jobs run
    max_job_runtime_s: float = SQS_MAX_VISIBILITY_S - 1800
    grace_period_s: float = 60.0
    default_timeout_s: float | None = None
    work_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "lanworker")
    keep_workdir: bool = False
    upload_on_failure: bool = False
    capture_bytes: int = 1024 * 1024
    transfer_concurrency: int = 8
    retry_budget_s: float = 60.0  # how long one storage call retries transient failures
    allow_local_files: bool | None = None  # None: allowed only on the embedded local queue
    local_file_roots: tuple[str, ...] = ()  # --allow-local-files DIR: only beneath these ("" = anywhere)
    allow_private_http: bool = False  # http(s) inputs from loopback, link-local, private addresses
    allow_env: tuple[str, ...] = ()  # globs of refused-by-default env names messages may set
    max_job_disk_mb: int | None = None  # stop a job whose job dir grows beyond this
    min_free_mb: int = 100  # stop receiving while the work root has less free space (0: never)
    max_output_mb: int | None = None  # fail a job whose outputs add up to more (output-too-large)
    log_format: str | None = None  # None: json when stderr is not a TTY
    log_level: str = "INFO"
    strict_env: bool = False  # a LANWORKER_* name no option reads is an error (78), not a warning
    metrics_port: int | None = None
    # docker executor
    allow_images: tuple[str, ...] = ()
    pull_policy: str = "if-missing"
    services_file: Path | None = None
    host_workdir: Path | None = None
    max_memory_mb: int | None = None
    max_cpus: float | None = None
    default_pids_limit: int = 512
    max_pids: int = 4096
    default_memory_mb: int | None = 2048  # containers whose message and service name no memory
    task_network: str = "bridge"  # TES tasks' containers: bridge (as other TES servers), none, host

    @property
    def effective_heartbeat_s(self) -> float:
        return self.heartbeat_interval_s or max(1.0, self.visibility_timeout_s / 3)

    @property
    def local_files_allowed(self) -> bool:
        if self.allow_local_files is not None:
            return self.allow_local_files
        return bool(self.local_file_roots) or is_local_queue(self.queue_url)

    @property
    def local_roots(self) -> tuple[str, ...]:
        """The directories local files must lie beneath; () for anywhere (when allowed at all)."""
        return () if "" in self.local_file_roots else self.local_file_roots

    def validate(self) -> WorkerConfig:
        problems = []
        # 'client': submit, cancel, dead-letters and the translator, which run no jobs.
        if self.mode not in ("native", "docker", "client"):
            problems.append(f"mode must be native, docker or client, not {self.mode!r}")
        if self.mode == "native" and not self.base_command:
            problems.append("native mode needs a command: worker.py native CMD [ARGS...]")
        if self.mode == "docker" and not self.allow_images:
            problems.append(
                "docker mode needs an image allowlist: --allow-image PATTERN (use '*' to allow any)"
            )
        if not 0.1 <= self.cancel_check_s <= 3600:
            problems.append("cancel_check_s must be between 0.1 and 3600")
        if self.concurrency < 1:
            problems.append("concurrency must be at least 1")
        if not 1 <= self.visibility_timeout_s <= SQS_MAX_VISIBILITY_S:
            problems.append(f"visibility_timeout_s must be between 1 and {SQS_MAX_VISIBILITY_S}")
        if not 0 <= self.wait_time_s <= 20:
            problems.append("wait_time_s must be between 0 and 20 (the SQS long-poll limit)")
        if self.max_receives < 1:
            problems.append("max_receives must be at least 1")
        if self.heartbeat_interval_s and self.heartbeat_interval_s >= self.visibility_timeout_s:
            problems.append("heartbeat_interval_s must be shorter than visibility_timeout_s")
        if self.max_job_runtime_s <= 0 or self.max_job_runtime_s > SQS_MAX_VISIBILITY_S:
            problems.append(f"max_job_runtime_s must be between 0 and {SQS_MAX_VISIBILITY_S}")
        if self.grace_period_s < 0:
            problems.append("grace_period_s must not be negative")
        if self.pull_policy not in PULL_POLICIES:
            problems.append(f"pull_policy must be one of {', '.join(PULL_POLICIES)}")
        if self.log_format is not None and self.log_format not in LOG_FORMATS:
            problems.append(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if self.max_job_disk_mb is not None and self.max_job_disk_mb < 1:
            problems.append("max_job_disk_mb must be at least 1")
        if self.task_network not in TASK_NETWORKS:
            problems.append(f"task_network must be one of {', '.join(TASK_NETWORKS)}")
        if self.min_free_mb < 0:
            problems.append("min_free_mb must be 0 or more")
        if self.max_output_mb is not None and self.max_output_mb < 1:
            problems.append("max_output_mb must be at least 1")
        if self.max_pids < 1 or (self.default_memory_mb is not None and self.default_memory_mb < 4):
            problems.append("max_pids must be at least 1 and default_memory_mb at least 4")
        if self.transfer_concurrency < 1 or self.capture_bytes < 0:
            problems.append("transfer_concurrency must be >= 1 and capture_bytes >= 0")
        if self.control_url and not is_control_location(self.control_url):
            problems.append(
                f"control_url {self.control_url!r} must be s3://BUCKET/PREFIX, file:// or a directory path"
            )
        if problems:
            raise ConfigError("; ".join(problems))
        return self


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _convert(text: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _convert(text, inner[0]) if text != "" else None
    if origin is tuple:
        return tuple(part for part in (p.strip() for p in text.split(",")) if part)
    if annotation is bool:
        return _parse_bool(text)
    if annotation in (int, float, str, Path):
        return annotation(text)
    raise TypeError(f"no conversion for {annotation!r}")


# One rule: an option's environment variable is LANWORKER_ and its flag's name
# (--timeout-s: LANWORKER_TIMEOUT_S). A field's flag is its name with dashes, unless named
# here; tests/unit/test_config.py checks the parser agrees, and the README's table is made
# from this (`python3 -m lanworker.core.config`).
FLAG_NAMES = {
    "queue_url": "queue",
    "dead_letter_queue_url": "dead-letter-queue",
    "results_url": "results",
    "events_url": "events",
    "control_url": "control",
    "default_timeout_s": "timeout-s",
    "local_file_roots": "allow-local-files",
    "allow_local_files": "no-allow-local-files",
    "allow_images": "allow-image",
    "pull_policy": "pull",
    "services_file": "services",
}
INVERTED = frozenset({"allow_local_files"})  # LANWORKER_NO_ALLOW_LOCAL_FILES=1 turns it off
WITHOUT_FLAG = frozenset({"mode", "base_command"})  # set by the command itself
# Names of earlier releases, still read (with a warning that names the new one).
OLD_NAMES = {"LANWORKER_ALLOW_IMAGES": "allow_images", "LANWORKER_CONTROL_URL": "control_url",
             "LANWORKER_EVENTS_URL": "events_url", "LANWORKER_RESULTS_URL": "results_url",
             "LANWORKER_DEFAULT_TIMEOUT_S": "default_timeout_s", "LANWORKER_QUEUE_URL": "queue_url",
             "LANWORKER_DEAD_LETTER_QUEUE_URL": "dead_letter_queue_url", "LANWORKER_PULL_POLICY": "pull_policy",
             "LANWORKER_SERVICES_FILE": "services_file"}  # fmt: skip
# Read by other parts (serve's own options; a job's own id; the test suite's switches).
OTHER_NAMES = frozenset(
    {"LANWORKER_STATE_DIR", "LANWORKER_STORE", "LANWORKER_JOB_ID", "LANWORKER_REQUIRE_DOCKER",
     "LANWORKER_REQUIRE_BROWSER"}
)  # fmt: skip


def flag_name(field_name: str) -> str:
    return FLAG_NAMES.get(field_name, field_name.replace("_", "-"))


def env_name(field_name: str) -> str:
    return ENV_PREFIX + flag_name(field_name).upper().replace("-", "_")


def environment_problems(environ: Mapping[str, str]) -> list[str]:
    """Warnings for LANWORKER_* names no option reads, and for old names."""
    known = {
        env_name(spec.name) for spec in dataclasses.fields(WorkerConfig) if spec.name not in WITHOUT_FLAG
    }
    found = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in OTHER_NAMES:
            continue
        if name in OLD_NAMES:
            found.append(f"{name} is an old name: it still works, but use {env_name(OLD_NAMES[name])}")
        else:
            found.append(f"{name} matches no option and is ignored (see `worker.py --help`)")
    return found


def check_environment(config: WorkerConfig, environ: Mapping[str, str]) -> None:
    """Log a warning for each LANWORKER_* name no option reads (a typo, or an old name);
    with --strict-env an unknown one is a ConfigError (exit 78)."""
    for problem in environment_problems(environ):
        if config.strict_env and "matches no option" in problem:
            raise ConfigError(problem)
        logger.warning("%s", problem, extra={"action": "start"})


def env_table() -> str:
    """The README's table of options and their environment variables, made from the rule."""
    rows = ["| flag | environment variable |", "|---|---|"]
    for spec in dataclasses.fields(WorkerConfig):
        if spec.name not in WITHOUT_FLAG:
            rows.append(f"| `--{flag_name(spec.name)}` | `{env_name(spec.name)}` |")
    return "\n".join(rows)


def build_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Flags that are not None win; then LANWORKER_<FIELD> (or its alias); then the default."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(WorkerConfig)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(WorkerConfig):
        flag_value = flags.get(spec.name)
        if flag_value is not None and flag_value != ():
            values[spec.name] = tuple(flag_value) if isinstance(flag_value, list) else flag_value
            continue
        if spec.name in WITHOUT_FLAG:
            continue
        old = [name for name, field_name in OLD_NAMES.items() if field_name == spec.name]
        for name in (env_name(spec.name), *old):
            if name in environ:
                try:
                    value = _convert(environ[name], hints[spec.name])
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"{name}={environ[name]!r}: {exc}") from exc
                values[spec.name] = (not value) if spec.name in INVERTED and value is not None else value
                break
    try:
        config = WorkerConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    return config.validate()


if __name__ == "__main__":  # python3 -m lanworker.core.config: the README's table
    print(env_table())
