"""Chancy, with its asyncio executor.

Run as a module, this is one worker process: `python -m bench.peers.chancy_peer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from chancy import Chancy as ChancyApp  # type: ignore[import-untyped]
from chancy import Job, Queue, Worker, job

from bench.common import BenchError, Conn, scalar, timestamp
from bench.peers.base import BATCH, Client, System, python_module

QUEUE = "default"
CONCURRENCY = 50  # jobs in flight per worker process (the default is the CPU count)
POLL = 1  # seconds between polls (the minimum; NOTIFY wakes the worker sooner)
FLUSH = 0.1  # seconds between completion flushes (the default is 1)
NOOP = "bench.peers.chancy_peer.noop"


@job(queue=QUEUE)  # type: ignore[untyped-decorator]
async def noop(i: int) -> None:
    return None


@job(queue=QUEUE)  # type: ignore[untyped-decorator]
async def pickup(i: int) -> None:
    from bench.peers.recorder import record_start

    await record_start(i)


def quiet_log() -> logging.Logger:
    """Chancy logs every job at INFO through rich by default; warnings only, plain."""
    log = logging.getLogger("bench.chancy")
    log.setLevel(logging.WARNING)
    return log


def queue() -> Queue:
    return Queue(
        QUEUE,
        concurrency=CONCURRENCY,
        executor=ChancyApp.Executor.Async,
        polling_interval=POLL,
        eager_polling=True,
    )


def _job(fn: Any, i: int) -> Job:
    job_: Job = fn.job.with_kwargs(i=i)
    return job_


class _Client(Client):
    def __init__(self, runner: asyncio.Runner, app: ChancyApp) -> None:
        self.runner, self.app = runner, app

    def enqueue_single(self, items: list[int]) -> None:
        async def loop() -> None:
            for i in items:
                await self.app.push(_job(noop, i))

        self.runner.run(loop())

    def enqueue_batch(self, items: list[int]) -> None:
        async def loop() -> None:
            async for _ in self.app.push_many([_job(noop, i) for i in items], batch_size=BATCH):
                pass

        self.runner.run(loop())

    def trigger_pickup(self, i: int) -> None:
        self.runner.run(self.app.push(_job(pickup, i)))


class Chancy(System):
    name = "chancy"
    package = "chancy"
    settings = (
        f"Worker with the default plugins, logging at WARNING; queue {QUEUE!r}: AsyncExecutor, "
        f"concurrency={CONCURRENCY}, polling_interval={POLL}, eager_polling=True; "
        "async no-op job"
    )
    batch_api = f"push_many(batch_size={BATCH})"

    def install(self, dsn: str) -> None:
        async def go() -> None:
            async with ChancyApp(dsn, log=quiet_log()) as app:
                await app.migrate()
                await app.declare(queue(), upsert=True)

        asyncio.run(go())

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        with asyncio.Runner() as runner:
            app = ChancyApp(dsn, log=quiet_log())
            runner.run(app.__aenter__())
            try:
                yield _Client(runner, app)
            finally:
                runner.run(app.__aexit__(None, None, None))

    def bulk_fill(self, conn: Conn, n: int) -> None:
        # what push_many does, as one statement, and the NOTIFY it sends
        conn.execute(
            "INSERT INTO chancy_jobs (id, queue, func, kwargs, max_attempts) "
            "SELECT uuidv7(), %s, %s, jsonb_build_object('i', g), 1 "
            "FROM generate_series(1, %s) g",
            (QUEUE, NOOP, n),
        )
        conn.execute(
            "SELECT pg_notify('chancy_events', %s)",
            (json.dumps({"t": "queue.pushed", "q": QUEUE}),),
        )

    def worker_command(self) -> list[str]:
        return python_module("bench.peers.chancy_peer")

    def completed(self, conn: Conn, n: int) -> int:
        return int(
            scalar(
                conn,
                "SELECT count(*) FROM chancy_jobs WHERE queue = %s "
                "AND state = 'succeeded' AND func = %s",
                (QUEUE, NOOP),
            )
        )

    def nth_finish(self, conn: Conn, n: int) -> datetime | None:
        # completed_at comes from the worker's clock when the job ends, and the row only
        # reaches the database with the next batched update (every second): no database
        # timestamp says when a success was recorded, so the poll's time is used
        return None

    def first_start(self, conn: Conn) -> datetime:
        return timestamp(conn, "SELECT min(started_at) FROM chancy_jobs WHERE func = %s", (NOOP,))

    def verify(self, conn: Conn, total: int, drained: bool) -> None:
        row: Any = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded'), "
            "count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1), "
            "count(*) FILTER (WHERE state NOT IN ('pending', 'succeeded')) "
            "FROM chancy_jobs WHERE func = %s",
            (NOOP,),
        ).fetchone()
        count, succeeded, once, other = row
        ok = count == total and succeeded == once and other == 0
        if drained:
            ok = ok and succeeded == total
        if not ok:
            raise BenchError(
                f"chancy exactly-once check failed ({total} jobs, drained={drained}): "
                f"(total, succeeded, succeeded with attempts = 1, neither pending nor "
                f"succeeded) = {tuple(row)}"
            )


async def _worker() -> None:
    async with ChancyApp(os.environ["BENCH_DSN"], log=quiet_log()) as app:
        worker = Worker(app)
        worker.send_outgoing_interval = FLUSH
        async with worker:
            await worker.wait_for_shutdown()


if __name__ == "__main__":
    asyncio.run(_worker())
