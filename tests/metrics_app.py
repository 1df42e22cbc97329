"""Tasks served by `skiplock worker metrics_app:app --metrics-port N` in tests/test_metrics.py."""

from __future__ import annotations

import asyncio
from typing import Any

from engine import Engine, Queue, Retry, TaskContext, wait

app = Engine()


@app.task("m-ok")
async def ok(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    await asyncio.sleep(0)
    return payload


@app.task("m-sync")
def sync(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return payload


@app.task("m-fail", retry=Retry(max_attempts=2, min_timeout=0.05, max_timeout=0.1))
async def fail(payload: dict[str, Any], ctx: TaskContext) -> None:
    raise ValueError(f"attempt {ctx.attempt} fails")


@app.task("m-wait")
async def waiter(token_id: str, ctx: TaskContext) -> Any:
    return (await wait.for_token(token_id)).output


@app.task("m-held", queue=Queue("held"))
async def held(payload: dict[str, Any], ctx: TaskContext) -> None:
    return None
