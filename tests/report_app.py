"""Tasks served by `skiplock worker report_app:app` in tests/test_run_lines.py: one that
fails every attempt, one that overruns its max_duration, one to cancel, one that works."""

from __future__ import annotations

import asyncio
from typing import Any

from engine import Engine, Retry, TaskContext

app = Engine()

FAST = Retry(max_attempts=3, min_timeout=0.05, factor=2.0, randomize=False)


@app.task("report-fails", retry=FAST)
def fails_every_time(payload: Any, ctx: TaskContext) -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise ValueError(f"boom {ctx.attempt}\nsecond line of the message") from exc


@app.task("report-overruns", max_duration=1)
async def overruns_its_max_duration(payload: Any, ctx: TaskContext) -> None:
    await asyncio.sleep(60)


@app.task("report-sleeps")
async def sleeps_until_canceled(payload: Any, ctx: TaskContext) -> None:
    await asyncio.sleep(60)


@app.task("report-works")
async def works(payload: Any, ctx: TaskContext) -> Any:
    return payload
