"""Blocking edges carry whether their waitpoint is pending (migration 0033): a resume reads
the edges of the wait the run is in, whatever the number of its past waits, and a run
waiting on several waitpoints goes back to QUEUED only once every one has completed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from helpers import deploy, fetch

from engine import Engine, RunStatus, TaskContext
from engine.db import queries as _queries


def _claim(app: Engine, worker: str, run_id: str) -> str:
    """Claim run_id (QUEUED) for worker; return its new attempt's id."""
    rows = app.db.run(_queries.complete_and_claim(None, worker, "dev", ["edges-parent"], None, 50))
    (row,) = [r for r in rows if r["run_id"] == run_id]
    return str(row["attempt_id"])


def _tokens(app: Engine, n: int) -> list[str]:
    with psycopg.connect(app.dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT (skiplock.create_token()).waitpoint_id FROM generate_series(1, %s)",
            (n,),
        ).fetchall()
    return [r[0] for r in rows]


def _block(app: Engine, attempt: str, position: int, ids: list[str]) -> str:
    with psycopg.connect(app.dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT skiplock.block_run(%s, %s, 'token', 'edges', %s)", (attempt, position, ids)
        ).fetchone()
    assert row is not None
    return str(row[0])


def _pending_edges(app: Engine, run_id: str) -> list[str]:
    rows = fetch(
        app.dsn,
        "SELECT waitpoint_id FROM skiplock.run_waitpoints WHERE run_id = %s AND pending"
        " ORDER BY waitpoint_id",
        run_id,
    )
    return [r[0] for r in rows]


def _setup(app: Engine) -> tuple[str, str, str]:
    """A deployed parent task's run, claimed: (worker, run id, attempt id)."""

    @app.task("edges-parent")
    def parent(p: Any, ctx: TaskContext) -> None: ...

    worker = deploy(app, lease=3600)
    h = parent.trigger(None)
    return worker, h.id, _claim(app, worker, h.id)


def test_a_run_with_many_past_waits_resumes_when_its_current_wait_completes(
    app: Engine,
) -> None:
    worker, run_id, attempt = _setup(app)
    # 400 past calls on tokens already complete: each records an edge, none suspends
    done = _tokens(app, 400)
    for token in done:
        app.waitpoints.complete_token(token, None)
    with psycopg.connect(app.dsn, autocommit=True) as c:
        outcomes = c.execute(
            "SELECT skiplock.block_run(%s, g, 'token', 'edges', ARRAY[(%s::text[])[g + 1]])"
            " FROM generate_series(0, %s) g",
            (attempt, done, len(done) - 1),
        ).fetchall()
    assert [o[0] for o in outcomes] == ["CONTINUE"] * len(set(done)) == ["CONTINUE"] * 400
    position = len(done)
    # and a few waits that did suspend it, each resumed in turn
    for _ in range(3):
        (token,) = _tokens(app, 1)
        assert _block(app, attempt, position, [token]) == "WAITING"
        assert _pending_edges(app, run_id) == [token]
        assert app.runs.status_reason(run_id) == "waiting on 1 pending waitpoint"
        assert app.waitpoints.complete_token(token, {"n": position}) is True
        assert app.runs.retrieve(run_id).status is RunStatus.QUEUED
        assert _pending_edges(app, run_id) == []
        attempt = _claim(app, worker, run_id)
        position += 1
    edges = fetch(app.dsn, "SELECT count(*) FROM skiplock.run_waitpoints WHERE run_id = %s", run_id)
    assert edges == [(403,)]
    # a second completion of an old waitpoint changes nothing
    assert app.waitpoints.complete_token(done[0], None) is False
    assert app.runs.retrieve(run_id).status is RunStatus.EXECUTING


def test_a_run_waiting_on_several_waitpoints_resumes_only_when_all_complete(
    app: Engine,
) -> None:
    _, run_id, attempt = _setup(app)
    first, second, third, already = _tokens(app, 4)
    app.waitpoints.complete_token(already, "before")
    assert _block(app, attempt, 0, [first, second, third, already]) == "WAITING"
    assert _pending_edges(app, run_id) == sorted([first, second, third])
    assert app.runs.status_reason(run_id) == "waiting on 3 pending waitpoints"
    app.waitpoints.complete_token(second, 2)
    assert app.runs.retrieve(run_id).status is RunStatus.WAITING
    assert app.runs.status_reason(run_id) == "waiting on 2 pending waitpoints"
    app.waitpoints.complete_token(first, 1)
    assert app.runs.retrieve(run_id).status is RunStatus.WAITING
    assert _pending_edges(app, run_id) == [third]
    app.waitpoints.complete_token(third, 3)
    assert app.runs.retrieve(run_id).status is RunStatus.QUEUED
    assert _pending_edges(app, run_id) == []


def test_a_canceled_run_keeps_its_pending_edge_until_the_waitpoint_completes(
    app: Engine,
) -> None:
    _, run_id, attempt = _setup(app)
    (token,) = _tokens(app, 1)
    assert _block(app, attempt, 0, [token]) == "WAITING"
    app.runs.cancel(run_id)
    assert _pending_edges(app, run_id) == [token]
    assert app.waitpoints.complete_token(token, None) is True
    assert _pending_edges(app, run_id) == []
    assert app.runs.retrieve(run_id).status is RunStatus.CANCELED


def test_blocking_on_an_unknown_waitpoint_is_refused(app: Engine) -> None:
    _, run_id, attempt = _setup(app)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        _block(app, attempt, 0, ["waitpoint_nobody"])
    assert app.runs.retrieve(run_id).status is RunStatus.EXECUTING
