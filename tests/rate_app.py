"""Tasks served by `skiplock worker rate_app:app` in tests/test_rate_limits.py: one queue
per test, each with the rate limit its test starts from."""

from __future__ import annotations

from engine import Engine, Queue, RateLimit, TaskContext

app = Engine()


@app.task("rate-ten", queue=Queue("ten-per-second", rate_limit=RateLimit(10, "1s")))
async def ten(i: int, ctx: TaskContext) -> int:
    return i


@app.task("rate-keys", queue=Queue("five-per-key", rate_limit=RateLimit(5, "1s")))
async def keyed(i: int, ctx: TaskContext) -> int:
    return i


@app.task("rate-trickle", queue=Queue("one-per-minute", rate_limit=RateLimit(1, "1m")))
async def trickle(i: int, ctx: TaskContext) -> int:
    return i


@app.task("rate-free", queue=Queue("unlimited"))
async def free(i: int, ctx: TaskContext) -> int:
    return i


@app.task("rate-changed", queue=Queue("changed-at-run-time", rate_limit=RateLimit(1, "10s")))
async def changed(i: int, ctx: TaskContext) -> int:
    return i
