#!/usr/bin/env bash
# A base image from Debian's packages, for machines that reach no container registry:
# debootstrap a minimal bookworm with python3 and venv, then `docker import` it.
# Usage: scripts/debian-base-image.sh [TAG]   (root; installs debootstrap when missing)
set -euo pipefail
tag=${1:-lanworker-base:bookworm}
if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root=$(mktemp -d "${TMPDIR:-/tmp}/lanworker-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
# The mirror this machine's apt already uses; debootstrap's own default otherwise.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" ${mirror:+"$mirror"} >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' - "$tag" >/dev/null
echo "$tag"
