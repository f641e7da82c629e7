from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pytest

from lanworker.core.config import WorkerConfig, build_config
from lanworker.core.errors import ConfigError

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
        "LANWORKER_ALLOW_IMAGE": "busybox:*, alpine",
        "LANWORKER_WORK_ROOT": "/srv/work",
        "LANWORKER_TIMEOUT_S": "2.5",
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
        (NATIVE, {"LANWORKER_CONTROL": "gs://b/p"}, "control_url 'gs://b/p' must be"),
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


def test_every_variable_is_named_after_its_flag() -> None:
    """One rule: LANWORKER_ and the flag's name; the parser and the table agree."""
    from lanworker.cli import build_parser
    from lanworker.core.config import WITHOUT_FLAG, env_table, flag_name

    fields = {spec.name for spec in dataclasses.fields(WorkerConfig)}
    seen: set[str] = set()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("native", "docker", "serve"):
        for action in commands.choices[name]._actions:
            if action.dest in fields and action.option_strings:
                assert f"--{flag_name(action.dest)}" in action.option_strings, (
                    action.dest,
                    action.option_strings,
                )
                seen.add(action.dest)
    assert seen == fields - WITHOUT_FLAG
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert env_table() in readme, "README's table is stale: python3 -m lanworker.core.config prints it"


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({"LANWORKER_TIMEOUT_S": "7"}, "default_timeout_s", 7.0),
        ({"LANWORKER_CONTROL": "/srv/control"}, "control_url", "/srv/control"),
        ({"LANWORKER_EVENTS": "local:/e.db#events"}, "events_url", "local:/e.db#events"),
        ({"LANWORKER_NO_ALLOW_LOCAL_FILES": "1"}, "allow_local_files", False),
        ({"LANWORKER_CONTROL_URL": "/old/name"}, "control_url", "/old/name"),  # still read
    ],
)
def test_variables_named_after_flags_are_read(env: dict[str, str], field: str, value: object) -> None:
    assert getattr(build_config(NATIVE, env), field) == value


def test_unknown_and_old_variables_are_named_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    from lanworker.core.config import check_environment, environment_problems

    env = {"LANWORKER_TIMEOUT": "5", "LANWORKER_CONTROL_URL": "/c", "LANWORKER_QUEUE": "local:/q.db"}
    problems = environment_problems(env)
    assert any("LANWORKER_TIMEOUT matches no option" in p for p in problems)
    assert any("LANWORKER_CONTROL_URL is an old name" in p and "LANWORKER_CONTROL" in p for p in problems)
    assert len(problems) == 2
    with caplog.at_level("WARNING"):
        check_environment(build_config(NATIVE, {}), env)
    assert "LANWORKER_TIMEOUT matches no option" in caplog.text
    with pytest.raises(ConfigError, match="LANWORKER_TIMEOUT"):
        check_environment(build_config({**NATIVE, "strict_env": True}, {}), env)


def test_workers_in_containers_get_ids_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    from lanworker.core.config import default_worker_id

    monkeypatch.setattr(os, "getpid", lambda: 1)  # every container's worker is PID 1
    first, second = default_worker_id(), default_worker_id()
    assert first != second and first.startswith(socket.gethostname() + "-") and not first.endswith("-1")
