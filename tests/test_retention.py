"""The retention policy: how long a finished run is kept (trigger < task < queue < engine
default, resolved when the run is triggered), and skiplock.purge(), which tick() calls,
deleting the runs whose time ran out with what hangs off them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers import RunningWorker, deploy, fetch, wait_for

from engine import Engine, Queue, RunStatus, TaskContext
from engine.errors import InvalidArgumentError

HOUR = 3600.0
DAY = 86400.0


@pytest.fixture
def engines(dsn: str) -> Iterator[Any]:
    made: list[Engine] = []

    def make(**kwargs: Any) -> Engine:
        engine = Engine(dsn, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def retention_of(dsn: str, run_id: str) -> float | None:
    value = fetch(dsn, "SELECT retention_s FROM skiplock.runs WHERE id = %s", run_id)[0][0]
    return None if value is None else float(value)


def exists(dsn: str, table: str, column: str, value: str) -> bool:
    query = f"SELECT count(*) FROM skiplock.{table} WHERE {column} = %s"
    return int(fetch(dsn, query, value)[0][0]) > 0


class Clock:
    """A session whose skiplock.now() is faked: purge() and tick() as they would run then."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.now: datetime = self.conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]

    def at(self, later: timedelta) -> Clock:
        when = self.now + later
        self.conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (when.isoformat(),))
        return self

    def purge(self, limit: int = 500) -> int:
        return int(self.conn.execute("SELECT skiplock.purge(%s)", (limit,)).fetchone()[0])  # type: ignore[index]

    def tick(self) -> dict[str, Any]:
        return self.conn.execute("SELECT skiplock.tick()").fetchone()[0]  # type: ignore[index, no-any-return]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def clock(dsn: str) -> Iterator[Clock]:
    c = Clock(dsn)
    yield c
    c.close()


def test_retention_resolves_trigger_task_queue_engine(engines: Any, dsn: str) -> None:
    app = engines(retention="2h")
    kept = Queue("kept-queue", retention="3h")

    @app.task("ret-default")
    def default(p: int, ctx: TaskContext) -> None: ...

    @app.task("ret-task", retention="1d")
    def own(p: int, ctx: TaskContext) -> None: ...

    @app.task("ret-forever", retention=None)
    def forever(p: int, ctx: TaskContext) -> None: ...

    @app.task("ret-queue", queue=kept)
    def queued(p: int, ctx: TaskContext) -> None: ...

    @app.task("ret-task-over-queue", queue=kept, retention="5m")
    def task_wins(p: int, ctx: TaskContext) -> None: ...

    undeployed_default = default.trigger(0)  # before any deployment: the engine's default
    deploy(app)
    assert retention_of(dsn, undeployed_default.id) == 2 * HOUR
    assert retention_of(dsn, default.trigger(1).id) == 2 * HOUR
    assert retention_of(dsn, own.trigger(1).id) == DAY
    assert retention_of(dsn, forever.trigger(1).id) is None
    assert retention_of(dsn, queued.trigger(1).id) == 3 * HOUR
    assert retention_of(dsn, task_wins.trigger(1).id) == 300
    # a run put in another queue takes that queue's retention
    assert retention_of(dsn, default.trigger(2, queue="kept-queue").id) == 3 * HOUR
    batch = default.batch_trigger([1, 2]).runs
    assert [retention_of(dsn, h.id) for h in batch] == [2 * HOUR] * 2
    # by id, and from SQL: the deployment's default; with nothing deployed, 30 days
    assert retention_of(dsn, app.trigger("ret-default", 3).id) == 2 * HOUR
    sql = "SELECT run_id FROM skiplock.trigger(%s, '1', %s::jsonb)"
    by_sql = fetch(dsn, sql, "ret-default", "{}")[0][0]
    assert retention_of(dsn, by_sql) == 2 * HOUR
    nobody = fetch(dsn, sql, "ret-nobody-deployed", "{}")[0][0]
    assert retention_of(dsn, nobody) == 30 * DAY
    one_off = fetch(dsn, sql, "ret-default", json.dumps({"retention": 60}))[0][0]
    assert retention_of(dsn, one_off) == 60
    keep = fetch(dsn, sql, "ret-default", json.dumps({"retention": None}))[0][0]
    assert retention_of(dsn, keep) is None
    with pytest.raises(psycopg.DatabaseError, match="retention must be positive"):
        fetch(dsn, sql, "ret-default", json.dumps({"retention": -5}))

    forever_app = engines(retention=None)

    @forever_app.task("ret-forever-app")
    def kept_forever(p: int, ctx: TaskContext) -> None: ...

    assert retention_of(dsn, kept_forever.trigger(1).id) is None


