"""Schedules: cron tasks fired by tick() exactly once per slot (a faked clock walks time),
declared in code or made through the API, with missed slots, DST and bad input."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers import deploy, fetch, wait_for

from engine import Engine, RunStatus, ScheduledPayload, TaskContext
from engine.errors import InvalidArgumentError, InvalidCronError, ScheduleNotFoundError

T0 = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)


class Clock:
    """A session whose skiplock.now() is faked, calling tick() as pg_cron would."""

    def __init__(self, dsn: str, at: datetime = T0) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.set(at)

    def set(self, at: datetime) -> Clock:
        self.now = at
        self.conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (at.isoformat(),))
        return self

    def tick(self) -> int:
        """tick() once it is this session's turn (a worker's tick may hold it a moment)."""
        while True:
            row = self.conn.execute("SELECT skiplock.tick()").fetchone()
            assert row is not None
            if not row[0].get("skipped"):
                return int(row[0]["scheduled"])
            time.sleep(0.05)

    def create(self, task: str, cron: str, timezone: str = "UTC", **options: Any) -> str:
        """A schedule made at this clock's time (its first slot counts from it)."""
        query = "SELECT (skiplock.create_schedule(%s, %s, %s, %s::jsonb)).id"
        return str(self.sql(query, task, cron, timezone, json.dumps(options)))

    def sql(self, query: str, *params: Any) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]


@pytest.fixture
def clock(dsn: str) -> Iterator[Clock]:
    c = Clock(dsn)
    yield c
    c.conn.close()


def slots_fired(dsn: str, schedule_id: str) -> list[datetime]:
    rows = fetch(
        dsn,
        "SELECT schedule_slot FROM skiplock.runs WHERE schedule_id = %s ORDER BY schedule_slot",
        schedule_id,
    )
    return [r[0] for r in rows]


def minute(hh: int, mm: int, day: int = 1, month: int = 6) -> datetime:
    return datetime(2026, month, day, hh, mm, tzinfo=UTC)


def test_an_imperative_schedule_fires_once_per_slot(app: Engine, dsn: str, clock: Clock) -> None:
    s = app.schedules.retrieve(
        clock.create("sched-task", "* * * * *", external_id="tenant-7", payload={"a": 1})
    )
    assert (s.task_identifier, s.cron, s.type, s.active) == (
        "sched-task",
        "* * * * *",
        "IMPERATIVE",
        True,
    )
    assert s.next_slot == minute(12, 1)
    assert clock.tick() == 0  # 12:00:30: nothing due
    assert clock.set(minute(12, 1) + timedelta(seconds=2)).tick() == 1
    assert clock.tick() == 0  # the same slot never twice
    assert clock.set(minute(12, 2, 1) + timedelta(seconds=59)).tick() == 1
    assert slots_fired(dsn, s.id) == [minute(12, 1), minute(12, 2)]
    runs = app.runs.list(schedule=s.id).data
    assert len(runs) == 2 and all(r.schedule_id == s.id for r in runs)
    payload = ScheduledPayload.model_validate(runs[0].payload)
    assert payload.timestamp == minute(12, 2) and payload.last_timestamp == minute(12, 1)
    assert (payload.schedule_id, payload.external_id, payload.timezone) == (s.id, "tenant-7", "UTC")
    assert payload.upcoming == [minute(12, m) for m in range(3, 8)]
    assert payload.payload == {"a": 1}
    after = app.schedules.retrieve(s)
    assert after.last_slot == minute(12, 2) and after.last_run_id == runs[0].id


