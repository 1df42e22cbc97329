"""The task bench/worker_footprint.py keeps waiting: one durable step, then a sleep of an
hour, so that each run is WAITING (slot freed, nothing of it running) while the worker's
footprint is measured.

Workers serve it as `footprint_app:app` with bench/ on PYTHONPATH (so that the worker of
another checkout, which has no such module, can serve it too); the DSN comes from
$SKIPLOCK_DATABASE_URL.
"""

from __future__ import annotations

from typing import Any

from engine import Engine, Task, TaskContext, wait

TASK_ID = "bench-footprint"
SLEEP_SECONDS = 3600


def _nothing() -> None:
    return None


async def step_then_sleep(payload: dict[str, Any], ctx: TaskContext) -> None:
    await ctx.step("before", _nothing)
    await wait.for_(seconds=SLEEP_SECONDS)


def define(engine: Engine) -> Task[dict[str, Any], None]:
    """Declare the task on `engine`."""
    return engine.task(TASK_ID)(step_then_sleep)


app = Engine()
task = define(app)
