#!/usr/bin/env bash
# Builds the worker's image with no registry and no network inside the build:
# a wheelhouse of the project and its dependencies in build/wheels (pip on the host), and
# a base image from Debian packages unless BASE_IMAGE names one that is already there.
# Usage: [TAG=lanworker:latest] [BASE_IMAGE=...] scripts/docker-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PY:-.venv/bin/python}
tag=${TAG:-lanworker:latest}
base=${BASE_IMAGE:-lanworker-base:bookworm}
if ! docker image inspect "$base" >/dev/null 2>&1; then
    scripts/debian-base-image.sh "$base"
fi
rm -rf build/wheels
"$py" -m pip wheel -q --wheel-dir build/wheels .
DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$base" -t "$tag" . >/dev/null
echo "$tag"
