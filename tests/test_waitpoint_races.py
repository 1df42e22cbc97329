"""Races around waitpoints: each ends in exactly one outcome and one resume, and none
deadlocks (one lock order for all: the run being finished, waitpoints, the run resumed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from helpers import deploy, fetch

from engine import Engine, RunStatus, TaskContext
from engine.db import queries as _queries


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once, each in a thread; return their results (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def go(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "deadlock or hang"
    return results


def sql(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(query.encode(), params).fetchone()
        return None if row is None else row[0]


def started_parent(app: Engine, worker: str, task: Any) -> tuple[str, str]:
    h = task.trigger(None)
    (row,) = [
        r
        for r in app.db.run(_queries.complete_and_claim(None, worker, "dev", [task.id], None, 50))
        if r["run_id"] == h.id
    ]
    return h.id, row["attempt_id"]


def define(app: Engine) -> Any:
    @app.task("race-parent")
    def parent(p: Any, ctx: TaskContext) -> None: ...

    @app.task("race-child")
    def child(p: Any, ctx: TaskContext) -> None: ...

    return parent, child


def test_a_token_completed_twice_at_once_completes_once(app: Engine) -> None:
    parent, _ = define(app)
    worker = deploy(app, lease=3600)
    for _ in range(10):
        run_id, attempt = started_parent(app, worker, parent)
        token = app.waitpoints.create_token()
        assert app.db.run(_queries.block_on(attempt, 0, "token", token.id, token.id)) == "WAITING"
        results = race(*(lambda i=i: app.waitpoints.complete_token(token, i) for i in range(8)))
        assert sorted(results) == [False] * 7 + [True]
        winner = results.index(True)
        assert app.waitpoints.retrieve(token).output == winner
        assert app.runs.retrieve(run_id).status is RunStatus.QUEUED


def test_a_token_completion_racing_its_timeout_has_one_outcome(app: Engine) -> None:
    parent, _ = define(app)
    # a lease that outlasts the fake clock's jump: a worker declared lost claims nothing
    worker = deploy(app, lease=6 * 3600)
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    for _ in range(10):
        run_id, attempt = started_parent(app, worker, parent)
        token = app.waitpoints.create_token(timeout="1h")
        app.db.run(_queries.block_on(attempt, 0, "token", token.id, token.id))

        def timeout() -> Any:
            with psycopg.connect(app.dsn, autocommit=True) as c:
                c.execute("SELECT set_config('skiplock.fake_now', %s, false)", (later,))
                return c.execute("SELECT skiplock.tick()").fetchone()

        completed, _ = race(lambda: app.waitpoints.complete_token(token, "done"), timeout)
        point = app.waitpoints.retrieve(token)
        assert point.status == "COMPLETED"
        assert point.is_error is (completed is False)  # exactly one of the two won
        assert app.runs.retrieve(run_id).status is RunStatus.QUEUED


def test_a_child_finishing_while_its_parent_blocks_on_it_resumes_the_parent_once(
    app: Engine,
) -> None:
    parent, child = define(app)
    worker = deploy(app, lease=3600)
    for _ in range(15):
        run_id, attempt = started_parent(app, worker, parent)
        kid = child.trigger(None)
        waitpoint = sql(app.dsn, "SELECT skiplock.run_waitpoint(%s)", kid.id)
        (kid_row,) = [
            r
            for r in app.db.run(
                _queries.complete_and_claim(None, worker, "dev", ["race-child"], None, 50)
            )
            if r["run_id"] == kid.id
        ]
        body = f'[{{"attempt_id": "{kid_row["attempt_id"]}", "output": 1}}]'
        blocked, done = race(
            lambda: app.db.run(_queries.block_on(attempt, 0, "run", "race-child", waitpoint)),
            lambda: app.db.run(_queries.complete_attempts(body)),
        )
        assert done == [kid.id]
        status = app.runs.retrieve(run_id).status
        # either the child finished first (no suspension) or the parent was resumed
        assert (blocked, status) in {
            ("CONTINUE", RunStatus.EXECUTING),
            ("WAITING", RunStatus.QUEUED),
        }


def test_cancel_racing_completion_gives_one_final_status(app: Engine) -> None:
    parent, child = define(app)
    worker = deploy(app, lease=3600)
    for _ in range(15):
        run_id, attempt = started_parent(app, worker, parent)
        kid = child.trigger(None)
        waitpoint = sql(app.dsn, "SELECT skiplock.run_waitpoint(%s)", kid.id)
        assert (
            app.db.run(_queries.block_on(attempt, 0, "run", "race-child", waitpoint)) == "WAITING"
        )
        (kid_row,) = [
            r
            for r in app.db.run(
                _queries.complete_and_claim(None, worker, "dev", ["race-child"], None, 50)
            )
            if r["run_id"] == kid.id
        ]
        body = f'[{{"attempt_id": "{kid_row["attempt_id"]}", "output": 1}}]'
        completed, _canceled = race(
            lambda: app.db.run(_queries.complete_attempts(body)),
            lambda: app.runs.cancel(kid),
        )
        final = app.runs.retrieve(kid).status
        assert final in {RunStatus.COMPLETED, RunStatus.CANCELED}
        assert (completed == [kid.id]) is (final is RunStatus.COMPLETED)
        point = fetch(
            app.dsn,
            "SELECT status, is_error, output->>'status' FROM skiplock.waitpoints WHERE id = %s",
            waitpoint,
        )
        assert point == [("COMPLETED", final is RunStatus.CANCELED, final.value)]
        assert app.runs.retrieve(run_id).status is RunStatus.QUEUED  # resumed exactly once


def test_the_waitpoints_of_one_wait_completed_at_once_resume_the_run_once(app: Engine) -> None:
    parent, _ = define(app)
    worker = deploy(app, lease=3600)
    for _ in range(10):
        run_id, attempt = started_parent(app, worker, parent)
        tokens = [app.waitpoints.create_token().id for _ in range(4)]
        blocked = sql(
            app.dsn, "SELECT skiplock.block_run(%s, 0, 'token', 'all', %s)", attempt, tokens
        )
        assert blocked == "WAITING"
        results = race(*(lambda t=t: app.waitpoints.complete_token(t, t) for t in tokens))
        assert results == [True] * 4
        assert app.runs.retrieve(run_id).status is RunStatus.QUEUED
        resumes = fetch(
            app.dsn,
            "SELECT count(*) FROM skiplock.runs WHERE id = %s AND status = 'QUEUED'",
            run_id,
        )
        assert resumes == [(1,)]


def test_purging_a_canceled_run_racing_its_token_completion_does_not_deadlock(
    app: Engine,
) -> None:
    """A cancelled run keeps its pending edge; the completion locks the run before the
    edge, as the purge's delete and its cascade do."""
    parent, _ = define(app)
    worker = deploy(app, lease=3600)
    for _ in range(15):
        run_id, attempt = started_parent(app, worker, parent)
        token = app.waitpoints.create_token()
        assert app.db.run(_queries.block_on(attempt, 0, "token", token.id, token.id)) == "WAITING"
        app.runs.cancel(run_id)
        completed, purged = race(
            lambda: app.waitpoints.complete_token(token, None),
            lambda: sql(app.dsn, "SELECT skiplock.delete_runs(ARRAY[%s])", run_id),
        )
        assert completed is True
        assert purged == 1
        assert fetch(app.dsn, "SELECT 1 FROM skiplock.runs WHERE id = %s", run_id) == []
