"""The throughput workloads of bench/realtime.py: enqueue and drain, without and with a
subscriber process, in separate databases or in two side by side (see its docstring)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import common
from bench.common import Conn
from bench.drain import (
    WORKER_CONCURRENCY,
    db_timings,
    expect_queued,
    fresh_database,
    noop_task,
    payloads,
    spawn_workers,
    stop_workers,
    track_functions,
    trigger_batches,
    verify_exactly_once,
    wait_completed,
    wait_disconnected,
)
from bench.realtime_subscriber import (
    REGISTER_TIMEOUT,
    Subscriber,
    cpu_seconds,
    expect_subscribers,
    subscriber,
)

DRAIN_WORKERS = 2
ENQUEUE_CHUNK = 250  # triggers per chunk, alternating between the two databases
DRAIN_CHUNK = 2000  # runs per chunk, alternating
DRAIN_WARM_UP = 200  # runs drained in each database before the chunks
FUNCTIONS = ("lock_ready", "begin_attempts", "complete_attempts", "notify_runs")


@dataclass(frozen=True)
class Sample:
    runs: int
    seconds: float
    busy_seconds: float | None = None  # drain: first attempt start -> last attempt finish
    subscriber_cpu: float | None = None  # CPU s of the subscriber + its backend, timed window
    listener_cpu: float | None = None  # CPU s of the workers' LISTEN backends (drains)
    subscriber_stats: dict[str, float] | None = None
    function_ms: dict[str, tuple[int, float]] | None = None  # name -> (calls, ms per call)

    @property
    def rate(self) -> float:
        return self.runs / self.seconds

    @property
    def busy_rate(self) -> float | None:
        return None if not self.busy_seconds else self.runs / self.busy_seconds


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def listener_backends(conn: Conn, workers: list[common.Worker]) -> list[int]:
    """Backend pids of the workers' LISTEN connections (engine/db/listener.py); waits for
    workers still starting up."""
    names = [f"skiplock-listener:{w.process.pid}" for w in workers]
    pids: list[int] = []

    def found() -> bool:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = ANY (%s)", (names,)
        ).fetchall()
        pids[:] = [int(pid) for (pid,) in rows]
        return len(pids) == len(workers)

    common.wait_until(found, workers, REGISTER_TIMEOUT, "the workers' LISTEN sessions")
    return pids


def backends_cpu(pids: list[int]) -> float | None:
    return _sum([cpu_seconds(p) for p in pids])


def abba(pairs: int) -> list[bool]:
    """Without/with order of alternating chunks: F T, T F, F T, ... (with = True)."""
    return [v for k in range(pairs) for v in ((False, True) if k % 2 == 0 else (True, False))]


# separate databases, one after the other (the order alternates between repetitions)


def enqueue_single(dsn: str, n: int, sub: Subscriber | None) -> Sample:
    items = payloads(n)
    with noop_task(dsn) as task:
        cpu0 = sub.cpu() if sub else None
        started = time.perf_counter()
        for item in items:
            task.trigger(item)
        elapsed = time.perf_counter() - started
        cpu1 = sub.cpu() if sub else None
    with common.connect(dsn) as conn:
        expect_subscribers(conn, 1 if sub else 0)
    expect_queued(dsn, n)
    return Sample(n, elapsed, subscriber_cpu=_delta(cpu0, cpu1))


def drain(dsn: str, n: int, sub: Subscriber | None, log_dir: Path) -> Sample:
    """The runs must be queued already (see `queue_for_drain`)."""
    timeout = max(120.0, n / 50)
    with common.connect(dsn) as conn:
        spawned_at = common.timestamp(conn, "SELECT clock_timestamp()")
        cpu0 = sub.cpu() if sub else None
        started = time.perf_counter()
        workers = spawn_workers(dsn, DRAIN_WORKERS, log_dir)
        try:
            wait_completed(conn, n, workers, timeout)
            elapsed = time.perf_counter() - started
            cpu1 = sub.cpu() if sub else None
            # since the workers connected: start-up is a small part of it
            listeners = backends_cpu(listener_backends(conn, workers))
            expect_subscribers(conn, 1 if sub else 0)
        finally:
            stop_workers(workers)
        verify_exactly_once(conn, n)
        _startup, busy = db_timings(conn, spawned_at)
    for w in workers:
        for line in w.problems():
            print(f"    worker {w.process.pid} logged: {line}", file=sys.stderr)
    return Sample(n, elapsed, busy, _delta(cpu0, cpu1), listeners)


def queue_for_drain(dsn: str, n: int) -> None:
    with noop_task(dsn) as task:
        trigger_batches(task, payloads(n))
    expect_queued(dsn, n)
    with common.connect(dsn) as conn:
        track_functions(conn)  # for the workers' sessions, started later


def function_ms(dsn: str) -> dict[str, tuple[int, float]]:
    """Calls and mean ms per call of the workers' functions (their sessions have ended)."""
    with common.connect(dsn) as conn:
        wait_disconnected(conn)
        rows = conn.execute(
            "SELECT funcname, calls, total_time / calls FROM pg_stat_user_functions "
            "WHERE schemaname = 'skiplock' AND calls > 0 AND funcname = ANY (%s)",
            (list(FUNCTIONS),),
        ).fetchall()
    return {name: (int(calls), float(ms)) for name, calls, ms in rows}


