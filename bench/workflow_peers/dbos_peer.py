"""DBOS Transact: a worker process per bench/workflow_peers/dbos_app.py, and DBOSClient
(enqueue, send) in the benchmark."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from dbos import DBOSClient, EnqueueOptions
from dbos._serialization import DefaultSerializer

from bench.common import connect, scalar
from bench.workflow_peers.base import CONCURRENCY, Client, Peer, python_module
from bench.workflow_peers.dbos_app import APP, QUEUE, VERSION, WAIT_QUEUE, sqlalchemy_url

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

    def failed(self) -> str | None:
        row = self.conn.execute(
            "SELECT w.name, w.workflow_uuid, w.status, coalesce(w.error, (SELECT o.error "
            " FROM dbos.operation_outputs o WHERE o.workflow_uuid = w.workflow_uuid "
            " AND o.error IS NOT NULL LIMIT 1)) FROM dbos.workflow_status w "
            "WHERE w.status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'CANCELLED') LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        error = row[3]
        with contextlib.suppress(Exception):  # DBOS's default serializer: pickle, base64
            error = repr(DefaultSerializer().deserialize(error))  # our own database
        return f"{row[0]} {row[1]} {row[2]}: {error}"

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
        "`python -m bench.workflow_peers.dbos_app`: DBOS.launch() with two queues, "
        f"`{QUEUE}` (worker_concurrency={CONCURRENCY} unless the variant says otherwise) for "
        f"steps, drain and fan-out and `{WAIT_QUEUE}` (no limit: a DBOS.sleep or DBOS.recv "
        f"holds its thread, so a limit of {CONCURRENCY} would serialise 1,000 sleeps into 20 "
        "rounds) for the waits; polling_interval_sec on both (default 1.0, must be > 0: "
        "DBOS.register_queue in dbos/_dbos.py); sys_db_pool_size default 20 "
        "(dbos/_dbos_config.py); notifications by LISTEN/NOTIFY (use_listen_notify default "
        "True); executor threads unbounded (max_executor_threads default sys.maxsize, "
        "dbos/_dbos.py); sync workflows and steps; enqueued by DBOSClient.enqueue from 8 threads"
    )
    variants: ClassVar[dict[str, list[str]]] = {
        "p10": ["--poll", "0.01"],
        "p50": ["--poll", "0.05"],
        "p10-pool50": ["--poll", "0.01", "--pool", "50"],
        "p10-nolimit": ["--poll", "0.01", "--concurrency", "0"],
    }
    # Measured with --quick --only dbos:p10,dbos:p50,dbos:p10-pool50,dbos:p10-nolimit (3
    # alternated repetitions, then p10 against p50 5 more on steps, resume and fan-out;
    # bench/RESULTS.md, "Workflow peers' variants"): polling every 50 ms beats 10 ms on
    # wait-resume (p50 12.3 ms against 15.7, p99 27 against 90) and fan-out (2.20 s against
    # 2.73): two queues polled every 10 ms cost the 2-core machine; 10 ms is ahead by a
    # hair on the drain and the sleeps. A pool of 50 and no worker_concurrency limit were
    # slower everywhere (drain 216 / 156 wf/s against 234) and the pool holds 33-46
    # connections idle.
    fastest: ClassVar[dict[str, str]] = {
        "steps": "p50",
        "one": "p10",
        "resume": "p50",
        "sleep": "p10",
        "fanout": "p50",
        "wait": "p10",
    }
    stop_grace = 5.0  # DBOS.destroy() returns, but threads left in DBOS.recv keep it alive

    def install(self, dsn: str) -> None:
        """`dbos migrate`: the system database's schema, as its docs say to before
        launching an application that may not migrate itself."""
        subprocess.run(
            [*python_module("dbos.cli.cli"), "migrate", "-s", sqlalchemy_url(dsn)],
            check=True,
            capture_output=True,
        )

    def worker_command(self, kind: str) -> list[str]:
        return python_module("bench.workflow_peers.dbos_app", *self.variant_args(kind))

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        c = _Client(dsn)
        try:
            yield c
        finally:
            c.dbos.destroy()
            c.conn.close()
