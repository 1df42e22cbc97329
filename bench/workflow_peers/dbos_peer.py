"""DBOS Transact: a worker process per bench/workflow_peers/dbos_app.py, and DBOSClient
(enqueue, send) in the benchmark."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from dbos import DBOSClient, EnqueueOptions

from bench.common import connect, scalar
from bench.workflow_peers.base import CONCURRENCY, Client, Peer, python_module
from bench.workflow_peers.dbos_app import APP, POLL, QUEUE, VERSION, WAIT_QUEUE, sqlalchemy_url

WAITS = ("resume", "sleep", "wait")
NAME = {"steps": "wf-steps", "one": "wf-one", "resume": "wf-resume", "sleep": "wf-sleep"}
NAME |= {"fanout": "wf-parent", "wait": "wf-wait"}
THREADS = 8  # enqueue calls in flight from the benchmark (one round trip each)


class _Client(Client):
    def __init__(self, dsn: str) -> None:
        self.dbos = DBOSClient(system_database_url=sqlalchemy_url(dsn), application_name=APP)
        self.conn = connect(dsn)

    def start(self, kind: str, items: list[int]) -> None:
        if kind == "fanout":
            items, wf_ids = [items[0]], ["parent-0"]
        else:
            wf_ids = [f"{kind}-{i}" for i in items]

        def one(k: int) -> None:
            options: EnqueueOptions = {
                "queue_name": WAIT_QUEUE if kind in WAITS else QUEUE,
                "workflow_name": NAME[kind],
                "workflow_id": wf_ids[k],
                "app_version": VERSION,
            }
            self.dbos.enqueue(options, items[k])

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(one, range(len(items))))

    def complete(self, i: int) -> None:
        self.dbos.send(f"resume-{i}", 1, "go")

    def finished(self, kind: str) -> int:
        return int(
            scalar(
                self.conn,
                "SELECT count(*) FROM dbos.workflow_status WHERE name = %s AND status = 'SUCCESS'",
                (NAME[kind],),
            )
        )

    def waiting(self, kind: str) -> int:
        """Runs whose `before` step is recorded and that are still PENDING: in DBOS.recv
        (or about to be; the benchmark lets them settle before it sends)."""
        return int(
            scalar(
                self.conn,
                "SELECT count(DISTINCT w.workflow_uuid) FROM dbos.workflow_status w "
                "JOIN dbos.operation_outputs o ON o.workflow_uuid = w.workflow_uuid "
                "WHERE w.name = %s AND w.status = 'PENDING' AND o.function_name = 'record'",
                (NAME[kind],),
            )
        )


class Dbos(Peer):
    name = "dbos"
    package = "dbos"
    settings = (
        f"`python -m bench.workflow_peers.dbos_app`: DBOS.launch() with two queues, "
        f"`{QUEUE}` (worker_concurrency={CONCURRENCY}) for steps, drain and fan-out and "
        f"`{WAIT_QUEUE}` (no limit: a DBOS.sleep or DBOS.recv holds its thread, so a limit "
        f"of {CONCURRENCY} would serialise 1,000 sleeps into 20 rounds) for the waits; "
        f"polling_interval_sec={POLL} on both (default 1.0, must be > 0: DBOS.register_queue "
        "in dbos/_dbos.py); notifications by LISTEN/NOTIFY (use_listen_notify default True); "
        "sync workflows and steps; enqueued by DBOSClient.enqueue from 8 threads"
    )

    def install(self, dsn: str) -> None:
        """`dbos migrate`: the system database's schema, as its docs say to before
        launching an application that may not migrate itself."""
        subprocess.run(
            [*python_module("dbos.cli.cli"), "migrate", "-s", sqlalchemy_url(dsn)],
            check=True,
            capture_output=True,
        )

    def worker_command(self, kind: str) -> list[str]:
        return python_module("bench.workflow_peers.dbos_app")

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        c = _Client(dsn)
        try:
            yield c
        finally:
            c.dbos.destroy()
            c.conn.close()