def separate(
    prepare: Callable[[str, int], None] | None,
    run: Callable[[str, int, Subscriber | None, Path], Sample],
    size: Callable[[argparse.Namespace], int],
) -> Measure:
    """Without, then with (or the other way round): a fresh database each, the subscriber
    process started after `prepare` and stopped after `run`."""

    def measure(server_dsn: str, args: argparse.Namespace, log_dir: Path, name: str, r: int):
        n = size(args)
        out = {}
        for with_sub in (False, True) if r % 2 == 0 else (True, False):
            with fresh_database(server_dsn, f"{name}_{int(with_sub)}") as dsn:
                if prepare is not None:
                    prepare(dsn, n)
                if not with_sub:
                    sample = run(dsn, n, None, log_dir)
                else:
                    with subscriber(dsn, log_dir) as sub:
                        sample = run(dsn, n, sub, log_dir)
                    sample = dataclasses.replace(sample, subscriber_stats=sub.stats)
                if prepare is queue_for_drain:
                    sample = dataclasses.replace(sample, function_ms=function_ms(dsn))
            out[with_sub] = sample
        return out

    return measure


# two databases side by side, measured in alternating chunks


@contextlib.contextmanager
def database_pair(
    server_dsn: str, name: str, log_dir: Path
) -> Iterator[tuple[dict[bool, str], Subscriber]]:
    """Fresh databases for without (False) and with (True) realtime, a subscriber process
    on the second."""
    with (
        fresh_database(server_dsn, f"{name}_0") as without,
        fresh_database(server_dsn, f"{name}_1") as with_,
        subscriber(with_, log_dir) as sub,
    ):
        yield {False: without, True: with_}, sub


