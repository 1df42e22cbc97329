"""The workflows bench/long_workflows.py resumes: N recorded calls, then waits on tokens.

`define(app, mark, begin)` registers them on `app`; `begin(run_id)` is called as the task
function starts (each resume runs it again from the top), `mark(run_id)` right after each
of the last waits returns (the first statement of the resumed execution after its replay).
Imported by the measured checkout's interpreter (bench/ on its path), so it uses the
public API only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import Engine, Task, TaskContext, wait


def _nothing() -> None:
    return None


def define(
    app: Engine, mark: Callable[[str], None], begin: Callable[[str], None]
) -> Task[int, int]:
    """Register long-child, long-steps and long-calls on `app`; return the child task."""

    @app.task("long-child")
    async def child(p: int, ctx: TaskContext) -> int:
        return p

    @app.task("long-steps")
    async def steps(p: dict[str, Any], ctx: TaskContext) -> None:
        """p["n"] steps, then a wait on each token of p["lasts"]."""
        begin(ctx.run_id)
        for i in range(p["n"]):
            await ctx.step(f"s{i}", _nothing)
        for token in p["lasts"]:
            await wait.for_token(token)
            mark(ctx.run_id)

    @app.task("long-calls")
    async def calls(p: dict[str, Any], ctx: TaskContext) -> None:
        """For each token of p["tokens"]: a child call (keyed: a finished child answers at
        once) and a wait on the token; then a wait on each token of p["lasts"]."""
        begin(ctx.run_id)
        for i, token in enumerate(p["tokens"]):
            await child.trigger_and_wait(i, idempotency_key=f"{p['key']}-{i}")
            await wait.for_token(token)
        for token in p["lasts"]:
            await wait.for_token(token)
            mark(ctx.run_id)

    return child
