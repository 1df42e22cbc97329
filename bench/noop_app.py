"""The benchmarks' skiplock tasks: a no-op, and `bench-pickup`, which records when it starts.

Workers serve them as `bench.noop_app:app` (the DSN comes from $SKIPLOCK_DATABASE_URL);
the benchmark itself binds the same functions to an engine of its own with `define`
and `define_pickup`.
"""

from __future__ import annotations

from typing import Any

from engine import Engine, Task, TaskContext

TASK_ID = "bench-noop"
PICKUP_TASK_ID = "bench-pickup"

# How many runs finished, for the benchmarks' polls (every 50 ms during a drain). A
# COMPLETED run has exactly one COMPLETED attempt, and attempts hold only runs started
# (in a bench database, all of the bench tasks): the poll costs what was drained, as the
# peers' do (an index on status). Counted in runs, it was a scan of the whole table:
# 63 ms a poll with a backlog of 1,000,000.
COMPLETED_COUNT = "SELECT count(*) FROM skiplock.attempts WHERE status = 'COMPLETED'"


async def noop(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Does nothing: what is measured is the engine's own cost per run."""
    return None


async def pickup(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Records (payload["i"], clock_timestamp()) in bench_started (pickup latency)."""
    from bench.peers.recorder import record_start

    await record_start(int(payload["i"]))


def define(engine: Engine) -> Task[dict[str, Any], None]:
    """Declare the no-op task on `engine`."""
    return engine.task(TASK_ID)(noop)


def define_pickup(engine: Engine) -> Task[dict[str, Any], None]:
    """Declare the pickup task on `engine`."""
    return engine.task(PICKUP_TASK_ID)(pickup)


app = Engine()
task = define(app)
pickup_task = define_pickup(app)