def test_four_concurrent_tickers_make_one_run_per_slot(app: Engine, dsn: str) -> None:
    clocks = [Clock(dsn) for _ in range(4)]
    schedule_id = clocks[0].create("sched-race", "*/5 * * * *")
    errors: list[BaseException] = []
    together = threading.Barrier(4, timeout=30)

    def ticker(c: Clock, use_tick: bool) -> None:
        try:
            for step in range(60):  # an hour, a minute at a time, all four at each minute
                c.set(T0 + timedelta(minutes=step))
                together.wait()
                c.sql("SELECT skiplock.tick()" if use_tick else "SELECT skiplock.fire_schedules()")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ticker, args=(c, i % 2 == 0)) for i, c in enumerate(clocks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in clocks:
        c.conn.close()
    assert not errors
    fired = slots_fired(dsn, schedule_id)
    assert fired == [minute(12, m) for m in range(5, 60, 5)]


@pytest.mark.parametrize(
    ("catch_up", "fired"),
    [
        ("latest", [minute(12, 0, 2)]),
        ("all", [minute(h % 24, 0, 1 + h // 24) for h in range(13, 37)]),
        ("none", []),
    ],
)
def test_missed_slots_follow_catch_up(
    app: Engine, dsn: str, clock: Clock, catch_up: Any, fired: list[datetime]
) -> None:
    s = app.schedules.retrieve(clock.create("sched-missed", "0 * * * *", catch_up=catch_up))
    clock.set(minute(12, 0, 2) + timedelta(minutes=30))  # every ticker down a day
    clock.tick()
    assert slots_fired(dsn, s.id) == fired
    assert app.schedules.retrieve(s).next_slot == minute(13, 0, 2)


@pytest.mark.parametrize(
    ("cron", "zone", "start", "expected"),
    [
        # spring forward in Paris (2026-03-29 02:00 -> 03:00): 02:30 does not exist that
        # night, the slot fires once at the next valid instant, 03:00 CEST (01:00 UTC)
        (
            "30 2 * * *",
            "Europe/Paris",
            datetime(2026, 3, 27, 12, 0, tzinfo=UTC),
            [
                datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
                datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
                datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
            ],
        ),
        # fall back in New York (2026-11-01 02:00 EDT -> 01:00 EST): 01:30 happens twice,
        # the slot fires once (the first, 05:30 UTC)
        (
            "30 1 * * *",
            "America/New_York",
            datetime(2026, 10, 30, 12, 0, tzinfo=UTC),
            [
                datetime(2026, 10, 31, 5, 30, tzinfo=UTC),
                datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
                datetime(2026, 11, 2, 6, 30, tzinfo=UTC),
            ],
        ),
    ],
)
def test_dst_transitions_fire_each_slot_once(
    app: Engine,
    dsn: str,
    clock: Clock,
    cron: str,
    zone: str,
    start: datetime,
    expected: list[datetime],
) -> None:
    clock.set(start)
    s = app.schedules.retrieve(clock.create("sched-dst", cron, zone))
    at = start
    while at < start + timedelta(days=3):  # a tick every 10 minutes across the change
        at += timedelta(minutes=10)
        clock.set(at).tick()
    assert slots_fired(dsn, s.id) == expected


def test_declared_schedules_follow_deployments(dsn: str) -> None:
    prod = Engine(dsn)
    dev = Engine(dsn)
    try:

        @prod.task("sched-declared", cron="0 9 * * 1-5", timezone="Europe/Paris")
        async def report(payload: ScheduledPayload, ctx: TaskContext) -> None: ...

        @dev.task("sched-declared")
        async def report_dev(payload: ScheduledPayload, ctx: TaskContext) -> None: ...

        deploy(prod, version="v1")
        (s,) = prod.schedules.list(task="sched-declared").data
        assert (s.type, s.cron, s.timezone) == ("DECLARATIVE", "0 9 * * 1-5", "Europe/Paris")
        deploy(prod, version="v1")  # the same again: still one
        assert [x.id for x in prod.schedules.list(type="DECLARATIVE")] == [s.id]
        deploy(dev, version="dev")  # a developer's worker leaves production's alone
        assert prod.schedules.retrieve(s.id).cron == "0 9 * * 1-5"
        with pytest.raises(InvalidArgumentError, match="declared in code"):
            prod.schedules.update(s, cron="0 10 * * *")
        with pytest.raises(InvalidArgumentError, match="declared in code"):
            prod.schedules.delete(s)
        assert not prod.schedules.deactivate(s).active  # but it can be paused
        deploy(dev, version="v2")  # a production deployment without the cron removes it
        with pytest.raises(ScheduleNotFoundError):
            prod.schedules.retrieve(s.id)
    finally:
        prod.close()
        dev.close()


def test_the_api_and_its_bad_input(app: Engine, dsn: str) -> None:
    s = app.schedules.create(
        "sched-api", "0 * * * *", timezone="Asia/Kolkata", deduplication_key="tenant-7-hourly"
    )
    again = app.schedules.create(
        "sched-api", "30 * * * *", timezone="Asia/Kolkata", deduplication_key="tenant-7-hourly"
    )
    assert again.id == s.id and again.cron == "30 * * * *"  # an upsert by key
    assert [x.next_slot.minute for x in [again] if x.next_slot] == [0]  # :30 IST is :00 UTC
    other = app.schedules.create("sched-api", "@daily", external_id="t-8")
    assert [x.id for x in app.schedules.list(task="sched-api")] == [s.id, other.id]
    assert [x.id for x in app.schedules.list(external_id="t-8")] == [other.id]
    page = app.schedules.list(task="sched-api", limit=1)
    assert page.has_next_page() and [x.id for x in page] == [s.id, other.id]

    async def walk() -> list[str]:
        first = await app.schedules.list_async(task="sched-api", limit=1)
        return [x.id async for x in first]

    assert asyncio.run(walk()) == [s.id, other.id]
    assert app.schedules.update(other, cron="15 3 * * *").cron == "15 3 * * *"
    off = app.schedules.deactivate(other)
    assert not off.active
    assert [x.id for x in app.schedules.list(task="sched-api", active=False)] == [other.id]
    assert app.schedules.activate(other).active
    assert len(app.schedules.retrieve(other).upcoming) == 5
    app.schedules.delete(other)
    with pytest.raises(ScheduleNotFoundError):
        app.schedules.retrieve(other.id)
    with pytest.raises(ScheduleNotFoundError):
        app.schedules.activate("sched_nope")

    before = int(fetch(dsn, "SELECT count(*) FROM skiplock.schedules")[0][0])
    with pytest.raises(InvalidCronError, match="minute"):
        app.schedules.create("sched-api", "61 * * * *")
    with pytest.raises(InvalidCronError):
        app.schedules.create("sched-api", "* * * *")
    with pytest.raises(InvalidArgumentError, match="zone"):
        app.schedules.create("sched-api", "* * * * *", timezone="Mars/Olympus")
    with pytest.raises(InvalidArgumentError, match="catch_up"):
        app.schedules.create("sched-api", "* * * * *", catch_up="some")  # type: ignore[arg-type]
    with pytest.raises(InvalidCronError):
        app.schedules.update(s, cron="bogus")
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT skiplock.create_schedule('sched-api', '0 0 31 2 *')")
    assert raised.value.sqlstate == "SL008"
    assert int(fetch(dsn, "SELECT count(*) FROM skiplock.schedules")[0][0]) == before
    assert app.schedules.retrieve(s).cron == "30 * * * *"


@pytest.mark.slow
def test_real_workers_run_a_minutely_schedule_for_three_minutes(
    app: Engine, dsn: str, clock: Clock, start_worker: Any
) -> None:
    """pg_cron's part played by the test (tick() at a faked clock a minute apart), the
    runs executed by a real worker, each with its ScheduledPayload."""
    seen: list[ScheduledPayload] = []

    @app.task("sched-minutely", cron="* * * * *")
    async def every_minute(payload: ScheduledPayload, ctx: TaskContext) -> str:
        seen.append(payload)
        return payload.timestamp.isoformat()

    began = clock.sql("SELECT pg_catalog.now()")
    start_worker(tick_interval=3600.0)  # it ticks once, on starting, on the real clock
    wait_for(
        lambda: clock.sql(
            "SELECT last_run_at >= %s FROM skiplock.maintenance WHERE chore = 'prune_registry'",
            began,
        )
    )
    (s,) = app.schedules.list(task="sched-minutely").data
    # the faked minutes lie in the past, so that the runs they trigger are ready at once
    # (a run becomes ready at its trigger's time, and the worker claims on the real clock)
    first = clock.sql(
        "UPDATE skiplock.schedules SET next_slot = date_trunc('minute', pg_catalog.now()) "
        "- interval '10 minutes' WHERE id = %s RETURNING next_slot",
        s.id,
    )
    for n in range(3):
        clock.set(first + timedelta(minutes=n, seconds=1)).tick()
        assert slots_fired(dsn, s.id) == [first + timedelta(minutes=m) for m in range(n + 1)]
    runs = wait_for(
        lambda: (
            (r := app.runs.list(schedule=s.id).data)
            and all(x.is_completed for x in r)
            and len(r) == 3
            and r
        )
    )
    assert [(r.status, r.error) for r in runs] == [(RunStatus.COMPLETED, None)] * 3
    assert sorted(p.timestamp for p in seen) == [first + timedelta(minutes=n) for n in range(3)]
    assert {r.output for r in runs} == {
        (first + timedelta(minutes=n)).isoformat() for n in range(3)
    }
