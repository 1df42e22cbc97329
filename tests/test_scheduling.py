"""Time-based transitions: TTL expiry and crash detection by worker lease."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from helpers import deploy, fetch, spawn_worker, wait_for

from engine import Engine, RunStatus, TaskContext
from engine.db import queries as _queries


def at(conn: psycopg.Connection[Any], when: datetime) -> None:
    """Fake skiplock.now() for this session."""
    conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (when.isoformat(),))


def tick(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute("SELECT skiplock.tick()").fetchone()
    assert row is not None
    return dict(row[0])


def define(app: Engine, task_id: str) -> Any:
    """A task of its own per test: the module's tests share one database."""

    @app.task(task_id)
    def ttl_task(p: Any, ctx: TaskContext) -> None: ...

    return ttl_task


def test_ttl_expires_a_run_that_never_started(app: Engine, conn: psycopg.Connection[Any]) -> None:
    task = define(app, "ttl-never-started")
    deploy(app)
    h = task.trigger(None, ttl="10m")
    now = datetime.now(UTC)
    at(conn, now + timedelta(minutes=9))
    tick(conn)
    assert app.runs.retrieve(h).status is RunStatus.QUEUED
    at(conn, now + timedelta(minutes=11))
    assert tick(conn)["expired"] >= 1
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.EXPIRED and run.is_failed and run.attempt_count == 0
    assert run.expired_at is not None and run.finished_at == run.expired_at


def test_a_due_expiry_is_never_started_even_before_the_tick(
    app: Engine, conn: psycopg.Connection[Any]
) -> None:
    task = define(app, "ttl-due")
    worker = deploy(app)
    h = task.trigger(None, ttl=60)
    at(conn, datetime.now(UTC) + timedelta(minutes=5))
    rows = conn.execute(
        "SELECT run_id FROM skiplock.claim(%s, 'dev', '{ttl-due}', NULL, 100)", (worker,)
    ).fetchall()
    assert (h.id,) not in rows
    assert app.runs.retrieve(h).status is RunStatus.QUEUED


def test_a_started_run_never_expires(app: Engine, conn: psycopg.Connection[Any]) -> None:
    task = define(app, "ttl-started")
    worker = deploy(app, lease=86400)
    h = task.trigger(None, ttl=60)
    (row,) = app.db.run(_queries.complete_and_claim(None, worker, "dev", ["ttl-started"], None, 1))
    assert row["run_id"] == h.id
    at(conn, datetime.now(UTC) + timedelta(hours=1))
    tick(conn)
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.EXECUTING and run.expired_at is None


def test_ttl_of_a_delayed_run_counts_from_the_end_of_its_delay(
    app: Engine, conn: psycopg.Connection[Any]
) -> None:
    task = define(app, "ttl-delayed")
    deploy(app)
    h = task.trigger(None, delay="1h", ttl="10m")
    now = datetime.now(UTC)
    at(conn, now + timedelta(minutes=30))
    tick(conn)
    assert app.runs.retrieve(h).status is RunStatus.DELAYED
    at(conn, now + timedelta(minutes=65))
    tick(conn)
    assert app.runs.retrieve(h).status is RunStatus.QUEUED
    at(conn, now + timedelta(minutes=71))
    tick(conn)
    assert app.runs.retrieve(h).status is RunStatus.EXPIRED


def test_reschedule_moves_the_expiry_along(app: Engine, conn: psycopg.Connection[Any]) -> None:
    task = define(app, "ttl-rescheduled")
    deploy(app)
    h = task.trigger(None, delay="1h", ttl="10m")
    app.runs.reschedule(h, delay="3h")
    at(conn, datetime.now(UTC) + timedelta(hours=2))
    tick(conn)
    assert app.runs.retrieve(h).status is RunStatus.DELAYED


def test_pending_version_run_expires_in_real_time(app: Engine, start_worker: Any) -> None:
    define(app, "ttl-real-time")
    start_worker()
    h = app.trigger("never-deployed", {}, ttl=0.5)
    run = wait_for(lambda: (r := app.runs.retrieve(h)).is_completed and r, timeout=10)
    assert run.status is RunStatus.EXPIRED


