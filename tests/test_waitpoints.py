"""Waitpoints and durable execution: waits, tokens, child runs, steps, metadata."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from helpers import fetch, wait_for

from engine import Engine, Queue, Retry, RunStatus, TaskContext, wait
from engine.errors import InvalidArgumentError, TokenNotFoundError, WaitFailedError

FAST = Retry(max_attempts=3, min_timeout=0.05, randomize=False)


def finished(app: Engine, run_id: str, timeout: float = 30.0) -> Any:
    return wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout)


@pytest.mark.parametrize("kind", ["async", "def"])
def test_a_wait_suspends_the_run_and_resumes_it(app: Engine, start_worker: Any, kind: str) -> None:
    if kind == "async":

        @app.task(f"waits-{kind}")
        async def waits(p: int, ctx: TaskContext) -> dict[str, Any]:
            await wait.for_(seconds=0.6)
            return {"attempt": ctx.attempt, "p": p}
    else:

        @app.task(f"waits-{kind}")
        def waits(p: int, ctx: TaskContext) -> dict[str, Any]:
            wait.for_(seconds=0.6)
            return {"attempt": ctx.attempt, "p": p}

    start_worker(tick_interval=0.1)
    h = waits.trigger(7)
    waiting = wait_for(lambda: (r := app.runs.retrieve(h)).status is RunStatus.WAITING and r)
    assert waiting.is_waiting and waiting.attempts[0].status == "SUSPENDED"
    assert fetch(app.dsn, "SELECT worker_id FROM skiplock.runs WHERE id = %s", h.id) == [(None,)]
    run = finished(app, h.id)
    assert run.status is RunStatus.COMPLETED and run.output == {"attempt": 1, "p": 7}
    assert run.attempt_count == 1 and [a.status for a in run.attempts] == ["COMPLETED"]


def test_a_step_runs_once_across_a_wait_and_a_retry(app: Engine, start_worker: Any) -> None:
    charges: list[int] = []

    @app.task("charges-once", retry=FAST)
    async def charges_once(p: int, ctx: TaskContext) -> str:
        receipt = await ctx.step("charge", lambda: charges.append(p) or f"receipt-{p}")
        await wait.for_(seconds=0.2)
        if ctx.attempt == 1:
            raise RuntimeError("fails after the wait, once")
        return receipt

    start_worker(concurrency=8, tick_interval=0.1)
    run = finished(app, charges_once.trigger(5).id)
    assert run.status is RunStatus.COMPLETED and run.output == "receipt-5"
    assert charges == [5] and run.attempt_count == 2


def test_a_def_task_step_with_an_async_worker_loop(app: Engine, start_worker: Any) -> None:
    calls: list[str] = []

    @app.task("def-steps")
    def def_steps(p: int, ctx: TaskContext) -> int:
        a = ctx.step("first", lambda: calls.append("first") or 1)
        wait.for_(seconds=0.1)
        b = ctx.step("second", lambda: calls.append("second") or 2)
        return a + b

    start_worker(concurrency=8, tick_interval=0.1)
    run = finished(app, def_steps.trigger(0).id)
    assert run.output == 3 and calls == ["first", "second"]


def test_a_token_completed_from_outside_resumes_the_run(app: Engine, start_worker: Any) -> None:
    @app.task("approval")
    async def approval(p: str, ctx: TaskContext) -> Any:
        token = await wait.create_token(timeout="1h", tags=["approval"])
        ctx.metadata.set("token", token.id)
        result = await wait.for_token(token)
        return {"approved": result.unwrap()["approved"], "by": p}

    start_worker(concurrency=8, tick_interval=0.1)
    h = approval.trigger("alice")
    token_id = wait_for(lambda: app.runs.retrieve(h).metadata.get("token"))
    # the metadata flusher may show the token a moment before the run suspends
    wait_for(lambda: app.runs.retrieve(h).status is RunStatus.WAITING)
    assert app.waitpoints.retrieve(token_id).status == "PENDING"
    assert app.waitpoints.complete_token(token_id, {"approved": True}) is True
    assert app.waitpoints.complete_token(token_id, {"approved": False}) is False  # first wins
    run = finished(app, h.id)
    assert run.output == {"approved": True, "by": "alice"}
    point = app.waitpoints.retrieve(token_id)
    assert point.status == "COMPLETED" and point.output == {"approved": True}


def test_a_token_that_times_out_gives_an_error_result(app: Engine, start_worker: Any) -> None:
    @app.task("times-out")
    async def times_out(p: Any, ctx: TaskContext) -> dict[str, Any]:
        token = await wait.create_token(timeout=0.3)
        result = await wait.for_token(token)
        try:
            result.unwrap()
        except WaitFailedError as exc:
            return {"ok": result.ok, "error": str(exc)}
        return {"ok": result.ok}

    start_worker(concurrency=8, tick_interval=0.1)
    run = finished(app, times_out.trigger(None).id)
    assert run.output["ok"] is False and "timed out" in run.output["error"]


def test_tokens_outside_tasks_and_their_bad_input(app: Engine) -> None:
    token = app.waitpoints.create_token(idempotency_key="order-1", tags="t")
    again = app.waitpoints.create_token(idempotency_key="order-1")
    assert again.id == token.id and again.is_cached and not token.is_cached
    assert asyncio.run(app.waitpoints.complete_token_async(token, [1, 2])) is True
    assert app.waitpoints.retrieve(token).output == [1, 2]
    with pytest.raises(TokenNotFoundError):
        app.waitpoints.complete_token("waitpoint_nope", 1)
    with pytest.raises(InvalidArgumentError):
        app.waitpoints.complete_token("run_123", 1)
    with pytest.raises(InvalidArgumentError):
        app.waitpoints.create_token(timeout=0)
    # the same from SQL
    assert fetch(app.dsn, "SELECT skiplock.complete_token(%s, '2')", token.id) == [(False,)]


def test_trigger_and_wait_gives_the_childs_result(app: Engine, start_worker: Any) -> None:
    @app.task("child-double")
    async def child(p: int, ctx: TaskContext) -> int:
        await asyncio.sleep(0.2)
        if p < 0:
            raise ValueError("negative")
        return p * 2

    @app.task("parent")
    async def parent(p: int, ctx: TaskContext) -> dict[str, Any]:
        good = await child.trigger_and_wait(p, max_attempts=1)
        bad = await child.trigger_and_wait(-1, max_attempts=1)
        return {"good": good.unwrap(), "bad_ok": bad.ok, "bad": bad.error["message"]}

    start_worker(concurrency=8, tick_interval=0.1)
    h = parent.trigger(21)
    wait_for(lambda: app.runs.retrieve(h).status is RunStatus.WAITING)
    run = finished(app, h.id)
    assert run.output == {"good": 42, "bad_ok": False, "bad": "negative"}
    children = app.runs.list(task="child-double").data
    assert {c.parent_id for c in children} == {h.id} and all(c.depth == 1 for c in children)
    assert {c.version for c in children} == {run.version}  # on the parent's version


def test_a_waited_child_that_retries_resumes_its_parent_once_with_its_final_result(
    app: Engine, start_worker: Any
) -> None:
    # the child leaves EXECUTING three times (twice back to QUEUED, then COMPLETED): only
    # the final status may complete the parent's waitpoints, its RUN one and its BATCH one
    @app.task("child-flaky", retry=FAST)
    async def child(p: int, ctx: TaskContext) -> int:
        if ctx.attempt < 3:
            raise ValueError(f"attempt {ctx.attempt} fails")
        return p + ctx.attempt

    @app.task("parent-of-flaky")
    async def parent(p: int, ctx: TaskContext) -> list[Any]:
        one = await child.trigger_and_wait(p)
        many = await child.batch_trigger_and_wait([p, p + 1])
        return [one.unwrap(), [r.unwrap() for r in many]]

    start_worker(concurrency=4, tick_interval=0.1)
    run = finished(app, parent.trigger(10).id)
    assert run.output == [13, [13, 14]]
    assert {c.attempt_count for c in app.runs.list(task="child-flaky").data} == {3}
    assert fetch(
        app.dsn,
        "SELECT DISTINCT w.type::text, w.status::text, w.pending_runs, w.is_error "
        "FROM skiplock.waitpoints w JOIN skiplock.runs r "
        "ON r.id = w.run_id OR r.batch_id = w.batch_id WHERE r.parent_id = %s ORDER BY 1",
        run.id,
    ) == [("BATCH", "COMPLETED", 0, False), ("RUN", "COMPLETED", None, False)]


def test_batch_trigger_and_wait_gives_results_in_item_order(app: Engine, start_worker: Any) -> None:
    @app.task("item")
    def item(p: int, ctx: TaskContext) -> int:
        if p == 3:
            raise ValueError("three is bad")
        time.sleep(0.05 * (5 - p))  # later items finish first
        return p * 10

    @app.task("fan-out")
    async def fan_out(p: int, ctx: TaskContext) -> list[Any]:
        results = await item.batch_trigger_and_wait(list(range(p)), max_attempts=1)
        return [r.output if r.ok else "failed" for r in results]

    start_worker(concurrency=8, tick_interval=0.1)
    run = finished(app, fan_out.trigger(5).id)
    assert run.output == [0, 10, 20, "failed", 40]


def test_a_waiting_run_frees_its_slot(app: Engine, start_worker: Any) -> None:
    release = threading.Event()

    @app.task("one-at-a-time", queue=Queue("one-at-a-time", concurrency_limit=1))
    async def one(p: str, ctx: TaskContext) -> str:
        if p == "waiter":
            token = await wait.create_token()
            ctx.metadata.set("token", token.id)
            await wait.for_token(token)
        return p

    start_worker(concurrency=8, tick_interval=0.1)
    waiter = one.trigger("waiter")
    token_id = wait_for(lambda: app.runs.retrieve(waiter).metadata.get("token"))
    other = one.trigger("other")  # the queue's only slot is free while the first waits
    assert finished(app, other.id).status is RunStatus.COMPLETED
    assert app.runs.retrieve(waiter).status is RunStatus.WAITING
    app.waitpoints.complete_token(token_id)
    assert finished(app, waiter.id).output == "waiter"
    release.set()


def test_a_replay_that_changes_its_calls_is_a_system_failure(
    app: Engine, start_worker: Any
) -> None:
    seen: list[int] = []

    @app.task("flip-flop")
    async def flip_flop(p: Any, ctx: TaskContext) -> None:
        seen.append(1)
        name = "first" if len(seen) == 1 else "different"
        await ctx.step(name, lambda: 1)
        await wait.for_(seconds=0.1)

    start_worker(concurrency=8, tick_interval=0.1)
    run = finished(app, flip_flop.trigger(None).id)
    assert run.status is RunStatus.SYSTEM_FAILURE
    assert run.error["type"] == "NonDeterminismError" and "different" in run.error["message"]


def test_canceling_a_waiting_parent_cancels_its_child(app: Engine, start_worker: Any) -> None:
    @app.task("slow-child")
    async def slow_child(p: Any, ctx: TaskContext) -> None:
        await asyncio.sleep(30)

    @app.task("waiting-parent")
    async def waiting_parent(p: Any, ctx: TaskContext) -> None:
        await slow_child.trigger_and_wait(None)

    start_worker(concurrency=8, tick_interval=0.1)
    h = waiting_parent.trigger(None)
    wait_for(lambda: app.runs.retrieve(h).status is RunStatus.WAITING)
    (child,) = wait_for(lambda: app.runs.list(task="slow-child").data)
    wait_for(lambda: app.runs.retrieve(child.id).status is RunStatus.EXECUTING)
    assert app.runs.cancel(h) is RunStatus.CANCELED
    assert app.runs.retrieve(child.id).status is RunStatus.CANCELED


def test_metadata_is_flushed_while_the_run_executes(app: Engine, start_worker: Any) -> None:
    progress_seen = threading.Event()
    too_big: list[str] = []
    refused: list[str] = []

    @app.task("progress")
    def progress(p: Any, ctx: TaskContext) -> None:
        ctx.metadata.set("progress", 0.5)
        ctx.metadata.increment("done", 2)
        ctx.metadata.append("log", "half way")
        try:
            ctx.metadata.set("blob", "x" * (300 * 1024))
        except InvalidArgumentError as exc:
            too_big.append(str(exc))
        # what jsonb cannot store is refused here, not with the outcome it would go with
        for unstorable in ("a\x00b", float("nan")):
            try:
                ctx.metadata.set("odd", unstorable)
            except InvalidArgumentError as exc:
                refused.append(str(exc))
        progress_seen.wait(10)
        ctx.metadata.set("progress", 1.0)

    start_worker(concurrency=8, tick_interval=0.1)
    h = progress.trigger(None)
    seen = wait_for(lambda: (m := app.runs.retrieve(h).metadata).get("progress") == 0.5 and m)
    assert seen == {"progress": 0.5, "done": 2, "log": ["half way"]}
    assert app.runs.retrieve(h).status is RunStatus.EXECUTING
    progress_seen.set()
    run = finished(app, h.id)
    assert run.metadata["progress"] == 1.0 and too_big and "limit" in too_big[0]
    assert len(refused) == 2 and "NUL" in refused[0] and "NaN" in refused[1]
    assert "odd" not in run.metadata and run.status is RunStatus.COMPLETED


def test_trigger_and_wait_on_a_finished_keyed_child_resumes_at_once(
    app: Engine, start_worker: Any
) -> None:
    @app.task("keyed-child")
    def keyed_child(p: int, ctx: TaskContext) -> int:
        return p + 1

    @app.task("keyed-parent")
    async def keyed_parent(p: int, ctx: TaskContext) -> int:
        result = await keyed_child.trigger_and_wait(p, idempotency_key="once")
        return int(result.unwrap())

    start_worker(concurrency=8, tick_interval=0.1)
    first = finished(app, keyed_parent.trigger(1).id)
    assert first.output == 2
    second = finished(app, keyed_parent.trigger(100).id)
    assert second.output == 2  # the finished child's recorded result, not a new run
    assert second.attempts[0].status == "COMPLETED"
    assert len(app.runs.list(task="keyed-child").data) == 1
    statuses = fetch(
        app.dsn,
        "SELECT count(*) FROM skiplock.runs WHERE id = %s AND status = 'COMPLETED'",
        second.id,
    )
    assert statuses == [(1,)]


def test_wait_until_a_time(app: Engine, start_worker: Any) -> None:
    from datetime import UTC, datetime, timedelta

    @app.task("until")
    async def until(p: Any, ctx: TaskContext) -> str:
        await wait.until(datetime.now(UTC) + timedelta(seconds=0.5))
        await wait.until(datetime.now(UTC) - timedelta(days=1))  # past: returns at once
        return "later"

    start_worker(concurrency=8, tick_interval=0.1)
    h = until.trigger(None)
    wait_for(lambda: app.runs.retrieve(h).status is RunStatus.WAITING)
    assert finished(app, h.id).output == "later"
    with pytest.raises(RuntimeError, match="running task"):
        wait.for_(seconds=1)  # outside a task


def test_def_tasks_wait_on_tokens_and_children_too(app: Engine, start_worker: Any) -> None:
    @app.task("def-child")
    def def_child(p: int, ctx: TaskContext) -> int:
        return p * 3

    @app.task("def-parent")
    def def_parent(p: int, ctx: TaskContext) -> dict[str, Any]:
        token = wait.create_token(timeout="1h")
        ctx.metadata.set("token", token.id)
        approval = wait.for_token(token)
        child = def_child.trigger_and_wait(p)
        batch = def_child.batch_trigger_and_wait([1, 2])
        return {
            "approval": approval.output,
            "child": child.unwrap(),
            "batch": [r.output for r in batch],
        }

    start_worker(concurrency=8, tick_interval=0.1)
    h = def_parent.trigger(5)
    token_id = wait_for(lambda: app.runs.retrieve(h).metadata.get("token"))
    app.waitpoints.complete_token(token_id, "yes")
    run = finished(app, h.id)
    assert run.output == {"approval": "yes", "child": 15, "batch": [3, 6]}
