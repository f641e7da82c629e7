"""Runs each job in a container on a Docker engine, hardened by default.

The job dir is bind-mounted at /job; arguments name paths under /job. stdin, stdout and
stderr travel over one attach socket (non-TTY, so the engine frames stdout and stderr
separately and they are never interleaved). The worker enforces timeouts itself: the
SDK's timeouts are only HTTP timeouts.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests.exceptions
import yaml
from docker.utils.socket import frames_iter

from lanworker.core.clock import utc_now
from lanworker.core.config import WorkerConfig
from lanworker.core.errors import CannotStart, ConfigError, InvalidMessage, JobFailed, TransientError
from lanworker.core.retries import Backoff
from lanworker.core.stops import StopReason
from lanworker.executors.base import (
    EXIT_SIGKILL,
    CapturedStream,
    ExecutionRequest,
    ExecutionResult,
    JobTerms,
    feed_stdin,
)
from lanworker.message.command import CommandMessage, ContainerTask, schema_errors
from lanworker.pipeline.workspace import PathMapper, TaskLayout, Workspace

logger = logging.getLogger(__name__)

CONTAINER_JOB_DIR = "/job"
LABEL_WORKER = "lanworker.worker_id"
LABEL_JOB = "lanworker.job_id"
WAIT_POLL_S = 0.5
STDERR = 2  # the engine's stream id in attach frames; 1 is stdout
REFUSED_NETWORKS = frozenset({"host"})
PULL_BACKOFF = Backoff(attempts=4, budget_s=120.0)
OOM_SETTLE_S = 3.0  # how long the engine may take to record an OOM kill after the exit
MIB = 1024 * 1024
KILL_WAIT_S = 60.0
TAIL_BYTES = (
    16 * 1024
)  # of each executor's stdout and stderr, for a task's executor logs  # a killed container that still has not exited: the engine is in trouble


@dataclass(frozen=True)
class ServiceSpec:
    image: str
    entrypoint: tuple[str, ...] | None = None
    arguments: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    network: str = "none"
    timeout_s: float | None = None
    user: str | None = None
    cap_add: tuple[str, ...] = ()
    allow_env: tuple[str, ...] = ()
    read_only_rootfs: bool = True
    tmpfs_mb: int = 64


@dataclass
class ContainerRun:
    """One container to run: what the engine is asked for, and where its streams go."""

    spec: ServiceSpec  # image and hardening
    command: list[str]
    entrypoint: list[str] | None
    working_dir: str
    environment: dict[str, str]
    binds: dict[str, dict[str, str]]
    stdin: IO[bytes] | None
    stdout: list[Any]  # sinks with write(bytes)
    stderr: list[Any]


class FileSink:
    """Writes a stream to a file the caller opened safely."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def close(self) -> None:
        self.handle.close()


def load_services(path: Path) -> dict[str, ServiceSpec]:
    """Read and validate a services file (JSON or YAML); errors name the service and field."""
    try:
        text = path.read_text(encoding="utf-8")
        document = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"services file {path}: {exc}") from exc
    problems = schema_errors(document, "services.schema.json")
    if problems:
        raise ConfigError(f"services file {path}: " + "; ".join(problems))
    services = {}
    for name, raw in document["services"].items():
        if raw.get("network") in REFUSED_NETWORKS:
            raise ConfigError(f"services file {path}: $.services.{name}.network: host networking is refused")
        services[name] = ServiceSpec(
            image=raw["image"],
            entrypoint=tuple(raw["entrypoint"]) if "entrypoint" in raw else None,
            arguments=tuple(raw.get("arguments", ())),
            environment=dict(raw.get("environment", {})),
            resources=dict(raw.get("resources", {})),
            network=raw.get("network", "none"),
            timeout_s=raw.get("timeout_s"),
            user=raw.get("user"),
            cap_add=tuple(raw.get("cap_add", ())),
            allow_env=tuple(raw.get("allow_env", ())),
            read_only_rootfs=raw.get("read_only_rootfs", True),
            tmpfs_mb=raw.get("tmpfs_mb", 64),
        )
    return services