def test_a_claim_in_flight_keeps_its_worker_from_being_declared_lost(
    app: Engine, conn: psycopg.Connection[Any]
) -> None:
    """Maintenance finds a worker's lease lapsed while a claim of that worker is still
    committing. Declared lost then, the worker would hold the claimed run with nobody to
    ever crash or requeue it (found by the fault soak): the run stayed EXECUTING."""

    @app.task("claim-vs-lost")
    def claimed(p: Any, ctx: TaskContext) -> None: ...

    worker = f"worker_race_{os.getpid()}"
    entry = claimed.deployment_entry()
    app.db.run(_queries.register_worker(worker, "dev", "h", 1, None, 5, [entry], 30.0))
    h = claimed.trigger(1)
    with psycopg.connect(app.dsn) as claiming:  # a claim's transaction, not yet committed
        (row,) = claiming.execute(
            "SELECT run_id FROM skiplock.claim(%s, 'dev', '{claim-vs-lost}', NULL, 1)",
            (worker,),
        ).fetchall()
        assert row[0] == h.id
        at(conn, datetime.now(UTC) + timedelta(seconds=31))
        assert tick(conn)["crashed"] == 0  # the lease lapsed, but the claim holds the worker
        claiming.commit()
    assert tick(conn)["crashed"] == 1  # now visible, the claimed run goes with its worker
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.CRASHED and run.error["type"] == "WorkerLost"


def test_lapsed_lease_crashes_started_runs_and_requeues_the_rest(
    app: Engine, conn: psycopg.Connection[Any]
) -> None:
    @app.task("leased")
    def leased(p: Any, ctx: TaskContext) -> None: ...

    worker = f"worker_lease_{os.getpid()}"
    entry = leased.deployment_entry()
    app.db.run(_queries.register_worker(worker, "dev", "h", 1, None, 5, [entry], 30.0))
    started_run, never_started, bystander = (leased.trigger(i) for i in range(3))
    (claimed,) = app.db.run(_queries.complete_and_claim(None, worker, "dev", ["leased"], None, 1))
    assert claimed["run_id"] == started_run.id
    (dequeued,) = app.db.run(_queries.dequeue(worker, "dev", ["leased"], None, 1))
    assert dequeued["run_id"] == never_started.id
    now = datetime.now(UTC)
    at(conn, now + timedelta(seconds=20))
    assert tick(conn)["crashed"] == 0  # lease still current
    at(conn, now + timedelta(seconds=31))
    assert tick(conn)["crashed"] == 2
    crashed = app.runs.retrieve(started_run)
    assert crashed.status is RunStatus.CRASHED and crashed.error["type"] == "WorkerLost"
    assert crashed.attempts[0].status == "CRASHED"
    requeued = app.runs.retrieve(never_started)
    assert requeued.status is RunStatus.QUEUED and requeued.attempt_count == 0
    assert app.runs.retrieve(bystander).status is RunStatus.QUEUED
    # the lost worker's late writes are fenced, and it is told it was lost
    late = f'[{{"attempt_id": "{claimed["attempt_id"]}", "output": 1}}]'
    assert app.db.run(_queries.complete_attempts(late)) == []
    assert app.db.run(_queries.heartbeat(worker, [claimed["attempt_id"]])) is None
    # nor can it take work under its old id: nobody would ever crash what it took
    assert app.db.run(_queries.complete_and_claim(None, worker, "dev", ["leased"], None, 5)) == []
    assert app.db.run(_queries.dequeue(worker, "dev", ["leased"], None, 5)) == []
    assert app.runs.retrieve(bystander).status is RunStatus.QUEUED
    assert fetch(
        app.dsn, "SELECT lost_at IS NOT NULL FROM skiplock.workers WHERE id = %s", worker
    ) == [(True,)]


