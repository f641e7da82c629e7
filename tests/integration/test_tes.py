"""GA4GH TES through py-tes against a real `serve` process, a real engine and moto_server."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import tes

from lanworker.core import exitcodes
from tests.helpers import tes_schemas
from tests.helpers.moto import MotoServer, free_port
from tests.helpers.processes import answers, cli_env, run_cli, start_cli, wait_until

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def validated_responses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every successful TES response any test receives is checked against the spec's schemas."""
    seen: list[str] = []
    originals = {name: getattr(requests, name) for name in ("get", "post")}

    def checking(name: str) -> Callable[..., requests.Response]:
        def call(url: str, *args: Any, **kwargs: Any) -> requests.Response:
            response = originals[name](url, *args, **kwargs)
            parts = urlsplit(response.url)
            kind = tes_schemas.kind_of(name.upper(), parts.path, parts.query)
            if kind and response.status_code == 200:
                tes_schemas.validate(kind, response.json())
                seen.append(kind)
            return response

        return call

    for name in originals:
        monkeypatch.setattr(requests, name, checking(name))
    yield seen


@pytest.fixture
def client(tes_url: str) -> tes.HTTPClient:
    return tes.HTTPClient(tes_url, timeout=30)


def busybox(script: str, **extra: Any) -> tes.Executor:
    return tes.Executor(image="lanworker-test/busybox:1", command=["sh", "-c", script], **extra)


def finished(client: tes.HTTPClient, task_id: str, timeout_s: float = 120) -> tes.Task:
    return client.wait(task_id, timeout=timeout_s)


def test_service_info_on_every_prefix(tes_url: str, client: tes.HTTPClient) -> None:
    info = client.get_service_info()
    assert info.type["artifact"] == "tes" and "s3://" in info.storage
    for prefix in ("/ga4gh/tes/v1", "/v1", ""):
        assert requests.get(f"{tes_url}{prefix}/service-info", timeout=5).json()["name"] == "lanworker"


def test_a_task_with_s3_and_content_inputs_directory_and_wildcard_outputs(
    client: tes.HTTPClient, s3: Any, bucket_factory: Callable[..., str], validated_responses: list[str]
) -> None:
    bucket = bucket_factory()
    s3.put_object(Bucket=bucket, Key="in/data.txt", Body=b"from s3\n")
    s3.put_object(Bucket=bucket, Key="in/dir/a.txt", Body=b"A")
    s3.put_object(Bucket=bucket, Key="in/dir/sub/b.txt", Body=b"B")
    for marker in ("in/dir/", "in/dir/empty/"):  # folder markers, as the S3 console makes them
        s3.put_object(Bucket=bucket, Key=marker, Body=b"")
    task = tes.Task(
        name="full-task",
        tags={"project": "lanworker", "run": "1"},
        inputs=[
            tes.Input(path="/inputs/data.txt", url=f"s3://{bucket}/in/data.txt"),
            tes.Input(path="/inputs/script.sh", content="tr a-z A-Z < /inputs/data.txt > /vol/upper.txt\n"),
            tes.Input(path="/inputs/dir", url=f"s3://{bucket}/in/dir", type="DIRECTORY"),
        ],
        volumes=["/vol"],
        executors=[
            busybox("sh /inputs/script.sh && test -d /inputs/dir/empty && cat /inputs/dir/sub/b.txt"),
            busybox(
                "mkdir -p /out/tree/deep && cp /vol/upper.txt /out/result.txt && echo t > /out/tree/deep/t.txt "
                "&& echo 1 > /out/x.log && echo 2 > /out/y.log",
                stdout="/out/stdout.txt",
            ),
        ],
        outputs=[
            tes.Output(path="/out/result.txt", url=f"s3://{bucket}/results/result.txt"),
            tes.Output(path="/out/tree", url=f"s3://{bucket}/results/tree", type="DIRECTORY"),
            tes.Output(path="/out/*.log", path_prefix="/out/", url=f"s3://{bucket}/results/logs/"),
            tes.Output(path="/out/*.missing", path_prefix="/out/", url=f"s3://{bucket}/results/none/"),
        ],
        resources=tes.Resources(cpu_cores=1, ram_gb=0.5, disk_gb=1.0),
    )
    task_id = client.create_task(task)
    assert finished(client, task_id).state == "COMPLETE"
    read = lambda key: s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # noqa: E731
    assert read("results/result.txt") == b"FROM S3\n"
    assert read("results/tree/deep/t.txt") == b"t\n"
    assert read("results/logs/x.log") == b"1\n" and read("results/logs/y.log") == b"2\n"
    full = client.get_task(task_id, view="FULL")
    [log] = full.logs
    assert [executor.exit_code for executor in log.logs] == [0, 0]
    assert log.logs[0].stdout == "B"
    assert {o.path: o.size_bytes for o in log.outputs}["/out/result.txt"] == 8
    assert any("disk_gb" in line for line in log.system_logs)
    assert full.inputs[1].content.startswith("tr a-z")
    basic = client.get_task(task_id, view="BASIC")
    assert basic.inputs[1].content is None and basic.logs[0].logs[0].stdout is None
    assert basic.logs[0].system_logs is None
    minimal = requests.get(f"{client.url}/ga4gh/tes/v1/tasks/{task_id}", timeout=5).json()
    assert minimal == {"id": task_id, "state": "COMPLETE"}
    assert {"create", "task", "minimal_task"} <= set(validated_responses)


