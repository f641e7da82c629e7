"""TES tasks to lanworker container-task messages, and task records back to TES documents.

Responses hold only TES 1.1 fields (py-tes refuses others); `size_bytes` is a string.
Views: MINIMAL is exactly id and state; BASIC leaves out executor stdout/stderr, input
content and system logs; FULL has everything.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

from lanworker.core.clock import rfc3339
from lanworker.core.states import EventState
from lanworker.message.command import READABLE_SCHEMES, WRITABLE_SCHEMES, uri_scheme, validate_document
from lanworker.message.policy import MessagePolicy
from lanworker.tes.models import State, TesTask
from lanworker.tes.store import TaskRecord, TimelineEntry

SUPPORTED_BACKEND_PARAMETERS: tuple[str, ...] = ()
STREAM_TAIL_CHARS = 16 * 1024


class TaskRefused(ValueError):
    """The task cannot be accepted: a 400 with the reason."""


def new_task_id() -> str:
    """Sortable by creation (a hex timestamp) and unique; matches the command schema's id."""
    return f"{time.time_ns() // 1000:014x}-{uuid.uuid4().hex[:12]}"


def task_to_message(task: TesTask, task_id: str, policy: MessagePolicy) -> tuple[dict[str, Any], list[str]]:
    """The command message for a task, and notes for its system logs; TaskRefused for a 400."""
    notes: list[str] = []
    for index, item in enumerate(task.inputs or []):
        if item.content is None and not item.url:
            raise TaskRefused(f"inputs[{index}]: url or content is required")
        if item.content is None:
            _check_scheme(f"inputs[{index}].url", item.url or "", READABLE_SCHEMES, policy)
    for index, output in enumerate(task.outputs or []):
        _check_scheme(f"outputs[{index}].url", output.url, WRITABLE_SCHEMES, policy)
    _check_container_paths(task)
    resources = task.resources
    message: dict[str, Any] = {
        "id": task_id,
        "service": task.executors[0].image,
        "queue": "tes",
        "upload_on_failure": True,  # engines read rc files and logs back after failures
        "executors": [
            {
                k: v
                for k, v in {
                    "image": executor.image,
                    "command": executor.command,
                    "workdir": executor.workdir,
                    "stdin": executor.stdin,
                    "stdout": executor.stdout,
                    "stderr": executor.stderr,
                    "env": executor.env,
                    "ignore_error": executor.ignore_error or None,
                }.items()
                if v is not None
            }
            for executor in task.executors
        ],
        "inputs": [
            {
                "path": item.path,
                "type": item.type,
                **({"content": item.content} if item.content is not None else {"url": item.url}),
            }
            for item in task.inputs or []
        ],
        "outputs": [
            {
                k: v
                for k, v in {
                    "path": o.path,
                    "url": o.url,
                    "path_prefix": o.path_prefix,
                    "type": o.type,
                }.items()
                if v
            }
            for o in task.outputs or []
        ],
        "volumes": list(task.volumes or []),
    }
    if resources is not None:
        limits: dict[str, Any] = {}
        if resources.ram_gb:
            limits["memory_mb"] = max(4, int(resources.ram_gb * 1024))
        if resources.cpu_cores:
            limits["cpus"] = resources.cpu_cores
        if limits:
            message["resources"] = limits
        for name in ("disk_gb", "preemptible", "zones"):
            value = getattr(resources, name)
            if value:
                notes.append(f"resources.{name}={value} is noted but not enforced by lanworker")
        unknown = sorted(set(resources.backend_parameters or {}) - set(SUPPORTED_BACKEND_PARAMETERS))
        if unknown and resources.backend_parameters_strict:
            raise TaskRefused(f"resources.backend_parameters: unsupported keys {', '.join(unknown)}")
        if unknown:
            notes.append(f"resources.backend_parameters ignored: {', '.join(unknown)}")
    problems = validate_document(message)
    if problems:
        raise TaskRefused("; ".join(problems))
    return message, notes


RESERVED_MOUNTS = ("/proc", "/sys", "/dev")  # the runtime's own: a volume there cannot be made


def _container_paths(task: TesTask) -> list[tuple[str, str]]:
    paths = [(f"inputs[{i}].path", item.path) for i, item in enumerate(task.inputs or [])]
    paths += [(f"outputs[{i}].path", item.path) for i, item in enumerate(task.outputs or [])]
    paths += [(f"volumes[{i}]", volume) for i, volume in enumerate(task.volumes or [])]
    for i, executor in enumerate(task.executors):
        for name in ("workdir", "stdin", "stdout", "stderr"):
            value = getattr(executor, name)
            if value:
                paths.append((f"executors[{i}].{name}", value))
    return paths


