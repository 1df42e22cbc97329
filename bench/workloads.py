"""The workloads, written once against the `System` interface. Each takes a fresh
database with the system installed and returns {row: value} plus a line of detail."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import (
    BenchError,
    Conn,
    Worker,
    connect,
    percentile,
    pickup_latencies,
    pickup_table,
    running,
    scalar,
    started_count,
    wait_until,
)
from bench.peers.base import System

Result = tuple[dict[str, float], str]
PICKUP_ROWS = ("pickup p50", "pickup p95", "pickup p99")

PICKUP_GAP = 0.020  # seconds between pickup triggers
POLL = 0.05  # seconds between polls of the completed count
BACKLOG_LIMIT = 30.0  # seconds a backlog drain may take before its partial rate is taken
IDLE_BEFORE_PICKUP = 1.0  # seconds the warmed-up worker idles before the first trigger


@dataclass(frozen=True)
class Settings:
    jobs: int  # enqueue and drain size
    pickups: int  # pickup-latency jobs
    backlogs: tuple[int, ...]  # queue sizes for the backlog workload
    log_dir: Path


def db_clock(conn: Conn) -> datetime:
    value: datetime = scalar(conn, "SELECT clock_timestamp()")
    return value


def rate(n: int, start: datetime, end: datetime) -> float:
    return n / (end - start).total_seconds()


def enqueue(system: System, dsn: str, s: Settings, batch: bool) -> Result:
    items = list(range(s.jobs))
    with system.client(dsn) as client:
        started = time.perf_counter()
        (client.enqueue_batch if batch else client.enqueue_single)(items)
        elapsed = time.perf_counter() - started
    with connect(dsn) as conn:
        system.verify(conn, s.jobs, drained=False)
    row = "enqueue batch" if batch else "enqueue x1"
    return {row: s.jobs / elapsed}, f"{s.jobs} jobs in {elapsed:.2f}s"


def drain(system: System, dsn: str, s: Settings, workers: int) -> Result:
    """Queue N jobs (untimed), then time from just before the first worker process is
    spawned until the N-th job's success was recorded."""
    n = s.jobs
    with system.client(dsn) as client:
        client.enqueue_batch(list(range(n)))
    with connect(dsn) as conn:
        system.verify(conn, n, drained=False)
        spawned, spawned_perf = db_clock(conn), time.perf_counter()
        with running(
            system.worker_command(), dsn, workers, s.log_dir, system.worker_env(dsn)
        ) as procs:
            seen = wait_until(
                lambda: system.completed(conn, n) >= n,
                procs,
                max(120.0, n / 50),
                f"{n} jobs done",
                interval=POLL,
            )
        system.verify(conn, n, drained=True)
        end = finish_time(system, conn, n, spawned, seen - spawned_perf)
        first = system.first_start(conn)
    row = drain_row(workers)
    startup = (first - spawned).total_seconds()
    busy = n / (end - first).total_seconds()
    return {row: rate(n, spawned, end)}, (
        f"{n} jobs in {(end - spawned).total_seconds():.2f}s; start-up {startup:.2f}s, "
        f"then {busy:.0f} jobs/s"
    )


def finish_time(system: System, conn: Conn, n: int, t0: datetime, polled: float) -> datetime:
    """The n-th job's recorded success by the system's timestamps, else by the poll (t0 plus
    the seconds the poll took to see it)."""
    return system.nth_finish(conn, n) or t0 + timedelta(seconds=polled)


def _warm_up(
    system: System, dsn: str, conn: Conn, procs: list[Worker], trigger: Callable[[int], None]
) -> None:
    """Run one pickup job (i = -1) so that the worker is up and connected."""
    trigger(-1)
    wait_until(
        lambda: scalar(conn, "SELECT count(*) FROM bench_started WHERE i = -1") > 0,
        procs,
        120.0,
        "the warm-up job",
    )


