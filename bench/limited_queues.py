"""Benchmark: drain throughput when the runs are spread over many limited queues.

    python bench/limited_queues.py [--queues 1000] [--runs 20000] [--limit 1] [--repeat 3]

N no-op runs are queued round-robin over Q queues of concurrency limit L each, then two
worker processes (`--concurrency 50`) drain them; the same N runs in a single unlimited
queue are drained for comparison. Every admission to a limited queue happens under its
advisory lock after counting its slot holders, and each dequeue visits the queues with
ready runs: this measures what that bookkeeping costs. Prints runs/s (median, min-max).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import add_dsn
from bench.drain import (
    fresh_database,
    noop_task,
    postgres_server,
    server_facts,
    spawn_workers,
    stop_workers,
    verify_exactly_once,
    wait_completed,
)
from engine import BatchItem


def drain(dsn: str, n: int, queues: int, limit: int | None, log_dir: Path) -> float:
    with noop_task(dsn) as task:
        for start in range(0, n, 1000):
            items: list[Any] = [
                BatchItem({"i": i}, {"queue": f"lq-{i % queues}"}) if queues > 1 else {"i": i}
                for i in range(start, min(n, start + 1000))
            ]
            task.batch_trigger(items)
    if limit is not None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT skiplock.set_queue_limit('lq-' || i, %s) FROM generate_series(0, %s) i",
                (limit, queues - 1),
            )
    started = time.perf_counter()
    workers = spawn_workers(dsn, 2, log_dir)
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_completed(conn, n, workers, timeout=900)
        elapsed = time.perf_counter() - started
        stop_workers(workers)
        verify_exactly_once(conn, n)
        if limit is not None:
            over = conn.execute(
                "SELECT count(*) FROM (SELECT r.queue FROM skiplock.attempts a "
                "JOIN skiplock.attempts b ON a.run_id <> b.run_id AND a.started_at < b.finished_at "
                "AND b.started_at < a.finished_at JOIN skiplock.runs r ON r.id = a.run_id "
                "JOIN skiplock.runs s ON s.id = b.run_id AND s.queue = r.queue "
                "WHERE %s = 1 LIMIT 1) x",
                (limit,),
            ).fetchone()
            assert over == (0,), "a limit-1 queue ran two attempts at once"
    return n / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--limit", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    add_dsn(parser)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="skiplock-bench-logs-"))
    with postgres_server(args.dsn) as server:
        facts = server_facts(server)
        cases = {
            f"{args.queues} queues, limit {args.limit}": (args.queues, args.limit),
            "1 unlimited queue": (1, None),
        }
        for rep in range(args.repeat):
            for label, (queues, limit) in cases.items():
                with fresh_database(server, f"bench_lq_{os.getpid()}_{rep}") as dsn:
                    rate = drain(dsn, args.runs, queues, limit, log_dir)
                results.setdefault(label, []).append(rate)
                print(f"#{rep + 1} {label}: {rate:.0f} runs/s")
    print(
        f"\ndrain of {args.runs} no-op runs, 2 workers x50, median of {args.repeat} (min-max); "
        f"PostgreSQL {facts.get('server_version')}, fsync={facts.get('fsync')}"
    )
    for label, rates in results.items():
        print(
            f"  {label:28} {statistics.median(rates):7.0f} runs/s "
            f"({min(rates):.0f}-{max(rates):.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
