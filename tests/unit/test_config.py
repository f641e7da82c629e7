from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lanworker.config import build_config
from lanworker.errors import ConfigError

NATIVE = {"mode": "native", "base_command": ("true",)}


def test_flags_beat_environment_beat_defaults() -> None:
    env = {
        "LANWORKER_CONCURRENCY": "4",
        "LANWORKER_VISIBILITY_TIMEOUT_S": "90",
        "LANWORKER_QUEUE": "local:/q.db",
    }
    config = build_config({**NATIVE, "concurrency": 2}, env)
    assert config.concurrency == 2
    assert config.visibility_timeout_s == 90
    assert config.queue_url == "local:/q.db"
    assert config.wait_time_s == 20


def test_environment_types_are_converted() -> None:
    env = {
        "LANWORKER_KEEP_WORKDIR": "yes",
        "LANWORKER_ALLOW_IMAGES": "busybox:*, alpine",
        "LANWORKER_WORK_ROOT": "/srv/work",
        "LANWORKER_DEFAULT_TIMEOUT_S": "2.5",
    }
    config = build_config({"mode": "docker"}, env)
    assert config.keep_workdir is True
    assert config.allow_images == ("busybox:*", "alpine")
    assert config.work_root == Path("/srv/work")
    assert config.default_timeout_s == 2.5


def test_frozen() -> None:
    config = build_config(NATIVE, {})
    with pytest.raises(AttributeError):
        config.concurrency = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "flags, env, fragment",
    [
        ({"mode": "native"}, {}, "needs a command"),
        ({"mode": "docker"}, {}, "allowlist"),
        (NATIVE, {"LANWORKER_CONCURRENCY": "many"}, "LANWORKER_CONCURRENCY"),
        ({**NATIVE, "wait_time_s": 30}, {}, "wait_time_s"),
        ({**NATIVE, "heartbeat_interval_s": 400.0}, {}, "heartbeat"),
        ({**NATIVE, "control_url": "ftp://host/cancel"}, {}, "control_url 'ftp://host/cancel' must be"),
        (NATIVE, {"LANWORKER_CONTROL_URL": "gs://b/p"}, "control_url 'gs://b/p' must be"),
    ],
)
def test_bad_configuration_is_a_config_error(flags: dict, env: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        build_config(flags, env)


def test_local_files_default_follows_queue_kind() -> None:
    assert build_config(NATIVE, {}).local_files_allowed
    sqs = build_config({**NATIVE, "queue_url": "https://sqs.us-east-1.amazonaws.com/1/q"}, {})
    assert not sqs.local_files_allowed


def test_relative_program_paths_are_made_absolute(tmp_path, monkeypatch) -> None:
    from lanworker.executors.native import NativeExecutor

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".venv/bin").mkdir(parents=True)
    (tmp_path / ".venv/bin/python").symlink_to(sys.executable)
    executor = NativeExecutor((".venv/bin/python", "script.py"), tmp_path)
    assert executor.base_command == (str(tmp_path / ".venv/bin/python"), "script.py")
    assert NativeExecutor(("python3", "x"), tmp_path).base_command == ("python3", "x")


def test_an_unexpected_error_exits_with_the_internal_code(monkeypatch, capsys) -> None:
    from lanworker import cli

    def broken(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "run_validate", broken)
    assert cli.main(["validate", "x.json"]) == cli.EXIT_INTERNAL
    assert "RuntimeError: a bug" in capsys.readouterr().err


def test_client_mode_needs_no_command_or_allowlist() -> None:
    config = build_config({"mode": "client"}, {"LANWORKER_QUEUE": "local:/q.db#jobs"})
    assert config.queue_url == "local:/q.db#jobs"


@pytest.mark.parametrize("control", ["s3://bucket/prefix/", "file:///srv/control", "/srv/control", "control"])
def test_control_locations_on_s3_or_the_filesystem_are_taken(control: str) -> None:
    assert build_config({**NATIVE, "control_url": control}, {}).control_url == control


@pytest.mark.parametrize(
    "url, region",
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs", "eu-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/jobs", "cn-north-1"),
        ("https://ap-south-1.queue.amazonaws.com/123456789012/jobs", "ap-south-1"),
        ("http://127.0.0.1:5000/123456789012/jobs", None),
        ("https://sqs.eu-west-1.amazonaws.com.evil.example/1/q", None),
    ],
)
def test_an_sqs_url_names_its_region(url: str, region: str | None) -> None:
    from lanworker.queues.sqs import region_of

    assert region_of(url) == region


def test_an_sqs_queue_without_any_region_is_a_config_error(monkeypatch, tmp_path) -> None:
    from lanworker.queues.sqs import make_sqs_client

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="no AWS region for http://127"):
        make_sqs_client("http://127.0.0.1:5000/1/q")
    client = make_sqs_client("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs")
    assert client.meta.region_name == "eu-west-1"
