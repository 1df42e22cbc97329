"""`skiplock demo`: a worker process and a few runs on the embedded PostgreSQL.

The tasks below are served by a real `skiplock worker engine.cli.demo:app` subprocess;
this process only triggers runs and reads their results.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from pydantic import BaseModel

from ..api.context import TaskContext
from ..api.engine import Engine
from ..values import Retry

app = Engine()


class Order(BaseModel):
    id: int
    items: list[str]


class Receipt(BaseModel):
    order_id: int
    total_items: int


@app.task("demo-receipt")
async def receipt(order: Order, ctx: TaskContext) -> Receipt:
    await asyncio.sleep(0.05)
    return Receipt(order_id=order.id, total_items=len(order.items))


@app.task("demo-shout")
def shout(text: str, ctx: TaskContext) -> str:
    return text.upper() + "!"


@app.task("demo-flaky", retry=Retry(max_attempts=3, min_timeout=0.2, randomize=False))
def flaky(payload: dict[str, int], ctx: TaskContext) -> str:
    if ctx.attempt < payload["succeed_on"]:
        raise RuntimeError(f"transient failure on attempt {ctx.attempt}")
    return f"succeeded on attempt {ctx.attempt}"


def main(dsn: str | None = None) -> None:
    engine = Engine(dsn) if dsn else app
    print(f"database: {engine.dsn}")
    print(f"migrations applied: {engine.migrate() or 'none needed'}")
    env = {**os.environ, "SKIPLOCK_DATABASE_URL": engine.dsn}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "worker",
            "engine.cli.demo:app",
            "--concurrency",
            "4",
            "--version",
            "demo",
        ],
        env=env,
    )
    try:
        handles = [
            engine.trigger("demo-receipt", {"id": 7, "items": ["tea", "scones"]}, tags=["demo"]),
            engine.trigger("demo-shout", "hello from skiplock", tags=["demo"]),
            engine.trigger("demo-flaky", {"succeed_on": 2}, tags=["demo"]),
            engine.trigger("demo-shout", "this one waited two seconds", delay="2s", tags=["demo"]),
        ]
        print(f"triggered {len(handles)} runs; waiting for the worker...")
        deadline = time.monotonic() + 60
        pending = {h.id for h in handles}
        while pending and time.monotonic() < deadline:
            for run_id in sorted(pending):
                run = engine.runs.retrieve(run_id)
                if run.is_completed:
                    pending.discard(run_id)
                    print(
                        f"  {run.task_identifier:13} {run.status.value:9} "
                        f"attempts={run.attempt_count} output={run.output!r}"
                    )
            time.sleep(0.1)
        if pending:
            raise SystemExit(f"runs not finished within 60 s: {sorted(pending)}")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        engine.close()
    print("done: see them with `skiplock runs list`")
