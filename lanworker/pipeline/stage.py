"""Stage: every input in place before the command runs, and where its outputs will go.

A command job's inputs (arguments, sidecar prefixes) are downloaded into `in/` and its
argv is resolved; a container task's inputs are written or downloaded into the layout
`workspace.plan_layout` gave them, wave by wave. Whether a URI may be used at all was
decided at admission; here only where it lands is checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lanworker.core.errors import JobFailed
from lanworker.core.states import EventState
from lanworker.message.command import Command, ContainerTask, TaskInput
from lanworker.pipeline.context import JobContext, Phase, PlannedUpload, StagedJob
from lanworker.pipeline.workspace import PathMapper, TaskLayout, Workspace, plan_layout, safe_relative, within
from lanworker.storage import Storage, TransferRecord
from lanworker.storage.pool import Transfers

logger = logging.getLogger(__name__)


def stage(job: JobContext) -> None:
    """Downloads every input of the job (a container task's too) and records what came in."""
    tools, transfers = job.tools, job.transfers()
    with Phase(job, EventState.STAGING):
        work = job.message.work
        if isinstance(work, ContainerTask):
            layout = plan_layout(work, job.workspace)
            job.staged = StagedJob(task=layout, downloads=stage_task_inputs(work, layout, transfers))
        else:
            mapper = tools.executor.path_mapper(job.workspace)
            job.staged = stage_inputs(work, job.workspace, transfers, mapper)
    job.result.inputs = [record.as_dict() for record in job.staged.downloads]
    tools.metrics.bytes_staged.inc(sum(record.size for record in job.staged.downloads))
    job.watch.checkpoint()


def _argument_label(index: int, name: str | None, uri: str) -> str:
    return f"argument {index}{f' ({name})' if name else ''} {uri}"


def stage_inputs(
    command: Command, workspace: Workspace, transfers: Transfers, path_mapper: PathMapper = str
) -> StagedJob:
    """Download every input, prepare output locations, and resolve the argv tail."""
    downloads: dict[str, Path] = {}
    argv: list[str] = []
    uploads: list[PlannedUpload] = []
    prefix_listings: list[tuple[str, bool]] = []

    for index, argument in enumerate(command.arguments):
        if argument.name:
            argv.append(argument.name)
        if argument.type == "parameter":
            if argument.value is not None:
                argv.append(argument.value)
            continue
        assert argument.value is not None  # the schema requires it for input and output
        label = _argument_label(index, argument.name, argument.value)
        if argument.type == "input":
            local = workspace.input_path(argument.value, label)
            if argument.is_directory:
                local.mkdir(parents=True, exist_ok=True)
                prefix_listings.append((argument.value, True))
            else:
                downloads[argument.value] = local
        else:
            local = workspace.output_path(argument.value, label)
            if argument.is_directory:
                local.mkdir(parents=True, exist_ok=True)
            else:
                local.parent.mkdir(parents=True, exist_ok=True)
            uploads.append(
                PlannedUpload(workspace.relative(local), argument.value, label, argument.is_directory)
            )
        argv.append(path_mapper(local) + ("/" if argument.is_directory else ""))

    for index, prefix in enumerate(command.input):
        workspace.input_path(prefix, f"input[{index}] {prefix}")
        prefix_listings.append((prefix, False))

    output_prefixes: list[tuple[str, str]] = []
    for index, prefix in enumerate(command.output):
        local = workspace.output_path(prefix, f"output[{index}] {prefix}")
        (local if prefix.endswith("/") else local.parent).mkdir(parents=True, exist_ok=True)
        output_prefixes.append(
            (workspace.relative(local).as_posix() + ("/" if prefix.endswith("/") else ""), prefix)
        )

    sizes: dict[str, int | None] = {}
    listings = transfers.map(lambda item: transfers.storage.list_objects(item[0]), prefix_listings)
    for (prefix, required), found in zip(prefix_listings, listings, strict=True):
        if not found:
            if required:
                raise JobFailed(f"input directory {prefix} matched no objects", reason="missing-object")
            logger.warning("input prefix %s matched no objects", prefix, extra={"action": "staging"})
        for item in found:
            local = workspace.input_path(item.uri, f"object {item.uri} under {prefix}")
            if item.is_folder:
                local.mkdir(parents=True, exist_ok=True)
                continue
            downloads.setdefault(item.uri, local)
            sizes[item.uri] = item.size
    records = transfers.map(
        transfers.download, [(uri, local, sizes.get(uri)) for uri, local in downloads.items()]
    )

    return StagedJob(argv=argv, uploads=uploads, output_prefixes=output_prefixes, downloads=records)


def input_waves(task: ContainerTask) -> list[list[int]]:
    """Input indexes in order, cut where an input overlaps one before it in the same wave
    (one at, inside or around the other's path): waves run one after another, so a later
    input wins where two write the same file, as TESK applies them; each wave in parallel."""
    waves: list[list[int]] = [[]]
    for index, item in enumerate(task.inputs):
        current = waves[-1]
        if any(within(item.path, task.inputs[i].path) or within(task.inputs[i].path, item.path)
               for i in current):  # fmt: skip
            waves.append([])
        waves[-1].append(index)
    return [wave for wave in waves if wave]


def stage_task_inputs(task: ContainerTask, layout: TaskLayout, transfers: Transfers) -> list[TransferRecord]:
    """Write content inputs, download url inputs (a DIRECTORY is a prefix, listed), wave
    by wave (input_waves): a later input overwrites what an earlier one put at its path."""
    records: list[TransferRecord] = []
    for wave in input_waves(task):
        downloads: list[tuple[str, Path, int | None]] = []
        for index in wave:
            downloads += _stage_input(index, task.inputs[index], layout, transfers.storage)
        records += transfers.map(transfers.download, downloads)
    return records


def _stage_input(
    index: int, item: TaskInput, layout: TaskLayout, storage: Storage
) -> list[tuple[str, Path, int | None]]:
    """Writes a content input now; the downloads a url input needs (uri, host path, size)."""
    host = layout.readable_host(item.path)
    assert host is not None  # plan_layout gave every input a place
    label = f"input {index} ({item.path})"
    if item.content is not None:
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_text(item.content, encoding="utf-8")
        return []
    assert item.url is not None
    if not item.is_directory:
        host.parent.mkdir(parents=True, exist_ok=True)
        return [(item.url, host, None)]
    prefix = item.url.rstrip("/") + "/"
    host.mkdir(parents=True, exist_ok=True)
    downloads: list[tuple[str, Path, int | None]] = []
    for found in storage.list_objects(prefix):
        relative = found.uri[len(prefix) :]
        if found.is_folder:
            if relative:
                (host / safe_relative(relative, label)).mkdir(parents=True, exist_ok=True)
            continue
        downloads.append((found.uri, host / safe_relative(relative, label), found.size))
    return downloads
