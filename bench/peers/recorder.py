"""Worker side of the pickup-latency workload: a task's first act is to record
(i, clock_timestamp()) in bench_started over a connection of its own (one per worker
process, synchronous_commit off so the record costs the worker little)."""

from __future__ import annotations

import asyncio
import os

import psycopg

_conn: psycopg.AsyncConnection[object] | None = None
_lock = asyncio.Lock()


async def record_start(i: int) -> None:
    global _conn
    async with _lock:
        if _conn is None:
            _conn = await psycopg.AsyncConnection.connect(os.environ["BENCH_DSN"], autocommit=True)
            await _conn.execute("SET synchronous_commit = off")
        await _conn.execute(
            "INSERT INTO bench_started (i, at) VALUES (%s, clock_timestamp())", (i,)
        )
