"""Translator throughput: S3 event notifications in, command messages out, on SQS (a local
moto_server), against a plain boto3 loop doing the same work (receive ten, parse, send each
command, delete each event), in alternated rounds of one run.

    .venv/bin/python benchmarks/translator.py [--events 1000] [--rounds 2] [--rtt-ms 10] [--window 100]

lanworker runs as `worker.py translate --once` runs it (in this process): commands sent ten
per SendMessageBatch, deletes batched by the settler, --concurrency event messages at once.
Ratios above 1 mean lanworker is faster.

moto_server answers on loopback in a fraction of a millisecond plus its own per-message
work, where SQS takes 5-20 ms a call within a region: --rtt-ms adds that round trip to
every boto3 call of this process (both contenders' alike, a sleep that overlaps as the
network's would); 0 measures moto_server bare.

Around each contender a process of its own plays the surroundings, the same for both: a
feeder sends the events as S3 would, at most --window of them waiting at a time (it tops up
as commands arrive), and a consumer takes the commands off the jobs queue as workers would;
its count checks that every command arrived once. A contender's time runs from the start to
the last command's arrival. moto recounts a queue's messages for every message sent to it
or received from it (its queue attributes), so its work per event grows with the queues'
depth, which SQS's does not: --window 1000 with --events 1000 queues every event before the
start, and moto's depth-bound time then weighs on both contenders.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
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


class Arrivals:
    """Commands consumed so far and the wall-clock time the last one arrived, under one condition."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.consumed = 0
        self.last = 0.0

    def add(self, count: int) -> None:
        with self.changed:
            self.consumed += count
            self.last = time.time() if count else self.last
            self.changed.notify()

    def wait_for(self, consumed: int, timeout_s: float) -> int:
        """Wait until `consumed` commands have arrived or timeout_s passed; the count now."""
        with self.changed:
            self.changed.wait_for(lambda: self.consumed >= consumed, timeout=timeout_s)
            return self.consumed


def world(events_url: str, jobs_url: str, events: int, records: int, window: int, pipe: Connection) -> None:
    """The translator's surroundings, in a process of its own: S3 sends events, at most
    `window` of them waiting at a time, and workers take the commands as they arrive. Sends
    "ready" once the first `window` events wait, then (commands consumed, the wall-clock time
    the last one arrived)."""
    feed, take = boto3.client("sqs"), boto3.client("sqs")
    arrivals = Arrivals()

    def send(sent: int, upto: int) -> int:
        for start in range(sent, upto, 10):
            batch = range(start, min(upto, start + 10))
            entries = [{"Id": str(i), "MessageBody": event(i, records)} for i in batch]
            feed.send_message_batch(QueueUrl=events_url, Entries=entries)
        return max(sent, upto)

    def consume() -> None:
        deadline = time.monotonic() + 900
        while arrivals.consumed < events * records and time.monotonic() < deadline:
            response = take.receive_message(QueueUrl=jobs_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            messages = response.get("Messages", [])
            if messages:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                ]
                take.delete_message_batch(QueueUrl=jobs_url, Entries=entries)
            arrivals.add(len(messages))

    sent = send(0, min(window, events))
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    pipe.send("ready")
    while sent < events and consumer.is_alive():
        # top up ten at a time: room for the next batch once its events' commands arrived
        consumed = arrivals.wait_for((min(events, sent + 10) - window) * records, timeout_s=1.0)
        sent = send(sent, min(events, consumed // records + window))
    consumer.join(timeout=900)
    pipe.send((arrivals.consumed, arrivals.last))


class Surroundings:
    """A `world` process for one contender's run: start it, wait for its first events, and
    after the run, the seconds from the start to the last command's arrival."""

    def __init__(self, events_url: str, jobs_url: str, events: int, records: int, window: int) -> None:
        self.pipe, child = multiprocessing.get_context("spawn").Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=world, args=(events_url, jobs_url, events, records, window, child)
        )
        self.process.start()
        if not self.pipe.poll(300) or self.pipe.recv() != "ready":
            raise RuntimeError("the event feeder did not start")
        self.started = time.time()

    def finish(self) -> tuple[int, float]:
        """(commands consumed, seconds from the start to the last one's arrival)."""
        if not self.pipe.poll(900):
            raise RuntimeError("the consumer did not finish")
        consumed, last = self.pipe.recv()
        self.process.join(timeout=60)
        return consumed, last - self.started


def boto3_loop(sqs: Any, events_url: str, jobs_url: str, events: int) -> None:
    """What a hand-written translator does: receive ten, one send per command, one delete per event."""
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


def lanworker(events_url: str, jobs_url: str, concurrency: int) -> None:
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
    Translator(rules, SqsQueue(events_url), QueueCache(), config).run()


def left(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def check_sent(sqs: Any, events_url: str, jobs_url: str, expected: int, consumed: int, name: str) -> None:
    """Every command arrived, once (consumed, or still queued), and every event was deleted."""
    assert (consumed + left(sqs, jobs_url), left(sqs, events_url)) == (expected, 0), (
        name,
        consumed,
        expected,
    )


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
        "--window",
        type=int,
        default=100,
        help="events waiting at most at a time (the feeder tops up as commands arrive); "
        "--window 1000 with --events 1000 queues them all before the start",
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
                surroundings = Surroundings(events_url, jobs_url, args.events, args.records, args.window)
                run(events_url, jobs_url)
                consumed, seconds = surroundings.finish()
                timings.setdefault(name, []).append(seconds)
                check_sent(sqs, events_url, jobs_url, args.events * args.records, consumed, name)
    baseline = statistics.median(timings["boto3 loop (receive 10, send each, delete each)"])
    print(
        f"{args.events} events x {args.records} record(s) through SQS on moto_server, {args.rtt_ms:g} ms added "
        f"to each call, at most {args.window} events waiting, commands consumed as they arrive; "
        f"medians of {args.rounds} alternated rounds"
    )
    for name, values in timings.items():
        seconds = statistics.median(values)
        print(
            f"  {name:<50} {args.events / seconds:8.1f} events/s  {baseline / seconds:5.2f}x the boto3 loop"
        )


if __name__ == "__main__":
    main()
