"""Nextflow and Cromwell on `serve` (issue 20): neither can be installed here, so these build
the task JSON each one sends, as its TES code builds it, and call the API in its order.

- Nextflow (nf-ga4gh `TesTaskHandler`): the work dir on S3; one executor
  `bash -o pipefail -c "bash /work/.command.run 2>&1 | tee /work/.command.log"` with workdir
  `/work`; inputs `.command.sh`, `.command.run` and each staged file at `/work/NAME`;
  outputs `.command.out`, `.command.err`, `.command.log`, `.exitcode` and the declared files
  (a glob as `path_prefix: /work` with the work dir as url); `ram_gb` a fraction. It polls
  `GET /v1/tasks/ID` (no view: MINIMAL) until started and finished, then reads the FULL view
  for the exit code, and the files back from the work dir.
- Cromwell (`supportedBackends/tes` `TesTask`): everything under
  `/cromwell-executions/WF/ID/call-NAME/execution`; the command script as an input there,
  `/bin/bash SCRIPT` with the executor's stdout and stderr files there, outputs `rc`,
  `stdout`, `stderr`, `script` and the call's files; inputs of a later call under its
  `inputs/` dir. The script writes `rc` itself, so a failing command is a COMPLETE task whose
  `rc` says so; Cromwell polls with `view=MINIMAL`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]  # the first run builds the base image

FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
NXF_WORK = "/work"

# What Nextflow's wrapper does with the files it reads back: the script's stdout and stderr
# into .command.out/.command.err, its exit status into .exitcode (TesBashBuilder's wrapper,
# cut to that file protocol).
NEXTFLOW_RUN = """#!/bin/bash
NXF_CHDIR=/work
cd "$NXF_CHDIR"
bash .command.sh < /dev/null > .command.out 2> .command.err
ret=$?
printf '%s' "$ret" > .exitcode
exit "$ret"
"""


class Client:
    """The calls an engine makes, under the API prefix it uses."""

    def __init__(self, url: str, prefix: str, poll_view: str | None) -> None:
        self.base = f"{url}{prefix}/tasks"
        self.poll_view = poll_view  # Nextflow sends none (MINIMAL), Cromwell MINIMAL

    def create(self, task: dict[str, Any]) -> str:
        response = requests.post(self.base, json=task, timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def get(self, task_id: str, view: str | None = None) -> dict[str, Any]:
        params = {"view": view} if view else {}
        response = requests.get(f"{self.base}/{task_id}", params=params, timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def cancel(self, task_id: str) -> None:
        response = requests.post(f"{self.base}/{task_id}:cancel", timeout=30)
        assert response.status_code == 200, response.text

    def wait_for(self, task_id: str, states: tuple[str, ...], timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            minimal = self.get(task_id, self.poll_view)
            assert set(minimal) == {"id", "state"}, minimal  # MINIMAL is exactly these
            if minimal["state"] in states:
                return minimal
            time.sleep(0.5)
        raise AssertionError(f"task {task_id} never reached {states}: {self.get(task_id, 'FULL')}")


def put(s3: Any, url: str, body: str) -> None:
    bucket, _, key = url[len("s3://") :].partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())


def read(s3: Any, url: str) -> str:
    bucket, _, key = url[len("s3://") :].partition("/")
    return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())


# --------------------------------------------------------------------- Nextflow
def nextflow_task(
    s3: Any, workdir: str, image: str, script: str, staged: dict[str, str], declared: list[str]
) -> dict[str, Any]:
    """TesTaskHandler.newTesTask for a process whose work dir is `workdir` (s3://...)."""
    put(s3, f"{workdir}/.command.sh", script)
    put(s3, f"{workdir}/.command.run", NEXTFLOW_RUN)

    def output(name: str) -> dict[str, Any]:
        if "*" in name or "?" in name:
            return {"path": f"{NXF_WORK}/{name}", "path_prefix": NXF_WORK, "url": workdir, "type": "FILE"}
        return {"path": f"{NXF_WORK}/{name}", "url": f"{workdir}/{name}"}

    inputs = [
        {"url": f"{workdir}/.command.sh", "path": f"{NXF_WORK}/.command.sh", "type": "FILE"},
        {"url": f"{workdir}/.command.run", "path": f"{NXF_WORK}/.command.run", "type": "FILE"},
        *({"url": url, "path": f"{NXF_WORK}/{name}", "type": "FILE"} for name, url in staged.items()),
    ]
    control = [output(name) for name in (".command.out", ".command.err", ".command.log", ".exitcode")]
    return {
        "name": f"{workdir.rsplit('/', 1)[-1][:6]} (1)",
        "inputs": inputs,
        "outputs": control + [output(name) for name in declared],
        "resources": {"cpu_cores": 1, "ram_gb": 0.5},
        "executors": [
            {
                "command": ["bash", "-o", "pipefail", "-c", f"bash {NXF_WORK}/.command.run 2>&1 | tee {NXF_WORK}/.command.log"],
                "image": image,
                "workdir": NXF_WORK,
            }
        ],
        "tags": {},
    }  # fmt: skip


def nextflow_workdir(bucket: str) -> str:
    digest = uuid.uuid4().hex
    return f"s3://{bucket}/work/{digest[:2]}/{digest[2:]}"


def run_nextflow_process(client: Client, task: dict[str, Any]) -> dict[str, Any]:
    """submit, checkIfRunning, checkIfCompleted, then readExitStatus's FULL view."""
    task_id = client.create(task)
    client.wait_for(task_id, ("INITIALIZING", "RUNNING", "PAUSED", *FINAL))
    client.wait_for(task_id, FINAL)
    return client.get(task_id, "FULL")


def test_a_two_process_nextflow_pipeline_with_its_work_dir_on_s3(
    engine_tes_url: str, debian_image: str, s3: Any, bucket_factory: Callable[[], str]
) -> None:
    bucket = bucket_factory()
    client = Client(engine_tes_url, "/v1", None)
    split_dir, sort_dir = nextflow_workdir(bucket), nextflow_workdir(bucket)
    split = nextflow_task(
        s3, split_dir, debian_image,
        "printf 'b\\na\\n' > letters.txt; printf x > part_1.txt; printf y > part_2.txt; echo split done",
        staged={}, declared=["letters.txt", "part_*.txt"],
    )  # fmt: skip
    first = run_nextflow_process(client, split)
    assert first["state"] == "COMPLETE", first
    sort = nextflow_task(
        s3, sort_dir, debian_image, "sort letters.txt > sorted.txt; echo to stderr >&2",
        staged={"letters.txt": f"{split_dir}/letters.txt"}, declared=["sorted.txt"],
    )  # fmt: skip
    second = run_nextflow_process(client, sort)
    assert second["state"] == "COMPLETE", second

    assert read(s3, f"{split_dir}/.exitcode") == "0"
    assert read(s3, f"{split_dir}/.command.out") == "split done\n"
    assert read(s3, f"{split_dir}/part_1.txt") + read(s3, f"{split_dir}/part_2.txt") == "xy"
    assert read(s3, f"{sort_dir}/sorted.txt") == "a\nb\n"
    assert read(s3, f"{sort_dir}/.command.err") == "to stderr\n"
    assert read(s3, f"{sort_dir}/.exitcode") == "0"
    uploaded = {entry["url"] for entry in second["logs"][0]["outputs"]}
    assert f"{sort_dir}/sorted.txt" in uploaded and f"{sort_dir}/.command.log" in uploaded


def test_a_failing_nextflow_process_gives_its_exit_code_both_ways(
    engine_tes_url: str, debian_image: str, s3: Any, bucket_factory: Callable[[], str]
) -> None:
    workdir = nextflow_workdir(bucket_factory())
    task = nextflow_task(s3, workdir, debian_image, "echo partial > out.txt; exit 2", {}, ["out.txt"])
    full = run_nextflow_process(Client(engine_tes_url, "/v1", None), task)
    assert full["state"] == "EXECUTOR_ERROR", full
    assert full["logs"][0]["logs"][0]["exit_code"] == 2  # readExitStatus
    assert read(s3, f"{workdir}/.exitcode") == "2"  # uploaded after the failure too
    assert read(s3, f"{workdir}/out.txt") == "partial\n"


def test_nextflow_kills_a_running_process(
    engine_tes_url: str, debian_image: str, s3: Any, bucket_factory: Callable[[], str]
) -> None:
    client = Client(engine_tes_url, "/v1", None)
    task = nextflow_task(s3, nextflow_workdir(bucket_factory()), debian_image, "sleep 300", {}, [])
    task_id = client.create(task)
    client.wait_for(task_id, ("RUNNING",))
    client.cancel(task_id)
    assert client.wait_for(task_id, FINAL, timeout_s=60)["state"] == "CANCELED"


# --------------------------------------------------------------------- Cromwell
def cromwell_call(
    s3: Any, root: tuple[str, str], call: str, image: str, command: str, files: dict[str, str]
) -> tuple[dict[str, Any], str]:
    """TesTask for call `call` of workflow run `root` = (storage root, container root) in
    GRANULAR output mode; `files` are the call's input files (name -> url). Returns the task
    and the call's storage execution dir."""
    storage_root, container_root = root
    storage = f"{storage_root}/call-{call}/execution"
    container = f"{container_root}/call-{call}/execution"
    script = f"""#!/bin/bash
cd {container}
(
cd {container}
{command}
)
echo $? > {container}/rc.tmp
mv {container}/rc.tmp {container}/rc
"""
    put(s3, f"{storage}/script", script)
    inputs = [
        {
            "name": f"two_step.{call}.in.{index}",
            "description": f"two_step.two_step.{call}.in.{index}",
            "url": url,
            "path": f"{container_root}/call-{call}/inputs/{uuid.uuid4().hex[:8]}/{name}",
            "type": "FILE",
        }
        for index, (name, url) in enumerate(files.items())
    ]
    inputs.append({
        "name": "commandScript", "description": f"two_step.{call}.commandScript",
        "url": f"{storage}/script", "path": f"{container}/script", "type": "FILE",
    })  # fmt: skip
    outputs = [
        {"name": name, "description": f"two_step.{call}.{name}", "url": f"{storage}/{name}",
         "path": f"{container}/{name}", "type": "FILE"}
        for name in ("rc", "stdout", "stderr", "script", "out.txt")
    ]  # fmt: skip
    task = {
        "name": f"two_step.{call}",
        "description": f"BackendJobDescriptor(two_step.{call}:NA:1)",
        "inputs": inputs,
        "outputs": outputs,
        "resources": {"cpu_cores": 1, "ram_gb": 2.0, "disk_gb": 10.0, "preemptible": False},
        "executors": [{
            "image": image, "command": ["/bin/bash", f"{container}/script"],
            "stdout": f"{container}/stdout", "stderr": f"{container}/stderr",
        }],
    }  # fmt: skip
    return task, storage


def run_cromwell_call(client: Client, task: dict[str, Any]) -> dict[str, Any]:
    task_id = client.create(task)
    client.wait_for(task_id, FINAL)
    return client.get(task_id, "FULL")


def test_a_two_call_cromwell_workflow_reads_rc_stdout_and_stderr_back(
    engine_tes_url: str, debian_image: str, s3: Any, bucket_factory: Callable[[], str]
) -> None:
    bucket, run = bucket_factory(), uuid.uuid4()
    root = (f"s3://{bucket}/cromwell-executions/two_step/{run}", f"/cromwell-executions/two_step/{run}")
    client = Client(engine_tes_url, "/ga4gh/tes/v1", "MINIMAL")
    first_task, first = cromwell_call(
        s3, root, "first", debian_image, "echo hello > out.txt; echo said hello; echo warned >&2", {}
    )
    assert run_cromwell_call(client, first_task)["state"] == "COMPLETE"
    second_task, second = cromwell_call(
        s3, root, "second", debian_image, 'tr a-z A-Z < "$(ls ../inputs/*/out.txt)" > out.txt',
        {"out.txt": f"{first}/out.txt"},
    )  # fmt: skip
    assert run_cromwell_call(client, second_task)["state"] == "COMPLETE"

    assert (read(s3, f"{first}/rc"), read(s3, f"{first}/stdout"), read(s3, f"{first}/stderr")) == (
        "0\n", "said hello\n", "warned\n",
    )  # fmt: skip
    assert read(s3, f"{second}/out.txt") == "HELLO\n"
    assert read(s3, f"{second}/rc") == "0\n"


def test_a_failing_cromwell_command_is_read_from_rc(
    engine_tes_url: str, debian_image: str, s3: Any, bucket_factory: Callable[[], str]
) -> None:
    bucket, run = bucket_factory(), uuid.uuid4()
    root = (f"s3://{bucket}/cromwell-executions/two_step/{run}", f"/cromwell-executions/two_step/{run}")
    task, storage = cromwell_call(
        s3, root, "first", debian_image, "echo partial > out.txt; echo oops >&2; exit 3", {}
    )
    full = run_cromwell_call(Client(engine_tes_url, "/ga4gh/tes/v1", "MINIMAL"), task)
    assert full["state"] == "COMPLETE", full  # the script writes rc and ends well
    assert read(s3, f"{storage}/rc") == "3\n" and read(s3, f"{storage}/stderr") == "oops\n"
