"""Command line: `worker.py native|docker|submit|validate|dead-letters|cancel|translate|serve|jobs`.

Every subcommand's argparse lives in this package (`serve.py`, `translate.py` and `jobs.py`
for theirs). main() returns an exit code (`core.exitcodes`);
each failure kind has its own so systemd can tell them apart, and no bad input ends in
a traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lanworker import __version__
from lanworker.core.config import DEFAULT_LOCAL_QUEUE, build_config, check_environment, is_local_queue
from lanworker.core.errors import ConfigError, InvalidMessage, JobFailed, QueueUnreachable, TransientError
from lanworker.core.exitcodes import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_FORCED,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_QUEUE_UNREACHABLE,
    EXIT_STOPPED,
    EXIT_USAGE,
)
from lanworker.core.logs import configure_logging
from lanworker.loop.signals import SignalFlag
from lanworker.message.command import decode, job_id_of
from lanworker.message.policy import MessagePolicy, admission_problems
from lanworker.queues import LocalQueue, Queue, open_queue

logger = logging.getLogger(__name__)


CLIENT_RETRY_BUDGET_S = 6.0  # submit and dead-letters: say the endpoint is down within 10 s


class UsageError(Exception):
    """A file named on the command line cannot be read: exit 2."""


def _within(kind: Callable[[str], float], low: float, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: kind(text) between low and high, else a usage error (exit 2)."""

    def parse(text: str) -> Any:
        value = kind(text)
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text} is not {bounds}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


PORT = _within(int, 0, 65535)


def _worker_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("worker options (each also LANWORKER_<NAME>)")
    add = group.add_argument
    add(
        "--queue",
        dest="queue_url",
        help=f"SQS queue URL or local:PATH[#NAME] (default {DEFAULT_LOCAL_QUEUE})",
    )
    add("--dead-letter-queue", dest="dead_letter_queue_url", help="where invalid messages go (SQS URL)")
    add("--results", dest="results_url", help="queue that receives results of jobs without reply_to")
    add("--events", dest="events_url", help="SQS queue URL or SNS topic ARN for job state events")
    add("--control", dest="control_url", help="s3:// prefix or directory holding cancel markers")
    add("--worker-id", help="stable name of this worker (default HOST-PID)")
    add("--concurrency", type=int, help="jobs run at once (default 1)")
    add("--once", action="store_true", default=None, help="process what is queued, then exit")
    add("--visibility-timeout-s", type=int)
    add("--wait-time-s", type=int, help="long-poll wait (default 20)")
    add("--max-receives", type=int, help="local queue: receives before dead-lettering (default 5)")
    add("--heartbeat-interval-s", type=float)
    add(
        "--cancel-check-s",
        type=float,
        help="how often running jobs' cancel markers are looked for (default 2)",
    )
    add("--max-job-runtime-s", type=float)
    add("--grace-period-s", type=float, help="how long running jobs may finish after SIGTERM (default 60)")
    add("--timeout-s", dest="default_timeout_s", type=float, help="default job timeout")
    add("--work-root", type=Path)
    add("--keep-workdir", action="store_true", default=None)
    add("--upload-on-failure", action="store_true", default=None)
    add("--capture-bytes", type=int, help="cap of piped stdout/stderr kept in the result")
    add("--transfer-concurrency", type=int)
    add(
        "--retry-budget-s", type=float, help="how long a storage call retries transient failures (default 60)"
    )
    add(
        "--allow-local-files",
        dest="local_file_roots",
        action="append",
        nargs="?",
        const="",
        metavar="DIR",
        help="allow file:// URIs and paths in messages, beneath DIR (repeatable); without DIR anywhere "
        "(serve needs a DIR)",
    )
    add("--no-allow-local-files", dest="allow_local_files", action="store_false", default=None)
    add(
        "--allow-private-http",
        action="store_true",
        default=None,
        help="let http(s) inputs reach loopback, link-local and private addresses",
    )
    add(
        "--allow-env",
        action="append",
        help="environment name glob messages may set although refused by default (repeatable)",
    )
    add("--max-job-disk-mb", type=int, help="stop a job whose job dir grows beyond this (reason disk-limit)")
    add(
        "--min-free-mb",
        type=int,
        help="stop receiving while the work root has less free (default 100, 0 off)",
    )
    add("--max-output-mb", type=int, help="fail a job whose outputs add up to more (output-too-large)")
    add("--log-format", choices=("json", "text"))
    add("--log-level")
    add(
        "--strict-env",
        action="store_true",
        default=None,
        help="a LANWORKER_* variable that matches no option is an error (78), not a warning",
    )
    add("--metrics-port", type=PORT)
    return parent


