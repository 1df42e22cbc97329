"""Tasks served by `skiplock worker connections_app:app` in tests/test_worker_connections.py:
each makes steps, a wait, triggers and logs, as an `async def` and as a `def` task (whose
blocking API calls run on the worker's connections)."""

from __future__ import annotations

from engine import Engine, TaskContext, wait

app = Engine()


@app.task("conn-child")
def child(n: int, ctx: TaskContext) -> int:
    ctx.logger.info("child %s", n)
    return n * 2


def _double(n: int) -> int:
    return n * 2


@app.task("conn-async")
async def async_parent(n: int, ctx: TaskContext) -> int:
    doubled = await ctx.step("double", _double, n)
    ctx.logger.info("async parent %s", n)
    await child.trigger_async(n)
    await wait.for_(seconds=0.5)
    result = await child.trigger_and_wait(n)
    seen = await app.runs.retrieve_async(ctx.run_id)
    assert seen.id == ctx.run_id
    return int(doubled) + int(result.unwrap())


@app.task("conn-sync")
def sync_parent(n: int, ctx: TaskContext) -> int:
    doubled = ctx.step("double", _double, n)
    ctx.logger.info("sync parent %s", n)
    child.trigger(n)  # the blocking API, from the task's thread
    wait.for_(seconds=0.5)
    result = child.trigger_and_wait(n)
    seen = app.runs.retrieve(ctx.run_id)
    assert seen.id == ctx.run_id
    app.runs.logs(ctx.run_id)
    return int(doubled) + int(result.unwrap())
