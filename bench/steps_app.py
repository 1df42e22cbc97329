"""The task bench/step_times.py drains besides the no-op: three durable steps of a
function that does nothing, so that what is measured is the engine's cost per step (each
`ctx.step` records its result: one round trip, one commit).

Workers serve it as `steps_app:app` with bench/ on PYTHONPATH (so that the worker of
another checkout, which has no such module, can serve it too); the DSN comes from
$SKIPLOCK_DATABASE_URL.
"""

from __future__ import annotations

from typing import Any

from engine import Engine, Task, TaskContext

TASK_ID = "bench-steps"
STEPS = 3


def _nothing() -> None:
    return None


async def three_steps(payload: dict[str, Any], ctx: TaskContext) -> None:
    for i in range(STEPS):
        await ctx.step(f"step-{i}", _nothing)


def define(engine: Engine) -> Task[dict[str, Any], None]:
    """Declare the task on `engine`."""
    return engine.task(TASK_ID)(three_steps)


app = Engine()
task = define(app)
