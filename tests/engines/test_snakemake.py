"""Snakemake runs unchanged on `serve` (issue 20): the engine's own code, as its users run it.

Snakemake 9 with its TES executor plugin (0.1.3, in a venv of its own: it pins py-tes 0.4.x)
and its S3 storage plugin, from the host, against a real `serve` with docker workers and
moto_server. Each task runs the plugin's job script in an image built from the project's
Debian base (scripts/snakemake-env.sh): the script `pip install`s the storage plugin from
the image's wheelhouse and runs `python -m snakemake`, which reads and writes S3 itself, so
tasks need a network; here that is `--task-network host` and 127.0.0.1 endpoints only.
"""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.moto import MotoServer
from tests.helpers.processes import cli_env

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]  # the first run builds an image

SAMPLES = ("a", "b", "c")

# Four rules with wildcards: a fan-out over the samples, a rule with two inputs, a gather.
SNAKEFILE = """
SAMPLES = ["a", "b", "c"]

rule all:
    input: "summary/total.txt"

rule clean:
    input: "input/{sample}.txt"
    output: "clean/{sample}.txt"
    shell: "sort -u {input} > {output}"

rule shout:
    input: "clean/{sample}.txt"
    output: "shout/{sample}.txt"
    shell: "tr a-z A-Z < {input} > {output}"

rule pair:
    input: low="clean/{sample}.txt", high="shout/{sample}.txt"
    output: "pair/{sample}.txt"
    shell: "paste -d' ' {input.low} {input.high} > {output}"

rule gather:
    input: expand("pair/{sample}.txt", sample=SAMPLES)
    output: "summary/total.txt"
    shell: "cat {input} > {output}"
"""

FAILING_SNAKEFILE = """
rule all:
    input: "broken/out.txt"

rule broken:
    output: "broken/out.txt"
    shell: "echo about to fail; exit 3"
"""


@dataclass(frozen=True)
class Snakemake:
    """The snakemake command line a user types, pointed at this test's serve and moto."""

    executable: Path
    image: str
    tes_url: str
    moto: MotoServer
    workspace: Path  # the plugin reads $GITHUB_WORKSPACE/funnel.log when a task fails

    def run(self, workdir: Path, bucket: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.executable), "--executor", "tes", "--tes-url", self.tes_url,
                "--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{bucket}",
                "--storage-s3-endpoint-url", self.moto.endpoint, "--container-image", self.image,
                "--jobs", "4", "--seconds-between-status-checks", "2",
            ],
            cwd=workdir, capture_output=True, text=True, timeout=timeout_s,
            env=cli_env(
                **self.moto.environment(),
                SNAKEMAKE_STORAGE_S3_ACCESS_KEY="testing",
                SNAKEMAKE_STORAGE_S3_SECRET_KEY="testing",
                GITHUB_WORKSPACE=str(self.workspace),
                HOME=str(self.workspace),
            ),
        )  # fmt: skip


@pytest.fixture(scope="module")
def snakemake(
    engine_tes_url: str, moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Snakemake:
    built = subprocess.run(
        ["bash", "scripts/snakemake-env.sh"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, built.stderr[-4000:]
    image = built.stdout.strip().splitlines()[-1]
    workspace = tmp_path_factory.mktemp("github-workspace")
    (workspace / "funnel.log").write_text("")
    executable = REPO_ROOT / ".venv-snakemake" / "bin" / "snakemake"
    return Snakemake(executable, image, engine_tes_url, moto_server, workspace)


def workflow(tmp_path: Path, snakefile: str) -> Path:
    workdir = tmp_path / "workflow"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(textwrap.dedent(snakefile))
    return workdir


def text(s3: Any, bucket: str, key: str) -> str:
    return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def test_a_workflow_runs_to_the_end_with_every_output_in_s3(
    snakemake: Snakemake, s3: Any, bucket_factory: Any, tmp_path: Path
) -> None:
    bucket = bucket_factory()
    for sample in SAMPLES:
        s3.put_object(
            Bucket=bucket, Key=f"input/{sample}.txt", Body=f"{sample}2\n{sample}1\n{sample}1\n".encode()
        )
    workdir = workflow(tmp_path, SNAKEFILE)

    first = snakemake.run(workdir, bucket)
    assert first.returncode == 0, first.stderr[-6000:]
    for sample in SAMPLES:
        assert text(s3, bucket, f"clean/{sample}.txt") == f"{sample}1\n{sample}2\n"
        assert text(s3, bucket, f"shout/{sample}.txt") == f"{sample.upper()}1\n{sample.upper()}2\n"
    expected = "".join(f"{sample}1 {sample.upper()}1\n{sample}2 {sample.upper()}2\n" for sample in SAMPLES)
    assert text(s3, bucket, "summary/total.txt") == expected
    assert "steps (100%) done" in first.stderr, first.stderr[-3000:]

    again = snakemake.run(workdir, bucket)
    assert again.returncode == 0, again.stderr[-6000:]
    assert "Nothing to be done" in again.stderr, again.stderr[-3000:]


def test_a_rule_that_exits_non_zero_is_reported_as_that_rules_failure(
    snakemake: Snakemake, s3: Any, bucket_factory: Any, tmp_path: Path
) -> None:
    bucket = bucket_factory()
    # The S3 plugin deletes a bucket that its cleanup leaves empty: keep something in it.
    s3.put_object(Bucket=bucket, Key="unrelated.txt", Body=b"kept")
    failed = snakemake.run(workflow(tmp_path, FAILING_SNAKEFILE), bucket)
    assert failed.returncode != 0
    assert "Error in rule broken" in failed.stderr, failed.stderr[-6000:]
    assert "exit status 3" in failed.stderr or "exit code" in failed.stderr, failed.stderr[-6000:]
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [item["Key"] for item in listed] == ["unrelated.txt"]  # no partial output left behind