def test_a_heartbeat_releases_runs_the_worker_no_longer_holds(app: Engine) -> None:
    """A claim whose reply never arrived (or an outcome given up on) leaves a run EXECUTING
    under a live worker that does not know it: its next heartbeat, which lists every
    attempt the worker holds, releases it (queued again while it has tries left)."""
    from engine import Retry

    @app.task("lost-reply")
    def lost_reply(p: Any, ctx: TaskContext) -> None: ...

    @app.task("lost-reply-once", retry=Retry(max_attempts=1))
    def lost_once(p: Any, ctx: TaskContext) -> None: ...

    worker = f"worker_lost_reply_{os.getpid()}"
    entries = [lost_reply.deployment_entry(), lost_once.deployment_entry()]
    app.db.run(_queries.register_worker(worker, "dev", "h", 1, None, 5, entries, 30.0))
    kept, lost, last_try = lost_reply.trigger(1), lost_reply.trigger(2), lost_once.trigger(3)
    claimed = app.db.run(
        _queries.complete_and_claim(None, worker, "dev", ["lost-reply", "lost-reply-once"], None, 3)
    )
    held = {c["run_id"]: c["attempt_id"] for c in claimed}
    assert set(held) == {kept.id, lost.id, last_try.id}
    # the worker knows only `kept` (the reply with the others was lost)
    assert app.db.run(_queries.heartbeat(worker, [held[kept.id]])) == []
    assert app.runs.retrieve(kept).status is RunStatus.EXECUTING
    requeued = app.runs.retrieve(lost)
    assert requeued.status is RunStatus.QUEUED and requeued.error["type"] == "AttemptLost"
    assert requeued.attempts[0].status == "CRASHED"
    assert app.runs.retrieve(last_try).status is RunStatus.CRASHED  # no tries left
    # the requeued run is claimed again, on a second attempt, and completes
    (again,) = app.db.run(_queries.complete_and_claim(None, worker, "dev", ["lost-reply"], None, 1))
    assert again["run_id"] == lost.id and again["attempt_number"] == 2
    late = f'[{{"attempt_id": "{held[lost.id]}", "output": 1}}]'
    assert app.db.run(_queries.complete_attempts(late)) == []  # the lost attempt is fenced
    done = f'[{{"attempt_id": "{again["attempt_id"]}", "output": 2}}]'
    assert app.db.run(_queries.complete_attempts(done)) == [lost.id]