def pickup(system: System, dsn: str, s: Settings) -> Result:
    """One idle worker; jobs triggered PICKUP_GAP apart; latency = the task's first
    statement's clock_timestamp() - clock_timestamp() read just before the trigger call."""
    triggered: dict[int, datetime] = {}
    with connect(dsn) as conn, system.client(dsn) as client:
        pickup_table(conn)
        with running(system.worker_command(), dsn, 1, s.log_dir, system.worker_env(dsn)) as procs:
            _warm_up(system, dsn, conn, procs, client.trigger_pickup)
            time.sleep(IDLE_BEFORE_PICKUP)
            begin = time.perf_counter()
            for i in range(s.pickups):
                time.sleep(max(0.0, begin + i * PICKUP_GAP - time.perf_counter()))
                triggered[i] = db_clock(conn)
                client.trigger_pickup(i)
            wait_until(
                lambda: started_count(conn) >= s.pickups, procs, 60.0, f"{s.pickups} pickup jobs"
            )
            time.sleep(0.2)  # let a job that would run twice show up
        ms = pickup_latencies(conn, triggered)
        own = system.own_pickup_ms(conn)
    values = {row: percentile(ms, p) for row, p in zip(PICKUP_ROWS, (50, 95, 99), strict=True)}
    detail = f"{len(ms)} jobs; max {max(ms):.1f} ms"
    if own:
        detail += (
            f"; by {system.name}'s own timestamps p50/p95/p99 "
            + "/".join(f"{percentile(own, p):.1f}" for p in (50, 95, 99))
            + " ms"
        )
    return values, detail


def fill_backlog(system: System, dsn: str, size: int) -> str:
    """Queue `size` jobs in one SQL transaction, then VACUUM ANALYZE (the state autovacuum
    soon brings a standing backlog to). Used once per system to make a template database."""
    started = time.perf_counter()
    with connect(dsn) as conn:
        with conn.transaction():
            system.bulk_fill(conn, size)
        filled = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE")
    return f"{size} jobs queued by SQL in {filled:.1f}s"


def backlog(system: System, dsn: str, s: Settings, size: int) -> Result:
    """`size` jobs queued (a copy of the filled template); one worker process; the rate
    from the first job's start until the min(size, N)-th success (steady state: start-up
    excluded). Stops at BACKLOG_LIMIT seconds and reports the rate of what finished."""
    target = min(size, s.jobs)
    with connect(dsn) as conn:
        spawned, spawned_perf = db_clock(conn), time.perf_counter()
        limit = spawned_perf + BACKLOG_LIMIT
        with running(system.worker_command(), dsn, 1, s.log_dir, system.worker_env(dsn)) as procs:
            seen = wait_until(
                lambda: time.perf_counter() > limit or system.completed(conn, target) >= target,
                procs,
                BACKLOG_LIMIT + 60,
                f"{target} of {size} jobs done",
                interval=POLL / 5 if target < 5000 else POLL,
            )
        done = min(target, system.completed(conn, target))
        if done == 0:
            raise BenchError(f"no job finished in {BACKLOG_LIMIT:.0f}s")
        system.verify(conn, size, drained=done == size)
        first = system.first_start(conn)
        end = finish_time(system, conn, done, spawned, seen - spawned_perf)
    detail = f"{done} of {size} jobs in {(end - first).total_seconds():.2f}s after the first start"
    if done < target:
        detail += f" (stopped at the {BACKLOG_LIMIT:.0f}s limit)"
    return {backlog_row(size): rate(done, first, end)}, detail


def drain_row(workers: int) -> str:
    return f"drain, {workers} worker{'s' if workers > 1 else ''}"


def backlog_row(size: int) -> str:
    label = (
        f"{size // 1_000_000}M"
        if size >= 1_000_000 and size % 1_000_000 == 0
        else (f"{size // 1000}k" if size % 1000 == 0 else str(size))
    )
    return f"backlog {label}"
