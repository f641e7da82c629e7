"""The raw boto3 baseline of benchmarks/staging.py: 16 threads of get_object over a prefix,
or (--single) one streamed GET of one object."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.config


def main() -> int:
    bucket, key, target = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    s3 = boto3.client("s3", config=botocore.config.Config(max_pool_connections=16))
    if "--single" in sys.argv:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with (target / "object").open("wb") as handle:
            for chunk in body.iter_chunks(1024 * 1024):
                handle.write(chunk)
        return 0
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        for item in page.get("Contents", [])
    ]

    def fetch(name: str) -> None:
        (target / name.rsplit("/", 1)[-1]).write_bytes(s3.get_object(Bucket=bucket, Key=name)["Body"].read())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fetch, keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
