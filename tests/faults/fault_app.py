"""The fault suite's workload, served by `skiplock worker fault_app:app` processes.

Every execution writes rows to `fault_ledger` on a connection of its own: a 'start' row
when the task function is entered and an 'effect' row just before it returns (after its
waits and child runs), so the database can count how often each run's side effect really
happened. A ledger write is keyed by a token made once per execution and retried until
the database answers, so a write cut by a restart is never counted twice, and a short
outage does not fail the task."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import psycopg

from engine import Engine, Queue, Retry, TaskContext, wait

app = Engine()

RETRY = Retry(max_attempts=4, min_timeout=0.2, factor=2.0, max_timeout=2.0, randomize=False)
LIMITED = Queue("fault-limited", concurrency_limit=2)
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS fault_ledger (
    token      text        PRIMARY KEY,
    run_id     text        NOT NULL,
    attempt    integer     NOT NULL,
    kind       text        NOT NULL,
    task       text        NOT NULL,
    pid        integer     NOT NULL,
    worker_id  text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS fault_ledger_run_idx ON fault_ledger (run_id, kind);
"""
_INSERT = (
    "INSERT INTO fault_ledger (token, run_id, attempt, kind, task, pid, worker_id) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (token) DO NOTHING"
)
_GIVE_UP_AFTER = 60.0  # seconds of failed ledger writes before the task itself fails


def _dsn() -> str:
    return app.dsn


def _row(ctx: TaskContext, token: str, kind: str) -> tuple[Any, ...]:
    return (
        f"{token}:{kind}",
        ctx.run_id,
        ctx.attempt,
        kind,
        ctx.task_id,
        os.getpid(),
        ctx.worker_id,
    )


def record(ctx: TaskContext, token: str, kind: str) -> None:
    deadline = time.monotonic() + _GIVE_UP_AFTER
    while True:
        try:
            with psycopg.connect(
                _dsn(), autocommit=True, application_name="fault-ledger", connect_timeout=5
            ) as conn:
                conn.execute(_INSERT, _row(ctx, token, kind))
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def record_async(ctx: TaskContext, token: str, kind: str) -> None:
    deadline = time.monotonic() + _GIVE_UP_AFTER
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                _dsn(), autocommit=True, application_name="fault-ledger", connect_timeout=5
            ) as conn:
                await conn.execute(_INSERT, _row(ctx, token, kind))
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _token() -> str:
    return uuid.uuid4().hex


@app.task("fault-plain", retry=RETRY)
def plain(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    token = _token()
    record(ctx, token, "start")
    time.sleep(payload.get("sleep", 0.05))
    record(ctx, token, "effect")
    return {"n": payload.get("n"), "attempt": ctx.attempt}


@app.task("fault-ephemeral", retry=RETRY, retention="1s")
def ephemeral(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """As fault-plain, but its run is kept 1 s once finished: the workers' ticks purge it
    (skiplock.purge) while the rest of the workload runs and faults strike."""
    return plain.fn(payload, ctx)  # type: ignore[no-any-return]


@app.task("fault-retry", retry=RETRY)
async def retry_once(payload: dict[str, Any], ctx: TaskContext) -> int:
    token = _token()
    await record_async(ctx, token, "start")
    await asyncio.sleep(payload.get("sleep", 0.05))
    if ctx.attempt == 1:
        raise RuntimeError("fails on its first attempt, on purpose")
    await record_async(ctx, token, "effect")
    return ctx.attempt


@app.task("fault-wait", retry=RETRY)
async def waits(payload: dict[str, Any], ctx: TaskContext) -> str:
    token = _token()
    await record_async(ctx, token, "start")  # again on every replay after the wait
    await wait.for_(seconds=payload.get("wait", 1.0))
    await record_async(ctx, token, "effect")
    return "waited"


@app.task("fault-limited", queue=LIMITED, retry=RETRY)
def limited(payload: dict[str, Any], ctx: TaskContext) -> str:
    token = _token()
    record(ctx, token, "start")
    time.sleep(payload.get("sleep", 0.2))
    record(ctx, token, "effect")
    return "limited"


@app.task("fault-db-touch", retry=RETRY)
def db_touch(payload: dict[str, Any], ctx: TaskContext) -> int:
    """A task doing database work of its own, with no retry of its own: while the server
    is down its query fails, the task raises, and the engine must record the failed
    attempt and retry the run."""
    token = _token()
    record(ctx, token, "start")
    n = int(payload.get("queries", 10))
    # prepare_threshold=None: behind a transaction-mode pooler (the pgbouncer scenario)
    # a statement psycopg prepared on one server session is run on another
    with psycopg.connect(
        _dsn(), autocommit=True, application_name="fault-task", prepare_threshold=None
    ) as conn:
        for _ in range(n):
            conn.execute("SELECT 1")
            time.sleep(payload.get("sleep", 0.1))
    record(ctx, token, "effect")
    return n


@app.task("fault-child", retry=RETRY)
async def child(payload: dict[str, Any], ctx: TaskContext) -> int:
    token = _token()
    await record_async(ctx, token, "start")
    await asyncio.sleep(payload.get("sleep", 0.1))
    await record_async(ctx, token, "effect")
    return int(payload.get("n", 0))


@app.task("fault-parent", retry=RETRY)
async def parent(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    token = _token()
    await record_async(ctx, token, "start")  # again on every replay after the child ends
    result = await child.trigger_and_wait({"n": payload.get("n", 0), "sleep": 0.1})
    await record_async(ctx, token, "effect")
    return {"child_ok": result.ok}


@app.task("fault-fence-probe", retry=RETRY)
async def fence_probe(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Runs for `seconds`, appending a line to the local file `path` every 0.1 s, and
    'cancelled' when the worker stops it: a trace outside the database (and outside any
    network fault) of when the worker fenced the attempt off."""
    path = payload["path"]
    began = time.monotonic()
    try:
        while time.monotonic() - began < payload.get("seconds", 30.0):
            with open(path, "a") as f:
                f.write(f"alive {time.time():.3f}\n")
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        with open(path, "a") as f:
            f.write(f"cancelled {time.time():.3f}\n")
        raise
    return "done"
