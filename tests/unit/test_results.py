"""Results cut to fit a queue's message size limit: what is cut, in which order, and that
the cut result always fits."""

from __future__ import annotations

import json
from typing import Any

from lanworker.reporting.results import JobResult, fit_result


def result(**fields: Any) -> dict[str, Any]:
    return JobResult(job_id="job-1", service="tool", state="succeeded", worker_id="w", **fields).as_dict()


def size(document: dict[str, Any]) -> int:
    return len(json.dumps(document))


def test_a_result_that_fits_is_left_alone() -> None:
    document = result(stdout={"text": "hello", "bytes": 5, "truncated": False})
    assert fit_result(document, 10_000) is document


def test_stream_texts_go_first_stdout_keeping_its_head_and_stderr_its_tail() -> None:
    document = result(
        stdout={"text": "H" + "o" * 300_000, "bytes": 300_001, "truncated": False},
        stderr={"text": "e" * 300_000 + "T", "bytes": 300_001, "truncated": False},
        inputs=[{"uri": f"s3://b/k{n}", "size": 1} for n in range(50)],
    )
    fitted = fit_result(document, 256 * 1024)
    assert size(fitted) <= 256 * 1024 and fitted["cut"] == ["stdout", "stderr"]
    assert fitted["stdout"]["text"].startswith("H") and fitted["stderr"]["text"].endswith("T")
    assert fitted["stdout"]["truncated"] and fitted["stdout"]["bytes"] == 300_001
    assert fitted["inputs"] == document["inputs"]
    assert document["stdout"]["truncated"] is False  # the original is untouched


def test_many_input_records_are_kept_in_part_and_counted() -> None:
    records = [
        {"uri": f"s3://bucket/prefix/object-{n:06d}", "size": 65536, "sha256": "0" * 64}
        for n in range(20_000)
    ]
    fitted = fit_result(result(inputs=records), 256 * 1024)
    assert size(fitted) <= 256 * 1024 and fitted["cut"] == ["inputs"]
    assert fitted["inputs"] == records[:100] and fitted["inputs_omitted"] == 19_900


def test_what_cannot_be_cut_down_leaves_the_fields_that_say_what_happened() -> None:
    document = result(exit_code=3, error="boom", extra={"huge": "z" * 100_000})
    fitted = fit_result(document, 4096)
    assert size(fitted) <= 4096
    assert (fitted["job_id"], fitted["state"], fitted["exit_code"], fitted["error"]) == (
        "job-1",
        "succeeded",
        3,
        "boom",
    )
    assert "huge" not in fitted and fitted["cut"] == ["everything else"]