def _docker_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--allow-image", dest="allow_images", action="append", help="image glob allowed to run (repeatable)")
    add("--pull", dest="pull_policy", choices=("if-missing", "always", "never"))
    add(
        "--services",
        dest="services_file",
        type=Path,
        help="services file: service name -> image and settings",
    )
    add(
        "--host-workdir",
        type=Path,
        help="host path of --work-root when the worker itself runs in a container",
    )
    add("--max-memory-mb", type=int)
    add("--max-cpus", type=float)
    add("--default-pids-limit", type=int, help="pids limit of containers whose message names none (512)")
    add("--max-pids", type=int, help="largest pids limit a message may ask for (default 4096)")
    add(
        "--task-network",
        choices=("bridge", "none", "host"),
        help="network of TES task containers (default bridge; none locks down; host only when named)",
    )
    add("--default-memory-mb", type=int, help="memory limit of containers that name none (default 2048)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worker.py", description="lanworker: JSON command messages into real work."
    )
    parser.add_argument("--version", action="version", version=f"lanworker {__version__}")
    commands = parser.add_subparsers(dest="subcommand", required=True)
    worker_options = _worker_options()

    native = commands.add_parser(
        "native",
        parents=[worker_options],
        help="run each message as CMD ARGS... locally",
        description="CMD may be given as `-- CMD ARGS...`, as one JSON array "
        '(\'["python3", "my_script.py"]\') or unquoted ([python3, my_script.py]).',
    )
    native.add_argument("base_command", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")

    docker = commands.add_parser("docker", parents=[worker_options], help="run each message in a container")
    _docker_options(docker)

    submit = commands.add_parser("submit", help="validate and enqueue a command message")
    submit.add_argument("file", help="message file, or - for standard input")
    submit.add_argument("--queue", dest="queue_url")
    submit.add_argument("--reply-to", help="queue for the result (with --wait on SQS)")
    submit.add_argument("--wait", action="store_true", help="wait for the result and print it")
    submit.add_argument("--wait-timeout-s", type=_within(float, 0), default=600.0)

    validate = commands.add_parser("validate", help="validate message files, printing every error")
    validate.add_argument("files", nargs="+")
    validate.add_argument(
        "--queue", dest="queue_url", help="the queue they are for (file:// and paths: embedded queues only)"
    )

    dead = commands.add_parser("dead-letters", help="list dead-lettered messages, or re-queue them")
    dead.add_argument("--queue", dest="queue_url")
    dead.add_argument("--dead-letter-queue", dest="dead_letter_queue_url")
    dead.add_argument("--redrive", action="store_true")
    dead.add_argument("--limit", type=_within(int, 1), default=100)

    cancel = commands.add_parser("cancel", help="ask the worker running JOB_ID to stop it")
    cancel.add_argument("job_id")
    cancel.add_argument("--control", dest="control_url")
    cancel.add_argument(
        "--queue", dest="queue_url", help="an embedded queue to check that JOB_ID is queued or running"
    )

    _translate_parser(commands)

    serve = commands.add_parser(
        "serve",
        parents=[worker_options],
        help="serve the GA4GH TES API, with embedded docker workers",
        description="TES 1.1 at http://HOST:PORT/ga4gh/tes/v1 (also /v1 and /). Worker options apply "
        "to the embedded workers; --queue, --events and --control are shared with remote workers.",
    )
    _docker_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (beyond loopback needs a token)")
    serve.add_argument("--port", type=PORT, default=8000)
    serve.add_argument(
        "--workers", type=_within(int, 0), default=2, help="embedded docker workers (0: API only)"
    )
    serve.add_argument("--store", help="task store: sqlite:PATH (default in --state-dir) or dynamodb://TABLE")
    serve.add_argument("--state-dir", help="where the embedded store, queues and control live")
    serve.add_argument("--auth-token-file", help="file holding the Bearer token clients must send")
    serve.add_argument(
        "--max-store-mb",
        type=_within(int, 1),
        help="refuse new tasks (507) once the task store holds this much",
    )
    serve.add_argument(
        "--keep-days", type=_within(float, 0.001), help="remove finished tasks older than this, hourly"
    )
    serve.add_argument(
        "--insecure-no-auth", action="store_true", help="serve beyond loopback without a token"
    )

    jobs = commands.add_parser(
        "jobs",
        help="list jobs (or `jobs show ID`) from a serve's API or a task store",
        description="worker.py jobs [--state S] [--limit N] [--watch]; worker.py jobs show ID",
    )
    jobs.add_argument("words", nargs="*", metavar="show ID")
    jobs.add_argument("--state", help="only jobs in this state (QUEUED, RUNNING, COMPLETE, ...)")
    jobs.add_argument("--limit", type=_within(int, 1, 1000), default=50)
    jobs.add_argument("--watch", action="store_true", help="print the table again every --interval-s")
    jobs.add_argument("--interval-s", type=_within(float, 0.1), default=2.0)
    jobs.add_argument("--server", help="the serve to ask (default http://127.0.0.1:8000)")
    jobs.add_argument("--store", help="read a task store directly instead: sqlite:PATH or dynamodb://TABLE")
    jobs.add_argument("--auth-token-file", help="the server's bearer token")
    jobs.add_argument("--json", action="store_true", help="print JSON instead of a table")

    return parser


def run_jobs(args: argparse.Namespace) -> int:
    from lanworker.cli.jobs import run_jobs as jobs

    return jobs(args)


def run_serve(args: argparse.Namespace) -> int:
    from lanworker.cli.serve import run as serve  # FastAPI and uvicorn only for serve

    return serve(args)


def _translate_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "translate", help="turn S3 event notifications into command messages by rules"
    )
    parser.add_argument("--rules", type=Path, help="rules file (YAML or JSON)")
    parser.add_argument("--queue", dest="queue_url", help="events queue (SQS URL or local:PATH#NAME)")
    parser.add_argument("--dead-letter-queue", dest="dead_letter_queue_url")
    parser.add_argument("--once", action="store_true", default=None)
    parser.add_argument(
        "--concurrency",
        type=int,
        help="event messages handled at once (default 1; a FIFO events queue always 1)",
    )
    parser.add_argument("--wait-time-s", type=int)
    parser.add_argument("--visibility-timeout-s", type=int)
    parser.add_argument("--log-format", choices=("json", "text"))
    parser.add_argument(
        "--check", action="store_true", help="validate rules and render each against a synthetic event"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands that EVENT files would produce"
    )
    parser.add_argument("paths", nargs="*", help="with --check: the rules file; with --dry-run: event files")


