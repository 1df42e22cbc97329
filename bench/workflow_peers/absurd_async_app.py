"""Absurd's benchmark workflows as async handlers, served by the SDK's async worker loop
(`AsyncAbsurd.start_worker`, absurd_sdk/__init__.py of 0.5.1: it claims up to
`batch_size` tasks, runs them as asyncio tasks, at most `concurrency` at once, and claims
again once the whole batch is done), one AsyncConnection a client. Started by
bench/workflow_peers/absurd_app.py with `--mode async`."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from absurd_sdk import AsyncAbsurd, AsyncTaskContext

from bench.workflow_peers import ledger
from bench.workflow_peers.base import SLEEP_SECONDS, STEPS

P = dict[str, Any]


def define(app: AsyncAbsurd, children: str) -> None:
    """Register every main-queue task on `app` (children spawned on queue `children`)."""

    async def rec(ctx: AsyncTaskContext, wf: str, step: str) -> float:
        async def write() -> float:
            return ledger.record(wf, step)

        return float(await ctx.step(step, write))

    @app.register_task("wf-steps")
    async def steps(p: P, ctx: AsyncTaskContext) -> None:
        for s in STEPS:
            await rec(ctx, f"steps-{p['i']}", s)

    @app.register_task("wf-one")
    async def one(p: P, ctx: AsyncTaskContext) -> None:
        await rec(ctx, f"one-{p['i']}", "s0")

    @app.register_task("wf-resume")
    async def resume(p: P, ctx: AsyncTaskContext) -> None:
        await rec(ctx, f"resume-{p['i']}", "before")
        await ctx.await_event(f"go-{p['i']}")
        await rec(ctx, f"resume-{p['i']}", "after")

    @app.register_task("wf-sleep")
    async def sleep(p: P, ctx: AsyncTaskContext) -> None:
        await rec(ctx, f"sleep-{p['i']}", "start")
        await ctx.sleep_for("nap", SLEEP_SECONDS)
        await rec(ctx, f"sleep-{p['i']}", "woke")

    @app.register_task("wf-parent")
    async def parent(p: P, ctx: AsyncTaskContext) -> None:
        async def spawn_all() -> list[str]:
            out = []
            for i in range(p["n"]):
                spawned = await app.spawn("wf-child", {"i": i}, queue=children)
                out.append(str(spawned["task_id"]))
            return out

        for task_id in await ctx.step("spawn", spawn_all):
            result = await ctx.await_task_result(task_id, queue_name=children)
            if result.state != "completed":
                raise RuntimeError(f"child {task_id} did not complete")
        await rec(ctx, "parent-0", "done")

    @app.register_task("wf-wait")
    async def waiter(p: P, ctx: AsyncTaskContext) -> None:
        await rec(ctx, f"wait-{p['i']}", "before")
        await ctx.await_event(f"never-{p['i']}")


def define_children(app: AsyncAbsurd, children: str) -> None:
    @app.register_task("wf-child", queue=children)
    async def child(p: P, ctx: AsyncTaskContext) -> None:
        async def write() -> float:
            return ledger.record(f"child-{p['i']}", "s0")

        await ctx.step("s0", write)


async def serve(
    dsn: str, queues: list[str], concurrency: int, batch: int | None, poll: float
) -> None:
    """One AsyncAbsurd client and worker loop a queue (the first: the benchmark tasks,
    a second: the fan-out's children), until SIGTERM."""
    apps = [AsyncAbsurd(dsn, queue_name=q) for q in queues]
    children = queues[-1]
    define(apps[0], children)
    if len(apps) > 1:
        define_children(apps[1], children)

    def stop() -> None:
        for a in apps:
            a.stop_worker()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    await asyncio.gather(
        *(
            a.start_worker(concurrency=concurrency, batch_size=batch, poll_interval=poll)
            for a in apps
        )
    )
    for a in apps:
        await a.close()
