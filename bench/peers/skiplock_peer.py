"""skiplock, through its public API: Engine, task.trigger, task.batch_trigger, and
`python -m engine.cli worker` processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from bench.common import BenchError, Conn, connect, scalar, timestamp
from bench.noop_app import COMPLETED_COUNT, PICKUP_TASK_ID, TASK_ID, define, define_pickup
from bench.peers.base import BATCH, Client, System, python_module
from engine import Engine

VERSION = "bench"
CONCURRENCY = 50


class _Client(Client):
    def __init__(self, engine: Engine) -> None:
        self.noop = define(engine)
        self.pickup = define_pickup(engine)

    def enqueue_single(self, items: list[int]) -> None:
        for i in items:
            self.noop.trigger({"i": i})

    def enqueue_batch(self, items: list[int]) -> None:
        for start in range(0, len(items), BATCH):
            self.noop.batch_trigger([{"i": i} for i in items[start : start + BATCH]])

    def trigger_pickup(self, i: int) -> None:
        self.pickup.trigger({"i": i})


class Skiplock(System):
    name = "skiplock"
    package = "skiplock"
    batch_api = f"task.batch_trigger() of {BATCH}"

    def __init__(
        self,
        concurrency: int = CONCURRENCY,
        tree: Path | None = None,
        name: str = "skiplock",
        worker_args: tuple[str, ...] = (),
    ) -> None:
        self.concurrency = concurrency  # the worker's --concurrency: runs claimed per call
        # another checkout of skiplock (a baseline): its engine and SQL, not this tree's
        self.tree, self.name = tree, name
        self.worker_args = worker_args  # more `skiplock worker` options (--claim-lanes 2)
        self.settings = (
            f"`python -m engine.cli worker bench.noop_app:app --concurrency {concurrency} "
            f"--version {VERSION}` (each call records the attempts that finished "
            f"and claims up to {concurrency} runs, one durable commit), async no-op task"
        )

    def install(self, dsn: str) -> None:
        """Migrate, then deploy the tasks at VERSION through the SQL API (a worker that
        registers and stops at once), so that triggered runs are QUEUED, not PENDING_VERSION.
        With another tree, its own install, in a process of its own."""
        if self.tree is not None:
            code = f"from bench.peers.skiplock_peer import Skiplock; Skiplock().install({dsn!r})"
            env = {**os.environ, "PYTHONPATH": str(self.tree)}
            subprocess.run([sys.executable, "-c", code], cwd=self.tree, env=env, check=True)
            return
        engine = Engine(dsn)
        engine.migrate()
        entries = [define(engine).deployment_entry(), define_pickup(engine).deployment_entry()]
        with connect(dsn) as conn:
            conn.execute(
                "SELECT skiplock.register_worker(%s, %s, 'bench', 0, NULL, 1, %s::jsonb)",
                ("worker_bench_registrar", VERSION, Jsonb(entries)),
            )
            conn.execute("SELECT skiplock.stop_worker('worker_bench_registrar')")

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        with Engine(dsn) as engine:
            with engine.db.pool.connection() as conn:  # open the pool before the clock starts
                conn.execute("SELECT 1")
            yield _Client(engine)

    def bulk_fill(self, conn: Conn, n: int) -> None:
        conn.execute(
            "SELECT count(*) FROM generate_series(1, %s) g, "
            "LATERAL skiplock.trigger(%s, jsonb_build_object('i', g)) t",
            (n, TASK_ID),
        )

    def worker_command(self) -> list[str]:
        return python_module(
            "engine.cli",
            "worker",
            "bench.noop_app:app",
            "--concurrency",
            str(self.concurrency),
            "--version",
            VERSION,
            "--quiet",  # no line per run: the peers print none either
            *self.worker_args,
        )

    def worker_env(self, dsn: str) -> dict[str, str]:
        env = {"SKIPLOCK_DATABASE_URL": dsn}
        return env if self.tree is None else {**env, "PYTHONPATH": str(self.tree)}

    def completed(self, conn: Conn, n: int) -> int:
        return int(scalar(conn, COMPLETED_COUNT))

    def nth_finish(self, conn: Conn, n: int) -> datetime:
        return timestamp(
            conn,
            "SELECT a.finished_at FROM skiplock.attempts a JOIN skiplock.runs r "
            "ON r.id = a.run_id WHERE a.status = 'COMPLETED' AND "
            "r.task_identifier = %s ORDER BY a.finished_at OFFSET %s LIMIT 1",
            (TASK_ID, n - 1),
        )

    def first_start(self, conn: Conn) -> datetime:
        return timestamp(
            conn,
            "SELECT min(a.started_at) FROM skiplock.attempts a JOIN skiplock.runs "
            "r ON r.id = a.run_id WHERE r.task_identifier = %s",
            (TASK_ID,),
        )

    def own_pickup_ms(self, conn: Conn) -> list[float]:
        """Pickup latency by skiplock's own timestamps: runs.created_at (the trigger's
        transaction) to attempts.started_at (the claim's transaction)."""
        rows = conn.execute(
            "SELECT extract(epoch FROM a.started_at - r.created_at) * 1000 FROM skiplock.runs r "
            "JOIN skiplock.attempts a ON a.run_id = r.id WHERE r.task_identifier = %s "
            "AND (r.payload->>'i')::int >= 0",
            (PICKUP_TASK_ID,),
        ).fetchall()
        return [float(ms) for (ms,) in rows]

    def verify(self, conn: Conn, total: int, drained: bool) -> None:
        runs: Any = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'COMPLETED'), "
            "count(*) FILTER (WHERE attempt_count > 1) FROM skiplock.runs "
            "WHERE task_identifier = %s",
            (TASK_ID,),
        ).fetchone()
        attempts: Any = conn.execute(
            "SELECT count(*), count(DISTINCT a.run_id), "
            "count(*) FILTER (WHERE a.status = 'COMPLETED') FROM skiplock.attempts a "
            "JOIN skiplock.runs r ON r.id = a.run_id WHERE r.task_identifier = %s",
            (TASK_ID,),
        ).fetchone()
        count, completed, retried = runs
        rows, distinct_runs, completed_attempts = attempts
        ok = count == total and retried == 0 and rows == distinct_runs
        if drained:
            ok = ok and completed == total and rows == total and completed_attempts == total
        else:
            ok = ok and completed_attempts == completed
        if not ok:
            raise BenchError(
                f"skiplock exactly-once check failed ({total} runs, drained={drained}): runs "
                f"(total, completed, attempt_count>1) = {tuple(runs)}; attempts (rows, distinct "
                f"runs, completed) = {tuple(attempts)}"
            )