def test_a_failing_executor_is_an_executor_error(client: tes.HTTPClient) -> None:
    task_id = client.create_task(
        tes.Task(executors=[busybox("echo partial; echo broken >&2; exit 7"), busybox("echo never")])
    )
    task = finished(client, task_id)
    assert task.state == "EXECUTOR_ERROR"
    full = client.get_task(task_id, view="FULL")
    [executor_log] = full.logs[0].logs
    assert executor_log.exit_code == 7 and executor_log.stderr == "broken\n"


def test_an_image_outside_the_embedded_workers_allowlist_is_refused_at_submit(client: tes.HTTPClient) -> None:
    """It was accepted and then ended SYSTEM_ERROR when a worker dead-lettered it."""
    with pytest.raises(requests.HTTPError) as refused:
        client.create_task(tes.Task(executors=[tes.Executor(image="evil/miner:1", command=["mine"])]))
    assert refused.value.response is not None and refused.value.response.status_code == 400
    assert "image 'evil/miner:1' is not allowed on this worker" in refused.value.response.json()["msg"]


def test_cancel_a_running_task(client: tes.HTTPClient, docker_client: Any) -> None:
    task_id = client.create_task(tes.Task(executors=[busybox("sleep 300")]))
    wait_until(lambda: client.get_task(task_id).state == "RUNNING", 60, "the task to run")
    started = time.monotonic()
    client.cancel_task(task_id)
    assert client.get_task(task_id).state in ("CANCELING", "CANCELED")
    wait_until(lambda: client.get_task(task_id).state == "CANCELED", 30, "the task to be canceled")
    assert time.monotonic() - started < 30
    assert docker_client.api.containers(all=True, filters={"label": f"lanworker.job_id={task_id}"}) == []
    client.cancel_task(task_id)  # canceling a finished task changes nothing
    assert client.get_task(task_id).state == "CANCELED"


def test_list_filters_and_pages(client: tes.HTTPClient) -> None:
    run = uuid.uuid4().hex[:8]
    ids = [
        client.create_task(
            tes.Task(name=f"list-{run}-{i}", tags={"run": run, "i": str(i)}, executors=[busybox("true")])
        )
        for i in range(5)
    ]
    for task_id in ids:
        finished(client, task_id)
    api = f"{client.url}/v1/tasks"
    mine = requests.get(api, params={"name_prefix": f"list-{run}", "view": "BASIC"}, timeout=5).json()[
        "tasks"
    ]
    assert [task["id"] for task in mine] == ids[::-1]  # newest first
    pages: list[str] = []
    token = None
    while len(pages) < 5:  # py-tes pages through everything; these five are the newest
        page = client.list_tasks(view="BASIC", page_size=2, page_token=token)
        pages += [task.id for task in page.tasks]
        token = page.next_page_token
        assert token or len(pages) >= 5  # a last page has none (these five alone, run by itself)
    assert pages[:5] == ids[::-1]  # no overlap between pages, nothing missed
    tagged = requests.get(api, params={"tag_key": ["run", "i"], "tag_value": [run, "3"]}, timeout=5).json()[
        "tasks"
    ]
    assert [task["id"] for task in tagged] == [ids[3]]
    any_value = requests.get(api, params={"tag_key": "run", "name_prefix": f"list-{run}"}, timeout=5)
    assert len(any_value.json()["tasks"]) == 5
    assert all(set(task) == {"id", "state"} for task in any_value.json()["tasks"])
    completed = requests.get(api, params={"state": "COMPLETE", "name_prefix": f"list-{run}"}, timeout=5)
    assert len(completed.json()["tasks"]) == 5
    metrics = requests.get(f"{client.url}/metrics", timeout=5).text  # the embedded workers' own
    assert re.search(r'lanworker_jobs_total\{outcome="succeeded"\} ([0-9.]+)', metrics)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"executors": []}, "executors"),
        ({"name": "x"}, "executors"),
        ({"executors": [{"image": "lanworker-test/busybox:1", "command": []}]}, "command"),
        (
            {"executors": [{"image": "i", "command": ["x"]}], "inputs": [{"path": "/x", "url": "ftp://h/x"}]},
            "unsupported scheme",
        ),
        (
            {
                "executors": [{"image": "i", "command": ["x"]}],
                "inputs": [{"path": "relative", "content": "x"}],
            },
            "path",
        ),
        (
            {
                "executors": [{"image": "i", "command": ["x"]}],
                "resources": {"backend_parameters": {"VmSize": "big"}, "backend_parameters_strict": True},
            },
            "VmSize",
        ),
        ({"executors": [{"image": "i", "command": ["x"]}], "volumes": ["/a/../b"]}, "normalised"),
    ],
)
def test_invalid_tasks_are_400(tes_url: str, body: dict[str, Any], fragment: str) -> None:
    response = requests.post(f"{tes_url}/ga4gh/tes/v1/tasks", json=body, timeout=5)
    assert response.status_code == 400 and fragment in response.text, response.text


