"""Benchmark: what realtime subscriptions cost the engine, and how soon a subscriber sees
a change.

    python bench/realtime.py [--runs 5000] [--drain-runs 20000] [--latency-runs 200]
                             [--repeat 3] [--dsn postgresql://...] [--write-results [PATH]]

Without --dsn (or $SKIPLOCK_BENCH_DSN) a throwaway PostgreSQL cluster is started in a
temporary directory and deleted afterwards, as by bench/drain.py; durability is left at
PostgreSQL's defaults (fsync and synchronous_commit on). Every measurement gets a fresh
database (migrated, with the no-op task deployed at version "bench").

Every function that changes a run calls skiplock.notify_runs(ids), which sends NOTIFY on
skiplock_runs for the ids some subscription watches (skiplock.subscriptions: a run, a
tag, a batch, or all runs), and nothing while nobody watches. So:

* without realtime: no subscription anywhere (skiplock.subscribers is empty; checked at
  the end of every timed window);
* with realtime: one subscriber process (this script with --subscriber) holding
  `app.runs.subscribe_to_runs_with_tag("bench-nobody")` open: a live subscription, so
  every change pays the lookup of who watches it, but none of the benchmark's runs has
  the tag, so nothing is announced (before subscriptions said what they watch, every
  change was, and cost ~20%: see bench/RESULTS.md). It is started on the fresh database
  before the clock starts (timing begins once its row is in skiplock.subscribers), and
  stopped, SIGTERM, after the clock stops; the benchmark then waits for its row to be
  gone.

Measured in one run; every repetition measures every workload both ways. The machine may
be shared, so read the ratios: figures are medians over the repetitions with min and max;
the ratio is with ÷ without of the medians, and the median (min-max) of the per-repetition
ratios is given too. Two ways of pairing:

* separate: a fresh database for each of without and with, one after the other, the
  order alternating between repetitions; the subscriber process is started after the
  untimed preparation and stopped after the clock stops.
* alternating: two fresh databases side by side, the subscriber process on the second;
  the workload runs in chunks, alternately in one and the other (ABBA order), and the
  times of each database's chunks are summed. Changes in the first database announce
  nothing (its skiplock.subscribers is empty), and the subscriber idles meanwhile. Both
  halves of the pair share conditions within a second, which the separate way cannot
  promise on a busy machine.

The workloads:

* enqueue, trigger() x1 (separate): --runs calls of `task.trigger(payload)` in a loop
  from one thread, one transaction each (as bench/drain.py); afterwards exactly that many
  runs must be QUEUED.
* enqueue, trigger() x1, alternating x250: the same, --runs per database, in chunks of
  250 calls.
* drain, 2 workers (separate): --drain-runs no-op runs are queued first (untimed,
  batch_trigger), then 2 worker processes (`engine.cli worker bench.noop_app:app
  --concurrency 50`) are spawned. The rate is from just before the first spawn until a
  50 ms poll sees every run COMPLETED (includes process start-up); `busy` is from the
  first attempt's start to the last attempt's finish by the database's timestamps (the
  steady state: begin_attempts and complete_attempts, the functions the workers call,
  both notify). The bench database has track_functions = 'pl'; the mean ms per call of
  the workers' functions, notify_runs included, is printed per repetition.
* drain, warm workers, alternating x2000: 2 workers on each database, warmed up by 200
  runs each; then the queue is paused, 2000 runs are queued, and the time is taken from
  just before resume_queue() to the chunk's last attempt finish (database clock);
  --drain-runs per database in all.
* After every drain each database's runs must have executed exactly once
  (bench.drain.verify_exactly_once).
* subscriber CPU: seconds of CPU the subscriber process and its database backend used
  during the timed window (from /proc: only when the server runs on this machine), and
  what its feed handled (notification bursts, notifications, ids, time in the handler).
  For drains, the CPU of the workers' own LISTEN backends (which PostgreSQL wakes for
  every notification in their database, whatever the channel) is printed too.

Latency (one fresh database per repetition, no subscriber process): the benchmark process
iterates `app.runs.subscribe_to_runs_with_tag("lat")` on a thread, which records
time.perf_counter() and time.time() when it first sees a run, and when it first sees it
COMPLETED. Then --latency-runs runs with tag "lat" are triggered 20 ms apart:

* created, trigger() returned -> seen: perf_counter right after trigger() returned (its
  transaction has committed) to the thread's first sight of the run. No worker runs.
* created, created_at -> seen: the same runs, from the run's created_at (database clock,
  the trigger transaction's start, so before its commit and WAL flush) to time.time() at
  first sight. Assumes the server shares this machine's clock. Set beside the line
  above it shows how much "transaction start -> commit" adds to a database-clock figure.
* completed, finished_at -> seen: one worker process is started (it first completes the
  runs above), then --latency-runs more runs are triggered 20 ms apart; from the attempt's
  finished_at (database clock, the completing transaction's start: before its commit) to
  time.time() when the thread first sees the run COMPLETED. The commit itself (one WAL
  flush) is inside this figure, so it is an upper bound of commit -> seen.

p50, p95 and p99 (nearest rank) are taken per repetition; the table gives their median
over repetitions, with min and max. Every latency run must complete exactly once too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/realtime.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.drain import (  # noqa: E402
    WORKER_CONCURRENCY,
    BenchError,
    db_timings,
    expect_queued,
    fresh_database,
    noop_task,
    payloads,
    postgres_server,
    spawn_workers,
    stop_workers,
    track_functions,
    trigger_batches,
    verify_exactly_once,
    wait_completed,
    wait_disconnected,
)
from bench.noop_app import define  # noqa: E402
from engine import Engine, RunStatus  # noqa: E402

RESULTS_MD = REPO / "bench" / "RESULTS.md"
SECTION = "## Realtime"
IDLE_TAG = "bench-nobody"  # the subscriber process's tag: no run has it
LATENCY_TAG = "lat"
LATENCY_GAP = 0.02  # seconds between the latency runs' triggers
DRAIN_WORKERS = 2
ENQUEUE_CHUNK = 250  # triggers per chunk, alternating between the two databases
DRAIN_CHUNK = 2000  # runs per chunk, alternating
DRAIN_WARM_UP = 200  # runs drained in each database before the chunks
REGISTER_TIMEOUT = 60.0
STATS_PREFIX = "SUBSCRIBER_STATS "
FUNCTIONS = ("lock_ready", "begin_attempts", "complete_attempts", "notify_runs")
PERCENTILES = (50, 95, 99)

Conn = psycopg.Connection[Any]


# -- the subscriber process ---------------------------------------------------------------------


class _Stop(Exception):
    """Raised in the subscriber's main thread by SIGTERM."""


