#!/usr/bin/env bash
# The performance issue's measurements, all from one run of one commit, each bench writing
# its section of bench/RESULTS.md (--write-results):
#
#   bash bench/perf_round.sh            # about an hour on a 2-core machine
#
# In order: the workflow engines (DBOS, Absurd), the queue drain against PgQueuer under
# Python 3.11 and, when PY312 names a Python 3.12 with skiplock[bench] installed, 3.12;
# realtime at scale; long workflows, the worker's footprint and sleep lateness against
# BASE (a commit, default cd27596: the code before the performance work), checked out
# into a temporary directory. Run it on a quiet machine: every bench alternates the
# systems it compares and reports medians, so the ratios hold under some load, but the
# absolute figures do not. Environment: PY (default python), PY312, BASE.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python}
PY312=${PY312:-}
BASE=${BASE:-cd27596}

base_dir=$(mktemp -d -t skiplock-base-XXXXXX)
trap 'rm -rf "$base_dir"' EXIT
git archive "$BASE" | tar -x -C "$base_dir"

step() {
    local started
    started=$(date +%s)
    echo "== $(date -u +%H:%M:%S) $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    "$@"
    echo "== took $(($(date +%s) - started)) s"
}

echo "== commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (modified)'), base $BASE"
step "$PY" bench/workflows.py --repeat 3 --write-results
step "$PY" bench/drain_matrix.py --pairs 5 --write-results
if [[ -n "$PY312" ]]; then
    step "$PY312" bench/drain_matrix.py --pairs 5 --write-results
fi
step "$PY" bench/realtime_scale.py --repeat 5 --write-results
step "$PY" bench/long_workflows.py --baseline "$base_dir" --repeat 5 --write-results
step "$PY" bench/worker_footprint.py --baseline "$base_dir" --repeat 5 --write-results
step "$PY" bench/sleep_lateness.py --baseline "$base_dir" --repeat 3 --write-results
