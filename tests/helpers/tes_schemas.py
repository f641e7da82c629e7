"""JSON Schemas of TES 1.1 responses, written here from the spec; strict about extra fields,
since clients such as py-tes refuse fields they do not know."""

from __future__ import annotations

from typing import Any

import jsonschema

STATES = [
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "PREEMPTED",
    "CANCELING",
]
TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"}
STRINGS = {"type": "array", "items": {"type": "string"}}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


DEFS: dict[str, Any] = {
    "input": _object(
        ["path"],
        {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "url": {"type": "string"},
            "path": {"type": "string", "pattern": "^/"},
            "type": {"enum": ["FILE", "DIRECTORY"]},
            "content": {"type": "string"},
            "streamable": {"type": "boolean"},
        },
    ),
    "output": _object(
        ["path", "url"],
        {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "url": {"type": "string"},
            "path": {"type": "string"},
            "path_prefix": {"type": "string"},
            "type": {"enum": ["FILE", "DIRECTORY"]},
        },
    ),
    "resources": _object(
        [],
        {
            "cpu_cores": {"type": "integer"},
            "preemptible": {"type": "boolean"},
            "ram_gb": {"type": "number"},
            "disk_gb": {"type": "number"},
            "zones": STRINGS,
            "backend_parameters": STRING_MAP,
            "backend_parameters_strict": {"type": "boolean"},
        },
    ),
    "executor": _object(
        ["image", "command"],
        {
            "image": {"type": "string"},
            "command": STRINGS,
            "workdir": {"type": "string"},
            "stdin": {"type": "string"},
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "env": STRING_MAP,
            "ignore_error": {"type": "boolean"},
        },
    ),
    "executor_log": _object(
        ["exit_code"],
        {
            "start_time": TIME,
            "end_time": TIME,
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "exit_code": {"type": "integer"},
        },
    ),
    "output_file_log": _object(
        ["url", "path", "size_bytes"],
        {
            "url": {"type": "string"},
            "path": {"type": "string"},
            "size_bytes": {"type": "string", "pattern": r"^\d+$"},
        },
    ),
    "task_log": _object(
        ["logs", "outputs"],
        {
            "logs": {"type": "array", "items": {"$ref": "#/$defs/executor_log"}},
            "metadata": STRING_MAP,
            "start_time": TIME,
            "end_time": TIME,
            "outputs": {"type": "array", "items": {"$ref": "#/$defs/output_file_log"}},
            "system_logs": STRINGS,
        },
    ),
    "task": _object(
        ["id", "state"],
        {
            "id": {"type": "string"},
            "state": {"enum": STATES},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": "#/$defs/input"}},
            "outputs": {"type": "array", "items": {"$ref": "#/$defs/output"}},
            "resources": {"$ref": "#/$defs/resources"},
            "executors": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/executor"}},
            "volumes": STRINGS,
            "tags": STRING_MAP,
            "logs": {"type": "array", "items": {"$ref": "#/$defs/task_log"}},
            "creation_time": TIME,
        },
    ),
    "minimal_task": _object(["id", "state"], {"id": {"type": "string"}, "state": {"enum": STATES}}),
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "task": {"$ref": "#/$defs/task"},
    "minimal_task": {"$ref": "#/$defs/minimal_task"},
    "list": _object(
        ["tasks"],
        {
            "tasks": {"type": "array", "items": {"$ref": "#/$defs/task"}},
            "next_page_token": {"type": "string"},
        },
    ),
    "create": _object(["id"], {"id": {"type": "string", "minLength": 1}}),
    "cancel": _object([], {}),
    "service_info": _object(
        ["id", "name", "type", "organization", "version"],
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "type": _object(
                ["group", "artifact", "version"],
                {"group": {"type": "string"}, "artifact": {"const": "tes"}, "version": {"type": "string"}},
            ),
            "description": {"type": "string"},
            "organization": _object(["name", "url"], {"name": {"type": "string"}, "url": {"type": "string"}}),
            "contactUrl": {"type": "string"},
            "documentationUrl": {"type": "string"},
            "createdAt": TIME,
            "updatedAt": TIME,
            "environment": {"type": "string"},
            "version": {"type": "string"},
            "storage": STRINGS,
            "tesResources_backend_parameters": STRINGS,
        },
    ),
}


def validate(kind: str, document: Any) -> None:
    jsonschema.validate(document, {**SCHEMAS[kind], "$defs": DEFS}, cls=jsonschema.Draft202012Validator)


def kind_of(method: str, path: str, query: str) -> str | None:
    """Which schema a successful response to this request must match."""
    if path.endswith("/service-info"):
        return "service_info"
    if path.endswith(":cancel"):
        return "cancel"
    if path.endswith("/tasks"):
        return "create" if method == "POST" else "list"
    if "/tasks/" in path:
        return "task" if "view=BASIC" in query or "view=FULL" in query else "minimal_task"
    return None
