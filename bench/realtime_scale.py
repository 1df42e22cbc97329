"""Benchmark: realtime at scale. Many subscriptions in one process, and many subscriber
processes: what each costs the drain, the database and the subscribers, and how soon a
subscriber sees a run complete.

    python bench/realtime_scale.py [--subs 10000] [--procs 100] [--proc-runs 5000]
                                   [--repeat 5] [--quick] [--dsn ...] [--write-results [PATH]]

Without --dsn (or $SKIPLOCK_BENCH_DSN) a throwaway PostgreSQL cluster is started in a
temporary directory and deleted afterwards (bench/drain.py). Two fresh databases side by
side, each migrated, with the no-op task deployed, track_functions = 'pl', and one warm
worker (`engine.cli worker bench.noop_app:app --concurrency 50`). The second database
has the subscribers, the first none (its skiplock.subscribers is empty, checked). The
workload is drained in chunks, alternately in one and the other (ABBA: without/with,
with/without, ...): each chunk's runs are queued on a paused queue (untimed), then the
queue is resumed and the time taken from just before the resume to the chunk's last
attempt finish (database clock). Every run must complete exactly once.

(a) one process, many subscriptions (`holder` in bench/realtime_scale_procs.py): for each
with-chunk of --subs runs, tagged in 10 groups, a fresh process subscribes with
`subscribe_to_run_async` to every run of the chunk, and with
`subscribe_to_runs_with_tag_async` to each of the 10 tags (each matches a tenth of the
runs): --subs + 10 subscriptions on one event loop and one LISTEN connection. Once every
subscription has its first snapshot (QUEUED) the queue is resumed; the process ends when
every run subscription has ended (final status) and every tag subscription saw all its
runs complete. Its RSS before subscribing and with every subscription held gives the
memory per subscription.

(b) many processes (`tagger`): --procs processes, each subscribed to a tag of its own
with `subscribe_to_runs_with_tag_async`, started once (untimed) and held through every
chunk; each chunk of --proc-runs runs is spread evenly over the processes' tags. Their
connections are counted in pg_stat_activity: each must hold exactly one (its LISTEN).

Measured per chunk, with and without:
* drain rate (runs / seconds above); the ratio with / without is taken per pair, the
  median (min-max) over pairs given;
* latency: the run's finished_at (database clock: the completing transaction's start, so
  before its commit) to time.time() when the subscriber first sees it COMPLETED; the
  server shares this machine's clock. An upper bound of commit -> seen. p50/p99 pooled
  over every with-chunk; for (a) through the run subscriptions and the tag ones apart;
* subscriber CPU per delivered update (the processes' own CPU from os.times() / from
  /proc, over the chunk) and the CPU of their LISTEN backends;
* database: CPU of every other backend of the database (the worker's: its LISTEN
  backend is woken by every notification in the database, whatever the channel), and
  skiplock.notify_runs and skiplock.complete_attempts from pg_stat_user_functions:
  calls and ms per call (sampled 1.2 s after the chunk, once the worker's session has
  flushed its counters).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/realtime_scale.py` puts bench/ on the path
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.common import BenchError, Conn  # noqa: E402
from bench.drain import (  # noqa: E402
    fresh_database,
    noop_task,
    postgres_server,
    spawn_workers,
    stop_workers,
    track_functions,
    verify_exactly_once,
    wait_completed,
)
from bench.realtime_scale_procs import READY_PREFIX, STATS_PREFIX  # noqa: E402
from bench.realtime_subscriber import cpu_seconds, wait_unsubscribed  # noqa: E402

SECTION = "## Realtime at scale (bench/realtime_scale.py)"
HOLDER_TAGS = 10
WARM_UP = 200
FUNCTIONS = ("notify_runs", "complete_attempts")
PROCS = [sys.executable, "-m", "bench.realtime_scale_procs"]
SETTLE = 2.0  # seconds between a holder's READY and the drain
STAT_PAUSE = 1.2  # seconds for the worker's session to flush its function counters
# A throwaway cluster's max_connections: initdb's default of 100 is short of (b)'s
# subscribers (a LISTEN connection each) plus, per database, a worker's pool and LISTEN,
# the bench's own connections and tick()'s (about 30 in all).
CONNECTION_SPARE = 40


@dataclass
class Chunk:
    runs: int
    seconds: float
    subscriber_cpu: float | None = None  # the subscriber processes' CPU seconds
    subscriber_backend_cpu: float | None = None  # their LISTEN backends'
    other_backend_cpu: float | None = None  # every other backend of the database
    functions: dict[str, tuple[int, float]] = field(default_factory=dict)  # calls, total ms

    @property
    def rate(self) -> float:
        return self.runs / self.seconds


@dataclass
class Scenario:
    name: str
    chunks: dict[bool, list[Chunk]] = field(default_factory=lambda: {False: [], True: []})
    latency: dict[str, list[float]] = field(default_factory=dict)  # view -> ms
    updates: int = 0  # delivered to the subscriptions during with-chunks
    facts: dict[str, Any] = field(default_factory=dict)


# -- the databases -----------------------------------------------------------------------


@dataclass
class Db:
    dsn: str
    conn: Conn
    task: Any
    workers: list[common.Worker]
    queue: str = ""
    done: int = 0


@contextlib.contextmanager
def database_pair(server_dsn: str, name: str, log_dir: Path) -> Iterator[dict[bool, Db]]:
    with contextlib.ExitStack() as stack:
        dbs = {}
        for v in (False, True):
            dsn = stack.enter_context(fresh_database(server_dsn, f"{name}_{int(v)}"))
            conn = stack.enter_context(common.connect(dsn))
            track_functions(conn)
            task = stack.enter_context(noop_task(dsn))
            workers = spawn_workers(dsn, 1, log_dir)
            stack.callback(common.stop, workers)
            dbs[v] = Db(dsn, conn, task, workers)
        for db in dbs.values():
            db.task.batch_trigger([{"i": i} for i in range(WARM_UP)])
            db.done = WARM_UP
            wait_completed(db.conn, WARM_UP, db.workers, 120)
            db.queue = str(common.scalar(db.conn, "SELECT queue FROM skiplock.runs LIMIT 1"))
            db.conn.execute("SELECT skiplock.pause_queue(%s)", (db.queue,))
        yield dbs
        for db in dbs.values():
            stop_workers(db.workers)
            verify_exactly_once(db.conn, db.done)


def queue_runs(db: Db, tags: list[str], per_tag: int) -> list[str]:
    """Queue `per_tag` runs with each tag (paused: they stay QUEUED); their ids."""
    ids: list[str] = []
    for tag in tags:
        for start in range(0, per_tag, 1000):
            size = min(1000, per_tag - start)
            batch = db.task.batch_trigger([{"i": i} for i in range(size)], tags=[tag])
            ids += [r.id for r in batch.runs]
    return ids


def function_totals(conn: Conn) -> dict[str, tuple[int, float]]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT funcname, calls, total_time FROM pg_stat_user_functions "
        "WHERE schemaname = 'skiplock' AND funcname = ANY (%s)",
        (list(FUNCTIONS),),
    ).fetchall()
    return {name: (int(calls), float(ms)) for name, calls, ms in rows}


def backend_pids(conn: Conn) -> dict[int, str]:
    rows = conn.execute(
        "SELECT pid, application_name FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return {int(pid): str(app) for pid, app in rows}


def cpu_sum(pids: list[int]) -> float | None:
    values = [cpu_seconds(p) for p in pids]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def drain_chunk(db: Db, n: int, subscriber_pids: list[int], sub_backends: list[int]) -> Chunk:
    """Resume the queue, wait for the `n` queued runs, pause again."""
    others = [p for p in backend_pids(db.conn) if p not in sub_backends]
    f0 = function_totals(db.conn)
    c0 = (cpu_sum(subscriber_pids), cpu_sum(sub_backends), cpu_sum(others))
    started = common.timestamp(db.conn, "SELECT clock_timestamp()")
    db.conn.execute("SELECT skiplock.resume_queue(%s)", (db.queue,))
    db.done += n
    wait_completed(db.conn, db.done, db.workers, max(120.0, n / 50))
    c1 = (cpu_sum(subscriber_pids), cpu_sum(sub_backends), cpu_sum(others))
    db.conn.execute("SELECT skiplock.pause_queue(%s)", (db.queue,))
    last = common.timestamp(db.conn, "SELECT max(finished_at) FROM skiplock.attempts")
    time.sleep(STAT_PAUSE)
    f1 = function_totals(db.conn)
    deltas = [None if a is None or b is None else b - a for a, b in zip(c0, c1, strict=True)]
    functions = {
        k: (f1[k][0] - f0.get(k, (0, 0.0))[0], f1[k][1] - f0.get(k, (0, 0.0))[1]) for k in f1
    }
    return Chunk(n, (last - started).total_seconds(), *deltas, functions=functions)


def abba(pairs: int) -> list[bool]:
    return [v for k in range(pairs) for v in ((False, True) if k % 2 == 0 else (True, False))]


def read_line(worker: common.Worker, prefix: str, timeout: float) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def ready() -> bool:
        for line in worker.log_path.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                found.update(json.loads(line[len(prefix) :]))
                return True
        return False

    if not ready():
        common.wait_until(
            ready,
            [worker],
            timeout,
            f"{prefix.strip()} from pid {worker.process.pid}",
            interval=0.05,
        )
    return found


def finished_at(conn: Conn, ids: list[str]) -> dict[str, float]:
    rows = conn.execute(
        "SELECT id, finished_at FROM skiplock.runs WHERE id = ANY (%s)", (ids,)
    ).fetchall()
    return {i: at.timestamp() for i, at in rows}


def latencies(seen: dict[str, float], finished: dict[str, float]) -> list[float]:
    missing = set(finished) - set(seen)
    if missing:
        raise BenchError(f"{len(missing)} of {len(finished)} completed runs never seen COMPLETED")
    return [(seen[i] - at) * 1000 for i, at in finished.items()]


# -- (a) one process, many subscriptions ----------------------------------------------------


def one_process(server_dsn: str, args: argparse.Namespace, log_dir: Path) -> Scenario:
    sc = Scenario(f"(a) 1 process, {args.subs:,} run + {HOLDER_TAGS} tag subscriptions")
    per_tag = args.subs // HOLDER_TAGS
    rss: list[float] = []
    with database_pair(server_dsn, f"skiplock_rts_{os.getpid()}_a", log_dir) as dbs:
        for k, with_subs in enumerate(abba(args.repeat)):
            db = dbs[with_subs]
            tags = [f"g{k}-{t}" for t in range(HOLDER_TAGS)]  # new tags: only this chunk's runs
            ids = queue_runs(db, tags, per_tag)
            if not with_subs:
                sc.chunks[False].append(drain_chunk(db, len(ids), [], []))
                continue
            ids_file = log_dir / "holder-ids.txt"
            ids_file.write_text("\n".join(ids))
            cmd = [*PROCS, "holder", str(ids_file), str(per_tag), *tags]
            [holder] = common.spawn(cmd, db.dsn, 1, log_dir, {})
            try:
                read_line(holder, READY_PREFIX, 600)
                time.sleep(SETTLE)  # the feed's re-read of every subscription, once settled
                listener = f"skiplock-listener:{holder.process.pid}"
                backends = [p for p, a in backend_pids(db.conn).items() if a == listener]
                chunk = drain_chunk(db, len(ids), [holder.process.pid], backends)
                stats = read_line(holder, STATS_PREFIX, 300)
                holder.process.wait(60)
            finally:
                common.stop([holder])
            if holder.process.returncode != 0:
                raise BenchError(f"holder exited with {holder.process.returncode}")
            chunk.subscriber_cpu = stats["cpu_s"]  # its own count, from READY to the end
            sc.chunks[True].append(chunk)
            sc.updates += stats["updates"]
            done = finished_at(db.conn, ids)
            for view in ("run", "tag"):
                sc.latency.setdefault(f"{view} subscriptions", []).extend(
                    latencies(stats[f"{view}_completed"], done)
                )
            rss.append((stats["rss1_kib"] - stats["rss0_kib"]) / 1024)
            sc.facts.setdefault("subscribe_s", []).append(stats["subscribe_s"])
            sc.facts.setdefault("rss0_mib", []).append(stats["rss0_kib"] / 1024)
            wait_unsubscribed(dbs[True].conn)
    sc.facts["rss_mib"] = rss
    return sc


# -- (b) many processes ------------------------------------------------------------------


def many_processes(server_dsn: str, args: argparse.Namespace, log_dir: Path) -> Scenario:
    sc = Scenario(f"(b) {args.procs} processes, a tag subscription each")
    tags = [f"p{k}" for k in range(args.procs)]
    per_tag = max(1, args.proc_runs // args.procs)
    with database_pair(server_dsn, f"skiplock_rts_{os.getpid()}_b", log_dir) as dbs:
        db = dbs[True]
        procs: list[common.Worker] = []
        try:
            check_capacity(db.conn, args.procs)
            sub_dsn = make_conninfo(db.dsn, application_name="bench-sub")
            started = time.perf_counter()
            for tag in tags:
                procs += common.spawn([*PROCS, "tagger", tag], sub_dsn, 1, log_dir, {})
            for p in procs:
                read_line(p, READY_PREFIX, 600)
            sc.facts["start_s"] = round(time.perf_counter() - started, 1)
            try:
                common.wait_until(
                    lambda: (
                        int(common.scalar(db.conn, "SELECT count(*) FROM skiplock.subscribers"))
                        == len(procs)
                    ),
                    procs,
                    600,
                    "every subscriber registered",
                    interval=0.2,
                )
            except BenchError as exc:
                raise BenchError(f"{exc}{refused(procs)}") from None
            sc.facts["registered_s"] = round(time.perf_counter() - started, 1)
            sc.facts.update(connections(db.conn, procs))
            backends = [
                p
                for p, a in backend_pids(db.conn).items()
                if a.startswith("skiplock-listener:")
                and int(a.split(":")[1]) in {w.process.pid for w in procs}
            ]
            pids = [w.process.pid for w in procs]
            all_ids: list[str] = []
            for with_subs in abba(args.repeat):
                ids = queue_runs(dbs[with_subs], tags, per_tag)
                chunk = drain_chunk(dbs[with_subs], len(ids), pids, backends if with_subs else [])
                sc.chunks[with_subs].append(chunk)
                if with_subs:
                    all_ids += ids
            time.sleep(2)  # for the last completions to reach the processes
        finally:
            common.stop(procs)
        seen: dict[str, float] = {}
        for p in procs:
            stats = read_line(p, STATS_PREFIX, 60)
            sc.updates += stats["updates"]
            seen.update(stats["completed"])
            sc.facts.setdefault("rss_mib", []).append(stats["rss_kib"] / 1024)
        sc.latency["tag subscriptions"] = latencies(seen, finished_at(db.conn, all_ids))
        wait_unsubscribed(db.conn)
    return sc


def check_capacity(conn: Conn, procs: int) -> None:
    """Fail now unless the server has a free connection for each subscriber process (and
    some to spare): one refused LISTEN connection is retried with backoff for ever, and
    its process never registers."""
    row = conn.execute(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
    ).fetchone()
    free = int(row[0]) if row else 0
    if free < procs + CONNECTION_SPARE:
        raise BenchError(
            f"{free} connections free on the server, {procs} subscriber processes need "
            f"{procs + CONNECTION_SPARE}: raise max_connections (without --dsn it is set)"
        )


def refused(procs: list[common.Worker]) -> str:
    """What the subscribers' logs say of refused connections, for a failure message."""
    lost = [w for w in procs if "LISTEN connection lost" in w.log_path.read_text(errors="replace")]
    if not lost:
        return ""
    return f"; {len(lost)} processes could not connect, e.g.:\n{lost[0].log_tail()}"


