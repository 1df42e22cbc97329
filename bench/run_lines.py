"""Benchmark: what the worker's line per attempt outcome (`skiplock.runs`) costs a drain.

    python bench/run_lines.py [--runs 20000] [--repeat 3] [--dsn postgresql://...]
                              [--baseline DIR]

A drain as bench/drain.py times it (N no-op runs queued first, then one worker process
`python -m engine.cli worker bench.noop_app:app --concurrency 50`, timed from just before
its spawn until a poll every 50 ms counts N completed attempts; "busy" is the database's
first attempt start to last finish), with the lines on (the default: one INFO line per
run, written to the worker's log file) and with `--quiet` (none). `--baseline DIR` adds
a third kind of drain: the worker of another copy of skiplock (e.g. `git archive COMMIT |
tar -x -C DIR` of the commit before the lines), which shows what they cost when off.

Each repetition runs every kind once, each in a fresh database, in an order that
rotates between repetitions; the figures are medians, and the ratio within each
repetition, so that a noisy machine's drift between repetitions cancels out. Every
drain is checked for exactly-once execution, and the worker's log for exactly N outcome
lines (on) or none. The worker process's CPU time (user + system, start-up included) is
read just before it is stopped.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run_lines.py` puts bench/, not the repo, on it
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.drain import (  # noqa: E402
    WORKER_APP,
    WORKER_CONCURRENCY,
    WORKER_VERSION,
    BenchError,
    db_timings,
    environment,
    expect_queued,
    fresh_database,
    noop_task,
    payloads,
    postgres_server,
    server_facts,
    stop_workers,
    trigger_batches,
    verify_exactly_once,
    wait_completed,
)


@dataclass
class Kind:
    name: str
    root: Path  # the checkout whose worker runs
    args: list[str]
    lines: bool  # whether its worker writes a line per run
    rates: list[float] = field(default_factory=list)  # runs/s, spawn to last completion
    busy: list[float] = field(default_factory=list)  # runs/s, first start to last finish
    cpu: list[float] = field(default_factory=list)  # worker CPU seconds


def drain(dsn: str, n: int, kind: Kind, log_dir: Path) -> None:
    with noop_task(dsn) as task:
        trigger_batches(task, payloads(n))
    expect_queued(dsn, n)
    cmd = [sys.executable, "-m", "engine.cli", "worker", WORKER_APP, *kind.args]
    cmd += ["--concurrency", str(WORKER_CONCURRENCY), "--version", WORKER_VERSION]
    env = {**os.environ, "SKIPLOCK_DATABASE_URL": dsn, "BENCH_DSN": dsn}
    env |= {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(kind.root)}
    log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        spawned_at: datetime = row[0]
        started = time.perf_counter()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                cmd, cwd=kind.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        workers = [common.Worker(process, log_path)]
        try:
            wait_completed(conn, n, workers, max(120.0, n / 50))
            elapsed = time.perf_counter() - started
            times = psutil.Process(process.pid).cpu_times()
        finally:
            stop_workers(workers)
        verify_exactly_once(conn, n)
        _, busy = db_timings(conn, spawned_at)
    lines = log_path.read_text(errors="replace").count(" INFO skiplock.runs: ")
    if lines != (n if kind.lines else 0):
        raise BenchError(f"{kind.name}: the worker wrote {lines} outcome lines for {n} runs")
    kind.rates.append(n / elapsed)
    kind.busy.append(n / busy)
    kind.cpu.append(times.user + times.system)


def _spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def report(kinds: list[Kind], n: int) -> str:
    on, off = kinds[0], kinds[1]
    rows = [
        "| drain, 1 worker x50 | " + " | ".join(k.name for k in kinds) + " | on / off |",
        "|---|" + "---:|" * (len(kinds) + 1),
    ]
    for label, get in (("runs/s", "rates"), ("busy runs/s", "busy")):
        cells = [_spread(getattr(k, get), ".0f") for k in kinds]
        pairs = [a / b for a, b in zip(getattr(on, get), getattr(off, get), strict=True)]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {_spread(pairs, '.3f')} |")
    cells = [_spread(k.cpu, ".2f") for k in kinds]
    extra = (statistics.median(on.cpu) - statistics.median(off.cpu)) / n * 1e6
    rows.append("| worker CPU s | " + " | ".join(cells) + f" | +{extra:.1f} us/run |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=3)
    common.add_dsn(p)
    p.add_argument("--baseline", type=Path, help="a checkout of skiplock without the lines")
    args = p.parse_args(argv)
    args.analyze = False  # for drain.environment()
    kinds = [
        Kind("lines on", REPO, [], True),
        Kind("lines off (--quiet)", REPO, ["--quiet"], False),
    ]
    if args.baseline:
        kinds.append(Kind(f"baseline ({args.baseline.name})", args.baseline.resolve(), [], False))
    orders = list(itertools.permutations(kinds))
    with (
        postgres_server(args.dsn) as server_dsn,
        tempfile.TemporaryDirectory(prefix="skiplock-bench-logs-") as log_dir,
    ):
        facts = server_facts(server_dsn)
        print(environment(facts, args).replace("workers:", "1 worker,"), flush=True)
        for r in range(args.repeat):
            for kind in orders[r % len(orders)]:
                name = f"skiplock_lines_{os.getpid()}_{r}_{kinds.index(kind)}"
                with fresh_database(server_dsn, name) as dsn:
                    try:
                        drain(dsn, args.runs, kind, Path(log_dir))
                    except BenchError as exc:
                        print(f"benchmark failed: {exc}", file=sys.stderr)
                        return 1
                print(
                    f"#{r + 1} {kind.name:<22} {kind.rates[-1]:6.0f} runs/s, "
                    f"busy {kind.busy[-1]:6.0f} runs/s, worker CPU {kind.cpu[-1]:.2f}s",
                    flush=True,
                )
    print()
    print(report(kinds, args.runs))
    print()
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