# --------------------------------------------------------------------- worker
def run_worker(args: argparse.Namespace) -> int:
    # The worker's modules (botocore among them) only for the subcommands that run one:
    # `validate` and `submit` start in a fraction of the time.
    from lanworker.executors.native import parse_base_command
    from lanworker.loop.assemble import build_worker
    from lanworker.reporting.metrics import HealthServer, receive_loop_health

    flags = {k: v for k, v in vars(args).items() if k != "subcommand"}
    flags["mode"] = args.subcommand
    if args.subcommand == "native":
        flags["base_command"] = parse_base_command(args.base_command)
    config = build_config(flags)
    configure_logging(config.log_format, config.log_level)
    check_environment(config, os.environ)
    worker = build_worker(config)
    SignalFlag().install(lambda _count: worker.request_shutdown())
    gc.freeze()  # what start-up made lives as long as the worker: collections skip it
    health_server = None
    if config.metrics_port is not None:
        stall_after_s = max(120.0, 3.0 * config.wait_time_s)
        health = receive_loop_health(lambda: worker.last_receive_at, stall_after_s, worker.paused)
        health_server = HealthServer(config.metrics_port, worker.metrics, health).start()
    try:
        worker.run()  # logs "listening" once the queue answered and the work root is ours
    finally:
        if health_server is not None:
            health_server.stop()
    if worker.force.is_set():
        return EXIT_FORCED
    if worker.shutdown.is_set():
        return EXIT_STOPPED
    return EXIT_OK


