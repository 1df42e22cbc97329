"""Untyped tasks (payloads and outputs plain JSON) served by `skiplock worker
untyped_app:app` in tests/test_worker_imports.py: each run makes a step, sleeps (the
async one also waits for a child run's Result), makes another step, and returns which of
the modules a worker of untyped tasks should never load (pydantic) it finds loaded in its
own process."""

from __future__ import annotations

import sys
from typing import Any

from engine import Engine, TaskContext, wait

UNLOADED = ("pydantic", "pydantic_core", "engine.models")

app = Engine()


def _loaded() -> list[str]:
    return [name for name in UNLOADED if name in sys.modules]


@app.task("child-of-untyped")
async def child(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"twice": payload["n"] * 2}


@app.task("untyped-async")
async def untyped_async(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    before = await ctx.step("before", _loaded)
    await wait.for_(seconds=0.2)
    result = await child.trigger_and_wait({"n": payload["n"]})
    return {
        "n": payload["n"],
        "twice": result.unwrap()["twice"],
        "before": before,
        "after": _loaded(),
    }


@app.task("untyped-sync")
def untyped_sync(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    before = ctx.step("before", _loaded)
    wait.for_(seconds=0.2)
    return {"n": payload["n"], "before": before, "after": _loaded()}


@app.task("untyped-bare")
async def untyped_bare(payload, ctx):  # type: ignore[no-untyped-def]
    await ctx.step("step", _loaded)
    return {"n": payload["n"], "after": _loaded()}
