"""`worker.py jobs [--state S] [--limit N] [--watch]` and `worker.py jobs show ID`.

Reads a running server's `/api/jobs` (`--server`, default the local `serve`) or a task
store directly (`--store sqlite:PATH`). Columns are aligned; colours only on a TTY; every
value is printed with its control characters escaped, so a job cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from lanworker.core.errors import ConfigError, QueueUnreachable
from lanworker.core.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE
from lanworker.core.logs import escape_controls
from lanworker.web import readmodel as status

DEFAULT_SERVER = "http://127.0.0.1:8000"
TIMEOUT_S = 10.0  # a request to the server
COLOURS = {
    "COMPLETE": "32",
    "RUNNING": "34",
    "INITIALIZING": "36",
    "QUEUED": "37",
    "CANCELING": "33",
    "CANCELED": "90",
    "EXECUTOR_ERROR": "31",
    "SYSTEM_ERROR": "35",
}
COLUMNS = ("ID", "NAME", "STATE", "CREATED", "DURATION", "WORKER", "EXIT")

Fetch = Callable[[str | None, dict[str, Any]], Any]  # (a job id, or None for the list; the query)


def source(args: argparse.Namespace) -> Fetch:
    """How to read jobs: the server's JSON API, or the store itself."""
    if args.store:
        from lanworker.tes.store import open_store

        path = os.path.expanduser(args.store.removeprefix("sqlite:"))
        if args.store.startswith("sqlite:") and not os.path.exists(path):
            raise QueueUnreachable(f"no task store at {path}")  # a typo must not look empty
        store = open_store(args.store)

        def from_store(job_id: str | None, params: dict[str, Any]) -> Any:
            if job_id is not None:
                record = store.get(job_id)
                return status.detail(record) if record else None
            rows, token = status.list_jobs(store, params.get("state"), params.get("q"), int(params["limit"]))
            return {
                "jobs": [row.as_dict() for row in rows],
                "next_page_token": token,
                "counts": status.counts(store),
            }

        return from_store
    server = (args.server or DEFAULT_SERVER).rstrip("/")
    headers = {}
    if args.auth_token_file:
        try:
            with open(args.auth_token_file, encoding="utf-8") as handle:
                headers["Authorization"] = f"Bearer {handle.read().strip()}"
        except OSError as exc:
            raise ConfigError(f"--auth-token-file: {exc}") from exc

    def from_server(job_id: str | None, params: dict[str, Any]) -> Any:
        path = "/api/jobs" if job_id is None else "/api/jobs/" + quote(job_id, safe="")
        try:
            response = requests.get(server + path, params=params, headers=headers, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise QueueUnreachable(
                f"cannot reach {server} ({_why(exc)}): is `worker.py serve` running there? "
                "--server URL names another, --store reads a task store directly"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code == 401:
            raise ConfigError(f"{server} needs a token: --auth-token-file FILE")
        if response.status_code >= 500:  # its store did not answer: try again later
            raise QueueUnreachable(f"{server} answered {response.status_code}: {_said(response)}")
        if response.status_code >= 400:
            raise ConfigError(f"{server} refused the request ({response.status_code}): {_said(response)}")
        return response.json()

    return from_server


def _why(exc: requests.RequestException) -> str:
    """A failed request's cause in a few words, not urllib3's whole chain."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {TIMEOUT_S:g} s"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def _said(response: requests.Response) -> str:
    """The error message a server's answer carries (lanworker's JSON `msg`), else its start."""
    try:
        return escape_controls(str(response.json()["msg"]))
    except (ValueError, KeyError, TypeError):
        return escape_controls(response.text[:200] or response.reason)


def _cell(value: Any) -> str:
    return escape_controls("" if value is None else str(value))


def table(jobs: list[dict[str, Any]], colour: bool) -> str:
    from lanworker.web.formatting import human_duration, when

    rows = [
        [
            _cell(job["id"]),
            _cell(job["name"])[:40],
            _cell(job["state"]),
            when(job["created_at"]),
            human_duration(job["duration_s"]),
            _cell(job["worker"]),
            _cell(job["exit_code"]),
        ]
        for job in jobs
    ]
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(COLUMNS)]
    lines = ["  ".join(name.ljust(widths[i]) for i, name in enumerate(COLUMNS)).rstrip()]
    for row in rows:
        cells = [value.ljust(widths[i]) for i, value in enumerate(row)]
        if colour and row[2] in COLOURS:
            cells[2] = f"\033[{COLOURS[row[2]]}m{cells[2]}\033[0m"
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def show(job: dict[str, Any]) -> str:
    from lanworker.web.formatting import human_duration, when

    lines = [
        f"id:        {_cell(job['id'])}",
        f"state:     {_cell(job['state'])}" + (f" ({_cell(job['reason'])})" if job.get("reason") else ""),
        f"name:      {_cell(job['name'])}",
        f"image:     {_cell(job['image'])}",
        f"command:   {_cell(job['command'])}",
        f"created:   {when(job['created_at'])} UTC",
        f"duration:  {human_duration(job['duration_s'])}",
        f"worker:    {_cell(job['worker'])}",
        f"exit code: {_cell(job['exit_code'])}",
    ]
    if job.get("error"):
        lines.append(f"error:     {_cell(job['error'])}")
    if job.get("tags"):
        lines.append("tags:      " + ", ".join(f"{_cell(k)}={_cell(v)}" for k, v in job["tags"].items()))
    lines.append("timeline:")
    for event in job.get("events", []):
        lines.append(
            f"  {when(float(event.get('time') or 0))}  {_cell(event.get('state'))}"
            f"  {_cell(event.get('worker_id') or '')}  {_cell(event.get('reason') or '')}".rstrip()
        )
    for item in job.get("outputs", []):
        lines.append(
            f"output:    {_cell(item.get('uri'))}  {item.get('size')} bytes  sha256 {_cell(item.get('sha256'))}"
        )
    for name in ("stdout", "stderr"):
        if job.get(name):
            lines.append(f"{name} (tail):")
            lines += ["  " + _cell(line) for line in str(job[name]).splitlines()[-20:]]
    return "\n".join(lines)


def run_jobs(args: argparse.Namespace) -> int:
    words = list(args.words)
    if (words and words[0] != "show") or len(words) == 1 or len(words) > 2:
        print(
            "usage: worker.py jobs [--state S] [--limit N] [--watch], or worker.py jobs show ID",
            file=sys.stderr,
        )
        return EXIT_USAGE
    state = args.state.upper() if args.state else None
    if state and state not in status.STATE_ORDER:
        print(f"--state {args.state!r}: one of {', '.join(status.STATE_ORDER)}", file=sys.stderr)
        return EXIT_USAGE
    fetch = source(args)
    if words:
        job = fetch(words[1], {})
        if job is None:
            print(f"no job {words[1]!r}", file=sys.stderr)
            return EXIT_FAILED
        print(json.dumps(job, indent=2, default=str) if args.json else show(job))
        return EXIT_OK
    params = {"limit": args.limit, **({"state": state} if state else {})}
    colour = sys.stdout.isatty() and not args.json
    try:
        while True:
            listing = fetch(None, params)
            text = json.dumps(listing["jobs"], indent=2) if args.json else table(listing["jobs"], colour)
            if args.watch and colour:
                sys.stdout.write("\033[H\033[2J")
            print(text, flush=True)
            if not args.watch:
                return EXIT_OK
            time.sleep(args.interval_s)
    except KeyboardInterrupt:
        return EXIT_STOPPED