# --------------------------------------------------------------------- client
def _read_message_file(name: str) -> Any:
    """The decoded document; InvalidMessage for unusable content, UsageError for no file."""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    return decode(data)


def _load_message(name: str, queue_url: str) -> tuple[Any, list[str]]:
    """The document read from a file (or - for stdin, read once) and every problem a worker
    on queue_url would find before running it (file:// only on an embedded queue)."""
    try:
        document = _read_message_file(name)
    except InvalidMessage as exc:
        return None, [str(exc)]
    return document, admission_problems(document, MessagePolicy(allow_local_files=is_local_queue(queue_url)))


def run_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for name in args.files:
        try:
            _, problems = _load_message(name, _queue_url(args))
        except UsageError as exc:  # no such file: a usage error (2), as for submit
            print(str(exc), file=sys.stderr)
            status = EXIT_USAGE
            continue
        for problem in problems:
            print(f"{name}: {problem}")
        if problems:
            status = max(status, EXIT_FAILED)
        else:
            print(f"{name}: ok")
    return status


def _queue_url(args: argparse.Namespace) -> str:
    return str(build_config({"mode": "client", "queue_url": args.queue_url}).queue_url)


def run_submit(args: argparse.Namespace) -> int:
    configure_logging("text", "ERROR")  # one line for the user, not every retry
    document, problems = _load_message(args.file, _queue_url(args))
    if problems:
        for problem in problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        return EXIT_FAILED
    queue = open_queue(_queue_url(args), retry_budget_s=CLIENT_RETRY_BUDGET_S)
    reply_queue: Queue | None = None
    if args.wait:
        if args.reply_to:
            reply_queue = open_queue(args.reply_to, retry_budget_s=CLIENT_RETRY_BUDGET_S)
        elif isinstance(queue, LocalQueue):
            reply_queue = queue.sibling(f"replies-{uuid.uuid4().hex[:12]}")
        else:
            print("--wait on an SQS queue needs --reply-to QUEUE_URL", file=sys.stderr)
            return EXIT_USAGE
        document["reply_to"] = reply_queue.url
    elif args.reply_to:
        document["reply_to"] = args.reply_to
    # The job id travels in the body, so it stays the same in the dead letters and after a
    # redrive (a queue's own message ids change at every move).
    job_id = document.setdefault("id", str(uuid.uuid4()))
    queue.send(json.dumps(document))
    print(job_id, flush=True)
    if reply_queue is None:
        return EXIT_OK
    result = wait_for_result(reply_queue, job_id, args.wait_timeout_s)
    if result is None:
        print(f"no result for job {job_id} within {args.wait_timeout_s} s", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, indent=2))
    return EXIT_OK if result.get("state") in ("succeeded", "listening") else EXIT_FAILED


