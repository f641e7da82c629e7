"""`worker.py serve`: its flags, the environment and the state dir made into ServeSettings;
`lanworker.serve` runs them."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from lanworker.core.config import WorkerConfig, build_config, env_name, is_local_queue
from lanworker.core.errors import ConfigError
from lanworker.serve import DEFAULT_STATE_DIR, ServeSettings, run_serve
from lanworker.tes.guard import is_loopback_host

logger = logging.getLogger("lanworker.serve")


def run(args: argparse.Namespace) -> int:
    return run_serve(settings_from(args))


def settings_from(args: argparse.Namespace) -> ServeSettings:
    state = Path(
        os.path.expanduser(args.state_dir or os.environ.get("LANWORKER_STATE_DIR", DEFAULT_STATE_DIR))
    )
    flags = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(WorkerConfig)}}
    flags.setdefault("queue_url", None)
    environ_queue = os.environ.get(env_name("queue_url"))
    flags["queue_url"] = flags["queue_url"] or environ_queue or f"local:{state / 'serve.db'}#tasks"
    flags["events_url"] = (
        flags.get("events_url")
        or os.environ.get(env_name("events_url"))
        or f"local:{state / 'serve.db'}#events"
    )
    flags["control_url"] = (
        flags.get("control_url") or os.environ.get(env_name("control_url")) or str(state / "control")
    )
    flags["mode"] = "docker" if args.workers > 0 else "client"
    if "" in (flags.get("local_file_roots") or ()):
        raise ConfigError("serve: --allow-local-files needs a directory (--allow-local-files /data)")
    if not flags.get("local_file_roots") and not os.environ.get(env_name("local_file_roots")):
        flags["allow_local_files"] = False  # a TES client never reads or writes host files by default
    config = build_config(flags)
    if config.events_url and config.events_url.startswith("arn:"):
        raise ConfigError(
            "serve reads job events from a queue: give --events an SQS queue URL (subscribed to the topic)"
        )
    if (
        not is_local_queue(config.queue_url)
        and args.workers > 0
        and not str(config.control_url).startswith("s3://")
    ):
        logger.warning(
            "embedded workers on a shared queue with a local --control: cancel reaches only this host"
        )
    token = None
    if args.auth_token_file:
        try:
            token = Path(args.auth_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--auth-token-file: {exc}") from exc
        if len(token) < 16:
            raise ConfigError("--auth-token-file: the token must be at least 16 characters")
    elif not is_loopback_host(args.host) and not args.insecure_no_auth:
        raise ConfigError(
            f"--host {args.host} exposes the API beyond this machine: give --auth-token-file FILE "
            "(Bearer token) or, knowingly, --insecure-no-auth"
        )
    return ServeSettings(
        host=args.host,
        port=args.port,
        workers=args.workers,
        store_url=args.store or os.environ.get("LANWORKER_STORE") or f"sqlite:{state / 'tasks.db'}",
        auth_token=token,
        worker_config=config,
        max_store_mb=getattr(args, "max_store_mb", None),
        keep_days=getattr(args, "keep_days", None),
    )
