"""Absurd: its schema from the SQL that absurdctl ships (what `absurdctl init` runs), a
worker process per bench/workflow_peers/absurd_app.py, and the SDK's client (spawn,
emit_event) in the benchmark."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from threading import local
from typing import ClassVar

import absurdctl
from absurd_sdk import Absurd

from bench.common import connect, scalar
from bench.workflow_peers.absurd_app import CHILDREN, QUEUE
from bench.workflow_peers.base import CONCURRENCY, Client, Peer, python_module

NAME = {"steps": "wf-steps", "one": "wf-one", "resume": "wf-resume", "sleep": "wf-sleep"}
NAME |= {"fanout": "wf-parent", "wait": "wf-wait"}
THREADS = 8  # spawn calls in flight from the benchmark (one round trip each)


class _Client(Client):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.main = Absurd(dsn, queue_name=QUEUE)
        self.conn = connect(dsn)
        self.local = local()
        self.opened: list[Absurd] = []

    def _mine(self) -> Absurd:
        """One SDK client (one connection) per spawning thread."""
        if not hasattr(self.local, "app"):
            self.local.app = Absurd(self.dsn, queue_name=QUEUE)
            self.opened.append(self.local.app)
        app: Absurd = self.local.app
        return app

    def start(self, kind: str, items: list[int]) -> None:
        if kind == "fanout":
            self.main.spawn("wf-parent", {"n": items[0]}, queue=QUEUE)
            return
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda i: self._mine().spawn(NAME[kind], {"i": i}, queue=QUEUE), items))

    def complete(self, i: int) -> None:
        self.main.emit_event(f"go-{i}", 1)

    def _count(self, kind: str, state: str) -> int:
        return int(
            scalar(
                self.conn,
                f"SELECT count(*) FROM absurd.t_{QUEUE} WHERE task_name = %s AND state = %s",
                (NAME[kind], state),
            )
        )

    def finished(self, kind: str) -> int:
        return self._count(kind, "completed")

    def failed(self) -> str | None:
        """A failed run (attempt): Absurd would retry it (max_attempts 5), but a benchmark
        workflow that fails once is already wrong."""
        for q in (QUEUE, CHILDREN):
            row = self.conn.execute(
                f"SELECT t.task_name, r.run_id, r.state, r.failure_reason::text "
                f"FROM absurd.r_{q} r JOIN absurd.t_{q} t USING (task_id) "
                "WHERE r.state IN ('failed', 'cancelled') LIMIT 1"
            ).fetchone()
            if row is not None:
                return "{} run {} {}: {}".format(*row)
        return None

    def waiting(self, kind: str) -> int:
        return self._count(kind, "sleeping")

    def close(self) -> None:
        for a in [self.main, *self.opened]:
            a.close()
        self.conn.close()


class AbsurdPeer(Peer):
    name = "absurd"
    package = "absurd-sdk"
    settings = (
        "`python -m bench.workflow_peers.absurd_app`: one of the SDK's two documented worker "
        f'loops (docs/sdks/python.md, "Starting a Worker"), concurrency={CONCURRENCY}, '
        "one connection per client (the SDK takes one psycopg connection, no pool): "
        "`Absurd.start_worker` (threads sharing the connection, claiming min(batch, free "
        "threads) as threads free up) or `AsyncAbsurd.start_worker` (claims a batch, runs it "
        "as asyncio tasks, claims again when all are done); batch_size defaults to "
        "concurrency, poll_interval to 0.25 s (absurd_sdk/__init__.py); a second loop on "
        f"queue `{CHILDREN}` for the fan-out (await_task_result refuses the parent's own "
        "queue); schema: absurdctl 0.5.1's bundled SQL (what `absurdctl init` applies), then "
        "absurd.create_queue; spawned from 8 threads"
    )
    variants: ClassVar[dict[str, list[str]]] = {
        "threads": ["--mode", "threads", "--poll", "0.01"],
        "threads-p50": ["--mode", "threads", "--poll", "0.05"],
        "async": ["--mode", "async", "--poll", "0.01"],
        "async-b10": ["--mode", "async", "--batch", "10", "--poll", "0.01"],
    }
    # Measured with --quick --only absurd:threads,absurd:threads-p50,absurd:async,
    # absurd:async-b10, 3 to 5 alternated repetitions (bench/RESULTS.md, "Workflow peers'
    # variants"): the async loop is ahead on steps (2.68 s against 3.33) and drain (2
    # workers 677 wf/s against 464; 1 worker ~450 against ~335 on a quiet machine), a
    # claim of 10 cuts the sleepers' lateness (p50 25 ms against 100) and is 1 MB leaner;
    # resume and fan-out are within noise, taken by median.
    fastest: ClassVar[dict[str, str]] = {
        "steps": "async-b10",
        "one": "async",
        "resume": "async",
        "sleep": "async-b10",
        "fanout": "async",
        "wait": "async-b10",
    }

    def install(self, dsn: str) -> None:
        with connect(dsn) as conn:
            conn.execute(absurdctl.BUNDLED_SCHEMA_SQL)
            conn.execute("SELECT absurd.create_queue(%s)", (QUEUE,))
            conn.execute("SELECT absurd.create_queue(%s)", (CHILDREN,))

    def worker_command(self, kind: str) -> list[str]:
        return python_module("bench.workflow_peers.absurd_app", *self.variant_args(kind))

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        c = _Client(dsn)
        try:
            yield c
        finally:
            c.close()
