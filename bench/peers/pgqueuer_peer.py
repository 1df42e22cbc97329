"""PgQueuer, with asyncpg and uvloop as its own CLI and benchmark use them.

Run as a module, this is one worker process: `python -m bench.peers.pgqueuer_peer`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import uvloop
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from psycopg.conninfo import conninfo_to_dict

from bench.common import BenchError, Conn, scalar, timestamp
from bench.peers.base import BATCH, Client, System, python_module

BATCH_SIZE = 50  # jobs per dequeue (and completion-log flush); the library default is 10
MANAGERS = 1  # QueueManagers per worker process, each with its own connection
T = TypeVar("T")


async def connect(dsn: str) -> Any:
    """An asyncpg connection: asyncpg takes a URI or keywords, not a libpq key=value string."""
    params = conninfo_to_dict(dsn)
    kw = {k: params[k] for k in ("host", "port", "user", "password") if params.get(k)}
    return await asyncpg.connect(database=params.get("dbname"), **kw)


class _Client(Client):
    def __init__(self, runner: asyncio.Runner, queries: Queries) -> None:
        self.runner, self.q = runner, queries

    def _run(self, fn: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await fn()

        return self.runner.run(call())

    def enqueue_single(self, items: list[int]) -> None:
        async def loop() -> None:
            for i in items:
                await self.q.enqueue("noop", str(i).encode())

        self._run(loop)

    def enqueue_batch(self, items: list[int]) -> None:
        async def loop() -> None:
            for start in range(0, len(items), BATCH):
                chunk = items[start : start + BATCH]
                await self.q.enqueue(
                    ["noop"] * len(chunk), [str(i).encode() for i in chunk], [0] * len(chunk)
                )

        self._run(loop)

    def trigger_pickup(self, i: int) -> None:
        self._run(lambda: self.q.enqueue("pickup", str(i).encode()))


class PgQueuer(System):
    name = "pgqueuer"
    package = "pgqueuer"
    batch_api = f"Queries.enqueue(lists of {BATCH})"

    def __init__(self, batch_size: int = BATCH_SIZE) -> None:
        self.batch_size = batch_size  # jobs per dequeue (and completion-log flush)
        self.settings = (
            f"QueueManager.run(batch_size={batch_size}) on one asyncpg connection "
            f"(AsyncpgDriver), uvloop, {MANAGERS} manager(s) per process, async no-op "
            "entrypoint; durable tables (the default)"
        )

    def install(self, dsn: str) -> None:
        async def go() -> None:
            conn = await connect(dsn)
            try:
                await Queries(AsyncpgDriver(conn)).install()
            finally:
                await conn.close()

        uvloop.run(go())

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            conn = runner.run(connect(dsn))
            try:
                yield _Client(runner, Queries(AsyncpgDriver(conn)))
            finally:
                runner.run(conn.close())

    def bulk_fill(self, conn: Conn, n: int) -> None:
        # what Queries.enqueue does, as one statement: the job rows and their 'queued' log rows
        conn.execute(
            "WITH ins AS (INSERT INTO pgqueuer (priority, entrypoint, payload, status) "
            "SELECT 0, 'noop', g::text::bytea, 'queued' FROM generate_series(1, %s) g "
            "RETURNING id, entrypoint, priority) "
            "INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority) "
            "SELECT id, 'queued', entrypoint, priority FROM ins",
            (n,),
        )

    def worker_command(self) -> list[str]:
        return python_module(
            "bench.peers.pgqueuer_peer",
            "--batch-size",
            str(self.batch_size),
            "--managers",
            str(MANAGERS),
        )

    def completed(self, conn: Conn, n: int) -> int:
        return int(
            scalar(
                conn,
                "SELECT count(*) FROM pgqueuer_log "
                "WHERE status = 'successful' AND entrypoint = 'noop'",
            )
        )

    def nth_finish(self, conn: Conn, n: int) -> datetime:
        return timestamp(
            conn,
            "SELECT created FROM pgqueuer_log WHERE status = 'successful' "
            "AND entrypoint = 'noop' ORDER BY created OFFSET %s LIMIT 1",
            (n - 1,),
        )

    def first_start(self, conn: Conn) -> datetime:
        return timestamp(
            conn,
            "SELECT min(created) FROM pgqueuer_log WHERE status = 'picked' AND entrypoint = 'noop'",
        )

    def verify(self, conn: Conn, total: int, drained: bool) -> None:
        row: Any = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'queued'), "
            "count(*) FILTER (WHERE status = 'picked'), "
            "count(DISTINCT job_id) FILTER (WHERE status = 'picked'), "
            "count(*) FILTER (WHERE status = 'successful'), "
            "count(DISTINCT job_id) FILTER (WHERE status = 'successful'), "
            "count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful')) "
            "FROM pgqueuer_log WHERE entrypoint = 'noop'"
        ).fetchone()
        left = int(scalar(conn, "SELECT count(*) FROM pgqueuer WHERE entrypoint = 'noop'"))
        queued, picked, picked_jobs, done, done_jobs, other = row
        ok = (
            queued == total
            and picked == picked_jobs
            and done == done_jobs
            and other == 0
            and done + left == total
        )
        if drained:
            ok = ok and done == total and picked == total and left == 0
        if not ok:
            raise BenchError(
                f"pgqueuer exactly-once check failed ({total} jobs, drained={drained}): log "
                f"(queued, picked, picked jobs, successful, successful jobs, other) = "
                f"{tuple(row)}; {left} jobs left in the queue table"
            )


async def _worker(batch_size: int, managers: int) -> None:
    from bench.peers.recorder import record_start

    dsn = os.environ["BENCH_DSN"]
    qms = []
    for _ in range(managers):
        qm = QueueManager(Queries(AsyncpgDriver(await connect(dsn))))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            return None

        @qm.entrypoint("pickup")
        async def pickup(job: Job) -> None:
            await record_start(int((job.payload or b"0").decode()))

        qms.append(qm)

    def shutdown() -> None:
        for qm in qms:
            qm.shutdown.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown)
    await asyncio.gather(*(qm.run(batch_size=batch_size) for qm in qms))


def main() -> None:
    p = argparse.ArgumentParser(description="one PgQueuer worker process")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--managers", type=int, default=MANAGERS)
    args = p.parse_args()
    uvloop.run(_worker(args.batch_size, args.managers))


if __name__ == "__main__":
    main()
