"""The SQL API for drivers in other languages: the two-step claim.

A worker written in any language takes part through SQL functions alone: register_worker,
dequeue (QUEUED -> DEQUEUED: leased, holding its slot), start_attempts (DEQUEUED ->
EXECUTING), heartbeat, complete_attempts / fail_attempt, stop_worker. The Python worker
claims and starts in one call (complete_and_claim), so it never leaves a run DEQUEUED:
these tests are what keeps the two-step path and the DEQUEUED status working. Most use
plain SQL over a psycopg connection, as a driver would, and no skiplock Python."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from helpers import deploy, fetch

from engine import Engine, RunStatus, TaskContext
from engine.db import queries as _queries

Conn = psycopg.Connection[Any]


def register(conn: Conn, worker: str, task: str, *, limit: int | None = None) -> None:
    """A worker of version v1 serving `task` in a queue of its name, lease 30 s."""
    entry = {"id": task, "queue": task, "max_attempts": 3, "concurrency_limit": limit}
    conn.execute(
        "SELECT skiplock.register_worker(%s, 'v1', 'driver-host', 4242, NULL, 10, %s::jsonb)",
        (worker, json.dumps([entry])),
    )


def trigger(conn: Conn, task: str, payload: Any) -> str:
    row = conn.execute(
        "SELECT run_id, run_status FROM skiplock.trigger(%s, %s::jsonb)",
        (task, json.dumps(payload)),
    ).fetchone()
    assert row is not None and row[1] == "QUEUED"
    return str(row[0])


def dequeue(conn: Conn, worker: str, task: str) -> list[str]:
    rows = conn.execute(
        "SELECT run_id FROM skiplock.dequeue(%s, 'v1', ARRAY[%s], NULL, 10)", (worker, task)
    ).fetchall()
    return [r[0] for r in rows]


def start_attempts(conn: Conn, worker: str, run_ids: list[str]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT run_id, attempt_id, attempt_number FROM skiplock.start_attempts(%s, %s)",
        (worker, run_ids),
    ).fetchall()


def run_row(conn: Conn, run_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status::text, worker_id, attempt_count, output FROM skiplock.runs WHERE id = %s",
        (run_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_driver_takes_a_run_through_its_life_with_plain_sql_calls(conn: Conn) -> None:
    """trigger -> dequeue (DEQUEUED) -> start_attempts (EXECUTING) -> heartbeat ->
    complete_attempts (COMPLETED) -> stop_worker, each a function call."""
    register(conn, "driver-life", "sql-life")
    run_id = trigger(conn, "sql-life", {"n": 21})

    leased = conn.execute(
        "SELECT run_id, task_identifier, payload, attempt_count, max_attempts"
        " FROM skiplock.dequeue('driver-life', 'v1', '{sql-life}', NULL, 10)"
    ).fetchall()
    assert leased == [(run_id, "sql-life", {"n": 21}, 0, 3)]
    assert run_row(conn, run_id) == ("DEQUEUED", "driver-life", 0, None)
    assert dequeue(conn, "driver-life", "sql-life") == []  # leased once

    ((started_run, attempt_id, number),) = start_attempts(conn, "driver-life", [run_id])
    assert (started_run, number) == (run_id, 1)
    assert run_row(conn, run_id) == ("EXECUTING", "driver-life", 1, None)
    assert start_attempts(conn, "driver-life", [run_id]) == []  # started once

    # while it runs: a heartbeat lists the attempt, and is told to stop nothing
    renewed = conn.execute("SELECT skiplock.heartbeat('driver-life', ARRAY[%s])", (attempt_id,))
    assert renewed.fetchone() == ([],)

    result = json.dumps([{"attempt_id": attempt_id, "output": {"doubled": 42}}])
    done = conn.execute("SELECT run_id FROM skiplock.complete_attempts(%s::jsonb)", (result,))
    assert done.fetchall() == [(run_id,)]
    assert run_row(conn, run_id) == ("COMPLETED", None, 1, {"doubled": 42})
    attempts = conn.execute(
        "SELECT id, number, status::text, worker_id FROM skiplock.attempts WHERE run_id = %s",
        (run_id,),
    ).fetchall()
    assert attempts == [(attempt_id, 1, "COMPLETED", "driver-life")]
    assert conn.execute("SELECT skiplock.stop_worker('driver-life')").fetchone() == (0,)


def test_a_run_dequeued_but_never_started_is_requeued_by_tick_after_the_lease(
    conn: Conn,
) -> None:
    """A driver that dies between dequeue and start_attempts: once its lease lapses,
    tick puts the run back in the queue, keeping its place and freeing its slot, and
    the dead worker can neither start it nor lease another."""
    register(conn, "driver-gone", "sql-lease", limit=1)
    first, second = trigger(conn, "sql-lease", 1), trigger(conn, "sql-lease", 2)
    order_at = conn.execute("SELECT order_at FROM skiplock.runs WHERE id = %s", (first,))
    placed = order_at.fetchone()
    assert dequeue(conn, "driver-gone", "sql-lease") == [first]  # the queue's one slot

    later = datetime.now(UTC) + timedelta(seconds=31)
    conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (later.isoformat(),))
    register(conn, "driver-next", "sql-lease", limit=1)  # leased from the faked now
    assert dequeue(conn, "driver-next", "sql-lease") == []  # the DEQUEUED run holds the slot

    ticked = conn.execute("SELECT skiplock.tick()").fetchone()
    assert ticked is not None and ticked[0]["crashed"] == 1  # requeued, counted with crashes
    assert run_row(conn, first) == ("QUEUED", None, 0, None)
    order_at = conn.execute("SELECT order_at FROM skiplock.runs WHERE id = %s", (first,))
    assert order_at.fetchone() == placed

    assert start_attempts(conn, "driver-gone", [first]) == []
    assert dequeue(conn, "driver-gone", "sql-lease") == []
    assert dequeue(conn, "driver-next", "sql-lease") == [first]  # still ahead of `second`
    ((_, _, number),) = start_attempts(conn, "driver-next", [first])
    assert number == 1
    assert run_row(conn, second)[0] == "QUEUED"


def test_start_attempts_skips_a_run_canceled_after_dequeue(conn: Conn) -> None:
    register(conn, "driver-cancel", "sql-cancel")
    run_id = trigger(conn, "sql-cancel", None)
    assert dequeue(conn, "driver-cancel", "sql-cancel") == [run_id]
    assert conn.execute("SELECT skiplock.cancel_run(%s)::text", (run_id,)).fetchone() == (
        "CANCELED",
    )
    assert start_attempts(conn, "driver-cancel", [run_id]) == []
    assert run_row(conn, run_id) == ("CANCELED", None, 0, None)


def test_dequeue_skips_runs_locked_by_another_transaction(app: Engine) -> None:
    """dequeue (through engine.db.queries, which sends the same SQL) takes its runs FOR
    UPDATE SKIP LOCKED: it leases what it can at once instead of waiting."""

    @app.task("locked")
    def locked(p: Any, ctx: TaskContext) -> None: ...

    worker_id = deploy(app)
    a, b = locked.trigger(None), locked.trigger(None)
    with psycopg.connect(app.dsn) as holder:
        holder.execute("SELECT 1 FROM skiplock.runs WHERE id = %s FOR UPDATE", (a.id,))
        rows = app.db.run(_queries.dequeue(worker_id, "dev", ["locked"], None, 10))
        assert [r["run_id"] for r in rows] == [b.id]  # did not wait for the lock
        holder.rollback()


def test_stopping_a_worker_requeues_runs_it_dequeued_but_never_started(app: Engine) -> None:
    """stop_worker gives a DEQUEUED run back to the queue, keeping its place."""

    @app.task("dequeued-only")
    def dequeued_only(p: Any, ctx: TaskContext) -> None: ...

    worker_id = deploy(app)
    h = dequeued_only.trigger(None)
    order_before = fetch(app.dsn, "SELECT order_at FROM skiplock.runs WHERE id = %s", h.id)
    app.db.run(_queries.dequeue(worker_id, "dev", ["dequeued-only"], None, 10))
    assert app.runs.retrieve(h).status is RunStatus.DEQUEUED
    assert app.db.run(_queries.stop_worker(worker_id)) == 1
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.QUEUED and run.attempt_count == 0
    assert fetch(app.dsn, "SELECT order_at FROM skiplock.runs WHERE id = %s", h.id) == order_before
