"""Test images built locally (no registry is reachable): a busybox rootfs via `docker import`."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from typing import Any

BUSYBOX_IMAGE = "lanworker-test/busybox:1"
APPLETS = (
    "sh",
    "cat",
    "wc",
    "md5sum",
    "sleep",
    "id",
    "echo",
    "dd",
    "ls",
    "touch",
    "head",
    "tr",
    "mkdir",
    "cp",
    "printf",
    "true",
    "false",
    "env",
    "stat",
    "dirname",
    "basename",
    "rm",
    "yes",
    "test",
)

# The seed message's command, as a script inside the image: uppercase --infile into
# --outfile, list input sidecars, write output sidecars, echo stdin, talk on stderr.
SEEDTOOL = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --infile) infile="$2"; shift 2;;
    --outfile) outfile="$2"; shift 2;;
    --arg1) arg1="$2"; shift 2;;
    *) shift;;
  esac
done
printf "stdin=%s arg1=%s\\n" "$(cat)" "$arg1"
echo "diagnostics from seedtool" >&2
indir=$(dirname "$infile"); outdir=$(dirname "$outfile")
{ tr a-z A-Z < "$infile"; echo "sidecars=$(ls "$indir/some" | tr '\\n' ',')"; } > "$outfile"
mkdir -p "$outdir/some"
echo "dbf" > "$outdir/some/output.dbf"
echo "ignored" > "$outdir/some/unrelated.txt"
"""


def _add(
    archive: tarfile.TarFile,
    name: str,
    data: bytes | None = None,
    mode: int = 0o755,
    link: str | None = None,
    directory: bool = False,
) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if directory:
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    elif link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = link
        archive.addfile(info)
    else:
        assert data is not None
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def build_busybox_image(client: Any) -> str:
    """Import (once per engine) a tiny image: static busybox, its applet links, and seedtool."""
    try:
        client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except Exception:
        pass
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise RuntimeError("busybox is not installed (apt-get install busybox-static)")
    with tempfile.NamedTemporaryFile(suffix=".tar") as handle:
        with tarfile.open(fileobj=handle, mode="w") as archive:
            for directory in ("bin", "tmp", "etc", "job", "proc", "sys", "dev"):
                _add(archive, directory, directory=True, mode=0o1777 if directory == "tmp" else 0o755)
            with open(busybox, "rb") as binary:
                _add(archive, "bin/busybox", binary.read())
            for applet in APPLETS:
                _add(archive, f"bin/{applet}", link="busybox")
            _add(archive, "bin/seedtool", SEEDTOOL.encode())
            _add(archive, "etc/passwd", b"root:x:0:0:root:/:/bin/sh\n", mode=0o644)
        handle.flush()
        repository, tag = BUSYBOX_IMAGE.split(":")
        client.api.import_image_from_file(handle.name, repository=repository, tag=tag)
    return BUSYBOX_IMAGE
