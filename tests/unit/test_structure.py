"""The package's shape: no import cycles, leaves stay leaves, schemas ship inside."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lanworker"


def imports() -> dict[str, set[str]]:
    """module -> lanworker modules it imports at module level (function-level imports excluded)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lanworker"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("lanworker")}
        graph[module] = targets - {module}
    return graph


def test_no_import_cycles() -> None:
    graph = imports()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            # a subpackage's modules import their own package's siblings; that is not a cycle
            cycle = path[path.index(module) :]
            if not all(step.startswith(module + ".") or step == module for step in cycle):
                pytest.fail("import cycle: " + " -> ".join([*cycle, module]))
            return
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


@pytest.mark.parametrize(
    "leaf", ["lanworker.core.exitcodes", "lanworker.core.stops", "lanworker.core.addresses"]
)
def test_leaves_import_nothing_of_ours(leaf: str) -> None:
    assert imports()[leaf] == set()


def test_errors_holds_error_classes_only() -> None:
    assert imports()["lanworker.core.errors"] <= {"lanworker.core.stops"}
    assert "boto" not in (PACKAGE / "core" / "errors.py").read_text()


def test_a_worker_without_s3_or_http_jobs_never_loads_their_clients(tmp_path: Path) -> None:
    """botocore, requests and urllib3 are a third of start-up: only jobs that name s3:// or
    http(s):// inputs load them. Run in a fresh interpreter, where nothing else did."""
    script = f"""
import json, sys
from lanworker.cli import main
from lanworker.queues import LocalQueue
queue = LocalQueue("local:{tmp_path}/q.db#jobs")
local = "{tmp_path}/in.txt"
open(local, "w").write("x")
queue.send(json.dumps({{"service": "cat", "command": {{"arguments": [{{"type": "input", "value": local}}]}}}}))
code = main(["native", "--queue", queue.url, "--once", "--wait-time-s", "0",
             "--work-root", "{tmp_path}/w", "--results", queue.sibling("results").url, "--", "cat"])
[reply] = queue.sibling("results").receive(1, 0, 30)
assert code == 0 and json.loads(reply.body)["state"] == "succeeded", reply.body
print(sorted({{name.split(".")[0] for name in sys.modules}} & {{"botocore", "boto3", "requests", "urllib3"}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=PACKAGE.parent
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_config_does_not_pull_in_the_queues() -> None:
    assert imports()["lanworker.core.config"] == {"lanworker.core.errors"}


def test_schemas_are_package_data_and_valid_schemas() -> None:
    import jsonschema

    from lanworker.message.command import load_schema

    for name in ("command.schema.json", "rules.schema.json", "services.schema.json"):
        assert load_schema(name)["$schema"].startswith("https://json-schema.org/")
        jsonschema.Draft202012Validator.check_schema(load_schema(name))
    assert (PACKAGE.parent / "schemas").resolve() == PACKAGE / "schemas"