def _check_container_paths(task: TesTask) -> None:
    """Mount specs the engine would refuse on every attempt are a 400 here, not a task that
    fails at start (or, before, one retried until the queue gave up on it)."""
    for where, path in _container_paths(task):
        if ":" in path:
            raise TaskRefused(
                f"{where}: {path!r}: ':' cannot be part of a container path (it separates mount specs)"
            )
        long = [part for part in path.split("/") if len(part.encode()) > 255]
        if long:
            raise TaskRefused(
                f"{where}: a path part is {len(long[0].encode())} bytes long, over the 255 a file name may have"
            )
    volumes = {volume.rstrip("/") or "/" for volume in task.volumes or []}
    for index, volume in enumerate(task.volumes or []):
        top = volume.rstrip("/") or "/"
        if any(top == reserved or top.startswith(reserved + "/") for reserved in RESERVED_MOUNTS):
            raise TaskRefused(
                f"volumes[{index}]: {volume!r} is the container runtime's own; it cannot be a volume"
            )
    for index, item in enumerate(task.inputs or []):
        if (item.path.rstrip("/") or "/") in volumes:
            raise TaskRefused(
                f"inputs[{index}].path: {item.path!r} is a volume itself; put the input inside it"
            )


def _check_scheme(where: str, url: str, allowed: tuple[str, ...], policy: MessagePolicy) -> None:
    scheme = uri_scheme(url)
    if scheme not in allowed or (scheme == "file" and not policy.allow_local_files):
        usable = storage_schemes(policy, allowed)
        raise TaskRefused(f"{where}: {url!r} uses an unsupported scheme (supported: {', '.join(usable)})")
    problem = policy.uri_problem(where, url)
    if problem:
        raise TaskRefused(problem)


def storage_schemes(policy: MessagePolicy, allowed: tuple[str, ...] = READABLE_SCHEMES) -> list[str]:
    """What service-info lists as storage: each scheme, and file:// as the directories allowed."""
    found = [f"{s}://" for s in allowed if s != "file"]
    if "file" in allowed and policy.allow_local_files:
        roots = policy.local_file_roots or ("/",)
        found += ["file://" + quote(root.rstrip("/") + "/") for root in roots]
    return found


def new_record(task: TesTask, task_id: str, notes: list[str]) -> TaskRecord:
    now = time.time()
    return {
        "id": task_id,
        "kind": "tes",
        "created_at": now,
        "creation_time": rfc3339(now),
        "name": task.name,
        "state": State.QUEUED.value,
        "tags": dict(task.tags or {}),
        "task": task.model_dump(exclude_none=True),
        "system_logs": notes,
        "events": [TimelineEntry(state=EventState.SUBMITTED.value, time=now)],
        "cancel_requested": False,
        "attempt": 1,
        "log": {},
    }


# --------------------------------------------------------------------- views
def to_tes(record: TaskRecord, view: str) -> dict[str, Any]:
    state = record["state"]
    if view == "MINIMAL":
        return {"id": record["id"], "state": state}
    full = view == "FULL"
    task = dict(record.get("task") or _task_of_command(record))
    document: dict[str, Any] = {"id": record["id"], "state": state}
    for name in ("name", "description", "resources", "volumes", "tags"):
        if task.get(name) not in (None, [], {}):
            document[name] = task[name]
    document["executors"] = task.get("executors", [])
    if task.get("inputs"):
        document["inputs"] = [
            {k: v for k, v in item.items() if full or k != "content"} for item in task["inputs"]
        ]
    if task.get("outputs"):
        document["outputs"] = task["outputs"]
    document["creation_time"] = record["creation_time"]
    log = _task_log(record, full)
    if log:
        document["logs"] = [log]
    return document


def _task_of_command(record: TaskRecord) -> dict[str, Any]:
    """A plain command message seen only through its events, shown as a one-executor task."""
    service = record.get("service") or "unknown"
    return {"executors": [{"image": service, "command": [service]}]}


def _task_log(record: TaskRecord, full: bool) -> dict[str, Any]:
    log = record.get("log") or {}
    if not log and not (full and record.get("system_logs")):
        return {}
    executor_logs = []
    for item in log.get("executors") or []:
        entry = {k: item[k] for k in ("start_time", "end_time") if item.get(k)}
        entry["exit_code"] = item.get("exit_code") if item.get("exit_code") is not None else -1
        if full:
            entry["stdout"] = (item.get("stdout") or "")[-STREAM_TAIL_CHARS:]
            entry["stderr"] = (item.get("stderr") or "")[-STREAM_TAIL_CHARS:]
        executor_logs.append(entry)
    result: dict[str, Any] = {
        "logs": executor_logs,
        "outputs": [
            {"url": o["uri"], "path": o.get("path", ""), "size_bytes": str(o.get("size", 0))}
            for o in log.get("outputs") or []
        ],
    }
    if log.get("worker_id"):
        result["metadata"] = {"worker_id": str(log["worker_id"])}
    for name in ("start_time", "end_time"):
        if log.get(name):
            result[name] = log[name]
    if full:
        system = list(record.get("system_logs") or [])
        if log.get("reason") and record["state"] == State.SYSTEM_ERROR.value:
            system.append(f"{log['reason']}: {log.get('error') or ''}".strip())
        if system:
            result["system_logs"] = system
    return result
