"""skiplock's benchmark workflows (bench/workflow_peers/base.py), served by real worker
processes: `python -m engine.cli worker bench.workflow_peers.skiplock_app:app`; the
benchmark binds the same tasks to an engine of its own with `define`."""

from __future__ import annotations

from typing import Any

from bench.workflow_peers import ledger
from bench.workflow_peers.base import SLEEP_SECONDS, STEPS
from engine import Engine, Task, TaskContext, wait

P = dict[str, Any]


def define(engine: Engine) -> dict[str, Task[P, None]]:
    """Declare every benchmark task on `engine`: kind -> task (plus "child")."""

    @engine.task("wf-steps")
    async def steps(p: P, ctx: TaskContext) -> None:
        for s in STEPS:
            await ctx.step(s, ledger.record, f"steps-{p['i']}", s)

    @engine.task("wf-one")
    async def one(p: P, ctx: TaskContext) -> None:
        await ctx.step("s0", ledger.record, f"one-{p['i']}", "s0")

    @engine.task("wf-resume")
    async def resume(p: P, ctx: TaskContext) -> None:
        await ctx.step("before", ledger.record, f"resume-{p['i']}", "before")
        await wait.for_token(p["token"])
        await ctx.step("after", ledger.record, f"resume-{p['i']}", "after")

    @engine.task("wf-sleep")
    async def sleep(p: P, ctx: TaskContext) -> None:
        await ctx.step("start", ledger.record, f"sleep-{p['i']}", "start")
        await wait.for_(seconds=SLEEP_SECONDS)
        await ctx.step("woke", ledger.record, f"sleep-{p['i']}", "woke")

    @engine.task("wf-child")
    async def child(p: P, ctx: TaskContext) -> None:
        await ctx.step("s0", ledger.record, f"child-{p['i']}", "s0")

    @engine.task("wf-parent")
    async def parent(p: P, ctx: TaskContext) -> None:
        results = await child.batch_trigger_and_wait([{"i": i} for i in range(p["n"])])
        if not all(r.ok for r in results):
            raise RuntimeError("a child failed")
        await ctx.step("done", ledger.record, "parent-0", "done")

    @engine.task("wf-wait")
    async def waiter(p: P, ctx: TaskContext) -> None:
        await ctx.step("before", ledger.record, f"wait-{p['i']}", "before")
        token = await wait.create_token(timeout="1h")
        await wait.for_token(token)

    return {
        "steps": steps,
        "one": one,
        "resume": resume,
        "sleep": sleep,
        "fanout": parent,
        "child": child,
        "wait": waiter,
    }


app = Engine()
tasks = define(app)
