#!/usr/bin/env bash
# Runs the unit and integration suites on the oldest and newest Python that pyproject.toml
# claims (3.10 and 3.13), each in a venv of its own, where that Python is installed (this
# machine's image has them under pyenv). A Python that is not there is named and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for version in 3.10 3.13; do
    python=""
    # pyenv's own builds first (its shims answer for every version but run only the global one)
    for candidate in $(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python"$version" 2>/dev/null) \
            "$(command -v "python$version" || true)"; do
        if [ -n "$candidate" ] && "$candidate" -c 'import venv' >/dev/null 2>&1; then
            python="$candidate"
        fi
    done
    if [ -z "$python" ]; then
        echo "other-pythons: python$version is not installed here; skipped" >&2
        continue
    fi
    venv=".venv-$version"
    if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
        "$venv/bin/python" -m pip install -q -e '.[dev]'
        touch "$venv/.installed"
    fi
    echo "other-pythons: unit and integration suites on $("$venv/bin/python" --version)" >&2
    # The image build is Python-independent and slow: the main run covers it.
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit tests/integration \
        --ignore=tests/integration/test_dockerfile.py || status=1
done
exit $status
