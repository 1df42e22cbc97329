"""Lifecycle hooks and middleware, on a task and on the engine: their order and arguments
across a retry and a wait, `catch_error`'s decisions, middleware around def and async
tasks, and hooks that raise without costing the run its outcome."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from helpers import fetch, wait_for

from engine import Engine, NoRetry, Result, Retry, RetryAt, RetryNow, RunStatus, TaskContext, wait


def final(app: Engine, run_id: str) -> Any:
    return wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout=30)


def test_hooks_run_in_order_across_a_retry_and_a_wait(app: Engine, start_worker: Any) -> None:
    events: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def note(*event: Any) -> None:
        with lock:
            events.append(event)

    @app.on_start
    def engine_start(ctx: TaskContext, payload: Any) -> None:
        note("engine.on_start", ctx.attempt, payload)

    @app.on_complete
    async def engine_complete(ctx: TaskContext, payload: Any, result: Result) -> None:
        note("engine.on_complete", ctx.attempt, result.ok)

    async def on_start(ctx: TaskContext, payload: Any) -> None:
        note("on_start", ctx.attempt, payload)

    def on_wait(ctx: TaskContext, payload: Any, waited: dict[str, Any]) -> None:
        note("on_wait", ctx.attempt, waited["kind"])

    async def on_resume(ctx: TaskContext, payload: Any, waited: dict[str, Any]) -> None:
        note("on_resume", ctx.attempt, waited["kind"])

    def on_success(ctx: TaskContext, payload: Any, output: Any) -> None:
        note("on_success", ctx.attempt, output)

    def on_failure(ctx: TaskContext, payload: Any, error: BaseException) -> None:
        note("on_failure", ctx.attempt, str(error))

    def on_complete(ctx: TaskContext, payload: Any, result: Result) -> None:
        note("on_complete", ctx.attempt, result.ok, result.output)

    @app.task(
        "hooked",
        retry=Retry(max_attempts=3, min_timeout=0.05, factor=1, randomize=False),
        on_start=on_start,
        on_wait=on_wait,
        on_resume=on_resume,
        on_success=on_success,
        on_failure=on_failure,
        on_complete=on_complete,
    )
    async def hooked(payload: int, ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        await wait.for_(seconds=0.1)
        return payload * 2

    start_worker(tick_interval=0.05)
    run = final(app, hooked.trigger(21).id)
    assert run.status is RunStatus.COMPLETED and run.output == 42
    assert events == [
        ("engine.on_start", 1, 21),
        ("on_start", 1, 21),  # the first attempt fails: no on_failure (it is retried)
        ("engine.on_start", 2, 21),
        ("on_start", 2, 21),
        ("on_wait", 2, "wait"),
        ("on_resume", 2, "wait"),  # the same attempt continues: no on_start
        ("on_success", 2, 42),
        ("engine.on_complete", 2, True),
        ("on_complete", 2, True, 42),
    ]


def test_catch_error_decides_the_retry(app: Engine, start_worker: Any) -> None:
    seen: list[tuple[str, int, str]] = []
    later = datetime.now(UTC) + timedelta(hours=1)

    def decide(ctx: TaskContext, error: BaseException) -> Any:
        seen.append((ctx.task_id, ctx.attempt, type(error).__name__))
        kind = str(error)
        if kind == "now" and ctx.attempt == 1:
            return RetryNow()
        if kind == "never":
            return NoRetry()
        if kind == "later":
            return RetryAt(later)
        return None

    failures: list[str] = []
    slow = Retry(max_attempts=3, min_timeout=3600, max_timeout=3600, randomize=False)  # an hour

    @app.task("catch-now", retry=slow, catch_error=decide)
    async def now(p: str, ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("now")
        return ctx.attempt

    @app.task(
        "catch-never",
        retry=slow,
        catch_error=decide,
        on_failure=lambda c, p, e: failures.append(str(e)),
    )
    def never(p: str, ctx: TaskContext) -> None:
        raise ValueError("never")

    @app.task("catch-later", retry=slow, catch_error=decide)
    async def at_later(p: str, ctx: TaskContext) -> None:
        raise RuntimeError("later")

    start_worker()
    assert final(app, now.trigger("x").id).output == 2  # retried at once, not in an hour
    failed = final(app, never.trigger("x").id)
    assert failed.status is RunStatus.FAILED and failed.attempt_count == 1  # 2 attempts left
    wait_for(lambda: failures == ["never"])
    held = later_run = at_later.trigger("x")
    wait_for(lambda: app.runs.retrieve(held).attempt_count == 1)
    wait_for(lambda: app.runs.retrieve(held).status is RunStatus.QUEUED)
    available = fetch(app.dsn, "SELECT available_at FROM skiplock.runs WHERE id = %s", later_run.id)
    assert abs((available[0][0] - later).total_seconds()) < 60
    assert ("catch-now", 1, "RuntimeError") in seen and ("catch-never", 1, "ValueError") in seen


def test_middleware_wraps_def_and_async_attempts(app: Engine, start_worker: Any) -> None:
    events: list[tuple[Any, ...]] = []

    @app.middleware
    @contextlib.contextmanager
    def engine_scope(ctx: TaskContext) -> Iterator[None]:
        events.append(("engine enter", ctx.task_id, threading.get_ident()))
        yield
        events.append(("engine exit", ctx.task_id))

    @contextlib.asynccontextmanager
    async def session(ctx: TaskContext) -> AsyncIterator[None]:
        events.append(("session enter", ctx.task_id))
        yield
        events.append(("session exit", ctx.task_id))

    @contextlib.contextmanager
    def broken_exit(ctx: TaskContext) -> Iterator[None]:
        yield
        raise RuntimeError("a middleware's exit fails")

    @app.task("mw-def", middleware=[broken_exit])
    def in_thread(p: int, ctx: TaskContext) -> int:
        events.append(("mw-def body", ctx.task_id, threading.get_ident()))
        return p

    @app.task("mw-async", middleware=[session])
    async def on_loop(p: int, ctx: TaskContext) -> int:
        events.append(("mw-async body", ctx.task_id))
        return p

    start_worker()
    assert final(app, in_thread.trigger(1).id).status is RunStatus.COMPLETED  # exit error: logged
    assert final(app, on_loop.trigger(2).id).status is RunStatus.COMPLETED
    def_events = [e for e in events if e[1] == "mw-def"]
    assert [e[0] for e in def_events] == ["engine enter", "mw-def body", "engine exit"]
    assert def_events[0][2] == def_events[1][2]  # a def task's sync middleware: in its thread
    async_events = [e[0] for e in events if e[1] == "mw-async"]
    assert async_events == [
        "engine enter",
        "session enter",
        "mw-async body",
        "session exit",
        "engine exit",
    ]


def test_a_hook_that_raises_never_costs_the_outcome(app: Engine, start_worker: Any) -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("hook fails")

    @app.task("hooks-raise", on_start=boom, on_success=boom, on_complete=boom)
    async def fine(p: int, ctx: TaskContext) -> int:
        return p + 1

    @app.task(
        "hooks-raise-failing",
        retry=Retry(max_attempts=1),
        on_failure=boom,
        catch_error=boom,
    )
    def failing(p: int, ctx: TaskContext) -> None:
        raise ValueError("the task's own error")

    start_worker()
    ok = final(app, fine.trigger(1).id)
    assert (ok.status, ok.output) == (RunStatus.COMPLETED, 2)
    bad = final(app, failing.trigger(1).id)
    assert bad.status is RunStatus.FAILED and "the task's own error" in str(bad.error)
