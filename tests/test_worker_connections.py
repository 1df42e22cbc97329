"""A worker holds at most three PostgreSQL connections whatever its concurrency
(engine/worker/sessions.py): sampled in pg_stat_activity while a `skiplock worker
--concurrency 50` runs tasks that make steps, waits, triggers and logs."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from helpers import SKIPLOCK, TESTS, count, fetch, wait_for

from engine import Engine

RUNS = 60  # of each parent task; each triggers two children


class Sessions:
    """The most sessions of one worker process seen at once, sampled on a thread: those
    named by its $PGAPPNAME, and its LISTEN connection (skiplock-listener:PID)."""

    def __init__(self, dsn: str, appname: str) -> None:
        self.dsn, self.appname, self.pid = dsn, appname, 0
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                names = [self.appname, f"skiplock-listener:{self.pid}"]
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)",
                    (names,),
                ).fetchone()
                conn.execute("SELECT pg_stat_clear_snapshot()")
                self.most = max(self.most, row[0] if row else 0)
                self.samples += 1
                self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("lanes", ["1", "2"])
def test_worker_holds_at_most_three_connections(dsn: str, tmp_path: Path, lanes: str) -> None:
    parents = "task_identifier IN ('conn-async', 'conn-sync')"
    done = f"{parents} AND status = 'COMPLETED'"
    # the plain trigger is no durable call: made again by each of the 3 executions
    # (before the wait, after it, after the child), plus the child waited for
    children = "task_identifier = 'conn-child' AND status = 'COMPLETED'"
    # the module's database: the runs of the cases before this one stay
    done_before, children_before = count(dsn, done), count(dsn, children)
    appname = f"skiplock-test-{uuid.uuid4().hex[:8]}"
    sessions = Sessions(dsn, appname)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [
                SKIPLOCK,
                "worker",
                "connections_app:app",
                "--concurrency",
                "50",
                "--claim-lanes",
                lanes,
            ],
            cwd=TESTS,
            env={**os.environ, "SKIPLOCK_DATABASE_URL": dsn, "PGAPPNAME": appname},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    sessions.pid = worker.pid
    try:
        registered = "SELECT 1 FROM skiplock.workers WHERE pid = %s AND stopped_at IS NULL"
        wait_for(lambda: fetch(dsn, registered, worker.pid), 60)
        with Engine(dsn) as client:
            for task_id in ("conn-async", "conn-sync"):
                for n in range(RUNS):
                    client.trigger(task_id, n)
        try:
            wait_for(lambda: count(dsn, done) == done_before + 2 * RUNS, 120)
        except AssertionError:
            raise AssertionError(log.read_text()[-5000:]) from None
        assert count(dsn, f"{parents} AND status <> 'COMPLETED'") == 0
        assert count(dsn, children) == children_before + 2 * RUNS * 4
        outputs = fetch(dsn, f"SELECT payload, output FROM skiplock.runs WHERE {parents}")
        assert all(output == 4 * payload for payload, output in outputs)
    finally:
        worker.terminate()
        worker.wait(30)
        sessions.stop()
    assert worker.returncode == 0
    assert sessions.samples > 10
    assert 1 <= sessions.most <= 3, f"the worker held {sessions.most} connections at once"
