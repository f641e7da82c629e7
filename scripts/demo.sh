#!/usr/bin/env bash
# The worker's main job on the embedded local queue: no AWS account, no network.
# A worker runs in the background; each example message is submitted and its result printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
state=$(mktemp -d "${TMPDIR:-/tmp}/lanworker-demo.XXXXXX")
export LANWORKER_QUEUE="local:$state/queue.db#jobs"
mkdir -p demo-output

"$PY" worker.py native --log-format text --work-root "$state/work" --concurrency 2 \
    -- "$PY" "$PWD/examples/tools/wordfreq.py" 2> "$state/worker.log" &
worker=$!
trap 'kill -TERM "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true; rm -rf "$state"' EXIT

status=0
for message in examples/local/*.json; do
    echo "== submit $message"
    if ! "$PY" worker.py submit --wait --wait-timeout-s 60 "$message"; then
        case "$message" in *invalid*) echo "(rejected, as it should be)";; *) status=1;; esac
    fi
done
echo "== outputs in demo-output/"
for file in demo-output/*; do echo "-- $file"; cat "$file"; echo; done
echo "== worker log"
kill -TERM "$worker"; wait "$worker" || true
cat "$state/worker.log"
exit "$status"
