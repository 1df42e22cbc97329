"""Benchmark: what recording when each step started (for the run page's trace) costs.

    python bench/step_times.py --baseline DIR [--runs 20000] [--step-runs 2000]
                               [--repeat 5] [--dsn postgresql://...]

DIR is a checkout of skiplock without it (e.g. `git archive COMMIT | tar -x -C DIR` of
the commit before). Two drains, each timed as bench/drain.py times one: N runs queued
first, then one worker process (`skiplock worker APP --concurrency 50 --quiet`), timed
from just before its spawn until a poll every 50 ms counts N completed attempts; "busy"
is the database's first attempt start to last finish.

* no-op: N runs of the no-op task (bench/noop_app.py). They make no step, so nothing of
  this change runs for them: the drain must not be slower.
* 3 steps: M runs of a task that makes three `ctx.step` calls of a function that does
  nothing (bench/steps_app.py): each step one record_step call, which now carries the
  step's duration and stores its start.

Both checkouts' workers serve the same app modules (bench/ on PYTHONPATH), and each
drain runs in a fresh database migrated by the drained checkout's own code. Each
repetition runs every (drain, checkout) pair, the checkouts in alternating order; the
figures are medians, with the ratio within each repetition, so that the drift of a noisy
machine cancels out. Every drain is checked for exactly-once execution (and, for steps,
3 rows per run; with the change, each with its start no later than its end). The worker
process's CPU time is read before it is stopped, and the database's own mean time per
record_step call (track_functions) after.

A third measurement isolates the SQL side from commits and the machine's noise: in one
session, for one EXECUTING attempt, blocks of `--micro-calls` record_step calls (one
statement, rolled back) alternate with as many calls of the function as it was before
(created beside it as record_step_before); the figure is microseconds per call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/step_times.py` puts bench/, not the repo, on it
    sys.path.insert(0, str(REPO))

from bench import common, noop_app, steps_app  # noqa: E402
from bench.drain import (  # noqa: E402
    WORKER_CONCURRENCY,
    WORKER_VERSION,
    BenchError,
    db_timings,
    expect_queued,
    payloads,
    postgres_server,
    server_facts,
    stop_workers,
    track_functions,
    verify_exactly_once,
    wait_completed,
    wait_disconnected,
)
from engine import Engine, Task  # noqa: E402


@dataclass(frozen=True)
class Drain:
    name: str
    app: str  # the worker's app, a module of bench/
    define: Callable[[Engine], Task[dict[str, Any], None]]
    steps: int  # steps per run


@dataclass
class Kind:
    name: str
    root: Path
    has_start: bool  # the checkout records step starts
    rates: dict[str, list[float]] = field(default_factory=dict)
    busy: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    record_ms: dict[str, list[float]] = field(default_factory=dict)


DRAINS = [
    Drain("no-op", "noop_app:app", noop_app.define, 0),
    Drain("3 steps", "steps_app:app", steps_app.define, steps_app.STEPS),
]


class Checkout(Protocol):
    """What the helpers below need of a measured checkout (this bench's Kind, or
    worker_footprint's)."""

    root: Path


def _env(kind: Checkout, dsn: str) -> dict[str, str]:
    path = os.pathsep.join([str(kind.root), str(REPO / "bench")])
    return {**os.environ, "SKIPLOCK_DATABASE_URL": dsn, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def fresh_database(server_dsn: str, name: str, kind: Checkout, drain: Drain) -> str:
    """A new database migrated by `kind`'s code, with the drain's task deployed."""
    ident = sql.Identifier(name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    dsn = make_conninfo(server_dsn, dbname=name)
    migrate = "import os, engine; engine.Engine(os.environ['SKIPLOCK_DATABASE_URL']).migrate()"
    subprocess.run([sys.executable, "-c", migrate], cwd=kind.root, env=_env(kind, dsn), check=True)
    with Engine(dsn) as engine:
        entry = drain.define(engine).deployment_entry()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT skiplock.register_worker(%s, %s, 'bench', 0, NULL, 1, %s::jsonb)",
            ("worker_bench_registrar", WORKER_VERSION, Jsonb([entry])),
        )
        conn.execute("SELECT skiplock.stop_worker('worker_bench_registrar')")
    return dsn


def drop_database(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def run_drain(dsn: str, n: int, kind: Kind, drain: Drain, log_dir: Path) -> None:
    with Engine(dsn) as engine:
        task = drain.define(engine)
        items = payloads(n)
        for start in range(0, n, 1000):
            task.batch_trigger(items[start : start + 1000])
    expect_queued(dsn, n)
    cmd = [sys.executable, "-m", "engine.cli", "worker", drain.app, "--quiet"]
    cmd += ["--concurrency", str(WORKER_CONCURRENCY), "--version", WORKER_VERSION]
    log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
    with psycopg.connect(dsn, autocommit=True) as conn:
        track_functions(conn)
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        spawned_at: datetime = row[0]
        started = time.perf_counter()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                cmd,
                cwd=kind.root,
                env=_env(kind, dsn),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        workers = [common.Worker(process, log_path)]
        try:
            wait_completed(conn, n, workers, max(120.0, n / 20))
            elapsed = time.perf_counter() - started
            times = psutil.Process(process.pid).cpu_times()
        finally:
            stop_workers(workers)
        verify_exactly_once(conn, n)
        check_steps(conn, n * drain.steps, kind.has_start)
        _, busy = db_timings(conn, spawned_at)
        wait_disconnected(conn)
        row = conn.execute(
            # per step: record_step, or record_steps (group-committed: a call per batch)
            "SELECT sum(total_time) / %s FROM pg_stat_user_functions WHERE schemaname = "
            "'skiplock' AND funcname IN ('record_step', 'record_steps') HAVING sum(calls) > 0",
            (n * drain.steps or 1,),
        ).fetchone()
    kind.rates.setdefault(drain.name, []).append(n / elapsed)
    kind.busy.setdefault(drain.name, []).append(n / busy)
    kind.cpu.setdefault(drain.name, []).append(times.user + times.system)
    if row is not None:
        kind.record_ms.setdefault(drain.name, []).append(float(row[0]))


def check_steps(conn: psycopg.Connection[Any], expected: int, has_start: bool) -> None:
    if has_start:
        query = (
            "SELECT count(*), count(*) FILTER (WHERE started_at <= created_at) "
            "FROM skiplock.run_steps WHERE kind = 'step'"
        )
    else:
        query = "SELECT count(*), count(*) FROM skiplock.run_steps WHERE kind = 'step'"
    row = conn.execute(query).fetchone()
    if row != (expected, expected):
        raise BenchError(f"expected {expected} steps (each started before it ended), got {row}")


# record_step as it was before migration 0020 (git c75a683), for the micro-benchmark
_BEFORE = """
CREATE OR REPLACE FUNCTION skiplock.record_step_before(
    p_attempt_id text, p_position integer, p_name text, p_output jsonb)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_run skiplock.runs := skiplock.current_run(p_attempt_id);
BEGIN
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO skiplock.run_steps (run_id, position, kind, name, output, created_at)
    VALUES (v_run.id, p_position, 'step', p_name, p_output, skiplock.now())
    ON CONFLICT (run_id, position) DO NOTHING;
    RETURN true;
END;
$$;
"""
_CALLS = {
    "now": "SELECT count(*) FILTER (WHERE skiplock.record_step(%s, i, 'step', 'null', 0.0001)) "
    "FROM generate_series(1, %s) i",
    "before": "SELECT count(*) FILTER (WHERE skiplock.record_step_before(%s, i, 'step', 'null')) "
    "FROM generate_series(1, %s) i",
}


def micro(server_dsn: str, calls: int, blocks: int) -> dict[str, list[float]]:
    """Microseconds per record_step call, now and before, in alternating blocks."""
    name = f"skiplock_steps_micro_{os.getpid()}"
    kind = Kind("now", REPO, True)
    dsn = fresh_database(server_dsn, name, kind, DRAINS[1])
    per_call: dict[str, list[float]] = {"now": [], "before": []}
    try:
        with Engine(dsn) as engine:
            steps_app.define(engine).trigger({"i": 0})
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(_BEFORE)
            conn.execute(
                "SELECT skiplock.register_worker('worker_micro', %s, 'bench', 0, NULL, 1, "
                "'[]'::jsonb)",
                (WORKER_VERSION,),
            )
            row = conn.execute(
                "SELECT attempt_id FROM skiplock.claim('worker_micro', %s, ARRAY[%s], NULL, 1)",
                (WORKER_VERSION, steps_app.TASK_ID),
            ).fetchone()
            if row is None:
                raise BenchError("micro: no run to claim")
            attempt = row[0]
            for b in range(blocks):
                for which in ("now", "before") if b % 2 == 0 else ("before", "now"):
                    with conn.transaction(force_rollback=True):
                        started = time.perf_counter()
                        done = conn.execute(_CALLS[which], (attempt, calls)).fetchone()
                        elapsed = time.perf_counter() - started
                    if done != (calls,):
                        raise BenchError(f"micro: {which} recorded {done} of {calls} steps")
                    per_call[which].append(elapsed / calls * 1e6)
    finally:
        drop_database(server_dsn, name)
    return per_call


def _spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def report(new: Kind, base: Kind, runs: dict[str, int]) -> str:
    lines = [
        f"| drain | {new.name} | {base.name} | {new.name} / {base.name}, per repetition |",
        "|---|---:|---:|---:|",
    ]
    for drain in DRAINS:
        d = drain.name
        for label, attr, fmt in (
            ("runs/s", "rates", ".0f"),
            ("busy runs/s", "busy", ".0f"),
            ("worker CPU s", "cpu", ".2f"),
            ("record_step ms/call (in the database)", "record_ms", ".4f"),
        ):
            a, b = getattr(new, attr).get(d), getattr(base, attr).get(d)
            if not a or not b:
                continue
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            lines.append(
                f"| {d} ({runs[d]} runs): {label} | {_spread(a, fmt)} | {_spread(b, fmt)} "
                f"| {_spread(ratios, '.3f')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20000, help="no-op runs per drain")
    p.add_argument("--step-runs", type=int, default=2000, help="3-step runs per drain")
    p.add_argument("--repeat", type=int, default=5)
    common.add_dsn(p)
    p.add_argument("--baseline", type=Path, required=True, help="a checkout without step starts")
    p.add_argument(
        "--drains", default="no-op,3 steps", help="which drains (default: 'no-op,3 steps')"
    )
    p.add_argument("--micro-calls", type=int, default=5000, help="record_step calls per block")
    p.add_argument("--micro-blocks", type=int, default=20, help="blocks of each kind")
    args = p.parse_args(argv)
    new = Kind("step starts", REPO, True)
    base = Kind(f"baseline ({args.baseline.name})", args.baseline.resolve(), False)
    runs = {"no-op": args.runs, "3 steps": args.step_runs}
    with (
        postgres_server(args.dsn) as server_dsn,
        tempfile.TemporaryDirectory(prefix="skiplock-bench-logs-") as log_dir,
    ):
        facts = server_facts(server_dsn)
        print(
            f"PostgreSQL {facts['server_version']} (fsync={facts['fsync']}, "
            f"synchronous_commit={facts['synchronous_commit']}); CPUs: {os.cpu_count()}; "
            "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            flush=True,
        )
        for r in range(args.repeat):
            for drain in [d for d in DRAINS if d.name in args.drains.split(",")]:
                for kind in (new, base) if r % 2 == 0 else (base, new):
                    name = f"skiplock_steps_{os.getpid()}_{r}"
                    dsn = fresh_database(server_dsn, name, kind, drain)
                    try:
                        run_drain(dsn, runs[drain.name], kind, drain, Path(log_dir))
                    except BenchError as exc:
                        print(f"benchmark failed: {exc}", file=sys.stderr)
                        return 1
                    finally:
                        drop_database(server_dsn, name)
                    record = kind.record_ms.get(drain.name, [])
                    extra = f", record {record[-1]:.4f} ms/step" if drain.steps and record else ""
                    print(
                        f"#{r + 1} {drain.name:<8} {kind.name:<22} "
                        f"{kind.rates[drain.name][-1]:6.0f} runs/s, "
                        f"busy {kind.busy[drain.name][-1]:6.0f} runs/s, "
                        f"worker CPU {kind.cpu[drain.name][-1]:.2f}s{extra}",
                        flush=True,
                    )
        per_call = (
            micro(server_dsn, args.micro_calls, args.micro_blocks) if args.micro_blocks else {}
        )
    print()
    print(report(new, base, runs))
    if per_call:
        ratios = [a / b for a, b in zip(per_call["now"], per_call["before"], strict=True)]
        now, before = _spread(per_call["now"], ".1f"), _spread(per_call["before"], ".1f")
        print(
            f"| record_step alone, us/call ({args.micro_blocks} blocks of {args.micro_calls}, "
            f"rolled back) | {now} | {before} | {_spread(ratios, '.3f')} |"
        )
    print()
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
