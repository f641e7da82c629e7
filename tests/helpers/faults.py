"""The one summary line each fault test prints, collected for the end of the run too."""

from __future__ import annotations

SUMMARIES: list[str] = []


def summary(name: str, jobs: int, completed: int, lost: int, duplicates: int) -> str:
    line = f"faults: {name} jobs={jobs} completed={completed} lost={lost} duplicates={duplicates}"
    SUMMARIES.append(line)
    print(line)
    return line