def subscriber_main(dsn: str) -> int:
    """Hold one tag subscription that matches nothing until SIGTERM, then unsubscribe,
    wait for the registration to be gone, and print what the feed handled."""
    from engine._feed import RunFeed  # counting only: the feed itself is unchanged

    stats = {"bursts": 0, "notifications": 0, "ids": 0, "handler_s": 0.0}
    original = RunFeed._on_notes

    def counting(feed: RunFeed, notes: list[str] | None, conn: Conn) -> None:
        started = time.perf_counter()
        try:
            original(feed, notes, conn)
        finally:
            if notes is not None:
                stats["bursts"] += 1
                stats["notifications"] += len(notes)
                stats["ids"] += sum(n.count(",") + 1 for n in notes if n)
                stats["handler_s"] += time.perf_counter() - started

    RunFeed._on_notes = counting  # type: ignore[method-assign]

    def stop(_signum: int, _frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    unexpected = 0
    with Engine(dsn) as app:
        runs = app.runs.subscribe_to_runs_with_tag(IDLE_TAG)
        try:
            for _ in runs:  # blocks: no run has the tag
                unexpected += 1
        except _Stop:
            pass
        finally:
            runs.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # the listener thread unregisters (skiplock.unsubscribe()) on its own: wait for it
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while subscribers(conn) and time.monotonic() < deadline:
            time.sleep(0.02)
    usage = os.times()
    stats["cpu_s"] = usage.user + usage.system
    stats["unexpected_runs"] = unexpected
    print(STATS_PREFIX + json.dumps(stats), flush=True)
    return 0


def subscribers(conn: Conn) -> int:
    return int(common.scalar(conn, "SELECT count(*) FROM skiplock.subscribers"))


def expect_subscribers(conn: Conn, n: int) -> None:
    found = subscribers(conn)
    if found != n:
        raise BenchError(f"expected {n} rows in skiplock.subscribers, found {found}")


def wait_unsubscribed(conn: Conn, timeout: float = 30.0) -> None:
    """Wait until skiplock.subscribers is empty; after a second, have tick() remove the
    rows of sessions that are gone."""
    started = time.monotonic()
    while subscribers(conn):
        waited = time.monotonic() - started
        if waited > timeout:
            raise BenchError("skiplock.subscribers did not empty after the subscriber stopped")
        if waited > 1:
            conn.execute("SELECT skiplock.tick()")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of process `pid` so far, from /proc (None if not readable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Subscriber:
    """The subscriber process and its LISTEN session's backend."""

    worker: common.Worker
    backend_pid: int
    stats: dict[str, float] = field(default_factory=dict)

    def cpu(self) -> float | None:
        """CPU seconds so far of the process and its backend (None if either is unknown)."""
        mine, backend = cpu_seconds(self.worker.process.pid), cpu_seconds(self.backend_pid)
        return None if mine is None or backend is None else mine + backend


@contextlib.contextmanager
def subscriber(dsn: str, log_dir: Path) -> Iterator[Subscriber]:
    """Run a subscriber process on `dsn` until the block ends; yield once it is registered.
    Afterwards wait until skiplock.subscribers is empty again."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--subscriber"]
    [worker] = common.spawn(cmd, dsn, 1, log_dir, {})
    sub: Subscriber | None = None
    try:
        with common.connect(dsn) as conn:
            common.wait_until(
                lambda: subscribers(conn) > 0, [worker], REGISTER_TIMEOUT, "the subscriber"
            )
            sub = Subscriber(
                worker, int(common.scalar(conn, "SELECT pid FROM skiplock.subscribers"))
            )
        yield sub
    finally:
        common.stop([worker])
        with common.connect(dsn) as conn:
            wait_unsubscribed(conn)
    if worker.process.returncode != 0:
        raise BenchError(
            f"subscriber exited with {worker.process.returncode}:\n{worker.log_tail()}"
        )
    for line in worker.log_path.read_text(errors="replace").splitlines():
        if line.startswith(STATS_PREFIX):
            sub.stats = json.loads(line[len(STATS_PREFIX) :])
    if sub.stats.get("unexpected_runs"):
        raise BenchError(f"the subscriber saw runs with tag {IDLE_TAG}: {sub.stats}")


# -- throughput ---------------------------------------------------------------------------------


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
    """Backend pids of the workers' LISTEN connections (engine/_listener.py); waits for
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


# -- latency ------------------------------------------------------------------------------------


class Watcher:
    """Iterates a tag subscription on a thread, noting when each run is first seen and
    first seen COMPLETED: (perf_counter, time.time()) each."""

    def __init__(self, app: Engine, tag: str) -> None:
        self.first: dict[str, tuple[float, float]] = {}
        self.completed: dict[str, tuple[float, float]] = {}
        self.error: BaseException | None = None
        self._stop = False
        self._it = app.runs.subscribe_to_runs_with_tag(tag)
        self._thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for run in self._it:
                seen = (time.perf_counter(), time.time())
                if self._stop:
                    break
                self.first.setdefault(run.id, seen)
                if run.status is RunStatus.COMPLETED:
                    self.completed.setdefault(run.id, seen)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            self._it.close()

    def stop(self, wake: Callable[[], None]) -> None:
        """End the subscription: `wake` must cause a change the subscription sees."""
        self._stop = True
        wake()
        self._thread.join(30)
        if self._thread.is_alive():
            raise BenchError("the latency subscription did not stop")
        if self.error is not None:
            raise BenchError(f"the latency subscription failed: {self.error!r}")


def _wait(
    done: Callable[[], bool], timeout: float, what: str, workers: list[common.Worker]
) -> None:
    common.wait_until(done, workers, timeout, what, interval=0.02)


@dataclass(frozen=True)
class LatencySample:
    """Milliseconds, one list per figure (see LATENCY_ROWS)."""

    values: dict[str, list[float]]


LATENCY_ROWS = (
    "created: trigger() returned -> seen",
    "created: created_at (db clock) -> seen",
    "completed: finished_at (db clock) -> seen",
)


def latency(dsn: str, n: int, log_dir: Path) -> LatencySample:
    workers: list[common.Worker] = []
    try:
        with Engine(dsn) as app, common.connect(dsn) as conn:
            task = define(app)
            with app.db.pool.connection() as c:
                c.execute("SELECT 1")

            def trigger_spaced() -> dict[str, float]:
                """n runs with the tag, LATENCY_GAP apart: id -> perf_counter once
                trigger() returned (committed)."""
                committed = {}
                for i in range(n):
                    handle = task.trigger({"i": i}, tags=[LATENCY_TAG])
                    committed[handle.id] = time.perf_counter()
                    time.sleep(LATENCY_GAP)
                return committed

            watcher = Watcher(app, LATENCY_TAG)
            try:
                _wait(lambda: subscribers(conn) > 0, REGISTER_TIMEOUT, "the subscription", [])
                # created, no worker
                created = trigger_spaced()
                _wait(lambda: all(i in watcher.first for i in created), 60, "runs seen", [])
                by_perf = [(watcher.first[i][0] - t) * 1000 for i, t in created.items()]
                rows = conn.execute(
                    "SELECT id, created_at FROM skiplock.runs WHERE id = ANY (%s)",
                    (list(created),),
                ).fetchall()
                by_db = [(watcher.first[i][1] - at.timestamp()) * 1000 for i, at in rows]

                # completed, one worker (warmed up by the runs above)
                workers.extend(spawn_workers(dsn, 1, log_dir))
                _wait(lambda: all(i in watcher.completed for i in created), 120, "warm-up", workers)
                finished = trigger_spaced()
                _wait(lambda: all(i in watcher.completed for i in finished), 120, "done", workers)
                rows = conn.execute(
                    "SELECT run_id, finished_at FROM skiplock.attempts "
                    "WHERE run_id = ANY (%s) AND status = 'COMPLETED'",
                    (list(finished),),
                ).fetchall()
                if len(rows) != n:
                    raise BenchError(f"latency: {len(rows)} of {n} runs have a completed attempt")
                by_finish = [(watcher.completed[i][1] - at.timestamp()) * 1000 for i, at in rows]
            finally:
                watcher.stop(lambda: task.trigger({"i": -1}, tags=[LATENCY_TAG]))
            # the stopping run too: every run must complete, exactly once
            wait_completed(conn, 2 * n + 1, workers, 120)
            stop_workers(workers)
            verify_exactly_once(conn, 2 * n + 1)
            wait_unsubscribed(conn)
    finally:
        common.stop(workers)
    return LatencySample(dict(zip(LATENCY_ROWS, (by_perf, by_db, by_finish), strict=True)))


def percentiles(values: list[float]) -> dict[int, float]:
    return {p: common.percentile(values, p) for p in PERCENTILES}


# -- running and reporting ---------------------------------------------------------------------


@dataclass
class Results:
    throughput: dict[str, dict[bool, list[Sample]]] = field(default_factory=dict)
    latency: list[LatencySample] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # every repetition, as printed

    def note(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


def describe(sample: Sample) -> str:
    text = f"{sample.rate:7.0f} runs/s ({sample.seconds:.2f}s)"
    if sample.busy_rate is not None:
        text += f", busy {sample.busy_rate:.0f} runs/s"
    if sample.subscriber_cpu is not None:
        text += f"; subscriber CPU {sample.subscriber_cpu:.2f}s"
    if sample.listener_cpu is not None:
        text += f"; workers' LISTEN backends CPU {sample.listener_cpu:.2f}s"
    if sample.subscriber_stats:
        s = sample.subscriber_stats
        text += (
            f"; feed: {s['bursts']:.0f} bursts, {s['notifications']:.0f} notifications, "
            f"{s['ids']:.0f} ids, {s['handler_s']:.2f}s in handler"
        )
    if sample.function_ms:
        text += "; ms/call: " + ", ".join(
            f"{k} {ms:.3f} ({calls})" for k, (calls, ms) in sorted(sample.function_ms.items())
        )
    return text


def run_all(server_dsn: str, args: argparse.Namespace, log_dir: Path) -> Results:
    res = Results()
    width = max(len(name) for name, _ in THROUGHPUT)
    for r in range(args.repeat):
        for k, (name, measure) in enumerate(THROUGHPUT):
            samples = measure(server_dsn, args, log_dir, f"skiplock_rt_{os.getpid()}_{r}_{k}", r)
            for with_sub, sample in samples.items():
                res.throughput.setdefault(name, {False: [], True: []})[with_sub].append(sample)
                label = "with" if with_sub else "without"
                res.note(f"#{r + 1} {name:<{width}} {label:<7} {describe(sample)}")
        with fresh_database(server_dsn, f"skiplock_rt_{os.getpid()}_{r}_lat") as dsn:
            lat = latency(dsn, args.latency_runs, log_dir)
        res.latency.append(lat)
        for row, values in lat.values.items():
            figures = ", ".join(f"p{p} {v:.1f}" for p, v in percentiles(values).items())
            res.note(f"#{r + 1} latency {row:<42} {figures} ms")
    return res


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    med = format(statistics.median(values), fmt)
    return med if len(values) == 1 else f"{med} ({min(values):{fmt}}-{max(values):{fmt}})"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    sep = (
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def throughput_table(res: Results) -> str:
    header = [
        "workload (runs/s)",
        "without realtime",
        "with realtime",
        "ratio with/without",
        "per-repetition ratios",
        "subscriber CPU s",
    ]
    rows = []
    for name, by in res.throughput.items():
        pairs = list(zip(by[False], by[True], strict=True))
        figures: list[tuple[str, Callable[[Sample], float | None]]] = [
            ("wall", lambda s: s.rate),
            ("busy", lambda s: s.busy_rate),
        ]
        for label, get in figures:
            without = [v for s in by[False] if (v := get(s)) is not None]
            with_ = [v for s in by[True] if (v := get(s)) is not None]
            if not without or not with_:
                continue
            paired = [b / a for s0, s1 in pairs if (a := get(s0)) is not None and (b := get(s1))]
            cpu = [c for s in by[True] if (c := s.subscriber_cpu) is not None]
            rows.append(
                [
                    name if label == "wall" else f"{name}, busy",
                    _cell(without, ".0f"),
                    _cell(with_, ".0f"),
                    f"{statistics.median(with_) / statistics.median(without):.3f}",
                    _cell(paired, ".3f"),
                    _cell(cpu, ".2f") if label == "wall" else "",
                ]
            )
    return _markdown_table(header, rows)


def latency_table(res: Results) -> str:
    header = ["latency (ms)", *(f"p{p}" for p in PERCENTILES)]
    rows = []
    for row in LATENCY_ROWS:
        per_rep = [percentiles(lat.values[row]) for lat in res.latency]
        rows.append([row, *(_cell([f[p] for f in per_rep], ".1f") for p in PERCENTILES)])
    return _markdown_table(header, rows)


def facts_lines(args: argparse.Namespace, pg: dict[str, str], machine: dict[str, str]) -> list[str]:
    return [
        f"Machine: {machine['cpus']} cores ({machine['cpu']}), {machine['memory']} RAM, "
        f"{machine['os']}; Python {machine['python']}; load average at the end "
        f"(1, 5, 15 min): {machine['load']}",
        f"PostgreSQL {pg['server_version']}: "
        + ", ".join(f"{k}={v}" for k, v in pg.items() if k != "server_version"),
        f"Sizes: enqueue {args.runs} runs, drain {args.drain_runs} runs "
        f"({DRAIN_WORKERS} workers x{WORKER_CONCURRENCY}), latency {args.latency_runs} + "
        f"{args.latency_runs} runs {LATENCY_GAP * 1000:.0f} ms apart; {args.repeat} repetitions "
        "(median, min-max)",
    ]


def section(
    res: Results,
    args: argparse.Namespace,
    pg: dict[str, str],
    machine: dict[str, str],
    command: str,
    started: str,
    commit: str,
) -> str:
    ended = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"{SECTION} (bench/realtime.py)",
            "",
            f"Generated by `{command}` at git {commit}, from {started} to {ended}; one "
            "throwaway cluster (unless --dsn), a fresh database per measurement. "
            '"With realtime": one subscriber process holding a tag subscription that '
            "matches no benchmark run: every run change pays the lookup of who watches it, "
            'but nothing is announced; "without": no subscription anywhere (notify_runs '
            "returns at its first check). Rows without "
            '"alternating": a fresh database each, one after the other, the order '
            'alternating between repetitions; "alternating" rows: two databases side by '
            "side, the workload in chunks alternately in each (ABBA), so that both share "
            'conditions within a second. "busy": first attempt start to last finish '
            "(database timestamps); the row above it includes worker start-up. "
            "Subscriber CPU: the subscriber process plus its backend during the timed "
            "window. See the module docstring for exactly what is timed.",
            "",
            *(f"- {line}" for line in facts_lines(args, pg, machine)),
            "",
            throughput_table(res),
            "",
            "Latency from a change to the subscriber seeing it (a subscription in the "
            "benchmark process, on its own thread). The second row uses the run's "
            "created_at, stamped at the start of the trigger transaction, so it exceeds the "
            "first by the transaction's own duration (its commit's WAL flush included); "
            "the third is the same kind of figure for completion (attempts.finished_at, "
            "stamped at the start of the completing transaction): an upper bound.",
            "",
            latency_table(res),
            "",
            "<details><summary>Every repetition</summary>",
            "",
            "```",
            *res.lines,
            "```",
            "",
            "</details>",
            "",
        ]
    )


def write_section(path: Path, text: str) -> None:
    """Replace the "## Realtime" section of `path` (up to the next "## " heading), or put
    it before "## Every repetition", or at the end; keep everything else."""
    lines = path.read_text().splitlines() if path.exists() else []
    new = text.rstrip("\n").splitlines()
    start = next((i for i, s in enumerate(lines) if s.startswith(SECTION)), None)
    if start is not None:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = [*new, ""] if end < len(lines) else new
    else:
        at = next((i for i, s in enumerate(lines) if s.startswith("## Every repetition")), None)
        if at is None:
            lines += ["", *new] if lines else new
        else:
            lines[at:at] = [*new, ""]
    path.write_text("\n".join(lines) + "\n")


def git_commit() -> str:
    return (
        subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "?"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5000, help="enqueue runs (default 5000)")
    p.add_argument("--drain-runs", type=int, default=20000, help="runs per drain (default 20000)")
    p.add_argument(
        "--latency-runs", type=int, default=200, help="runs per latency phase (default 200)"
    )
    p.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    p.add_argument(
        "--dsn",
        default=os.environ.get("SKIPLOCK_BENCH_DSN"),
        help="server to use, needs CREATEDB (default $SKIPLOCK_BENCH_DSN, else a throwaway one)",
    )
    p.add_argument(
        "--write-results",
        nargs="?",
        const=str(RESULTS_MD),
        default=None,
        metavar="PATH",
        help=f'replace or add the "{SECTION}" section of PATH (default {RESULTS_MD})',
    )
    p.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.runs, args.drain_runs, args.latency_runs, args.repeat) < 1:
        p.error("sizes and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subscriber:  # the subscriber process: the DSN comes from $BENCH_DSN
        return subscriber_main(os.environ.get("BENCH_DSN") or args.dsn)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = git_commit()
    clock = time.perf_counter()
    with (
        postgres_server(args.dsn) as server_dsn,
        tempfile.TemporaryDirectory(prefix="skiplock-bench-logs-") as log_dir,
    ):
        pg = common.server_facts(server_dsn)
        try:
            res = run_all(server_dsn, args, Path(log_dir))
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    machine = common.machine_facts()
    print()
    print(throughput_table(res))
    print()
    print(latency_table(res))
    print()
    for line in facts_lines(args, pg, machine):
        print(line)
    print(f"took {time.perf_counter() - clock:.0f}s")
    if args.write_results:
        command = "python bench/realtime.py " + " ".join(sys.argv[1:] if argv is None else argv)
        text = section(res, args, pg, machine, command.strip(), started, commit)
        write_section(Path(args.write_results), text)
        print(f"wrote the {SECTION!r} section of {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
