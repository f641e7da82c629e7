"""Upload: the collected files to their URIs, after checking their total size.

Each file is opened beneath the job dir without following links (`storage.safefs`), so
a command that swaps an output for a link after collection uploads nothing it did not own.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

from lanworker.pipeline.collect import Collected
from lanworker.pipeline.context import JobContext
from lanworker.storage import TransferRecord
from lanworker.storage.pool import Transfers
from lanworker.storage.safefs import TreeTooLarge, apparent_bytes, open_beneath


def upload(job: JobContext, collected: Collected, transfers: Transfers) -> list[dict[str, Any]]:
    """The result's `outputs`: one record per uploaded file, a container path where it has one."""
    check_output_size(job.workspace.root, collected.files, job.tools.config.max_output_mb)
    records = upload_outputs(collected.files, job.workspace.root, transfers)
    job.tools.metrics.bytes_uploaded.inc(sum(record.size for record in records))
    documents = [record.as_dict() for record in records]
    for document in documents:
        if document["uri"] in collected.container_paths:
            document["path"] = collected.container_paths[document["uri"]]
    return documents


def check_output_size(root: Path, files: list[tuple[PurePosixPath, str]], max_output_mb: int | None) -> None:
    """--max-output-mb: the outputs' apparent sizes (a sparse file counts whole), before
    any is uploaded."""
    if max_output_mb is None:
        return
    total = 0
    for relative, _ in files:
        with contextlib.suppress(OSError):  # missing: the upload names it
            total += apparent_bytes(os.lstat(root / relative))
    if total > max_output_mb * 1024 * 1024:
        raise TreeTooLarge(f"outputs add up to {total} bytes, more than --max-output-mb {max_output_mb}")


def upload_outputs(
    files: list[tuple[PurePosixPath, str]], root: Path, transfers: Transfers
) -> list[TransferRecord]:
    """Upload job-dir files; each is opened beneath root without following links."""

    def one(pair: tuple[PurePosixPath, str]) -> TransferRecord:
        relative, uri = pair
        with open_beneath(root, relative, f"output {relative}") as source:
            return transfers.storage.upload(source, uri, transfers.checkpoint)

    return transfers.map(one, files)