def test_the_engine_default_from_the_environment(
    engines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKIPLOCK_RETENTION", raising=False)
    assert engines().retention == 30 * DAY
    monkeypatch.setenv("SKIPLOCK_RETENTION", "7d")
    assert engines().retention == 7 * DAY
    assert engines(retention="1h").retention == HOUR  # the argument wins
    monkeypatch.setenv("SKIPLOCK_RETENTION", "forever")
    assert engines().retention is None
    monkeypatch.setenv("SKIPLOCK_RETENTION", "soon")
    with pytest.raises(InvalidArgumentError, match="SKIPLOCK_RETENTION"):
        engines()
    with pytest.raises(InvalidArgumentError, match="retention must be positive"):
        engines(retention=0)
    with pytest.raises(InvalidArgumentError, match="retention"):
        Queue("q", retention="-1d")
    app = engines(retention="1d")
    with pytest.raises(InvalidArgumentError, match="retention"):
        app.task("bad-retention", retention="a while")(lambda p, ctx: None)


def test_purge_deletes_runs_whose_retention_ran_out(engines: Any, dsn: str, clock: Clock) -> None:
    app = engines(retention="1h")

    @app.task("ret-purge")
    def noop(p: int, ctx: TaskContext) -> None: ...

    @app.task("ret-purge-forever", retention=None)
    def forever(p: int, ctx: TaskContext) -> None: ...

    deploy(app)
    done = noop.trigger(1)
    keyed = noop.trigger(2, idempotency_key="k", idempotency_key_ttl="2h")
    kept = forever.trigger(3)
    live = noop.trigger(4)  # QUEUED: never purged, however old
    for h in (done, keyed, kept):
        app.runs.cancel(h)

    assert clock.at(timedelta(minutes=59)).purge() == 0
    assert clock.at(timedelta(minutes=61)).purge() == 1
    assert not exists(dsn, "runs", "id", done.id)
    assert all(exists(dsn, "runs", "id", h.id) for h in (keyed, kept, live))
    # the key dedupes for 2 h, so the run stays that long
    assert clock.at(timedelta(hours=2, minutes=1)).tick()["purged"] == 1
    assert not exists(dsn, "runs", "id", keyed.id)
    assert clock.at(timedelta(days=3650)).purge() == 0
    assert app.runs.retrieve(live).status is RunStatus.QUEUED
    with pytest.raises(psycopg.DatabaseError, match="limit"):
        clock.purge(0)


def test_purge_skips_locked_runs_and_takes_them_on_its_next_rescan(
    engines: Any, dsn: str, clock: Clock
) -> None:
    """purge() never waits for a run another transaction holds; its high-water mark skips
    what it already passed, and every 10 minutes it scans from the start again."""
    app = engines(retention="1m")

    @app.task("ret-locked")
    def noop(p: int, ctx: TaskContext) -> None: ...

    deploy(app)
    first = noop.trigger(1)
    app.runs.cancel(first)
    second = noop.trigger(2)
    clock.at(timedelta(seconds=1))
    app.runs.cancel(second)  # finishes later: due later than first
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM skiplock.runs WHERE id = %s FOR UPDATE", (first.id,))
        assert clock.at(timedelta(minutes=5)).purge() == 1  # second; first is locked
    assert exists(dsn, "runs", "id", first.id) and not exists(dsn, "runs", "id", second.id)
    assert clock.at(timedelta(minutes=6)).purge() == 0  # below the mark
    assert clock.at(timedelta(minutes=16)).purge() == 1  # the rescan finds it
    assert not exists(dsn, "runs", "id", first.id)


def test_purge_keeps_a_run_a_live_run_waits_on(engines: Any, dsn: str, clock: Clock) -> None:
    app = engines(retention="1m")

    @app.task("ret-child")
    async def child(p: int, ctx: TaskContext) -> int:
        return p

    @app.task("ret-parent")
    async def parent(token_id: str, ctx: TaskContext) -> int:
        done = await child.trigger_and_wait(1)
        from engine import wait

        await wait.for_token(token_id)
        return int(done.unwrap())

    token = app.waitpoints.create_token()
    with RunningWorker(app.worker(poll_interval=0.1, tick_interval=0.1)):
        run = parent.trigger(token.id)
        kid = wait_for(lambda: next(iter(app.runs.children(run)), None))
        wait_for(lambda: app.runs.retrieve(kid).status is RunStatus.COMPLETED)
        wait_for(lambda: app.runs.retrieve(run).status is RunStatus.WAITING)
        assert clock.at(timedelta(hours=1)).purge() == 0  # the parent still waits
        app.waitpoints.complete_token(token, "go")
        wait_for(lambda: app.runs.retrieve(run).status is RunStatus.COMPLETED)
    assert clock.at(timedelta(hours=2)).purge() == 2
    for run_id in (run.id, kid.id):
        assert not exists(dsn, "runs", "id", run_id)
        assert not exists(dsn, "attempts", "run_id", run_id)
        assert not exists(dsn, "run_steps", "run_id", run_id)
    assert not exists(dsn, "waitpoints", "id", token.id)  # it waited on it: gone with it


def test_tokens_no_run_waits_on_go_after_the_default_retention(
    engines: Any, dsn: str, clock: Clock
) -> None:
    app = engines(retention="1d")

    @app.task("ret-token-owner")
    def noop(p: int, ctx: TaskContext) -> None: ...

    deploy(app)
    done = app.waitpoints.create_token()
    pending = app.waitpoints.create_token()
    app.waitpoints.complete_token(done, {"ok": True})
    keep = fetch(dsn, "SELECT skiplock.token_retention()")[0][0]
    assert keep == timedelta(days=1)
    sql = "SELECT skiplock.purge_tokens(skiplock.token_retention())"
    assert clock.at(timedelta(hours=23)).conn.execute(sql).fetchone()[0] == 0  # type: ignore[index]
    assert clock.at(timedelta(days=2)).conn.execute(sql).fetchone()[0] == 1  # type: ignore[index]
    assert not exists(dsn, "waitpoints", "id", done.id)
    assert exists(dsn, "waitpoints", "id", pending.id)  # someone may still complete it
