"""Procrastinate, with its psycopg 3 connector.

Run as a module, this is one worker process: `python -m bench.peers.procrastinate_peer`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from procrastinate import App, PsycopgConnector

from bench.common import BenchError, Conn, scalar, timestamp
from bench.peers.base import BATCH, Client, System, python_module

CONCURRENCY = 50  # concurrent async jobs per worker process (the library default is 1)
WINDOW = 5000  # completed() counts the first n + WINDOW jobs in id (= dequeue) order


def make_app(dsn: str) -> App:
    app = App(connector=PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    @app.task(name="pickup")
    async def pickup(i: int) -> None:
        from bench.peers.recorder import record_start

        await record_start(i)

    return app


class _Client(Client):
    def __init__(self, app: App) -> None:
        self.noop = app.tasks["noop"]
        self.pickup = app.tasks["pickup"]

    def enqueue_single(self, items: list[int]) -> None:
        for i in items:
            self.noop.defer(i=i)

    def enqueue_batch(self, items: list[int]) -> None:
        for start in range(0, len(items), BATCH):
            kwargs: list[dict[str, Any]] = [{"i": i} for i in items[start : start + BATCH]]
            self.noop.batch_defer(*kwargs)

    def trigger_pickup(self, i: int) -> None:
        self.pickup.defer(i=i)


class Procrastinate(System):
    name = "procrastinate"
    package = "procrastinate"
    settings = (
        f"App.run_worker(concurrency={CONCURRENCY}) with PsycopgConnector, "
        "listen_notify on, delete_jobs='never' (the defaults), async no-op task"
    )
    batch_api = f"task.batch_defer() of {BATCH}"

    def install(self, dsn: str) -> None:
        app = make_app(dsn)
        with app.open():
            app.schema_manager.apply_schema()

    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]:
        app = make_app(dsn)
        with app.open():
            app.job_manager.check_connection()  # connect before the clock starts
            yield _Client(app)

    def bulk_fill(self, conn: Conn, n: int) -> None:
        # what procrastinate_defer_jobs_v1 does; the row triggers log and notify as usual
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'default', 'noop', jsonb_build_object('i', g) "
            "FROM generate_series(1, %s) g",
            (n,),
        )

    def worker_command(self) -> list[str]:
        return python_module("bench.peers.procrastinate_peer", "--concurrency", str(CONCURRENCY))

    def completed(self, conn: Conn, n: int) -> int:
        # no index on status: count within the first n + WINDOW ids (jobs are taken in id order)
        return int(
            scalar(
                conn,
                "SELECT count(*) FROM procrastinate_jobs WHERE id < "
                "(SELECT min(id) FROM procrastinate_jobs) + %s "
                "AND status = 'succeeded' AND task_name = 'noop'",
                (n + WINDOW,),
            )
        )

    def nth_finish(self, conn: Conn, n: int) -> datetime:
        return timestamp(
            conn,
            "SELECT e.at FROM procrastinate_events e JOIN procrastinate_jobs j "
            "ON j.id = e.job_id WHERE e.type = 'succeeded' AND j.task_name = "
            "'noop' ORDER BY e.at OFFSET %s LIMIT 1",
            (n - 1,),
        )

    def first_start(self, conn: Conn) -> datetime:
        return timestamp(
            conn,
            "SELECT min(e.at) FROM procrastinate_events e JOIN procrastinate_jobs "
            "j ON j.id = e.job_id WHERE e.type = 'started' AND j.task_name = 'noop'",
        )

    def verify(self, conn: Conn, total: int, drained: bool) -> None:
        jobs: Any = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), "
            "count(*) FILTER (WHERE attempts > 1 OR status NOT IN ('todo', 'succeeded')) "
            "FROM procrastinate_jobs WHERE task_name = 'noop'"
        ).fetchone()
        events: Any = conn.execute(
            "SELECT count(*), count(DISTINCT e.job_id) FROM procrastinate_events e JOIN "
            "procrastinate_jobs j ON j.id = e.job_id WHERE e.type = 'started' "
            "AND j.task_name = 'noop'"
        ).fetchone()
        count, succeeded, odd = jobs
        started, started_jobs = events
        ok = count == total and odd == 0 and started == started_jobs == succeeded
        if drained:
            ok = ok and succeeded == total
        if not ok:
            raise BenchError(
                f"procrastinate exactly-once check failed ({total} jobs, drained={drained}): "
                f"jobs (total, succeeded, retried or failed) = {tuple(jobs)}; 'started' events "
                f"(rows, distinct jobs) = {tuple(events)}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description="one Procrastinate worker process")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = p.parse_args()
    app = make_app(os.environ["BENCH_DSN"])
    app.run_worker(concurrency=args.concurrency)


if __name__ == "__main__":
    main()
