"""Focused reproductions of bugs the fault scenarios found, one deterministic test each,
kept as regression tests once fixed."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from helpers import RunningWorker, fetch, wait_for

from engine import Engine, TaskContext

from . import fault_app
from .cluster import Cluster
from .workers import WorkerPool, WorkerSettings

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def _status(dsn: str, run_id: str) -> str | None:
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute("SELECT status::text FROM skiplock.runs WHERE id = %s", (run_id,))
            found = row.fetchone()
        return found[0] if found else None
    except psycopg.OperationalError:
        return None


def test_an_attempt_failing_while_postgres_restarts_is_retried(
    cluster: Cluster, tmp_path: Path
) -> None:
    dsn = cluster.create_database(f"faults_lost_fail_{uuid.uuid4().hex[:6]}")
    engine = Engine(dsn)
    engine.migrate()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(fault_app.LEDGER_DDL)
    pool = WorkerPool(dsn, tmp_path, WorkerSettings(concurrency=2, lease_timeout=6.0))
    pool.spawn()
    try:
        # a task querying the database every 0.1 s for 4 s: it raises when the server goes
        run_id = engine.trigger("fault-db-touch", {"queries": 40, "sleep": 0.1}).id
        deadline = time.monotonic() + 30
        while _status(dsn, run_id) != "EXECUTING":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        time.sleep(0.5)
        cluster.stop_immediate()
        time.sleep(2.0)  # a third of the lease: nothing may be crashed, nothing lost
        cluster.start()
        deadline = time.monotonic() + 15  # 2.5 leases; the retry backoff is 0.2 s
        while (status := _status(dsn, run_id)) not in ("COMPLETED", "FAILED", "CRASHED"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        pool.stop_all()
        engine.close()
    after_stop = _status(dsn, run_id)
    assert status == "COMPLETED", (
        f"{run_id} is {status} 15 s after the restart and {after_stop} after its worker "
        f"stopped; worker log: {pool.all_logs()[0]}"
    )


def test_a_partitioned_worker_stops_its_runs_once_its_lease_lapses(
    cluster: Cluster, tmp_path: Path
) -> None:
    """One worker behind a proxy, one async run executing; the network goes silent (no
    reset) for 2.5 leases. The worker cannot renew its lease: within the lease plus a
    heartbeat (and a second of slack) it must stop the run (self-fencing), as the Worker
    docstring says. The probe task traces its life to a local file, outside the fault."""
    dsn = cluster.create_database(f"faults_fence_{uuid.uuid4().hex[:6]}")
    engine = Engine(dsn)
    engine.migrate()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(fault_app.LEDGER_DDL)
    settings = WorkerSettings(
        concurrency=2, heartbeat_interval=0.5, lease_timeout=3.0, shutdown_grace=1.0
    )
    pool = WorkerPool(dsn, tmp_path, settings, upstream=("127.0.0.1", cluster.port))
    worker = pool.spawn()
    assert worker.proxy is not None
    probe = tmp_path / "probe.log"
    try:
        run_id = engine.trigger("fault-fence-probe", {"path": str(probe), "seconds": 40}).id
        deadline = time.monotonic() + 30
        while _status(dsn, run_id) != "EXECUTING" or not probe.exists():
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        time.sleep(0.5)
        partitioned_at = time.time()
        worker.proxy.blackhole(2.5 * settings.lease_timeout)
        healed_at = time.time()
        trace = probe.read_text().split("\n")  # as it stood when the partition ended
    finally:
        pool.stop_all()
        engine.close()
    budget = settings.lease_timeout + settings.heartbeat_interval + 1.0
    alive = [float(x.split()[1]) for x in trace if x.startswith("alive ")]
    late = [t - partitioned_at for t in alive if t - partitioned_at > budget]
    assert not late, (
        f"run {run_id} was still executing {max(late):.1f}s into a partition of "
        f"{healed_at - partitioned_at:.1f}s (lease {settings.lease_timeout:.0f}s, budget "
        f"{budget:.1f}s; {len(late)} probe lines past the budget); worker log: {worker.log}"
    )


def test_a_claim_survives_a_crash_right_after_its_run_started(cluster: Cluster) -> None:
    """A run starts; the server crashes before anything else commits; the task finishes
    after the restart. The claim must have been durable: lost, the run would be queued
    again and run a second time by the worker that was already running it. The WAL
    writer is held off (wal_writer_delay 10 s), and the worker commits nothing else
    meanwhile (long heartbeat and tick intervals), so an asynchronous claim commit would
    be lost every time."""
    dsn = cluster.create_database(f"faults_claim_{uuid.uuid4().hex[:6]}")
    app = Engine(dsn)
    app.migrate()
    entered: list[str] = []
    started, finish = threading.Event(), threading.Event()

    @app.task("crash-probe")
    async def probe(payload: dict[str, int], ctx: TaskContext) -> int:
        entered.append(ctx.attempt_id)
        started.set()
        while not finish.is_set():
            await asyncio.sleep(0.02)
        return len(entered)

    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        conn.execute("SELECT pg_reload_conf()")
        # an idle WAL writer hibernates, and the next asynchronous commit wakes it to
        # write that commit at once; one now keeps it awake (and slow) for the test
        time.sleep(0.2)
        conn.execute("SET synchronous_commit = off")
        conn.execute("CREATE TABLE wal_writer_nudge (x integer)")
        time.sleep(0.2)
    worker = app.worker(
        concurrency=1, heartbeat_interval=10.0, lease_timeout=60.0, tick_interval=30.0
    )
    try:
        with RunningWorker(worker):
            time.sleep(1.0)  # its start-up commits (register, heartbeat, first tick) first
            run_id = probe.trigger({}).id
            assert started.wait(30), "the run never started"
            cluster.stop_immediate()
            cluster.start()
            finish.set()
            wait_for(lambda: _status(dsn, run_id) in ("COMPLETED", "FAILED", "CRASHED"), 30)
            time.sleep(1.0)  # room for a second start, if the claim was lost
    finally:
        finish.set()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET wal_writer_delay")
            conn.execute("SELECT pg_reload_conf()")
        app.close()
    assert _status(dsn, run_id) == "COMPLETED"
    assert len(entered) == 1, f"the run was started {len(entered)} times: {entered}"


def test_a_worker_started_while_postgres_is_down_waits_for_it(cluster: Cluster) -> None:
    """Found by the soak: a worker process whose first registration failed while the server
    restarted exited with status 1. A worker started alongside its database (one compose
    file, one boot) must wait for it instead."""
    dsn = cluster.create_database(f"faults_startup_{uuid.uuid4().hex[:6]}")
    app = Engine(dsn)
    app.migrate()

    @app.task("startup-probe")
    async def probe(payload: dict[str, int], ctx: TaskContext) -> int:
        return payload["n"] * 2

    cluster.stop_immediate()
    down = True
    try:
        with RunningWorker(app.worker(concurrency=1)) as worker:
            time.sleep(3.0)  # several failed tries: the query retries alone last ~0.4 s
            cluster.start()
            down = False
            run_id = probe.trigger({"n": 21}).id
            wait_for(lambda: _status(dsn, run_id) == "COMPLETED", 30)
            assert app.runs.retrieve(run_id).output == 42
            assert fetch(
                dsn,
                "SELECT count(*) FROM skiplock.workers WHERE id = %s AND stopped_at IS NULL",
                worker.id,
            ) == [(1,)]
    finally:
        if down:
            cluster.start()
        app.close()


def test_a_worker_waiting_for_postgres_stops_when_asked(cluster: Cluster) -> None:
    app = Engine(cluster.dsn())
    cluster.stop_immediate()
    try:
        running = RunningWorker(app.worker(concurrency=1))
        with running:
            time.sleep(1.5)
        # stop() raised nothing: it stopped cleanly, never registered
        assert not running.thread.is_alive()
    finally:
        cluster.start()
        app.close()
