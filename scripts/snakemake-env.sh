#!/usr/bin/env bash
# Snakemake as its users install it, for the engine test (tests/engines): a venv of its own
# (the TES executor plugin pins py-tes 0.4.x), and the image its tasks run in, built from
# the project's Debian base with a wheelhouse made here (no registry, no network in the
# build). Prints the image's tag. Both are kept: a second run only checks them.
# Usage: scripts/snakemake-env.sh   (root, a running docker engine)
set -euo pipefail
cd "$(dirname "$0")/.."
version=9.27.1
pins="snakemake==$version snakemake-storage-plugin-s3==0.3.6"
venv=.venv-snakemake
image=lanworker-test/snakemake:$version
base=${BASE_IMAGE:-lanworker-base:bookworm}
if [ ! -f "$venv/.installed" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q $pins snakemake-executor-plugin-tes==0.1.3
    touch "$venv/.installed"
fi
if ! docker image inspect "$image" >/dev/null 2>&1; then
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        scripts/debian-base-image.sh "$base" >/dev/null
    fi
    context=$(mktemp -d "${TMPDIR:-/tmp}/lanworker-snakemake.XXXXXX")
    trap 'rm -rf "$context"' EXIT
    "$venv/bin/python" -m pip wheel -q --wheel-dir "$context/wheels" $pins
    cp tests/engines/snakemake.Dockerfile "$context/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$base" -t "$image" "$context" >/dev/null
fi
echo "$image"
