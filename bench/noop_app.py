"""A no-op task for the benchmarks.

Workers serve it as `bench.noop_app:app` (the DSN comes from $SKIPLOCK_DATABASE_URL);
the benchmark itself binds the same function to an engine of its own with `define`.
"""

from __future__ import annotations

from typing import Any

from engine import Engine, Task, TaskContext

TASK_ID = "bench-noop"


async def noop(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Does nothing: what is measured is the engine's own cost per run."""
    return None


def define(engine: Engine) -> Task[dict[str, Any], None]:
    """Declare the no-op task on `engine`."""
    return engine.task(TASK_ID)(noop)


app = Engine()
task = define(app)