def test_sigkill_of_a_worker_is_seen_within_the_lease(
    app: Engine, dsn: str, start_worker: Any
) -> None:
    proc = spawn_worker(
        dsn,
        "--concurrency",
        "1",
        "--version",
        "kill-me",
        "--queues",
        "slow",
        "--heartbeat-interval",
        "0.3",
        "--lease-timeout",
        "2",
    )
    try:
        wait_for(lambda: fetch(dsn, "SELECT 1 FROM skiplock.workers WHERE version = 'kill-me'"))
        victim = app.trigger("cli-slow", 30, version="kill-me")
        wait_for(lambda: app.runs.retrieve(victim).status is RunStatus.EXECUTING)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        # a healthy worker elsewhere keeps ticking; nothing else is disturbed
        @app.task("healthy")
        def healthy(p: Any, ctx: TaskContext) -> str:
            return "fine"

        start_worker(version="healthy")
        ok = healthy.trigger(None)
        run = wait_for(lambda: (r := app.runs.retrieve(victim)).is_completed and r, timeout=15)
        assert run.status is RunStatus.CRASHED
        assert time.monotonic() - killed_at < 2 + 5  # lease + a few ticks
        assert wait_for(lambda: app.runs.retrieve(ok).status is RunStatus.COMPLETED)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_worker_that_cannot_renew_its_lease_stops_its_runs(
    app: Engine, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    import threading

    started, stopped = threading.Event(), threading.Event()
    reasons: list[str | None] = []

    @app.task("fenced-by-lease")
    def long(p: Any, ctx: TaskContext) -> str:
        if ctx.attempt > 1:
            return "a later attempt"
        started.set()
        deadline = time.monotonic() + 20
        while not ctx.is_canceled and time.monotonic() < deadline:
            time.sleep(0.02)
        reasons.append(ctx.stop_reason)
        stopped.set()
        return "the fenced attempt"

    start_worker(heartbeat_interval=0.2, lease_timeout=1.0)
    h = long.trigger(None)
    assert started.wait(10)
    # the database stops answering heartbeats (a real fault, not a mock)
    conn.execute("ALTER FUNCTION skiplock.heartbeat(text, text[]) RENAME TO heartbeat_off")
    try:
        assert stopped.wait(10)
    finally:
        conn.execute("ALTER FUNCTION skiplock.heartbeat_off(text, text[]) RENAME TO heartbeat")
    assert reasons == ["worker lease lost"]
    run = wait_for(lambda: (r := app.runs.retrieve(h)).is_completed and r)
    # the worker fences itself on its own clock, a little before the database's lease
    # lapses. If maintenance crashed the run first, it is CRASHED; if the heartbeat came
    # back first, the heartbeat released the attempt the worker no longer held, and the
    # run was retried. Either way the fenced attempt is CRASHED and its result unused.
    assert run.attempts[0].status == "CRASHED"
    assert run.status is RunStatus.CRASHED or (
        run.status is RunStatus.COMPLETED and run.output == "a later attempt"
    )


def test_a_retried_run_keeps_its_place_ahead_of_later_runs(app: Engine, start_worker: Any) -> None:
    from engine import Queue, Retry

    order: list[str] = []

    @app.task(
        "keeps-place",
        queue=Queue("keeps-place", concurrency_limit=1),
        retry=Retry(max_attempts=2, min_timeout=0.1, randomize=False),
    )
    def keeps_place(p: str, ctx: TaskContext) -> None:
        order.append(f"{p}{ctx.attempt}")
        if p == "a" and ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        if p == "b":
            time.sleep(0.4)  # longer than a's backoff

    deploy(app)
    app.queues.pause("keeps-place")
    for name in ("a", "b", "c"):
        keeps_place.trigger(name)
    start_worker()
    app.queues.resume("keeps-place")
    wait_for(lambda: len(order) == 4)
    assert order == ["a1", "b1", "a2", "c1"]


def test_shutdown_does_not_hang_on_completions_it_cannot_record(
    app: Engine, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    @app.task("unrecordable")
    def quick(p: Any, ctx: TaskContext) -> str:
        return "done"

    worker = start_worker(heartbeat_interval=0.2, lease_timeout=1.5)
    # completions of this task fail from now on, with an error that is not a refusal of
    # the data (undefined_function, as when a function is missing mid-upgrade): the worker
    # keeps them to send again, in complete_and_claim and in complete_attempts alike
    conn.execute(
        "CREATE FUNCTION public.completions_off() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION USING ERRCODE = 'undefined_function', "
        "MESSAGE = 'completions are off'; END $$"
    )
    conn.execute(
        "CREATE TRIGGER completions_off BEFORE UPDATE ON skiplock.runs FOR EACH ROW "
        "WHEN (NEW.status = 'COMPLETED' AND OLD.task_identifier = 'unrecordable') "
        "EXECUTE FUNCTION public.completions_off()"
    )
    try:
        h = quick.trigger(None)
        wait_for(lambda: app.runs.retrieve(h).status is RunStatus.EXECUTING)
        time.sleep(0.3)  # the attempt has finished; its completion keeps failing
        began = time.monotonic()
        worker.stop()
        wait_for(lambda: worker._loop is None or worker._loop.is_closed(), timeout=15)
        assert time.monotonic() - began < 10
    finally:
        conn.execute("DROP TRIGGER completions_off ON skiplock.runs")
        conn.execute("DROP FUNCTION public.completions_off()")
    run = wait_for(lambda: (r := app.runs.retrieve(h)).is_completed and r)
    assert run.status is RunStatus.CRASHED  # its lease lapsed with the result unrecorded