# What the engine says, in a 500, when the container itself cannot be made or started: the
# task's mounts or command are at fault, and no other attempt or worker would do better.
TASK_FAULTS = (
    "oci runtime",
    "duplicate mount point",
    "invalid mount",
    "invalid volume specification",
    "mounting",
    "file name too long",
    "read-only file system",
    "not a directory",
    "executable file not found",
    "no such file or directory",
    "permission denied",
)
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


def scratch_tmpfs(spec: ServiceSpec, binds: dict[str, dict[str, str]]) -> dict[str, str] | None:
    """A small writable /tmp for a read-only root, unless the job mounts /tmp itself (a TES
    task's workdir or volume there): two mounts at one point are refused by the engine."""
    if not spec.read_only_rootfs or any(bind["bind"].rstrip("/") == "/tmp" for bind in binds.values()):
        return None
    return {"/tmp": f"rw,noexec,nosuid,size={spec.tmpfs_mb}m"}


def _is_transient_docker_error(exc: BaseException) -> bool:
    """Only an engine that cannot answer is transient: no connection, a timeout, 502/503/504,
    or a 500 that does not blame the task (TASK_FAULTS)."""
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    if not isinstance(exc, docker.errors.APIError) or not exc.is_server_error():
        return False
    if exc.status_code in UNAVAILABLE_STATUSES:
        return True
    return not _blames_the_task(exc)


def _blames_the_task(exc: docker.errors.APIError) -> bool:
    explanation = str(exc.explanation or exc).lower()
    return any(fault in explanation for fault in TASK_FAULTS)


@dataclass(frozen=True)
class DockerSettings:
    """What the docker executor allows and gives each container (from the worker's config)."""

    allow_images: tuple[str, ...]
    worker_id: str
    work_root: Path
    pull_policy: str = "if-missing"
    services: dict[str, ServiceSpec] | None = None
    host_workdir: Path | None = None  # the work root as the engine's host sees it
    max_memory_mb: int | None = None
    max_cpus: float | None = None
    default_pids_limit: int = 512
    max_pids: int = 4096
    default_memory_mb: int | None = 2048
    task_network: str = "bridge"  # TES tasks' network: bridge, none, or host when named


