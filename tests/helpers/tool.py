"""A test command that exercises every part of a job: arguments, stdin, stdout, stderr,
input sidecars, output sidecars, exit codes and sleeping.

Usage: tool.py [--infile F] [--arg1 V] [--outfile F] [--exit N] [--sleep S] [--fail-until-attempt N]
"""

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--infile")
    parser.add_argument("--arg1")
    parser.add_argument("--outfile")
    parser.add_argument("--outdir")
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--stdout-bytes", type=int, default=0)
    parser.add_argument("--fail-until-attempt", type=int, default=0)
    parser.add_argument("--counter")
    parser.add_argument("--record", help="append this job's id to FILE when it starts")
    args = parser.parse_args()
    if args.record:
        with open(args.record, "a", encoding="utf-8") as record:
            record.write(os.environ.get("LANWORKER_JOB_ID", "?") + "\n")

    stdin_data = sys.stdin.read() if not sys.stdin.isatty() else ""
    sys.stdout.write(f"stdin={stdin_data!r} arg1={args.arg1}\n")
    sys.stderr.write("diagnostics from tool\n")
    if args.stdout_bytes:
        sys.stdout.write("x" * args.stdout_bytes)
    sys.stdout.flush()
    if args.sleep:
        time.sleep(args.sleep)
    if args.infile:
        infile = Path(args.infile)
        text = infile.read_text(encoding="utf-8")
        sidecars = (
            sorted(p.name for p in (infile.parent / "some").glob("input*"))
            if (infile.parent / "some").is_dir()
            else []
        )
        if args.outfile:
            outfile = Path(args.outfile)
            outfile.write_text(text.upper() + f"sidecars={','.join(sidecars)}\n", encoding="utf-8")
            sidecar_dir = outfile.parent / "some"
            if sidecar_dir.is_dir():
                (sidecar_dir / "output.dbf").write_text("dbf for " + outfile.name, encoding="utf-8")
                (sidecar_dir / "output-extra.txt").write_text("extra", encoding="utf-8")
                (sidecar_dir / "unrelated.txt").write_text("not under the prefix", encoding="utf-8")
    if args.outdir:
        out = Path(args.outdir)
        (out / "nested").mkdir(parents=True, exist_ok=True)
        (out / "a.txt").write_text("a", encoding="utf-8")
        (out / "nested" / "b.txt").write_text("b", encoding="utf-8")
    if args.counter:
        counter = Path(args.counter)
        count = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(count))
        if count < args.fail_until_attempt:
            return 3
    sys.stderr.write(f"cwd={os.getcwd()}\n")
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
