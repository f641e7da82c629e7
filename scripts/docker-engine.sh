#!/usr/bin/env bash
# Makes a Docker engine reachable for the docker tests, where this machine allows it:
# as root on Debian it installs docker.io and busybox-static and starts dockerd.
# Elsewhere it only reports; the docker tests then skip with a reason (or fail when
# LANWORKER_REQUIRE_DOCKER=1, as in CI).
set -u
if docker info >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "docker-engine: no reachable Docker engine and cannot install one here; docker tests will skip" >&2
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v busybox >/dev/null 2>&1; then
    echo "docker-engine: installing docker.io and busybox-static" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io busybox-static >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    echo "docker-engine: starting dockerd" >&2
    nohup dockerd >/tmp/lanworker-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
fi
docker info >/dev/null 2>&1 || { echo "docker-engine: dockerd did not come up, see /tmp/lanworker-dockerd.log" >&2; tail -20 /tmp/lanworker-dockerd.log >&2; }
exit 0