class DockerExecutor:
    kind = "docker"

    def __init__(self, settings: DockerSettings, client: Any = None) -> None:
        self.settings = settings
        self._client = client
        self._client_lock = threading.Lock()
        self._pull_locks: dict[str, threading.Lock] = {}

    @classmethod
    def from_config(cls, config: WorkerConfig) -> DockerExecutor:
        return cls(
            DockerSettings(
                allow_images=tuple(config.allow_images),
                worker_id=config.worker_id,
                work_root=config.work_root,
                pull_policy=config.pull_policy,
                services=load_services(config.services_file) if config.services_file else None,
                host_workdir=config.host_workdir,
                max_memory_mb=config.max_memory_mb,
                max_cpus=config.max_cpus,
                default_pids_limit=config.default_pids_limit,
                max_pids=config.max_pids,
                default_memory_mb=config.default_memory_mb,
                task_network=config.task_network,
            )
        )

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = docker.from_env(timeout=120)
                except docker.errors.DockerException as exc:
                    raise TransientError(f"docker engine unreachable: {exc}") from exc
            return self._client

    # ----------------------------------------------------------------- checks
    def service_for(self, message: CommandMessage) -> ServiceSpec:
        if self.settings.services is None:
            return ServiceSpec(image=message.service)
        spec = self.settings.services.get(message.service)
        if spec is None:
            raise InvalidMessage(f"service {message.service!r} is not in the services file")
        return spec

    def check_message(self, message: CommandMessage) -> JobTerms:
        if message.test:
            return JobTerms()
        if isinstance(message.work, ContainerTask):
            for executor in message.work.executors:
                self._check_image(executor.image)
            self._limits(ServiceSpec(image=message.work.executors[0].image), message)
            return JobTerms()
        spec = self.service_for(message)
        self._check_image(spec.image)
        self._limits(spec, message)
        return JobTerms(timeout_s=spec.timeout_s, allow_env=spec.allow_env)

    def _check_image(self, image: str) -> None:
        if not any(fnmatch.fnmatchcase(image, pattern) for pattern in self.settings.allow_images):
            raise InvalidMessage(
                f"image {image!r} is not allowed on this worker (allowed: {', '.join(self.settings.allow_images)})"
            )

    def _limits(self, spec: ServiceSpec, message: CommandMessage) -> dict[str, Any]:
        """Container resource settings: message over service over worker defaults, refused
        above the worker maxima."""
        wanted = {**spec.resources, **message.resources}
        memory_mb = wanted.get("memory_mb", self.settings.default_memory_mb)
        if memory_mb and self.settings.max_memory_mb:
            memory_mb = memory_mb if "memory_mb" in wanted else min(memory_mb, self.settings.max_memory_mb)
        cpus = wanted.get("cpus", self.settings.max_cpus)
        pids = int(wanted.get("pids", min(self.settings.default_pids_limit, self.settings.max_pids)))
        if memory_mb and self.settings.max_memory_mb and memory_mb > self.settings.max_memory_mb:
            raise InvalidMessage(
                f"resources.memory_mb {memory_mb} is over this worker's maximum {self.settings.max_memory_mb}"
            )
        if cpus and self.settings.max_cpus and cpus > self.settings.max_cpus:
            raise InvalidMessage(
                f"resources.cpus {cpus} is over this worker's maximum {self.settings.max_cpus}"
            )
        if pids > self.settings.max_pids:
            raise InvalidMessage(
                f"resources.pids {pids} is over this worker's maximum {self.settings.max_pids}"
            )
        limits: dict[str, Any] = {"pids_limit": pids}
        if memory_mb:
            limits["mem_limit"] = int(memory_mb) * MIB
            limits["memswap_limit"] = int(memory_mb) * MIB  # no swap: the limit is the limit
        if cpus:
            limits["nano_cpus"] = int(float(cpus) * 1e9)
        return limits

    def path_mapper(self, workspace: Workspace) -> PathMapper:
        root = workspace.root

        def to_container(path: Path) -> str:
            return f"{CONTAINER_JOB_DIR}/{path.relative_to(root).as_posix()}"

        return to_container

    def host_path(self, workspace: Workspace) -> str:
        """Bind-mount source: the host's name for the job dir, when the worker is containerised."""
        if self.settings.host_workdir is None:
            return str(workspace.root)
        return str(self.settings.host_workdir / workspace.root.relative_to(self.settings.work_root))

    # ----------------------------------------------------------------- images
    def ensure_image(self, image: str) -> None:
        lock = self._pull_locks.setdefault(image, threading.Lock())
        with lock:
            if self.settings.pull_policy != "always":
                try:
                    self.client.images.get(image)
                    return
                except docker.errors.ImageNotFound:
                    if self.settings.pull_policy == "never":
                        raise JobFailed(
                            f"image {image!r} is not on this host and --pull is never", reason="image-missing"
                        ) from None
                except Exception as exc:
                    if _is_transient_docker_error(exc):
                        raise TransientError(f"docker engine: {exc}") from exc
                    raise
            PULL_BACKOFF.call(self._pull, image)

    def _pull(self, image: str) -> None:
        logger.info("pulling image %s", image, extra={"action": "pull"})
        try:
            self.client.images.pull(image)
        except docker.errors.APIError as exc:
            if exc.is_server_error() and "not found" not in str(exc).lower():
                raise TransientError(f"pull {image}: {exc}") from exc
            raise JobFailed(f"could not pull image {image!r}: {exc}", reason="pull-failed") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientError(f"pull {image}: {exc}") from exc

    # ----------------------------------------------------------------- running
    def run(self, request: ExecutionRequest) -> ExecutionResult:
        task = request.message.work
        if isinstance(task, ContainerTask):
            return self._guarded(
                request, ServiceSpec(image=task.executors[0].image), lambda r: self._run_task(r, task)
            )
        spec = self.service_for(request.message)
        return self._guarded(request, spec, lambda r: self._run_container(self._plain_run(spec, r), r))

    def _guarded(
        self,
        request: ExecutionRequest,
        spec: ServiceSpec,
        body: Callable[[ExecutionRequest], ExecutionResult],
    ) -> ExecutionResult:
        """Engine trouble is transient; anything else that stops a container from running
        at all means the message cannot start."""
        try:
            return body(request)
        except (JobFailed, TransientError):
            raise
        except Exception as exc:
            if _is_transient_docker_error(exc):
                raise TransientError(f"docker engine: {exc}") from exc
            raise CannotStart(f"container failed to run: {exc}") from exc
        finally:
            self._remove_unwritable(spec, request.workspace)

    def _plain_run(self, spec: ServiceSpec, request: ExecutionRequest) -> ContainerRun:
        self.ensure_image(spec.image)
        return ContainerRun(
            spec=spec,
            command=[*spec.arguments, *request.argv],
            entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
            working_dir=CONTAINER_JOB_DIR,
            environment={**spec.environment, **request.env},
            binds={self.host_path(request.workspace): {"bind": CONTAINER_JOB_DIR, "mode": "rw"}},
            stdin=request.stdin,
            stdout=[request.stdout],
            stderr=[request.stderr],
        )

    def _run_task(self, request: ExecutionRequest, task: ContainerTask) -> ExecutionResult:
        """The executors of a container task in order, in one job dir; the first that fails
        stops the task unless it says ignore_error."""
        layout = request.task
        assert layout is not None
        binds = {
            self._host_source(request.workspace, mount.host): {
                "bind": mount.container,
                "mode": "ro" if mount.read_only else "rw",
            }
            for mount in layout.mounts
        }
        logs: list[dict[str, Any]] = []
        result = ExecutionResult(exit_code=0, details={"executors": logs})
        for index, executor in enumerate(task.executors):
            spec = ServiceSpec(image=executor.image, network=self.settings.task_network)
            self.ensure_image(executor.image)
            label = f"executor {index}"
            own_out = CapturedStream("stdout", TAIL_BYTES, keep_tail=True)
            own_err = CapturedStream("stderr", TAIL_BYTES, keep_tail=True)
            files = [
                layout.create(path, f"{label} {name}")
                for name, path in (("stdout", executor.stdout), ("stderr", executor.stderr))
                if path
            ]
            out_sinks: list[Any] = [request.stdout, own_out]
            err_sinks: list[Any] = [request.stderr, own_err]
            if executor.stdout:
                out_sinks.append(FileSink(files.pop(0)))
            if executor.stderr:
                err_sinks.append(FileSink(files.pop(0)))
            run = ContainerRun(
                spec=spec,
                command=list(executor.command[1:]),
                entrypoint=[executor.command[0]],
                working_dir=executor.workdir or "",
                environment={**request.env, **executor.env},
                binds=binds,
                stdin=self._task_stdin(executor.image, executor.stdin, layout, f"{label} stdin"),
                stdout=out_sinks,
                stderr=err_sinks,
            )
            started = utc_now()
            try:
                step = self._run_container(run, request)
            finally:
                for sink in (*out_sinks[2:], *err_sinks[2:]):
                    sink.close()
            logs.append(
                {
                    "exit_code": step.exit_code,
                    "start_time": started,
                    "end_time": utc_now(),
                    "stdout": own_out.tail_text(),
                    "stderr": own_err.tail_text(),
                }
            )
            result.exit_code, result.stop_reason, result.oom_killed, result.memory_limit_mb = (
                step.exit_code,
                step.stop_reason,
                step.oom_killed,
                step.memory_limit_mb,
            )
            if step.stop_reason is not None or (step.exit_code != 0 and not executor.ignore_error):
                break
        if result.stop_reason is None and result.exit_code != 0:
            failed = [log["exit_code"] for log in logs if log["exit_code"] != 0]
            result.exit_code = failed[-1] if failed else result.exit_code
        return result

    def _task_stdin(self, image: str, path: str | None, layout: TaskLayout, label: str) -> IO[bytes] | None:
        """An executor's stdin: an input or a file in a volume, else a file of the image
        itself (the spec allows any path in the container), copied out of a container that
        is created from the image and never started."""
        if path is None:
            return None
        if layout.readable_host(path) is not None:
            opened: IO[bytes] = layout.open_input(path, label)
            return opened
        api = self.client.api
        container = api.create_container(image=image, command=["true"], labels={LABEL_WORKER: self.settings.worker_id},
                                         network_disabled=True)  # fmt: skip
        spool = tempfile.TemporaryFile(dir=layout.root)  # noqa: SIM115 - handed to the caller open
        try:
            try:
                stream, _ = api.get_archive(container["Id"], path)
            except docker.errors.NotFound:
                raise JobFailed(
                    f"{label} {path} is neither an input, in a volume, nor in image {image}"
                ) from None
            with tempfile.TemporaryFile(dir=layout.root) as archive:
                for chunk in stream:
                    archive.write(chunk)
                archive.seek(0)
                with tarfile.open(fileobj=archive, mode="r:") as tar:
                    member = tar.next()
                    source = tar.extractfile(member) if member is not None and member.isfile() else None
                    if source is None:
                        raise JobFailed(f"{label} {path} in image {image} is not a regular file")
                    shutil.copyfileobj(source, spool)
        except BaseException:
            spool.close()
            raise
        finally:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container["Id"], force=True)
        spool.seek(0)
        return spool

    def _host_source(self, workspace: Workspace, path: Path) -> str:
        return str(Path(self.host_path(workspace)) / path.relative_to(workspace.root))

    def _create(self, run: ContainerRun, request: ExecutionRequest, limits: dict[str, Any]) -> str:
        api = self.client.api
        spec = run.spec
        tmpfs = scratch_tmpfs(spec, run.binds)
        host_config = api.create_host_config(
            binds=run.binds,
            network_mode=spec.network,
            cap_drop=["ALL"],
            cap_add=list(spec.cap_add) or None,
            security_opt=["no-new-privileges"],
            privileged=False,
            read_only=spec.read_only_rootfs,
            tmpfs=tmpfs,
            # No docker-init: with it a command that cannot exec looks like exit 127, without
            # it the engine refuses the start and the message is a recognisable poison.
            **limits,
        )
        container = api.create_container(
            image=spec.image,
            command=run.command,
            entrypoint=run.entrypoint,
            user=spec.user or f"{os.getuid()}:{os.getgid()}",
            working_dir=run.working_dir or None,
            environment=run.environment,
            labels={LABEL_WORKER: self.settings.worker_id, LABEL_JOB: request.job_id},
            # detach=False with stdin_open gives StdinOnce: closing our end is EOF for the command.
            detach=False,
            stdin_open=run.stdin is not None,
            tty=False,
            network_disabled=spec.network == "none",
            host_config=host_config,
        )
        return str(container["Id"])

    def _run_container(self, run: ContainerRun, request: ExecutionRequest) -> ExecutionResult:
        api = self.client.api
        limits = self._limits(run.spec, request.message)
        container_id = self._create(run, request, limits)
        try:
            params = {"stdin": 1 if run.stdin is not None else 0, "stdout": 1, "stderr": 1, "stream": 1}
            attached = api.attach_socket(container_id, params=params)
            raw_socket = getattr(attached, "_sock", attached)
            reader = threading.Thread(
                target=self._demultiplex, args=(attached, run), name="container-output", daemon=True
            )
            reader.start()
            self._start(container_id)
            feeder = None
            if run.stdin is not None:
                feeder = feed_stdin(
                    run.stdin, raw_socket.sendall, lambda: raw_socket.shutdown(socket.SHUT_WR)
                )
            started = time.time()
            exit_code, stop_reason = self._wait(container_id, request)
            reader.join(timeout=30)
            if feeder is not None:
                feeder.join(timeout=5)
            with contextlib.suppress(OSError):
                attached.close()
            oom_killed = stop_reason is None and self._oom_killed(container_id, exit_code, started)
            return ExecutionResult(
                exit_code=exit_code,
                stop_reason=stop_reason,
                oom_killed=oom_killed,
                memory_limit_mb=limits["mem_limit"] // MIB if "mem_limit" in limits else None,
                details={
                    "container_id": container_id[:12],
                    "image": run.spec.image,
                    "oom_killed": oom_killed,
                },
            )
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(container_id, force=True)

    def _oom_killed(self, container_id: str, exit_code: int | None, started_at: float) -> bool:
        """Whether the kernel killed the container for its memory limit.

        The engine records OOMKilled from an event that can arrive after the exit, so one
        inspect is a race. A SIGKILL exit we did not cause is checked again, against the
        container's state and the engine's `oom` event, for up to OOM_SETTLE_S.
        """
        api = self.client.api
        deadline = time.monotonic() + OOM_SETTLE_S
        while True:
            if api.inspect_container(container_id)["State"].get("OOMKilled"):
                return True
            if exit_code != EXIT_SIGKILL:
                return False
            events = api.events(
                since=int(started_at) - 1,
                until=int(time.time()),
                filters={"container": container_id, "event": "oom"},
                decode=True,
            )
            if any(True for _ in events):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def _start(self, container_id: str) -> None:
        try:
            self.client.api.start(container_id)
        except docker.errors.APIError as exc:
            # The engine answers 500 when the runtime cannot mount or exec what the task
            # asks: the message's fault, not the engine's, and retrying cannot help.
            if _blames_the_task(exc):
                raise CannotStart(f"container could not start: {exc.explanation or exc}") from exc
            raise

    @staticmethod
    def _demultiplex(attached: Any, run: ContainerRun) -> None:
        try:
            for stream, data in frames_iter(attached, tty=False):
                for sink in run.stderr if stream == STDERR else run.stdout:
                    sink.write(data)
        except (OSError, ValueError) as exc:
            logger.debug("container output stream ended: %s", exc)

    def _wait(self, container_id: str, request: ExecutionRequest) -> tuple[int | None, StopReason | None]:
        api = self.client.api
        stop_reason: StopReason | None = None
        killed_at = 0.0
        while True:
            try:
                status = api.wait(container_id, timeout=WAIT_POLL_S)
                return int(status.get("StatusCode", -1)), stop_reason
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                pass
            if stop_reason is not None:
                if time.monotonic() - killed_at > KILL_WAIT_S:
                    raise TransientError(f"container {container_id[:12]} did not stop within {KILL_WAIT_S} s")
                continue
            stop_reason = request.should_stop()
            if stop_reason is not None:
                logger.info(
                    "killing container %s: %s",
                    container_id[:12],
                    stop_reason.value,
                    extra={"job_id": request.job_id, "action": "stop"},
                )
                killed_at = time.monotonic()
                with contextlib.suppress(docker.errors.APIError, requests.exceptions.ConnectionError):
                    api.kill(container_id)

    def _remove_unwritable(self, spec: ServiceSpec, workspace: Workspace) -> None:
        """A service running as another user can leave files the worker cannot delete;
        a root helper container from the same image removes them."""
        if spec.user is None or os.geteuid() == 0:
            return
        try:
            self.client.containers.run(
                spec.image,
                entrypoint=["rm", "-rf", f"{CONTAINER_JOB_DIR}/out", f"{CONTAINER_JOB_DIR}/streams"],
                user="0:0",
                volumes={self.host_path(workspace): {"bind": CONTAINER_JOB_DIR, "mode": "rw"}},
                network_mode="none",
                remove=True,
                labels={LABEL_WORKER: self.settings.worker_id},
            )
        except Exception as exc:
            logger.warning("could not clean %s with a helper container: %s", workspace.root, exc)

    # ----------------------------------------------------------------- crash recovery
    def cleanup_stale(self, worker_ids: Sequence[str]) -> None:
        for worker_id in worker_ids:
            try:
                stale = self.client.api.containers(all=True, filters={"label": f"{LABEL_WORKER}={worker_id}"})
            except Exception as exc:
                logger.warning("cannot list stale containers: %s", exc, extra={"action": "cleanup"})
                return
            for container in stale:
                logger.warning(
                    "removing container %s left by worker %s",
                    container["Id"][:12],
                    worker_id,
                    extra={"action": "cleanup"},
                )
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.api.remove_container(container["Id"], force=True)
