"""Absurd: its schema from the SQL that absurdctl ships (what `absurdctl init` runs), a
worker process per bench/workflow_peers/absurd_app.py, and the SDK's client (spawn,
emit_event) in the benchmark."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from threading import local

import absurdctl
from absurd_sdk import Absurd

from bench.common import connect, scalar
from bench.workflow_peers.absurd_app import CHILDREN, POLL, QUEUE
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
        f"`python -m bench.workflow_peers.absurd_app`: the SDK's `Absurd.start_worker("
        f"concurrency={CONCURRENCY}, poll_interval={POLL})` (threads sharing the client's one "
        "connection; batch_size defaults to concurrency; poll_interval default 0.25 s, "
        "absurd_sdk/__init__.py), a second worker loop on queue "
        f"`{CHILDREN}` for the fan-out (await_task_result refuses the parent's own queue); "
        "schema: the SQL bundled in absurdctl 0.5.1 (absurdctl.BUNDLED_SCHEMA_SQL, what "
        "`absurdctl init` applies), then absurd.create_queue; sync handlers, `ctx.step`, "
        "`ctx.await_event`, `ctx.sleep_for`, `ctx.await_task_result`; spawned from 8 threads"
    )

    def install(self, dsn: str) -> None:
        with connect(dsn) as conn:
            conn.execute(absurdctl.BUNDLED_SCHEMA_SQL)
            conn.execute("SELECT absurd.create_queue(%s)", (QUEUE,))
            conn.execute("SELECT absurd.create_queue(%s)", (CHILDREN,))

    def worker_command(self, kind: str) -> list[str]:
        return python_module("bench.workflow_peers.absurd_app")

    def worker_env(self, dsn: str) -> dict[str, str]:
        return {}

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        c = _Client(dsn)
        try:
            yield c
        finally:
            c.close()