def wait_for_result(reply_queue: Queue, job_id: str, timeout_s: float) -> dict[str, Any] | None:
    """The final result of job_id; interim 'retrying' results are consumed and skipped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in reply_queue.receive(10, min(20.0, max(0.0, deadline - time.monotonic())), 30):
            try:
                result = json.loads(message.body)
            except json.JSONDecodeError:
                result = {}
            if result.get("job_id") != job_id:
                reply_queue.release(message)  # someone else's result on a shared reply queue
                continue
            reply_queue.delete(message)
            if result.get("state") != "retrying":
                return dict(result)
    return None


def run_dead_letters(args: argparse.Namespace) -> int:
    configure_logging("text", "ERROR")
    queue = open_queue(_queue_url(args), args.dead_letter_queue_url, retry_budget_s=CLIENT_RETRY_BUDGET_S)
    if isinstance(queue, LocalQueue) and not queue.path.exists():  # a typo must not look empty
        raise QueueUnreachable(f"no local queue at {queue.path}")
    if args.redrive:
        print(f"re-queued {queue.redrive(args.limit)} message(s)")
        return EXIT_OK
    for letter in queue.list_dead_letters(args.limit):
        print(
            json.dumps(
                {
                    "job_id": job_id_of(letter.body, letter.message_id),
                    "message_id": letter.message_id,
                    "reason": letter.reason,
                    "receive_count": letter.receive_count,
                    "body": letter.body,
                }
            )
        )
    return EXIT_OK


def run_cancel(args: argparse.Namespace) -> int:
    from lanworker.storage import Storage
    from lanworker.storage.control import request_cancel

    control = build_config({"mode": "client", "control_url": args.control_url}).control_url
    if not control:
        print(
            "cancel needs --control (or LANWORKER_CONTROL): the workers' control location",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    local = args.queue_url if args.queue_url and is_local_queue(args.queue_url) else None
    if local and not LocalQueue(local).holds_job(args.job_id):
        print(f"no job {args.job_id!r} is queued or running on {local}", file=sys.stderr)
        return EXIT_FAILED
    try:
        request_cancel(Storage(), control, args.job_id, "cli")
    except TransientError as exc:
        print(f"cannot reach the control location: {exc}", file=sys.stderr)
        return EXIT_QUEUE_UNREACHABLE
    except JobFailed as exc:  # no such bucket or directory, access denied, ...
        print(f"cannot write the cancel marker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"cancel requested for {args.job_id}")
    return EXIT_OK


def _run_translate(args: argparse.Namespace) -> int:
    from lanworker.cli.translate import run  # rules, YAML: only for this subcommand

    return run(args)


def console() -> int:
    """The process's entry (worker.py, the `lanworker` script): main, then a quick exit.

    At exit CPython runs full garbage collections over every object still alive; botocore's
    models alone make that 0.08-0.1 s, a sixth of a short `--once` run. Freezing them first
    (`gc.freeze`) makes those collections trivial. atexit handlers, thread joins and
    reference-counted cleanup still run; only cyclic garbage left at exit is not collected,
    and the process is ending. Not in main: in-process callers keep collecting.
    """
    code = main()
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "native": run_worker,
        "docker": run_worker,
        "submit": run_submit,
        "validate": run_validate,
        "dead-letters": run_dead_letters,
        "cancel": run_cancel,
        "translate": _run_translate,
        "serve": run_serve,
        "jobs": run_jobs,
    }
    try:
        return handlers[args.subcommand](args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except QueueUnreachable as exc:
        print(f"unreachable: {exc}", file=sys.stderr)
        return EXIT_QUEUE_UNREACHABLE
    except TransientError as exc:  # a client command gave up riding out an outage
        print(f"unreachable: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_QUEUE_UNREACHABLE
    except InvalidMessage as exc:
        print(f"invalid message: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_STOPPED
    except BrokenPipeError:  # `worker.py jobs | head`: the reader has all it wanted
        sys.stderr.close()
        return EXIT_OK
    except Exception:
        # A bug, not an environment problem: say so with its own code, traceback included.
        traceback.print_exc()
        return EXIT_INTERNAL
