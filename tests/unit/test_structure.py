"""The package's shape: layers that only import downwards, no import cycles, leaves stay
leaves, schemas ship inside.

The layers, lowest first; a module may import its own package and any lower layer:

    core -> message -> queues, storage -> reporting -> pipeline, executors, tes -> web
         -> loop -> translator -> serve -> cli, testing

Packages on one layer do not import each other, with one exception: an executor sees the
job's workspace (`pipeline.workspace`), and the pipeline calls executors through
`executors.base`. tes and web never import pipeline or loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lanworker"

LAYERS = [
    {"lanworker", "core"},
    {"message"},
    {"queues", "storage"},
    {"reporting"},
    {"pipeline", "executors", "tes"},
    {"web"},
    {"loop"},
    {"translator"},
    {"serve"},
    {"cli", "testing"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
ACROSS_A_LAYER = {("executors", "lanworker.pipeline.workspace"), ("pipeline", "lanworker.executors.base")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.AST) -> set[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lanworker"):
        # `from lanworker.web import pages` imports lanworker.web.pages when that is a module
        submodules = {f"{node.module}.{alias.name}" for alias in node.names}
        return {node.module} | {name for name in submodules if source_of(name) is not None}
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.startswith("lanworker")}
    return set()


def source_of(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(everywhere: bool = False) -> dict[str, set[str]]:
    """module -> lanworker modules it imports at module level, `if TYPE_CHECKING:` blocks
    included; with everywhere, also the imports inside functions."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        if everywhere:
            nodes: list[ast.AST] = list(ast.walk(tree))
        else:
            nodes = list(tree.body)
            nodes += [inner for node in tree.body if is_type_checking(node) for inner in node.body]
        module = module_name(path)
        graph[module] = set().union(*map(imported, nodes)) - {module}
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_package_has_a_layer() -> None:
    assert {package_of(module) for module in imports()} <= set(RANK)


def test_layers_import_only_downwards() -> None:
    wrong = []
    for module, targets in sorted(imports(everywhere=True).items()):
        package = package_of(module)
        for target in sorted(targets):
            other = package_of(target)
            if other == package or RANK[other] < RANK[package] or (package, target) in ACROSS_A_LAYER:
                continue
            wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_tes_and_web_never_reach_into_the_pipeline_or_the_loop() -> None:
    for module, targets in imports(everywhere=True).items():
        if package_of(module) in {"tes", "web"}:
            assert not {package_of(target) for target in targets} & {"pipeline", "loop", "executors"}, module


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
    http(s):// inputs load them. prometheus_client and http.server (a fifth of what is left)
    load only with a metrics port. Run in a fresh interpreter, where nothing else did."""
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
clients = {{"botocore", "boto3", "requests", "urllib3", "prometheus_client", "http"}}
print(sorted({{name.split(".")[0] for name in sys.modules}} & clients))
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


def test_the_shipped_compiled_schemas_are_current() -> None:
    """A schema edited without `python -m lanworker.message.schemacode` still works (it is
    compiled at start-up), but each worker then pays for it."""
    from lanworker.message.schemacode import SCHEMAS, precompiled

    assert [name for name in SCHEMAS if precompiled(name) is None] == []


def test_no_function_takes_more_than_five_parameters() -> None:
    """Beside self and cls: a job travels as one JobContext, settings as one dataclass."""
    crowded = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                names = [argument.arg for argument in arguments if argument.arg not in ("self", "cls")]
                if len(names) > 5:
                    crowded.append(f"{module_name(path)}.{node.name}: {len(names)}")
    assert crowded == []


def test_argparse_lives_only_in_the_cli() -> None:
    """Domain modules take config objects; flags and exit codes are the CLI's business."""
    users = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(alias.name == "argparse" for alias in node.names):
                users.add(module_name(path))
    assert {package_of(module) for module in users} == {"cli"}
