"""Sleeps and delays end at their time, not at the next tick (engine/worker/timers.py,
skiplock.wake_due)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from helpers import deploy, wait_for

from engine import Engine, RunStatus, TaskContext, wait

NEVER = 3600.0  # a tick interval no test outlives: only wake_due can end the sleeps


def test_a_sleep_ends_without_waiting_for_a_tick(app: Engine, start_worker: Any) -> None:
    @app.task("naps")
    async def naps(p: int, ctx: TaskContext) -> int:
        await wait.for_(seconds=0.3)
        await wait.until(datetime.now(UTC) + timedelta(seconds=0.3))
        return p

    start_worker(tick_interval=NEVER)  # one tick, at start-up
    ids = [h.id for h in naps.batch_trigger(list(range(20))).runs]

    def done() -> list[Any] | None:
        runs = [app.runs.retrieve(i) for i in ids]
        return runs if all(r.is_completed for r in runs) else None

    runs = wait_for(done, 30)
    assert [r.output for r in runs] == list(range(20))
    assert all(r.status is RunStatus.COMPLETED and r.attempt_count == 1 for r in runs)


def test_a_delay_known_at_the_tick_ends_on_time(app: Engine, start_worker: Any) -> None:
    @app.task("later")
    async def later(p: int, ctx: TaskContext) -> int:
        return p

    h = later.trigger(1, delay=0.5)
    start_worker(tick_interval=NEVER)  # its tick at start-up learns the delay's end
    run = wait_for(lambda: (r := app.runs.retrieve(h)).is_completed and r, 30)
    assert run.status is RunStatus.COMPLETED and run.output == 1, run.error


def _fake_now(conn: psycopg.Connection[Any], when: datetime) -> None:
    conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (when.isoformat(),))


def test_wake_due_says_when_the_next_transition_is_due(
    app: Engine, conn: psycopg.Connection[Any]
) -> None:
    @app.task("wake-due")
    async def wake_due(p: int, ctx: TaskContext) -> int:
        return p

    deploy(app, tasks=[wake_due])
    now = datetime.now(UTC) + timedelta(days=400)  # after anything other tests left
    _fake_now(conn, now)
    due = conn.execute("SELECT waitpoints, promoted, next_in FROM skiplock.wake_due()").fetchone()
    assert due is not None and due[2] is None  # nothing waits
    conn.execute("SELECT skiplock.trigger('wake-due', '{}', '{\"delay_seconds\": 10}'::jsonb)")
    assert conn.execute("SELECT next_in FROM skiplock.wake_due()").fetchone() == (10.0,)
    _fake_now(conn, now + timedelta(seconds=9.5))
    assert conn.execute("SELECT next_in FROM skiplock.wake_due()").fetchone() == (0.5,)
    _fake_now(conn, now + timedelta(seconds=10))
    assert conn.execute("SELECT * FROM skiplock.wake_due()").fetchone() == (0, 1, None)
    # tick says it too, also when another caller holds its lock
    assert conn.execute("SELECT skiplock.tick()->'next_in'").fetchone() == (None,)
