"""deploy/kubernetes, checked offline: every overlay renders (kubectl kustomize), every
document passes kubernetes-validate --strict for the Kubernetes version the README names,
and what a schema cannot see is checked here: KEDA's kinds, the worker's shutdown and
probes, no keys in manifests, and IAM policies equal to what the code calls."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lanworker.core.config import WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["base", "overlays/docker-mode", "overlays/serve", "overlays/serve-embedded"]
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# The trigger's metadata keys as KEDA documents them (scalers/aws-sqs-queue).
SQS_TRIGGER_KEYS = {
    "queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength", "awsRegion", "awsEndpoint",
    "identityOwner", "scaleOnInFlight", "scaleOnDelayed",
}  # fmt: skip


def kubernetes_version() -> str:
    found = re.search(r"Kubernetes (\d+\.\d+)", (ROOT / "README.md").read_text())
    assert found, "the README names no Kubernetes version for deploy/kubernetes"
    return found.group(1) + ".0"


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed: it renders the kustomizations offline")
        pytest.skip("kubectl is not installed; the manifests are not rendered here")
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_passes_kubernetes_validate_strict(overlay: str) -> None:
    import kubernetes_validate

    version = kubernetes_version()
    for document in render(overlay):
        if document["kind"] in KEDA_KINDS:
            continue  # not in the validator's schemas: test_keda_* checks them
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {document['kind']}/{document['metadata']['name']}: {exc.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_credentials_in_any_manifest(overlay: str) -> None:
    text = json.dumps(render(overlay))
    for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "aws_secret"):
        assert secret not in text, f"{overlay} carries {secret}: use IRSA (the ServiceAccount's role)"
    for account in by_kind(render(overlay), "ServiceAccount"):
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def _worker(documents: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [
        d for d in by_kind(documents, "Deployment") if d["metadata"]["name"] == "lanworker-worker"
    ]
    return deployment


def _config(documents: list[dict[str, Any]], name: str) -> dict[str, str]:
    [config] = [d for d in by_kind(documents, "ConfigMap") if d["metadata"]["name"] == name]
    return dict(config["data"])


def test_native_workers_drain_on_sigterm_and_run_locked_down() -> None:
    documents = render("base")
    pod = _worker(documents)["spec"]["template"]["spec"]
    settings = _config(documents, "lanworker-worker")
    grace_s = float(settings.get("LANWORKER_GRACE_PERIOD_S", WorkerConfig.grace_period_s))
    longest_upload_s = 300
    assert pod["terminationGracePeriodSeconds"] >= grace_s + longest_upload_s
    [container] = pod["containers"]
    assert "lifecycle" not in container, "no preStop: SIGTERM is the whole shutdown path"
    assert container["args"][0] == "native"
    port = int(settings["LANWORKER_METRICS_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
        assert ports[container[probe]["httpGet"]["port"]] == port
    assert {"requests", "limits"} <= set(container["resources"])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[settings["LANWORKER_WORK_ROOT"]]]
    [budget] = by_kind(documents, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels(documents).items()


def pod_labels(documents: list[dict[str, Any]]) -> dict[str, str]:
    return dict(_worker(documents)["spec"]["template"]["metadata"]["labels"])


def test_docker_mode_is_an_overlay_with_the_socket_never_the_default() -> None:
    assert "docker.sock" not in json.dumps(render("base"))
    documents = render("overlays/docker-mode")
    pod = _worker(documents)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][0] == "docker"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["docker-socket"]["hostPath"]["path"] == "/var/run/docker.sock"
    work_root = _config(documents, "lanworker-worker")["LANWORKER_WORK_ROOT"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[work_root]]["hostPath"]["path"] == work_root  # the same path on the node
    assert _config(documents, "lanworker-worker")["LANWORKER_ALLOW_IMAGE"]


def test_keda_scales_the_workers_on_the_queue_depth() -> None:
    documents = render("base")
    [scaled] = by_kind(documents, "ScaledObject")
    [authentication] = by_kind(documents, "TriggerAuthentication")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and authentication["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == _worker(documents)["metadata"]["name"]
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] > 1
    [trigger] = spec["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert set(trigger["metadata"]) <= SQS_TRIGGER_KEYS, set(trigger["metadata"]) - SQS_TRIGGER_KEYS
    assert int(trigger["metadata"]["queueLength"]) >= 1
    assert trigger["metadata"]["queueURL"] == _config(documents, "lanworker-worker")["LANWORKER_QUEUE"]
    assert trigger["authenticationRef"]["name"] == authentication["metadata"]["name"]
    assert authentication["spec"]["podIdentity"]["provider"] == "aws"
    for document in (scaled, authentication):
        assert document["metadata"]["namespace"] == "lanworker"


def test_serve_runs_two_replicas_on_dynamodb_and_sqlite_only_alone() -> None:
    documents = render("overlays/serve")
    [serve] = [d for d in by_kind(documents, "Deployment") if d["metadata"]["name"] == "lanworker-serve"]
    assert serve["spec"]["replicas"] == 2
    settings = _config(documents, "lanworker-serve")
    assert settings["LANWORKER_STORE"].startswith("dynamodb://")
    assert settings["LANWORKER_EVENTS"] and settings["LANWORKER_CONTROL"].startswith("s3://")
    pod = serve["spec"]["template"]["spec"]
    [container] = pod["containers"]
    token_file = container["args"][container["args"].index("--auth-token-file") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "secret" in volumes[mounts[os.path.dirname(token_file)]]
    assert by_kind(documents, "Service")[0]["spec"]["selector"] == serve["spec"]["selector"]["matchLabels"]
    embedded = render("overlays/serve-embedded")
    [statefulset] = by_kind(embedded, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1 and statefulset["spec"]["volumeClaimTemplates"]
    assert _config(embedded, "lanworker-serve")["LANWORKER_STORE"].startswith("sqlite:")
    assert not [d for d in by_kind(embedded, "Deployment") if d["metadata"]["name"] == "lanworker-serve"]


# ----------------------------------------------------------------------------- IAM
# What each boto3/botocore call the code makes needs in IAM terms (batch calls need the
# action of their single form; s3transfer's multipart steps need PutObject, and it aborts
# failed uploads; s3direct's signed GET and PUT are GetObject and PutObject).
CALLS = {
    "get_object": "s3:GetObject", "head_object": "s3:GetObject", "put_object": "s3:PutObject",
    "delete_object": "s3:DeleteObject", "list_objects_v2": "s3:ListBucket",
    "TransferManager": "s3:PutObject s3:AbortMultipartUpload",
    '_signed("GET"': "s3:GetObject", '"PUT", bucket': "s3:PutObject",
    "receive_message": "sqs:ReceiveMessage", "delete_message": "sqs:DeleteMessage",
    "send_message": "sqs:SendMessage", "change_message_visibility": "sqs:ChangeMessageVisibility",
    "get_queue_attributes": "sqs:GetQueueAttributes", "get_queue_url": "sqs:GetQueueUrl",
    "publish(": "sns:Publish",
    "describe_table": "dynamodb:DescribeTable", "create_table": "dynamodb:CreateTable",
    "get_item": "dynamodb:GetItem", "put_item": "dynamodb:PutItem", "delete_item": "dynamodb:DeleteItem",
    "query(": "dynamodb:Query", '"scan"': "dynamodb:Scan", "batch_get_item": "dynamodb:BatchGetItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
    # TransactWriteItems is authorised per item: each Put, Update and Delete in it
    '"Put":': "dynamodb:PutItem", '"Update":': "dynamodb:UpdateItem", '"Delete":': "dynamodb:DeleteItem",
}  # fmt: skip
# Which code each component runs against AWS (modules, or one function's source).
COMPONENTS = {
    "worker": ["storage/__init__.py", "storage/s3direct.py", "queues/sqs.py", "reporting/results.py"],
    "translator": ["queues/sqs.py"],
    "serve": ["tes/store/dynamo.py", "queues/sqs.py", ('"PUT", bucket', "request_cancel")],
}


def called_actions(component: str) -> set[str]:
    found: set[str] = set()
    for part in COMPONENTS[component]:
        if isinstance(part, tuple):  # (a call, the function that makes it)
            found |= set(CALLS[part[0]].split())
            continue
        source = (ROOT / "lanworker" / part).read_text()
        found |= {action for call, actions in CALLS.items() if call in source for action in actions.split()}
    return found


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_each_iam_policy_grants_exactly_what_the_code_calls(component: str) -> None:
    policy = json.loads((DEPLOY / "iam" / f"{component}-policy.json").read_text())
    granted = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert all("*" not in action for action in granted), "no wildcard actions"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and statement["Resource"] and statement["Resource"] != "*"
    assert granted == called_actions(component), (
        f"more than the code needs: {sorted(granted - called_actions(component))}; "
        f"missing: {sorted(called_actions(component) - granted)}"
    )
