"""Benchmark: wait-resume latency, from a token's completion to its run executing again.

    python bench/wait_resume.py [--runs 200] [--repeat 3] [--dsn postgresql://...]

A worker process (`bench.wait_app:app`) runs N runs that each wait on a token of their
own, until all are WAITING (suspended: no worker, no slot). The tokens are then
completed one at a time, 20 ms apart; each run records, as its first act after the wait,
the database's clock_timestamp(). Latency = that time minus the token's completed_at,
both by the database clock. Prints p50, p95 and p99 (median over repetitions, with min
and max), on a throwaway cluster with durability on, like bench/drain.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

from bench.common import add_dsn
from bench.drain import REPO, fresh_database, postgres_server, server_facts
from engine import Engine


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def measure(dsn: str, n: int) -> list[float]:
    """One repetition: the N latencies in milliseconds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_resumed (run_id text PRIMARY KEY, resumed_at timestamptz)")
    env = {**os.environ, "SKIPLOCK_DATABASE_URL": dsn}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "worker",
            "bench.wait_app:app",
            "--concurrency",
            "50",
            "--version",
            "bench-wait",
            "--quiet",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = Engine(dsn)
    try:
        tokens = [app.waitpoints.create_token() for _ in range(n)]
        runs = {app.trigger("bench-resume", t.id).id: t.id for t in tokens}

        def waiting() -> bool:
            with psycopg.connect(dsn) as c:
                row = c.execute("SELECT count(*) FROM skiplock.runs WHERE status = 'WAITING'")
                return row.fetchone() == (n,)

        _wait(waiting, 120, "every run to be WAITING")
        for token in tokens:
            app.waitpoints.complete_token(token)
            time.sleep(0.02)

        def resumed() -> bool:
            with psycopg.connect(dsn) as c:
                return c.execute("SELECT count(*) FROM bench_resumed").fetchone() == (n,)

        _wait(resumed, 120, "every run to resume")
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM b.resumed_at - w.completed_at) * 1000 "
                "FROM bench_resumed b JOIN skiplock.run_steps s ON s.run_id = b.run_id "
                "JOIN skiplock.waitpoints w ON w.id = s.waitpoint_id"
            ).fetchall()
        assert len(rows) == len(runs)
        return [float(r[0]) for r in rows]
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    add_dsn(parser)
    args = parser.parse_args()
    per_rep: list[dict[str, float]] = []
    with postgres_server(args.dsn) as server:
        facts = server_facts(server)
        for rep in range(args.repeat):
            with fresh_database(server, f"bench_wait_{os.getpid()}_{rep}") as dsn:
                ms = measure(dsn, args.runs)
            figures = {
                q: _percentile(ms, p) for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            }
            per_rep.append(figures)
            print(f"#{rep + 1}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in figures.items()))
    print(
        f"\nwait-resume latency, {args.runs} runs, median of {args.repeat} (min-max); "
        f"PostgreSQL {facts.get('server_version')}, fsync={facts.get('fsync')}, "
        f"synchronous_commit={facts.get('synchronous_commit')}"
    )
    for q in ("p50", "p95", "p99"):
        values = [r[q] for r in per_rep]
        print(f"  {q}: {statistics.median(values):7.1f} ms  ({min(values):.1f}-{max(values):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
