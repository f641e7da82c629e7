"""Translator throughput: S3 event notifications in, command messages out, on SQS (a local
moto_server), against a plain boto3 loop doing the same work (receive ten, parse, send each
command, delete each event), in alternated rounds of one run.

    .venv/bin/python benchmarks/translator.py [--events 1000] [--rounds 2] [--rtt-ms 10]

lanworker runs as `worker.py translate --once` runs it (in this process): commands sent ten
per SendMessageBatch, deletes batched by the settler, --concurrency event messages at once.
Ratios above 1 mean lanworker is faster.

moto_server answers on loopback in a fraction of a millisecond plus its own per-message
work, where SQS takes 5-20 ms a call within a region: --rtt-ms adds that round trip to
every boto3 call of this process (both contenders' alike, a sleep that overlaps as the
network's would); 0 measures moto_server bare.

moto also recounts a queue's messages for every message sent to it or received from it
(its queue attributes), so its work per command grows with the jobs queue's depth, which
SQS's does not. As workers would, a consumer in a process of its own takes the commands
off the jobs queue while each contender runs (the same for both), and its count is the
check that every command arrived once; --no-drain leaves them queued (moto's depth-bound
time then dominates both contenders).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3

from benchmarks import moto_server
from lanworker.core.config import build_config
from lanworker.queues import QueueCache, SqsQueue
from lanworker.translator.loop import Translator
from lanworker.translator.rules import Rule, RuleSet

BUCKET = "bench"
COMMAND = {"service": "tool", "command": {"arguments": [{"type": "input", "value": "{url}"}]}}


def event(index: int, records: int) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": BUCKET},
                        "object": {"key": f"in/{index}-{n}.txt", "sequencer": f"{index:08X}{n:04X}"},
                    },
                }
                for n in range(records)
            ]
        }
    )


def fill(sqs: Any, url: str, events: int, records: int) -> None:
    for start in range(0, events, 10):
        entries = [
            {"Id": str(i), "MessageBody": event(i, records)} for i in range(start, min(events, start + 10))
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


DRAIN = """
import sys, boto3
sqs, url, want, got = boto3.client("sqs"), sys.argv[1], int(sys.argv[2]), 0
while got < want:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    if messages:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    got += len(messages)
print(got)
"""


def drained(jobs_url: str, count: int) -> subprocess.Popen[str]:
    """A consumer that deletes `count` commands from the jobs queue, then prints its count."""
    return subprocess.Popen(
        [sys.executable, "-c", DRAIN, jobs_url, str(count)], stdout=subprocess.PIPE, text=True
    )


def boto3_loop(sqs: Any, events_url: str, jobs_url: str, events: int) -> float:
    """What a hand-written translator does: receive ten, one send per command, one delete per event."""
    started = time.perf_counter()
    done = 0
    while done < events:
        response = sqs.receive_message(QueueUrl=events_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            for record in json.loads(message["Body"])["Records"]:
                url = f"s3://{record['s3']['bucket']['name']}/{record['s3']['object']['key']}"
                body = {**COMMAND, "command": {"arguments": [{"type": "input", "value": url}]}}
                sqs.send_message(QueueUrl=jobs_url, MessageBody=json.dumps(body))
            sqs.delete_message(QueueUrl=events_url, ReceiptHandle=message["ReceiptHandle"])
            done += 1
    return time.perf_counter() - started


def lanworker(events_url: str, jobs_url: str, concurrency: int) -> float:
    rules = RuleSet([Rule("bench", BUCKET, jobs_url, COMMAND)], {})
    config = build_config(
        {
            "mode": "client",
            "queue_url": events_url,
            "once": True,
            "wait_time_s": 1,
            "concurrency": concurrency,
        },
        {},
    )
    started = time.perf_counter()
    Translator(rules, SqsQueue(events_url), QueueCache(), config).run()
    return time.perf_counter() - started


def check_sent(
    sqs: Any, jobs_url: str, expected: int, consumer: subprocess.Popen[str] | None, name: str
) -> None:
    """Every command arrived, once: the consumer's count, or the queue's, and nothing left."""
    consumed = int(consumer.communicate(timeout=300)[0]) if consumer is not None else 0
    attributes = sqs.get_queue_attributes(
        QueueUrl=jobs_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    left = int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
    assert consumed + left == expected, (name, consumed, left, expected)


def add_round_trip(rtt_ms: float) -> None:
    """Every AWS call of this process waits rtt_ms before it is sent, as on a network."""
    from botocore.endpoint import Endpoint

    send = Endpoint._send

    def delayed(self: Endpoint, request: Any) -> Any:
        time.sleep(rtt_ms / 1000)
        return send(self, request)

    Endpoint._send = delayed  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--records", type=int, default=1, help="records (commands) per event")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds; medians are printed")
    parser.add_argument("--rtt-ms", type=float, default=10.0, help="round trip added to each AWS call")
    parser.add_argument(
        "--no-drain", dest="drain", action="store_false", help="leave the commands queued (no consumer)"
    )
    args = parser.parse_args()
    logging.disable(logging.INFO)  # as --log-level WARNING: the loop logs nothing either
    with tempfile.TemporaryDirectory() as scratch, moto_server(scratch):
        sqs = boto3.client("sqs")
        add_round_trip(args.rtt_ms)
        timings: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for name, run in (
                (
                    "boto3 loop (receive 10, send each, delete each)",
                    lambda e, j: boto3_loop(sqs, e, j, args.events),
                ),
                ("lanworker translate --concurrency 1", lambda e, j: lanworker(e, j, 1)),
                ("lanworker translate --concurrency 4", lambda e, j: lanworker(e, j, 4)),
            ):
                events_url = sqs.create_queue(
                    QueueName=f"ev-{round_}-{len(timings.get(name, []))}-{abs(hash(name))}"
                )["QueueUrl"]
                jobs_url = sqs.create_queue(QueueName=f"jobs-{round_}-{abs(hash(name))}")["QueueUrl"]
                fill(sqs, events_url, args.events, args.records)
                consumer = drained(jobs_url, args.events * args.records) if args.drain else None
                timings.setdefault(name, []).append(run(events_url, jobs_url))
                check_sent(sqs, jobs_url, args.events * args.records, consumer, name)
    baseline = statistics.median(timings["boto3 loop (receive 10, send each, delete each)"])
    print(
        f"{args.events} events x {args.records} record(s) through SQS on moto_server, {args.rtt_ms:g} ms added "
        f"to each call, commands {'consumed as they arrive' if args.drain else 'left queued'}; "
        f"medians of {args.rounds} alternated rounds"
    )
    for name, values in timings.items():
        seconds = statistics.median(values)
        print(
            f"  {name:<50} {args.events / seconds:8.1f} events/s  {baseline / seconds:5.2f}x the boto3 loop"
        )


if __name__ == "__main__":
    main()
