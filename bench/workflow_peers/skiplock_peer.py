"""skiplock through its public API: `Engine`, `task.batch_trigger`, waitpoint tokens, and
`python -m engine.cli worker` processes (bench/workflow_peers/skiplock_app.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from psycopg.types.json import Jsonb

from bench.common import connect, scalar
from bench.workflow_peers import skiplock_app
from bench.workflow_peers.base import CONCURRENCY, Client, Peer, python_module
from engine import Engine

VERSION = "bench"
BATCH = 1000


class _Client(Client):
    def __init__(self, engine: Engine, dsn: str) -> None:
        self.engine, self.dsn = engine, dsn
        self.tasks = skiplock_app.define(engine)
        self.tokens: dict[int, str] = {}
        self.conn = connect(dsn)

    def start(self, kind: str, items: list[int]) -> None:
        if kind == "fanout":
            self.tasks["fanout"].trigger({"n": items[0]})
            return
        payloads: list[dict[str, Any]] = [{"i": i} for i in items]
        if kind == "resume":
            for p in payloads:
                p["token"] = self.tokens[p["i"]] = self.engine.waitpoints.create_token().id
        task = self.tasks[kind]
        for k in range(0, len(payloads), BATCH):
            task.batch_trigger(payloads[k : k + BATCH])

    def complete(self, i: int) -> None:
        self.engine.waitpoints.complete_token(self.tokens[i])

    def _count(self, kind: str, status: str) -> int:
        return int(
            scalar(
                self.conn,
                "SELECT count(*) FROM skiplock.runs WHERE task_identifier = %s AND status = %s",
                (self.tasks[kind].id, status),
            )
        )

    def finished(self, kind: str) -> int:
        return self._count(kind, "COMPLETED")

    def failed(self) -> str | None:
        """A run that ended badly, or a failed attempt of one (which a retry may follow:
        a benchmark workflow that fails once is already wrong)."""
        row = self.conn.execute(
            "(SELECT r.task_identifier, r.id, 'attempt ' || a.status, a.error::text "
            " FROM skiplock.attempts a JOIN skiplock.runs r ON r.id = a.run_id "
            " WHERE a.status IN ('FAILED', 'CRASHED', 'TIMED_OUT') LIMIT 1) "
            "UNION ALL (SELECT task_identifier, id, status::text, error::text "
            " FROM skiplock.runs WHERE status IN ('FAILED', 'CRASHED', 'SYSTEM_FAILURE', "
            " 'TIMED_OUT', 'EXPIRED', 'CANCELED') LIMIT 1) LIMIT 1"
        ).fetchone()
        return None if row is None else "{} run {} {}: {}".format(*row)

    def waiting(self, kind: str) -> int:
        return self._count(kind, "WAITING")


class Skiplock(Peer):
    name = "skiplock"
    package = "skiplock"
    settings = (
        f"`python -m engine.cli worker bench.workflow_peers.skiplock_app:app --concurrency "
        f"{CONCURRENCY} --version {VERSION} --quiet`: LISTEN/NOTIFY wake-ups, no poll "
        "interval to set; async tasks, `ctx.step`, `wait.for_token`, `wait.for_`, "
        "`batch_trigger_and_wait`"
    )

    def install(self, dsn: str) -> None:
        """Migrate, then register a deployment of every task at VERSION (a worker that
        registers and stops at once), so triggered runs are QUEUED, not PENDING_VERSION."""
        engine = Engine(dsn)
        engine.migrate()
        entries = [t.deployment_entry() for t in skiplock_app.define(engine).values()]
        with connect(dsn) as conn:
            conn.execute(
                "SELECT skiplock.register_worker(%s, %s, 'bench', 0, NULL, 1, %s::jsonb)",
                ("worker_bench_registrar", VERSION, Jsonb(entries)),
            )
            conn.execute("SELECT skiplock.stop_worker('worker_bench_registrar')")
        engine.close()

    def worker_command(self, kind: str) -> list[str]:
        return python_module(
            "engine.cli",
            "worker",
            "bench.workflow_peers.skiplock_app:app",
            "--concurrency",
            str(CONCURRENCY),
            "--version",
            VERSION,
            "--quiet",
        )

    def worker_env(self, dsn: str) -> dict[str, str]:
        return {"SKIPLOCK_DATABASE_URL": dsn}

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        with Engine(dsn) as engine:
            c = _Client(engine, dsn)
            try:
                yield c
            finally:
                c.conn.close()