def enqueue_alternating(
    server_dsn: str, args: argparse.Namespace, log_dir: Path, name: str, _r: int
) -> dict[bool, Sample]:
    chunk = min(ENQUEUE_CHUNK, args.runs)
    pairs = max(1, args.runs // chunk)
    seconds = {False: 0.0, True: 0.0}
    cpu: list[float | None] = []
    with database_pair(server_dsn, name, log_dir) as (dsns, sub):
        with noop_task(dsns[False]) as without, noop_task(dsns[True]) as with_:
            tasks = {False: without, True: with_}
            i = 0
            cpu0 = sub.cpu()
            for with_sub in abba(pairs):
                task = tasks[with_sub]
                started = time.perf_counter()
                for _ in range(chunk):
                    task.trigger({"i": i})
                    i += 1
                seconds[with_sub] += time.perf_counter() - started
            cpu.append(_delta(cpu0, sub.cpu()))
        for with_sub, dsn in dsns.items():
            with common.connect(dsn) as conn:
                expect_subscribers(conn, int(with_sub))
            expect_queued(dsn, pairs * chunk)
    stats = sub.stats
    n = pairs * chunk
    return {
        False: Sample(n, seconds[False]),
        True: Sample(n, seconds[True], subscriber_cpu=cpu[0], subscriber_stats=stats),
    }


def drain_alternating(
    server_dsn: str, args: argparse.Namespace, log_dir: Path, name: str, _r: int
) -> dict[bool, Sample]:
    chunk = min(DRAIN_CHUNK, args.drain_runs)
    pairs = max(1, args.drain_runs // chunk)
    seconds = {False: 0.0, True: 0.0}
    listener_cpu: dict[bool, list[float | None]] = {False: [], True: []}
    sub_cpu: list[float | None] = []
    with (
        database_pair(server_dsn, name, log_dir) as (dsns, sub),
        contextlib.ExitStack() as stack,
    ):
        tasks = {v: stack.enter_context(noop_task(dsn)) for v, dsn in dsns.items()}
        conns = {v: stack.enter_context(common.connect(dsn)) for v, dsn in dsns.items()}
        workers: dict[bool, list[common.Worker]] = {}
        for v, dsn in dsns.items():
            workers[v] = spawn_workers(dsn, DRAIN_WORKERS, log_dir)
            stack.callback(common.stop, workers[v])
        done = dict.fromkeys(dsns, DRAIN_WARM_UP)
        for v in dsns:  # warm up, and find the queue's name
            trigger_batches(tasks[v], payloads(DRAIN_WARM_UP))
        for v in dsns:
            wait_completed(conns[v], DRAIN_WARM_UP, workers[v], 120)
        queue = common.scalar(conns[False], "SELECT queue FROM skiplock.runs LIMIT 1")
        listeners = {v: listener_backends(conns[v], workers[v]) for v in dsns}
        for conn in conns.values():
            conn.execute("SELECT skiplock.pause_queue(%s)", (queue,))
        for with_sub in abba(pairs):
            conn, task = conns[with_sub], tasks[with_sub]
            trigger_batches(task, payloads(chunk))  # paused: they stay QUEUED
            cpu0, lcpu0 = sub.cpu(), backends_cpu(listeners[with_sub])
            started = common.timestamp(conn, "SELECT clock_timestamp()")
            conn.execute("SELECT skiplock.resume_queue(%s)", (queue,))
            done[with_sub] += chunk
            wait_completed(conn, done[with_sub], workers[with_sub], max(120.0, chunk / 50))
            sub_cpu.append(_delta(cpu0, sub.cpu()))
            listener_cpu[with_sub].append(_delta(lcpu0, backends_cpu(listeners[with_sub])))
            conn.execute("SELECT skiplock.pause_queue(%s)", (queue,))
            last = common.timestamp(conn, "SELECT max(finished_at) FROM skiplock.attempts")
            seconds[with_sub] += (last - started).total_seconds()
        for v in dsns:
            expect_subscribers(conns[v], int(v))
            stop_workers(workers[v])
            verify_exactly_once(conns[v], done[v])
    n = pairs * chunk
    return {
        False: Sample(n, seconds[False], listener_cpu=_sum(listener_cpu[False])),
        True: Sample(
            n,
            seconds[True],
            subscriber_cpu=_sum(sub_cpu),
            listener_cpu=_sum(listener_cpu[True]),
            subscriber_stats=sub.stats,
        ),
    }


Measure = Callable[[str, argparse.Namespace, Path, str, int], dict[bool, Sample]]

THROUGHPUT: list[tuple[str, Measure]] = [
    (
        "enqueue, trigger() x1",
        separate(None, lambda dsn, n, sub, _logs: enqueue_single(dsn, n, sub), lambda a: a.runs),
    ),
    (f"enqueue, trigger() x1, alternating x{ENQUEUE_CHUNK}", enqueue_alternating),
    (
        f"drain, {DRAIN_WORKERS} workers x{WORKER_CONCURRENCY}",
        separate(queue_for_drain, drain, lambda a: a.drain_runs),
    ),
    (f"drain, warm workers, alternating x{DRAIN_CHUNK}", drain_alternating),
]
