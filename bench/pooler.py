"""Benchmark: the three connection modes, through PgBouncer 1.18 in transaction mode.

    python bench/pooler.py [--samples 10] [--drain 2000] [--dsn postgresql://...]

For each mode (direct; pooled + listen DSN; pooled poll-only) with a worker at its
default settings (poll interval 1 s, heartbeat 5 s, concurrency 10), in this process:

* pickup: an idle worker (idle 1.2-2.2 s, a random phase) to the task function entered,
  from the trigger call;
* cancel: `runs.cancel` returning to the running async task's CancelledError;
* subscription: a change by another client (a delayed run canceled) to the snapshot in a
  `subscribe_to_run` iterator;
* drain: N no-op runs queued before the worker starts, to the last completed.

Prints a Markdown table (median and max of the samples). Needs `pgbouncer` (Debian's).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/pooler.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench.drain import fresh_database, postgres_server  # noqa: E402
from engine import Engine, RunStatus, TaskContext  # noqa: E402
from engine.worker import Worker  # noqa: E402
from tests.faults.pooler import PgBouncer  # noqa: E402

MODES = ("direct", "pooled + listen DSN", "pooled, poll-only")


def engine_for(mode: str, dsn: str, bouncer: PgBouncer) -> Engine:
    if mode == "direct":
        return Engine(dsn, pooled=False)
    if mode == "pooled + listen DSN":
        return Engine(bouncer.dsn_for(dsn), listen_dsn=dsn)
    return Engine(bouncer.dsn_for(dsn), pooled=True)


class Running:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(30)


def _until(predicate: Callable[[], Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.002)


def measure(mode: str, dsn: str, bouncer: PgBouncer, samples: int, drain: int) -> dict[str, Any]:
    app = engine_for(mode, dsn, bouncer)
    entered: dict[str, float] = {}
    stopped: dict[str, float] = {}

    @app.task("ping")
    async def ping(x: int, ctx: TaskContext) -> None:
        entered[ctx.run_id] = time.monotonic()

    @app.task("forever")
    async def forever(x: int, ctx: TaskContext) -> None:
        entered[ctx.run_id] = time.monotonic()
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            stopped[ctx.run_id] = time.monotonic()
            raise

    @app.task("noop")
    async def noop(x: int, ctx: TaskContext) -> None:
        return None

    out: dict[str, Any] = {}
    # drain: queued first, then one worker
    for start in range(0, drain, 1000):
        noop.batch_trigger(list(range(start, min(drain, start + 1000))))
    began = time.monotonic()
    worker = Running(Worker(app, concurrency=10))
    try:
        _until(lambda: _count_completed(app) >= drain, 300)
        out["drain"] = drain / (time.monotonic() - began)

        pickups = []
        for i in range(samples):
            time.sleep(random.uniform(1.2, 2.2))
            at = time.monotonic()
            h = ping.trigger(i)
            _until(lambda h=h: h.id in entered)
            pickups.append(entered[h.id] - at)
        out["pickup"] = pickups

        cancels = []
        for i in range(max(3, samples // 2)):
            h = forever.trigger(i)
            _until(lambda h=h: h.id in entered)
            time.sleep(random.uniform(0.0, 1.0))
            at = time.monotonic()
            app.runs.cancel(h)
            _until(lambda h=h: h.id in stopped, 30)
            cancels.append(stopped[h.id] - at)
        out["cancel"] = cancels

        subs = []
        for i in range(samples):
            h = ping.trigger(i, delay="1h")
            seen: list[tuple[RunStatus, float]] = []
            it: Iterator[Any] = app.runs.subscribe_to_run(h)

            def follow(it: Iterator[Any] = it, seen: list[tuple[RunStatus, float]] = seen) -> None:
                for run in it:
                    seen.append((run.status, time.monotonic()))

            t = threading.Thread(target=follow, daemon=True)
            t.start()
            _until(lambda seen=seen: seen)
            time.sleep(random.uniform(0.3, 0.6))
            at = time.monotonic()
            app.runs.cancel(h)
            t.join(30)
            subs.append(seen[-1][1] - at)
        out["subscription"] = subs
    finally:
        worker.stop()
        app.close()
    return out


def _count_completed(app: Engine) -> int:
    with app.db.pool.connection() as c:
        row = c.execute(
            "SELECT count(*) FROM skiplock.runs WHERE task_identifier = 'noop' "
            "AND status = 'COMPLETED'"
        ).fetchone()
    return int(row[0]) if row else 0


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms (max {max(values) * 1000:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--drain", type=int, default=2000)
    parser.add_argument("--dsn", help="a server to create databases on (default: throwaway)")
    args = parser.parse_args()
    rows = []
    with postgres_server(args.dsn) as server:
        bouncer = PgBouncer(server).start()
        try:
            for n, mode in enumerate(MODES):
                with fresh_database(server, f"bench_pooler_{n}") as dsn:
                    got = measure(mode, dsn, bouncer, args.samples, args.drain)
                rows.append(
                    f"| {mode} | {_ms(got['pickup'])} | {_ms(got['cancel'])} | "
                    f"{_ms(got['subscription'])} | {got['drain']:.0f} runs/s |"
                )
                print(rows[-1], flush=True)
        finally:
            bouncer.close()
    print()
    print("| mode | pickup (idle worker) | cancel reaches the task | subscription sees a change "
          f"| drain of {args.drain} no-op runs, 1 worker |")  # fmt: skip
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