def test_bad_requests_and_unknown_ids(tes_url: str) -> None:
    api = f"{tes_url}/ga4gh/tes/v1"
    assert requests.get(f"{api}/tasks/no-such-task", timeout=5).status_code == 404
    assert requests.post(f"{api}/tasks/no-such-task:cancel", timeout=5).status_code == 404
    assert requests.get(f"{api}/tasks", params={"page_size": 5000}, timeout=5).status_code == 400
    assert requests.get(f"{api}/tasks", params={"view": "HUGE"}, timeout=5).status_code == 400
    assert requests.get(f"{api}/tasks", params={"page_token": "garbage"}, timeout=5).status_code == 400
    assert requests.post(f"{api}/tasks", data=b"{not json", timeout=5).status_code == 400
    big = requests.post(f"{api}/tasks", data=b"x" * (9 * 1024 * 1024), timeout=30)
    assert big.status_code == 413


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path, moto_server: MotoServer) -> None:
    refused = run_cli("serve", "--host", "0.0.0.0", "--workers", "0", "--state-dir", str(tmp_path))
    assert refused.returncode == exitcodes.EXIT_CONFIG and "--auth-token-file" in refused.stderr
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    port = free_port()
    process = start_cli(
        "serve", "--host", "0.0.0.0", "--port", str(port), "--workers", "0", "--state-dir", str(tmp_path),
        "--auth-token-file", str(token_file), env=cli_env(**moto_server.environment()),
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{url}/healthz"), 30, "serve")
        assert requests.get(f"{url}/ga4gh/tes/v1/tasks", timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert requests.get(f"{url}/ga4gh/tes/v1/tasks", headers=wrong, timeout=5).status_code == 401
        authorised = tes.HTTPClient(url, token="s3cret-token-0123456789")
        assert authorised.list_tasks().tasks == []
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_two_api_nodes_share_a_dynamodb_store(
    moto_server: MotoServer, queue_factory: Callable[..., str], busybox_image: str, tmp_path: Path
) -> None:
    jobs = queue_factory(attributes={"MaximumMessageSize": str(256 * 1024)})  # as queues made before 2025
    events = queue_factory()
    control = f"{tmp_path}/control"
    table = f"tasks-{uuid.uuid4().hex[:8]}"
    env = cli_env(**moto_server.environment())
    common = [
        "--workers",
        "0",
        "--queue",
        jobs,
        "--events",
        events,
        "--store",
        f"dynamodb://{table}",
        "--control",
        control,
    ]
    ports = [free_port(), free_port()]
    nodes = [
        start_cli("serve", "--port", str(port), "--state-dir", str(tmp_path / f"n{port}"), *common, env=env,
                  log_path=tmp_path / f"api-{port}.log")
        for port in ports
    ]  # fmt: skip
    worker = start_cli(
        "docker", "--queue", jobs, "--events", events, "--control", control, "--allow-image", "lanworker-test/*",
        "--work-root", str(tmp_path / "work"), "--wait-time-s", "1", "--heartbeat-interval-s", "1",
        env=env, log_path=tmp_path / "worker.log",
    )  # fmt: skip
    try:
        a, b = (tes.HTTPClient(f"http://127.0.0.1:{port}") for port in ports)
        for port in ports:
            wait_until(lambda port=port: answers(f"http://127.0.0.1:{port}/healthz"), 60, "an API node")
        done = a.create_task(
            tes.Task(name="on-a", executors=[tes.Executor(image=busybox_image, command=["true"])])
        )
        long = a.create_task(
            tes.Task(
                name="on-a-long", executors=[tes.Executor(image=busybox_image, command=["sleep", "300"])]
            )
        )
        assert b.wait(done, timeout=120).state == "COMPLETE"
        assert {task.id for task in b.list_tasks().tasks} >= {done, long}
        wait_until(lambda: b.get_task(long).state == "RUNNING", 60, "the long task to run")
        b.cancel_task(long)
        wait_until(lambda: a.get_task(long).state == "CANCELED", 60, "the cancel to reach node a")
        # Inline content beyond what the queue (256 KiB) or DynamoDB (400 KB) take: a 400 that
        # says so, not a 503 inviting the client to try again.
        for inputs, fragment in ((3, "refused the message"), (5, "a DynamoDB item holds")):
            fat = {
                "executors": [{"image": busybox_image, "command": ["true"]}],
                "inputs": [{"path": f"/data/{n}.txt", "content": "x" * 100_000} for n in range(inputs)],
            }
            refused = requests.post(f"{a.url}/ga4gh/tes/v1/tasks", json=fat, timeout=30)
            assert refused.status_code == 400 and fragment in refused.text, refused.text
    finally:
        for process in (*nodes, worker):
            process.terminate()
        for process in (*nodes, worker):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        print((tmp_path / "worker.log").read_text()[-2000:])
