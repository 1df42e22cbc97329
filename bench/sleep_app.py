"""The task bench/sleep_lateness.py measures: it sleeps `seconds`, then returns the time
it woke (the worker's clock, `time.time()`: the same machine as the database)."""

from __future__ import annotations

import time
from typing import Any

from engine import Engine, Task, TaskContext, wait

TASK_ID = "bench-sleep"


async def sleeps(payload: dict[str, Any], ctx: TaskContext) -> float:
    await wait.for_(seconds=payload["seconds"])
    return time.time()


def define(engine: Engine) -> Task[dict[str, Any], float]:
    """Declare the task on `engine`."""
    return engine.task(TASK_ID)(sleeps)


app = Engine()
define(app)
