"""Benchmark: what skiplock[otel] costs the hot path, in three set-ups:

* absent: `opentelemetry` cannot be imported (blocked in the measuring process);
* no provider: `opentelemetry-api` installed, no TracerProvider set (the API's proxy);
* sdk: the SDK's TracerProvider with a span processor that drops every span (what span
  creation, the trace context sent with each trigger and claimed with each run cost,
  without an exporter's own cost).

    python bench/otel_cost.py [--runs 5000] [--triggers 1000] [--repeat 3] [--dsn ...]

Each set-up runs in a process of its own, in a fresh database, `--repeat` times (the
figure is the median, with min and max):

* trigger overhead: the Python-side cost of one trigger's tracing, in us per call
  (`trigger_span()` entered, the options given their context, the run id set, exited);
* trigger: `--triggers` calls of `task.trigger(payload)`, one round trip each, in us
  per call;
* drain: N no-op runs queued first (those, then `batch_trigger`, traced as the set-up says),
  then one in-process worker (concurrency 50) runs them; runs/s from its start until the
  last is COMPLETED.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("absent", "no provider", "sdk")

_CHILD = r"""
import json, sys, threading, time, timeit

import psycopg

mode, dsn, runs, singles = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "absent":
    class NoOtel:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(name)
    sys.meta_path.insert(0, NoOtel())
elif mode == "sdk":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())  # the base class: drops every span
    trace.set_tracer_provider(provider)

from engine import Engine, TaskContext
from engine.api import tracing

app = Engine(dsn)
app.migrate()

@app.task("bench-noop")
async def noop(payload: dict, ctx: TaskContext) -> None:
    return None

def overhead() -> None:
    with tracing.trigger_span("bench-noop") as span:
        span.options({"queue": "q"})
        span.run("run_x")

n = 200_000
per_call = min(timeit.repeat(overhead, number=n, repeat=5)) / n * 1e6

payloads = [{"i": i} for i in range(runs)]
started = time.perf_counter()
for p in payloads[:singles]:
    noop.trigger(p)
trigger_us = (time.perf_counter() - started) / singles * 1e6

# the runs above are drained too: queue the rest
for i in range(singles, runs, 1000):
    noop.batch_trigger(payloads[i : i + 1000])
worker = app.worker(concurrency=50, poll_interval=0.05)
thread = threading.Thread(target=worker.run, daemon=True)
started = time.perf_counter()
thread.start()
with psycopg.connect(dsn, autocommit=True) as c:
    while c.execute(
        "SELECT count(*) FROM skiplock.attempts WHERE status = 'COMPLETED'"
    ).fetchone()[0] < runs:
        time.sleep(0.02)
drain = runs / (time.perf_counter() - started)
worker.stop()
thread.join(30)
with psycopg.connect(dsn) as c:
    traced = c.execute(
        "SELECT count(*) FROM skiplock.runs WHERE trace_context IS NOT NULL").fetchone()[0]
app.close()
print(json.dumps({"overhead_us": per_call, "trigger_us": trigger_us, "drain": drain,
                  "traced": traced, "tracer": tracing.tracer() is not None}))
"""


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.common import add_dsn, cluster, fresh_database

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--triggers", type=int, default=1000, help="single triggers timed")
    add_dsn(parser)
    args = parser.parse_args()

    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with cluster(args.dsn) as server:
        for _ in range(args.repeat):
            for mode in MODES:  # interleaved, so that drift hits every set-up alike
                with fresh_database(server.dsn, f"otel_{uuid.uuid4().hex[:8]}") as dsn:
                    done = subprocess.run(
                        [
                            sys.executable,
                            "-c",
                            _CHILD,
                            mode,
                            dsn,
                            str(args.runs),
                            str(args.triggers),
                        ],
                        capture_output=True,
                        text=True,
                        env=env,
                        check=False,
                    )
                    if done.returncode != 0:
                        raise SystemExit(f"{mode}: {done.stderr}")
                    results[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(mode, results[mode][-1], flush=True)

    def summary(mode: str, key: str, digits: int) -> str:
        values = [r[key] for r in results[mode]]
        med = statistics.median(values)
        return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    print(f"\n{args.runs} runs, median of {args.repeat} (min-max)")
    print(f"{'set-up':<12} {'tracing, us/trigger':>22} {'trigger, us':>20} {'drain, runs/s':>22}")
    for mode in MODES:
        print(
            f"{mode:<12} {summary(mode, 'overhead_us', 2):>22} "
            f"{summary(mode, 'trigger_us', 0):>20} {summary(mode, 'drain', 0):>22}"
        )


if __name__ == "__main__":
    main()
