"""The task `bench/wait_resume.py` measures: it waits on a token, then records when it
runs again (the database's clock_timestamp()) through a connection of its own, opened
before the wait and kept by the worker process across the suspension."""

from __future__ import annotations

import os
from typing import Any

import psycopg

from engine import Engine, TaskContext, wait

app = Engine()
_conn: psycopg.AsyncConnection[Any] | None = None


async def _recorder() -> psycopg.AsyncConnection[Any]:
    global _conn
    if _conn is None or _conn.closed:
        _conn = await psycopg.AsyncConnection.connect(
            os.environ["SKIPLOCK_DATABASE_URL"], autocommit=True
        )
    return _conn


@app.task("bench-resume")
async def resume_probe(token_id: str, ctx: TaskContext) -> None:
    conn = await _recorder()
    await wait.for_token(token_id)
    await conn.execute(
        "INSERT INTO bench_resumed (run_id, resumed_at) VALUES (%s, clock_timestamp())",
        (ctx.run_id,),
    )
