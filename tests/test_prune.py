"""tick() prunes the registry: old stopped workers and queues nothing uses any more."""

from __future__ import annotations

from typing import Any

import psycopg
from helpers import deploy

from engine import Engine, Queue, RateLimit, TaskContext
from engine.db import queries


def at(conn: psycopg.Connection[Any], offset: str) -> None:
    conn.execute(
        "SELECT set_config('skiplock.fake_now', (now() + %s::interval)::text, false)", (offset,)
    )


def names(conn: psycopg.Connection[Any], table: str, column: str) -> set[str]:
    return {r[0] for r in conn.execute(f"SELECT {column} FROM skiplock.{table}")}


def test_old_stopped_workers_and_unused_undeclared_queues_are_pruned(
    app: Engine, conn: psycopg.Connection[Any]
) -> None:
    @app.task("prune-declared", queue=Queue("declared-q"))
    def declared(p: None, ctx: TaskContext) -> None: ...

    live = deploy(app, "v1", [declared])
    stopped = deploy(app, "v1", [declared])
    app.db.run(queries.stop_worker(stopped))
    typo = declared.trigger(None, queue="typo-q")
    app.runs.cancel(typo)  # finished: nothing unfinished names typo-q any more
    declared.trigger(None, queue="busy-q")  # an unfinished run names busy-q
    declared.trigger(None, queue="limited-q")
    app.queues.set_limit("limited-q", 2)  # a setting of its own: kept
    app.runs.cancel(declared.trigger(None, queue="rated-q"))
    app.queues.set_rate_limit("rated-q", RateLimit(1, "1s"))  # so is a rate limit
    assert {"declared-q", "typo-q", "busy-q", "limited-q", "rated-q"} <= names(
        conn, "queues", "name"
    )

    at(conn, "2 hours")  # not yet: kept for a day
    assert conn.execute("SELECT skiplock.prune_registry()").fetchone() == (
        {"workers": 0, "queues": 0, "rate_keys": 0},
    )
    at(conn, "2 days")
    assert conn.execute("SELECT skiplock.prune_registry()").fetchone() == (
        {"workers": 1, "queues": 1, "rate_keys": 0},
    )
    assert stopped not in names(conn, "workers", "id") and live in names(conn, "workers", "id")
    queues = names(conn, "queues", "name")
    assert "typo-q" not in queues and {"declared-q", "busy-q", "limited-q", "rated-q"} <= queues
    # a queue named again is created again
    conn.execute("SELECT set_config('skiplock.fake_now', '', false)")
    declared.trigger(None, queue="typo-q")
    assert "typo-q" in names(conn, "queues", "name")


def test_tick_prunes_every_ten_minutes_not_at_every_call(
    app: Engine, conn: psycopg.Connection[Any]
) -> None:
    @app.task("prune-tick")
    def ticked(p: None, ctx: TaskContext) -> None: ...

    old = deploy(app, "v1", [ticked])
    app.db.run(queries.stop_worker(old))
    at(conn, "3 days")
    first = conn.execute("SELECT skiplock.tick()").fetchone()[0]
    assert first["pruned"]["workers"] >= 1
    again = deploy(app, "v1", [ticked])
    app.db.run(queries.stop_worker(again))
    at(conn, "4 days")  # a day later: due again
    assert conn.execute("SELECT skiplock.tick()").fetchone()[0]["pruned"]["workers"] >= 1
    assert conn.execute("SELECT skiplock.tick()").fetchone()[0]["pruned"] is None  # just ran
