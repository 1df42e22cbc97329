"""Tasks served by `skiplock worker cli_app:app` in the CLI tests."""

from __future__ import annotations

import time
from typing import Any

from engine import Engine, Queue, Retry, TaskContext

app = Engine()


@app.task("cli-echo")
def echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"echo": payload, "attempt": ctx.attempt}


@app.task("cli-slow", queue=Queue("slow"))
def slow(seconds: float, ctx: TaskContext) -> str:
    time.sleep(seconds)
    return "slept"


@app.task("limited-sleep", queue=Queue("limited", concurrency_limit=2))
def limited_sleep(seconds: float, ctx: TaskContext) -> str:
    time.sleep(seconds)
    return "done"


@app.task("keyed-sleep", queue=Queue("keyed", concurrency_limit=1))
async def keyed_sleep(seconds: float, ctx: TaskContext) -> str:
    import asyncio

    await asyncio.sleep(seconds)
    return "done"


@app.task("token-waiter")
async def token_waiter(token_id: str, ctx: TaskContext) -> Any:
    from engine import wait

    result = await wait.for_token(token_id)
    return result.output


@app.task("cli-once", retry=Retry(max_attempts=1))
async def once(seconds: float, ctx: TaskContext) -> str:
    import asyncio

    await asyncio.sleep(seconds)
    return "slept"
