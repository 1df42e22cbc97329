"""Workers: execution of def and async tasks, attempts, retries, abort, max_duration,
cancel, fencing, versions, delays."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import deploy, fetch, wait_for
from pydantic import BaseModel

from engine import AbortTaskRunError, Engine, Retry, RunStatus, TaskContext, Worker
from engine.db import queries as _queries
from engine.errors import InvalidArgumentError

StartWorker = Callable[..., Worker]
FAST = Retry(max_attempts=3, min_timeout=0.05, factor=2.0, randomize=False)


class Numbers(BaseModel):
    a: int
    b: int


class Sum(BaseModel):
    total: int


def finished(app: Engine, run_id: str, timeout: float = 20.0) -> Any:
    return wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout)


def test_def_and_async_tasks_complete_with_typed_outputs(
    app: Engine, start_worker: StartWorker
) -> None:
    threads: list[str] = []

    @app.task("add-sync")
    def add_sync(p: Numbers, ctx: TaskContext) -> Sum:
        threads.append(threading.current_thread().name)
        return Sum(total=p.a + p.b)

    @app.task("add-async")
    async def add_async(p: Numbers, ctx: TaskContext) -> Sum:
        await asyncio.sleep(0.01)
        return Sum(total=p.a * p.b)

    start_worker(concurrency=4)
    h1 = add_sync.trigger(Numbers(a=2, b=3))
    h2 = add_async.trigger({"a": 4, "b": 5})
    r1, r2 = finished(app, h1.id), finished(app, h2.id)
    assert r1.status is RunStatus.COMPLETED and r1.output == {"total": 5}
    assert r2.status is RunStatus.COMPLETED and r2.output == {"total": 20}
    assert threads and threads[0].startswith("skiplock-task")  # not the loop's thread
    typed = app.runs.retrieve(h1, task=add_sync)
    assert typed.payload == Numbers(a=2, b=3) and typed.output == Sum(total=5)
    (attempt,) = r1.attempts
    assert attempt.number == 1 and attempt.status == "COMPLETED" and attempt.output == {"total": 5}
    assert attempt.finished_at is not None and attempt.finished_at >= attempt.started_at
    assert r1.started_at is not None and r1.finished_at is not None


def test_outputs_that_json_cannot_spell_do_not_block_other_completions(
    app: Engine, start_worker: StartWorker
) -> None:
    """NaN and infinities have no JSON spelling: such an output is stored as null (as
    pydantic's JSON mode writes them), never sent as bare NaN, which the database would
    refuse, and with it the whole batch of completions it came in."""

    @app.task("odd-floats")
    async def odd_floats(p: dict[str, str], ctx: TaskContext) -> Any:
        return {"value": float(p["x"]), "label": p["x"]}

    start_worker(concurrency=8)
    handles = [odd_floats.trigger({"x": x}) for x in ("nan", "inf", "-inf", "1.5")]
    runs = [finished(app, h.id) for h in handles]
    assert [r.status for r in runs] == [RunStatus.COMPLETED] * 4
    assert [r.output for r in runs] == [
        {"value": None, "label": "nan"},
        {"value": None, "label": "inf"},
        {"value": None, "label": "-inf"},
        {"value": 1.5, "label": "1.5"},
    ]


def test_an_output_or_error_with_a_nul_character_fails_its_attempt_and_nothing_else(
    app: Engine, start_worker: StartWorker
) -> None:
    """PostgreSQL's jsonb cannot store \\u0000. An output holding one fails its attempt
    with a clear error; an error message holding one is stored with the NUL spelled out.
    Sent as they were, the database refused the outcome and the batch it came in: the
    worker stopped (found while reviewing what a refused batch does)."""

    @app.task("nul-output", retry=Retry(max_attempts=1))
    def nul_output(p: int, ctx: TaskContext) -> str:
        return "a\x00b"

    @app.task("nul-error", retry=Retry(max_attempts=1))
    def nul_error(p: int, ctx: TaskContext) -> None:
        raise ValueError("bad \x00 byte")

    @app.task("plain-output")
    def plain_output(p: int, ctx: TaskContext) -> int:
        return p

    handles = [nul_output.trigger(1), nul_error.trigger(2), plain_output.trigger(3)]
    start_worker(concurrency=4)
    bad_output, bad_error, good = (finished(app, h.id) for h in handles)
    assert bad_output.status is RunStatus.FAILED
    assert bad_output.error["type"] == "InvalidArgumentError"
    assert "NUL character" in bad_output.error["message"]
    assert bad_error.status is RunStatus.FAILED
    assert bad_error.error["message"] == "bad \\x00 byte"
    assert good.status is RunStatus.COMPLETED and good.output == 3
    assert finished(app, plain_output.trigger(4).id).output == 4  # the worker goes on


def test_an_outcome_the_database_refuses_fails_alone(
    app: Engine, start_worker: StartWorker
) -> None:
    """Whatever the database refuses in a batch of outcomes (here an output spelled as
    JSON the database does not take, past the worker's own checks) fails only its own
    attempt, as SYSTEM_FAILURE; the other outcomes are recorded and the worker goes on."""

    @app.task("refused-output")
    def refused(p: int, ctx: TaskContext) -> int:
        return p

    @app.task("accepted-output")
    def accepted(p: int, ctx: TaskContext) -> int:
        return p

    refused.output_json = lambda output: "NaN"  # type: ignore[method-assign]
    handles = [refused.trigger(1), *(accepted.trigger(i) for i in range(2, 6))]
    start_worker(concurrency=8)
    bad, *good = (finished(app, h.id) for h in handles)
    assert bad.status is RunStatus.SYSTEM_FAILURE
    assert bad.error["message"].startswith("the outcome could not be stored")
    assert [r.status for r in good] == [RunStatus.COMPLETED] * 4
    assert [r.output for r in good] == [2, 3, 4, 5]
    assert finished(app, accepted.trigger(6).id).output == 6  # the worker goes on


def test_retries_follow_backoff_then_succeed(app: Engine, start_worker: StartWorker) -> None:
    @app.task("flaky", retry=Retry(max_attempts=4, min_timeout=0.2, factor=2.0, randomize=False))
    def flaky(p: dict[str, int], ctx: TaskContext) -> int:
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return ctx.attempt

    start_worker()
    run = finished(app, flaky.trigger({}).id)
    assert run.status is RunStatus.COMPLETED and run.output == 3 and run.attempt_count == 3
    statuses = [a.status for a in run.attempts]
    assert statuses == ["FAILED", "FAILED", "COMPLETED"]
    assert run.attempts[0].error["message"] == "attempt 1 failed"
    assert "RuntimeError" in run.attempts[0].error["stack"]
    # delay before attempt 2 >= 0.2 s, before attempt 3 >= 0.4 s (database clock)
    gap1 = run.attempts[1].started_at - run.attempts[0].finished_at
    gap2 = run.attempts[2].started_at - run.attempts[1].finished_at
    assert gap1.total_seconds() >= 0.2 and gap2.total_seconds() >= 0.4


def test_retries_exhausted_fail_the_run(app: Engine, start_worker: StartWorker) -> None:
    @app.task("always-fails", retry=FAST)
    async def always(p: Any, ctx: TaskContext) -> None:
        raise ValueError("nope")

    start_worker()
    run = finished(app, always.trigger(None).id)
    assert run.status is RunStatus.FAILED and run.attempt_count == 3
    assert run.error["type"] == "ValueError" and run.is_failed and run.is_completed


def test_max_attempts_option_overrides_the_task(app: Engine, start_worker: StartWorker) -> None:
    @app.task("fails-once-allowed", retry=FAST)
    def fails(p: Any, ctx: TaskContext) -> None:
        raise ValueError("x")

    start_worker()
    run = finished(app, fails.trigger(None, max_attempts=1).id)
    assert run.status is RunStatus.FAILED and run.attempt_count == 1


def test_abort_fails_at_once(app: Engine, start_worker: StartWorker) -> None:
    @app.task("aborts", retry=FAST)
    def aborts(p: Any, ctx: TaskContext) -> None:
        raise AbortTaskRunError("bad input, do not retry")

    start_worker()
    run = finished(app, aborts.trigger(None).id)
    assert run.status is RunStatus.FAILED and run.attempt_count == 1
    assert run.error["type"] == "AbortTaskRunError"


@pytest.mark.parametrize("kind", ["async", "def"])
def test_max_duration_exceeded_times_out_without_retry(
    app: Engine, start_worker: StartWorker, kind: str
) -> None:
    stopped = threading.Event()
    if kind == "async":

        @app.task("slow-async", retry=FAST, max_duration=0.3)
        async def slow(p: Any, ctx: TaskContext) -> str:
            try:
                await asyncio.sleep(30)
            finally:
                stopped.set()
            return "late"
    else:

        @app.task("slow-def", retry=FAST, max_duration=0.3)
        def slow(p: Any, ctx: TaskContext) -> str:
            while not ctx.is_canceled:
                time.sleep(0.01)
            stopped.set()
            return "late"

    start_worker()
    run = finished(app, slow.trigger(None).id)
    assert run.status is RunStatus.TIMED_OUT and run.attempt_count == 1
    assert run.attempts[0].status == "TIMED_OUT" and run.output is None
    assert stopped.wait(5)


def test_a_task_raising_timeout_error_itself_is_retried(
    app: Engine, start_worker: StartWorker
) -> None:
    @app.task("raises-timeout", retry=FAST, max_duration=30)
    async def raises(p: Any, ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            raise TimeoutError("upstream timed out")
        return "ok"

    start_worker()
    run = finished(app, raises.trigger(None).id)
    assert run.status is RunStatus.COMPLETED and run.attempt_count == 2


def test_cancel_stops_a_running_async_task(app: Engine, start_worker: StartWorker) -> None:
    started, cancelled = threading.Event(), threading.Event()

    @app.task("long-async")
    async def long(p: Any, ctx: TaskContext) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "finished"

    start_worker()
    h = long.trigger(None)
    assert started.wait(10)
    assert app.runs.cancel(h) is RunStatus.CANCELED
    assert cancelled.wait(5)
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.CANCELED and run.attempts[0].status == "CANCELED"


def test_cancel_flags_a_running_thread_and_its_late_result_is_ignored(
    app: Engine, start_worker: StartWorker
) -> None:
    started, done = threading.Event(), threading.Event()
    seen: list[bool] = []

    @app.task("long-def")
    def long(p: Any, ctx: TaskContext) -> str:
        started.set()
        deadline = time.monotonic() + 10
        while not ctx.is_canceled and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(ctx.is_canceled)
        done.set()
        return "late result"

    start_worker()
    h = long.trigger(None)
    assert started.wait(10)
    app.runs.cancel(h)
    assert done.wait(10)
    time.sleep(0.3)  # let the worker try to record the late result
    run = app.runs.retrieve(h)
    assert seen == [True]
    assert run.status is RunStatus.CANCELED and run.output is None
    assert run.attempts[0].status == "CANCELED"


def test_canceling_a_queued_run_means_it_never_executes(
    app: Engine, start_worker: StartWorker
) -> None:
    calls: list[int] = []

    @app.task("never")
    def never(p: Any, ctx: TaskContext) -> None:
        calls.append(1)

    deploy(app)
    h = never.trigger(None)
    assert app.runs.cancel(h) is RunStatus.CANCELED
    start_worker()
    marker = never.trigger(None)
    finished(app, marker.id)
    assert calls == [1]  # only the marker ran
    assert app.runs.retrieve(h).status is RunStatus.CANCELED


def test_writes_from_a_superseded_attempt_change_nothing(app: Engine) -> None:
    """Invariant 3, at the SQL level: completion and failure are fenced by attempt."""

    @app.task("fenced")
    def fenced(p: Any, ctx: TaskContext) -> None: ...

    worker_id = deploy(app)
    h = fenced.trigger(None)
    db = app.db
    (row,) = db.run(_queries.dequeue(worker_id, "dev", ["fenced"], None, 10))
    (started,) = db.run(_queries.start_attempts(worker_id, [row["run_id"]]))
    attempt = started["attempt_id"]
    app.runs.cancel(h)
    assert db.run(_queries.complete_attempts(f'[{{"attempt_id": "{attempt}", "output": 1}}]')) == []
    assert db.run(_queries.fail_attempt(attempt, {"m": "late"}, "FAILED", 0.0)) is None
    assert db.run(_queries.heartbeat(worker_id, [attempt])) == [attempt]  # told to stop it
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.CANCELED and run.output is None and run.error is None


def test_a_retried_attempts_late_completion_is_ignored(app: Engine) -> None:
    @app.task("fenced-retry")
    def fenced(p: Any, ctx: TaskContext) -> None: ...

    worker_id = deploy(app)
    h = fenced.trigger(None)
    db = app.db
    db.run(_queries.dequeue(worker_id, "dev", ["fenced-retry"], None, 10))
    (first,) = db.run(_queries.start_attempts(worker_id, [h.id]))
    assert db.run(_queries.fail_attempt(first["attempt_id"], {}, "FAILED", 0.0)) is RunStatus.QUEUED
    db.run(_queries.dequeue(worker_id, "dev", ["fenced-retry"], None, 10))
    (second,) = db.run(_queries.start_attempts(worker_id, [h.id]))
    # the first attempt reports late: ignored; the second completes
    late = f'[{{"attempt_id": "{first["attempt_id"]}", "output": "stale"}}]'
    assert db.run(_queries.complete_attempts(late)) == []
    ok = f'[{{"attempt_id": "{second["attempt_id"]}", "output": "fresh"}}]'
    assert db.run(_queries.complete_attempts(ok)) == [h.id]
    run = app.runs.retrieve(h)
    assert run.output == "fresh" and [a.status for a in run.attempts] == ["FAILED", "COMPLETED"]


def test_worker_runs_only_runs_locked_to_its_version(
    app: Engine, start_worker: StartWorker
) -> None:
    seen: list[str] = []

    @app.task("versioned")
    def versioned(p: str, ctx: TaskContext) -> None:
        seen.append(p)

    deploy(app, version="v1")
    pinned_v1 = versioned.trigger("pinned-to-v1", version="v1")
    deploy(app, version="v2")  # v2 is now the latest
    worker = start_worker(version="v2")
    latest = versioned.trigger("unpinned")
    assert finished(app, latest.id).version == "v2"
    time.sleep(0.5)
    assert app.runs.retrieve(pinned_v1).status is RunStatus.QUEUED  # a v2 worker leaves it
    assert "pinned-to-v1" not in seen
    assert worker.version == "v2"
    start_worker(version="v1")
    assert finished(app, pinned_v1.id).version == "v1"


def test_worker_registration_releases_pending_version_runs(
    app: Engine, start_worker: StartWorker
) -> None:
    @app.task("late-deploy")
    async def late(p: int, ctx: TaskContext) -> int:
        return p + 1

    h = late.trigger(41)
    assert h.status is RunStatus.PENDING_VERSION
    start_worker()
    run = finished(app, h.id)
    assert run.status is RunStatus.COMPLETED and run.output == 42


def test_pending_run_triggered_during_registration_is_released_by_tick(app: Engine) -> None:
    @app.task("racy-deploy")
    def racy(p: Any, ctx: TaskContext) -> None: ...

    h = racy.trigger(None)
    # a deployment committed without releasing it (the trigger raced the registration)
    fetch(
        app.dsn,
        "INSERT INTO skiplock.deployment_tasks VALUES "
        "('racy-deploy', 'dev', 'racy-deploy', 3, NULL, NULL, now()) RETURNING 1",
    )
    assert app.runs.retrieve(h).status is RunStatus.PENDING_VERSION
    assert app.db.run(_queries.tick())["released"] >= 1
    assert app.runs.retrieve(h).status is RunStatus.QUEUED


def test_delayed_run_executes_after_its_delay(app: Engine, start_worker: StartWorker) -> None:
    @app.task("delayed")
    def delayed(p: Any, ctx: TaskContext) -> str:
        return "ran"

    start_worker()
    h = delayed.trigger(None, delay="1s")
    assert app.runs.retrieve(h).status is RunStatus.DELAYED
    run = finished(app, h.id)
    assert run.status is RunStatus.COMPLETED
    assert run.started_at is not None and run.delayed_until is not None
    assert run.started_at >= run.delayed_until


def test_tick_promotes_due_delayed_runs_by_the_fake_clock(app: Engine) -> None:
    import psycopg

    @app.task("faked")
    def faked(p: Any, ctx: TaskContext) -> None: ...

    deploy(app)
    h = faked.trigger(None, delay="2h")
    with psycopg.connect(app.dsn, autocommit=True) as c:
        assert c.execute("SELECT skiplock.tick()").fetchone()[0]["promoted"] == 0  # type: ignore[index]
        c.execute(
            "SELECT set_config('skiplock.fake_now', (now() + interval '3 hours')::text, false)"
        )
        assert c.execute("SELECT skiplock.tick()").fetchone()[0]["promoted"] >= 1  # type: ignore[index]
    assert app.runs.retrieve(h).status is RunStatus.QUEUED


def test_worker_only_takes_its_queues(app: Engine, start_worker: StartWorker) -> None:
    @app.task("queued-a", queue="qa")
    def qa(p: Any, ctx: TaskContext) -> None: ...

    @app.task("queued-b", queue="qb")
    def qb(p: Any, ctx: TaskContext) -> None: ...

    start_worker(queues=["qa"])
    a, b = qa.trigger(None), qb.trigger(None)
    finished(app, a.id)
    time.sleep(0.4)
    assert app.runs.retrieve(b).status is RunStatus.QUEUED


def test_claim_lanes_are_one_two_or_automatic(app: Engine) -> None:
    with pytest.raises(InvalidArgumentError, match="claim_lanes"):
        app.worker(claim_lanes=3)


def test_concurrency_must_be_positive(app: Engine) -> None:
    with pytest.raises(InvalidArgumentError):
        app.worker(concurrency=0)


def test_no_transaction_stays_open_while_user_code_runs(
    app: Engine, start_worker: StartWorker
) -> None:
    """Invariant 7: while a task sleeps, no session of its database is in a transaction."""
    started, release = threading.Event(), threading.Event()

    @app.task("holds")
    def holds(p: Any, ctx: TaskContext) -> None:
        started.set()
        release.wait(10)

    start_worker()
    h = holds.trigger(None)
    assert started.wait(10)
    time.sleep(0.3)
    open_tx = fetch(
        app.dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
    )
    release.set()
    finished(app, h.id)
    assert open_tx == [(0,)]


def test_many_runs_each_execute_exactly_once_with_two_workers(
    app: Engine, start_worker: StartWorker
) -> None:
    counts: dict[int, int] = {}
    lock = threading.Lock()

    @app.task("count-me")
    async def count_me(p: int, ctx: TaskContext) -> None:
        with lock:
            counts[p] = counts.get(p, 0) + 1

    start_worker(concurrency=20)
    start_worker(concurrency=20)
    batch = count_me.batch_trigger(list(range(500)))
    wait_for(
        lambda: len(app.runs.list(batch=batch.id, status="COMPLETED", limit=1000).data) == 500, 60
    )
    assert counts == {i: 1 for i in range(500)}
    assert fetch(
        app.dsn,
        "SELECT count(*), count(DISTINCT run_id) FROM skiplock.attempts a "
        "JOIN skiplock.runs r ON r.id = a.run_id WHERE r.batch_id = %s",
        batch.id,
    ) == [(500, 500)]


@pytest.mark.parametrize("kind", ["async", "def"])
def test_attempts_still_running_after_the_grace_period_continue_on_the_next_worker(
    app: Engine, start_worker: StartWorker, kind: str
) -> None:
    """Interrupted by its worker's shutdown, an attempt is not failed: its run is queued
    again at once and the next worker continues it, even with max_attempts=1."""
    started = threading.Event()
    executions: list[int] = []
    if kind == "async":

        @app.task("outlives-grace-async", retry=Retry(max_attempts=1))
        async def outlives(p: Any, ctx: TaskContext) -> str:
            executions.append(ctx.attempt)
            started.set()
            if len(executions) == 1:
                await asyncio.sleep(30)
            return "done"
    else:

        @app.task("outlives-grace-def", retry=Retry(max_attempts=1))
        def outlives(p: Any, ctx: TaskContext) -> str:
            executions.append(ctx.attempt)
            started.set()
            first = len(executions) == 1
            deadline = time.monotonic() + 120
            while first and time.monotonic() < deadline:
                time.sleep(0.05)  # ignores ctx.is_canceled: a thread that will not stop
            return "done"

    worker = start_worker(shutdown_grace=0.3)
    h = outlives.trigger(None)
    assert started.wait(10)
    worker.stop()
    run = wait_for(lambda: (r := app.runs.retrieve(h)).status is RunStatus.QUEUED and r)
    assert run.attempt_count == 1 and run.attempts[0].status == "SUSPENDED"
    assert run.attempts[0].error["type"] == "WorkerShutdown"
    assert "shut down before the attempt finished" in run.attempts[0].error["message"]
    # (the fixture's teardown checks the first worker's run() returned: it does not wait
    # for the def task's thread, which loops for 120 s)
    start_worker()
    run = wait_for(lambda: (r := app.runs.retrieve(h)).is_completed and r)
    assert run.status is RunStatus.COMPLETED and run.output == "done"
    assert run.attempt_count == 1 and [a.status for a in run.attempts] == ["COMPLETED"]
    assert executions == [1, 1]  # attempt 1, continued


@pytest.mark.parametrize(
    ("concurrency", "lanes"), [(3, 1), (6, 1), (3, 2), (6, 2), (7, 2), (7, None)]
)
def test_a_worker_runs_at_most_its_concurrency_and_fills_it(
    app: Engine, start_worker: Callable[..., Worker], concurrency: int, lanes: int | None
) -> None:
    """Claimed in one lane, or two (`claim_lanes=2`, from concurrency 4: each at most half
    the slots a call, on two sessions): never more attempts at once than `concurrency`,
    and, with enough runs queued, all of it."""
    lock = threading.Lock()
    now = [0]
    most = [0]

    @app.task(f"held-{concurrency}-{lanes}")
    async def held(p: int, ctx: TaskContext) -> int:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        await asyncio.sleep(0.005 * (p % 4))
        with lock:
            now[0] -= 1
        return p

    held.batch_trigger(list(range(120)))
    worker = start_worker(concurrency=concurrency, claim_lanes=lanes)
    if lanes is None:  # automatic: alone, unless a worker of an earlier test holds a lease
        peers = fetch(app.dsn, "SELECT skiplock.peer_workers(%s)", worker.id)[0][0]
        wait_for(lambda: worker.claim_lanes_active == (2 if peers == 0 else 1))
    done = "SELECT count(*) FROM skiplock.runs WHERE task_identifier = %s AND status = 'COMPLETED'"
    wait_for(lambda: fetch(app.dsn, done, held.id)[0][0] == 120, 60)
    assert most[0] == concurrency
