"""Focused reproductions of bugs the fault scenarios found, one deterministic test each,
kept as regression tests once fixed."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from engine import Engine

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