def connections(conn: Conn, procs: list[common.Worker]) -> dict[str, Any]:
    """Connections the subscriber processes hold: their LISTEN sessions, and any other
    (their DSN carries application_name=bench-sub)."""
    pids = {w.process.pid for w in procs}
    rows = backend_pids(conn).values()
    listen = [a for a in rows if a.startswith("skiplock-listener:") and int(a[18:]) in pids]
    per_proc = {p: listen.count(f"skiplock-listener:{p}") for p in pids}
    other = sum(1 for a in rows if a == "bench-sub")
    if set(per_proc.values()) != {1} or other:
        raise BenchError(f"expected 1 connection a subscriber: {per_proc}, other {other}")
    return {"listen_connections": len(listen), "other_connections": other}


# -- report ---------------------------------------------------------------------------------


def _med(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    s = common.Summary.of(values)
    return f"{fmt.format(s.median)} ({fmt.format(s.low)}-{fmt.format(s.high)})"


def _per_1k(chunks: list[Chunk], get: Callable[[Chunk], float | None]) -> list[float]:
    return [v * 1000 / c.runs for c in chunks if (v := get(c)) is not None]


def _fn(c: Chunk, name: str) -> tuple[int, float]:
    return c.functions.get(name, (0, 0.0))


def table(sc: Scenario) -> str:
    without, with_ = sc.chunks[False], sc.chunks[True]
    ratios = [w.rate / o.rate for o, w in zip(without, with_, strict=True)]
    lines = [
        f"**{sc.name}**",
        "",
        "| | without subscribers | with | with ÷ without |",
        "|---|---|---|---|",
        f"| drain, runs/s | {_med([c.rate for c in without], '{:,.0f}')} | "
        f"{_med([c.rate for c in with_], '{:,.0f}')} | {_med(ratios)} |",
    ]

    def row(label: str, get: Callable[[Chunk], float | None], fmt: str = "{:.1f}") -> None:
        a, b = _per_1k(without, get), _per_1k(with_, get)
        ratio = "-"
        if a and b and statistics.median(a) > 0:
            ratio = f"{statistics.median(b) / statistics.median(a):.2f}"
        lines.append(f"| {label} | {_med(a, fmt)} | {_med(b, fmt)} | {ratio} |")

    row(
        "CPU of the database's other backends (worker's), ms per 1,000 runs",
        lambda c: None if c.other_backend_cpu is None else c.other_backend_cpu * 1000,
    )
    row("notify_runs, ms per 1,000 runs", lambda c: _fn(c, "notify_runs")[1], "{:.2f}")
    row("complete_attempts, ms per 1,000 runs", lambda c: _fn(c, "complete_attempts")[1])
    lines.append("")
    calls = [_fn(c, "notify_runs") for c in with_]
    per_call = [ms / n for n, ms in calls if n]
    sub_cpu = sum(c.subscriber_cpu or 0.0 for c in with_)
    back_cpu = sum(c.subscriber_backend_cpu or 0.0 for c in with_)
    runs = sum(c.runs for c in with_)
    lines += [
        f"- notify_runs with subscribers: {_med(per_call, '{:.3f}')} ms a call, "
        f"{statistics.median([n for n, _ in calls]) if calls else 0:,.0f} calls a chunk",
        f"- updates delivered: {sc.updates:,} for {runs:,} runs "
        f"({sc.updates / max(runs, 1):.1f} a run); subscriber CPU "
        f"{sub_cpu * 1e6 / max(sc.updates, 1):.0f} µs per update "
        f"(its LISTEN backends: {back_cpu * 1e6 / max(sc.updates, 1):.0f} µs more)",
    ]
    for view, values in sc.latency.items():
        pct = {p: common.percentile(values, p) for p in (50, 90, 99)}
        lines.append(
            f"- latency finished_at -> seen COMPLETED, {view}: p50 {pct[50]:.1f} ms, "
            f"p90 {pct[90]:.1f} ms, p99 {pct[99]:.1f} ms, max {max(values):.1f} ms "
            f"({len(values):,} runs)"
        )
    for key, value in sc.facts.items():
        shown = _med(value) if isinstance(value, list) else value
        lines.append(f"- {key.replace('_', ' ')}: {shown}")
    return "\n".join(lines)


def git_commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subs", type=int, default=10000, help="(a) run subscriptions (10000)")
    p.add_argument("--procs", type=int, default=100, help="(b) subscriber processes (100)")
    p.add_argument("--proc-runs", type=int, default=5000, help="(b) runs per chunk (5000)")
    p.add_argument("--repeat", type=int, default=5, help="alternated pairs (default 5)")
    p.add_argument("--quick", action="store_true", help="2,000 subs, 20 processes, 2 pairs")
    p.add_argument("--only", choices=("a", "b"), help="one scenario only")
    common.add_dsn(p)
    common.add_write_results(p, f'replace or add the "{SECTION}" section of PATH')
    args = p.parse_args(argv)
    if args.quick:
        args.subs, args.procs, args.proc_runs, args.repeat = 2000, 20, 2000, 2
    if args.subs < HOLDER_TAGS or args.subs % HOLDER_TAGS or args.subs // HOLDER_TAGS > 1000:
        p.error(f"--subs must be a multiple of {HOLDER_TAGS}, at most {HOLDER_TAGS * 1000}")
    if min(args.procs, args.proc_runs, args.repeat) < 1:
        p.error("sizes and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    clock = time.perf_counter()
    scenarios = []
    with (
        postgres_server(
            args.dsn, {"max_connections": str(max(100, args.procs + 2 * CONNECTION_SPARE))}
        ) as server_dsn,  # a --dsn's server is checked in (b): check_capacity
        tempfile.TemporaryDirectory(prefix="skiplock-bench-logs-") as log_dir,
    ):
        pg = common.server_facts(server_dsn)
        try:
            if args.only in (None, "a"):
                scenarios.append(one_process(server_dsn, args, Path(log_dir)))
                print(table(scenarios[-1]) + "\n", flush=True)
            if args.only in (None, "b"):
                scenarios.append(many_processes(server_dsn, args, Path(log_dir)))
                print(table(scenarios[-1]) + "\n", flush=True)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    machine = common.machine_facts()
    took = time.perf_counter() - clock
    print(f"took {took:.0f}s")
    if args.write_results:
        command = "python bench/realtime_scale.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        text = "\n\n".join(
            [
                SECTION,
                f"`{command.strip()}`: {started}, commit {git_commit()}, {took:.0f} s; "
                f"PostgreSQL {pg['server_version']}, Python {machine['python']}, "
                f"{machine['cpus']} CPUs ({machine['cpu']}), load {machine['load']} "
                "(a shared machine: read the ratios). How it is measured: the docstring of "
                "bench/realtime_scale.py. Ranges are median (min-max) over the chunks.",
                *[table(sc) for sc in scenarios],
            ]
        )
        common.write_section(Path(args.write_results), text, SECTION)
        print(f"wrote the {SECTION!r} section of {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
