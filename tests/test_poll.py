"""`runs.poll` / `poll_async`: wait outside a task for a run's final state, on the feed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from helpers import wait_for
from pydantic import BaseModel

from engine import Engine, Retry, RunStatus, TaskContext
from engine.api.realtime import RunFeed
from engine.errors import InvalidArgumentError, RunNotFoundError


class Out(BaseModel):
    doubled: int


def test_poll_returns_the_final_run_typed_by_its_task(app: Engine, start_worker: Any) -> None:
    @app.task("poll-double")
    async def double(p: int, ctx: TaskContext) -> Out:
        await asyncio.sleep(0.3)
        return Out(doubled=p * 2)

    start_worker()
    h = double.trigger(21)
    run = app.runs.poll(h, timeout=60, task=double)
    assert run.status is RunStatus.COMPLETED and run.is_completed
    assert run.output == Out(doubled=42)
    assert RunFeed.for_dsn(app.dsn).count() == 0  # its subscription is gone


def test_poll_async_returns_failed_runs_too(app: Engine, start_worker: Any) -> None:
    @app.task("poll-fails", retry=Retry(max_attempts=1))
    def fails(p: None, ctx: TaskContext) -> None:
        raise ValueError("no")

    start_worker()
    h = fails.trigger(None)
    run = asyncio.run(app.runs.poll_async(h.id, timeout=60))
    assert run.status is RunStatus.FAILED and run.error["message"] == "no"


def test_poll_sees_a_change_made_elsewhere(app: Engine) -> None:
    """No worker: the run ends when another thread cancels it, and poll returns it."""

    @app.task("poll-canceled")
    def never(p: None, ctx: TaskContext) -> None: ...

    h = never.trigger(None)
    threading.Timer(0.5, app.runs.cancel, (h.id,)).start()
    run = app.runs.poll(h, timeout=60)
    assert run.status is RunStatus.CANCELED


def test_poll_times_out_with_the_status_it_saw(app: Engine) -> None:
    @app.task("poll-never-runs")
    def idle(p: None, ctx: TaskContext) -> None: ...

    h = idle.trigger(None)
    with pytest.raises(TimeoutError, match=rf"{h.id}: no final status within 0.5s \(still "):
        app.runs.poll(h, timeout=0.5)
    with pytest.raises(TimeoutError, match="no final status"):
        asyncio.run(app.runs.poll_async(h, timeout=0.5))
    wait_for(lambda: RunFeed.for_dsn(app.dsn).count() == 0)


def test_poll_rejects_bad_input(app: Engine) -> None:
    with pytest.raises(RunNotFoundError):
        app.runs.poll("run_doesnotexist", timeout=5)
    for bad in (0, -1, "1m", True):
        with pytest.raises(InvalidArgumentError, match="timeout"):
            app.runs.poll("run_x", timeout=bad)  # type: ignore[arg-type]
