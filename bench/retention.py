"""Benchmark: retention under a saturated drain (runs purged by DELETE, tables kept flat).

    python bench/retention.py [--quick] [--out DIR] [--no-prototype] [--only A1,B,...]
    python bench/retention.py --from DIR    # figures and report again from a run's files

Millions of no-op runs are triggered, drained and finished while the table and index
sizes of `runs` and `attempts`, their dead tuples, the drain rate and the time of every
purge() call are sampled. The figures are ratios within this one run (never asserted
in tests): the machine has 2 cores, shared by PostgreSQL, the workers, the producer
and this script, and other sessions may run on it too (the samples record how much CPU
was not ours).

Cluster: a throwaway PostgreSQL 15 (Debian binaries: initdb/pg_ctl from PATH or
/usr/lib/postgresql/15/bin; run as the `postgres` user when started as root) in a
temporary directory, unix socket only, deleted at the end (--keep keeps it). Settings:
shared_buffers=1GB, max_wal_size=8GB, wal_level=minimal, **synchronous_commit=off** (the
disk would otherwise dominate on this VM; ratios are what count), fsync on,
**autovacuum_naptime=10s** (the README recommends it: the launcher visits a database
once per naptime, however low the per-table thresholds that migration 0017 sets),
track_functions='pl' (purge() calls by tick are counted in pg_stat_user_functions),
log_autovacuum_min_duration=0. Each case has a database of its own, created with
`Engine(dsn).migrate()`, so with migration 0017's per-table autovacuum settings.

Load, in every case: two `skiplock worker bench.noop_app:app --concurrency 50 --version
bench --quiet` processes (as bench/drain.py starts them; tick_interval 1 s, so they
call tick(), and with it purge(500), every second), and one producer process (an
`Engine(dsn, retention=...)`) that keeps 30,000 runs queued with `batch_trigger` of
1,000 no-op items (it counts queued runs, then tops up, 5 times a second). Retention
is resolved at trigger, by the producer's engine; the workers get
SKIPLOCK_RETENTION to match.

Purge: tick() alone purges at most 500 runs per call, about one call per second per
worker, far below a saturated drain (case T measures it). So in cases B and B2 a
dedicated purger connection calls `skiplock.purge(500)` back to back while it returns a
full batch, else sleeps 1 s (tick's cadence); the workers' ticks stay on and purge too
(a purge that finds the 'purge' maintenance row locked returns 0). Each call's time is
taken on the server (clock_timestamp() - statement_timestamp() around the call), and
split with the backend's /proc/PID/schedstat into time on a CPU and time waiting for
one: on 2 shared cores the second is mostly other processes' doing. The 200 ms target
is checked on both.

Cases, one after the other in this order (segments of A continue one database, so
"keep forever" grows, and bracket the retention cases in time):

* A1, A2, A3 - no retention (`retention=None`, runs kept forever).
* B  - DELETE-based retention: retention 60 s, purger on. After `steady` seconds (the
  first retention period, then purging) a connection holds a transaction open for 10
  minutes (`BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current(); SELECT ...`:
  its xid and snapshot pin the database's xmin horizon, which the samples show as
  xmin_age), then rolls back; sampling goes on for `recover` seconds.
* B2 - as B without the hold, on a database where bench/retention_cascades.sql replaced
  the three row-level foreign-key cascades of runs by the attempts statement trigger
  (a bench-only prototype of a cheaper delete; --no-prototype skips it).
* T  - retention 60 s with no purger: only the workers' tick() purges.
* C  - time-partitioned tables for finished runs: not built. B keeps both tables flat
  and its purge calls short (bench/RESULTS.md, "Retention"), so the numbers do not ask
  for it; bench/retention_study/REPORT.md 5.6 has the analysis.

Then, with nothing else of ours running, the purge cost per run: two databases filled
the same way (N runs drained by the workers, retention 1 h, so the workers' ticks purge
none), then purge(500) called alternately in each with the fake clock
(skiplock.fake_now) 2 h ahead; and in the current schema, the parts of a DELETE of 500
runs (rolled back, on runs not touched before) in both: the lock purge() takes first,
the DELETE with its triggers, a DELETE of their attempts alone (what the attempts
trigger does), and in the current schema the DELETE with every trigger disabled; in
backend CPU per run.

Samples every `sample` seconds (10 s; each case's time starts at 0 when its workers are
spawned): drain rate (runs finished in the interval: the producer's exact count of runs
triggered minus the runs still QUEUED, DEQUEUED or EXECUTING), table (pg_table_size) and
index (pg_indexes_size) MB of runs and attempts, live and dead tuples, autovacuum
counts, xmin age, purge calls and their max time, and CPU: the whole machine's busy
share and the share of our processes (cluster, workers, producer, this script); the
rest is other sessions. Per-minute rows are aggregated from the samples.

Figures (a summary table at the end, and summary.json):

* drain: median of the samples' rates; the first sample of each segment (start-up) is
  left out. B's rate "during purging" counts the samples after the first retention
  period and before the hold. Ratios are B / A over all A segments, with each segment's
  median shown. Other sessions' load moves these rates a lot, so each row also gives
  the CPU seconds of our processes (cluster + clients) per run finished, and A's CPU
  per run / the row's: the drain ratio at equal CPU, what a saturated drain would reach
  on a machine of its own.
* sizes: heap + indexes, MB, at the end of the first retention period (the first sample
  at t >= retention) and at the end of the steady phase (just before the hold), the max
  over the steady phase, and at the end of the case; ratios to the first.
* purge: calls, runs purged; over the calls that purged something, server ms p50/p99
  and microseconds per run purged (their time / runs purged); over every call, the max
  and the calls over 200 ms; the same for the backend's CPU time.
* hold: factor = median rate during the hold / median rate during purging before it
  (and the same over the hold's second half); recovery = from the release to the end of
  the first sample from which on three samples in a row drain at least 0.8x the rate
  before the hold.

Output: samples.csv, minutes.csv, purge_calls.csv, cost.json, summary.json, the
server log and worker logs in --out (default: a new directory under /tmp).
`--from DIR` runs nothing and makes the figures and report again from DIR's files.
`--quick` shrinks everything (retention 20 s, 30 s hold, about 3 minutes in all).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/retention.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.noop_app import define  # noqa: E402
from engine import Engine  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
WORKERS = 2
WORKER_CMD = [
    sys.executable,
    "-m",
    "engine.cli",
    "worker",
    "bench.noop_app:app",
    "--concurrency",
    "50",
    "--version",
    "bench",
    "--quiet",
]
BATCH = 1000  # items per batch_trigger
QUEUE_DEPTH = 30_000  # the producer keeps this many runs queued
PURGE_LIMIT = 500  # what tick() passes
PURGE_SLEEP = 1.0  # tick's cadence
TARGET_MS = 200.0
RECOVERED = 0.8  # a sample counts as recovered at this share of the rate before the hold

SERVER_SETTINGS = {
    "listen_addresses": "''",
    "max_connections": "50",
    "shared_buffers": "'1GB'",
    "max_wal_size": "'8GB'",
    "min_wal_size": "'1GB'",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "synchronous_commit": "off",
    "checkpoint_timeout": "'15min'",
    "autovacuum_naptime": "'10s'",
    "log_autovacuum_min_duration": "0",
    "log_min_duration_statement": "1000",
    "log_line_prefix": "'%m [%p] %d '",
    "track_functions": "'pl'",
}


@dataclass(frozen=True)
class Profile:
    retention: float  # seconds
    sample: float  # seconds between samples
    a_seconds: float  # each of A1, A2, A3
    steady: float  # B: from the start to the hold (first retention period included)
    hold: float
    recover: float
    b2_seconds: float
    t_seconds: float
    cost_runs: int  # runs per database in the purge-cost measurement


FULL = Profile(60, 10, 240, 840, 600, 300, 480, 180, 100_000)
QUICK = Profile(20, 5, 15, 50, 30, 25, 40, 30, 20_000)


@dataclass(frozen=True)
class Segment:
    name: str  # A1, B, A2, B2, A3, T
    case: str  # A, B, B2, T
    db: str
    seconds: float
    retention: float | None  # None: kept forever
    purger: bool = False
    hold_at: float | None = None
    hold_for: float = 0.0
    prototype: bool = False  # bench/retention_cascades.sql applied to its database


def plan(p: Profile, prototype: bool) -> list[Segment]:
    a = [Segment(f"A{i}", "A", "ret_a", p.a_seconds, None) for i in (1, 2, 3)]
    b = Segment(
        "B",
        "B",
        "ret_b",
        p.steady + p.hold + p.recover,
        p.retention,
        purger=True,
        hold_at=p.steady,
        hold_for=p.hold,
    )
    b2 = Segment("B2", "B2", "ret_b2", p.b2_seconds, p.retention, purger=True, prototype=True)
    t = Segment("T", "T", "ret_t", p.t_seconds, p.retention)
    return [a[0], b, a[1], *([b2] if prototype else []), a[2], t]


# -- the cluster ---------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    return shutil.which(name) or str(PG_BIN / name)


def as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Server:
    root: Path
    data: Path
    socket: Path
    log: Path

    def dsn(self, db: str = "postgres") -> str:
        return f"host={self.socket} port=5432 user=postgres dbname={db}"

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def server(root: Path | None, keep: bool) -> Iterator[Server]:
    """A throwaway PostgreSQL 15 cluster with SERVER_SETTINGS, stopped (and deleted
    unless `keep`) on exit."""
    base = root or Path(tempfile.mkdtemp(prefix="skiplock-retention-pg-"))
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    srv = Server(base, base / "data", base, base / "postgresql.log")
    subprocess.run(
        as_postgres(
            [pg_tool("initdb"), "-D", str(srv.data), "-U", "postgres", "-A", "trust", "--no-sync"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    settings = {**SERVER_SETTINGS, "unix_socket_directories": f"'{srv.socket}'"}
    with open(srv.data / "postgresql.conf", "a") as conf:
        conf.write("\n# bench/retention.py\n")
        conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
    pg_ctl = [pg_tool("pg_ctl"), "-D", str(srv.data), "-w"]
    subprocess.run(
        as_postgres([*pg_ctl, "-l", str(srv.log), "start"]), check=True, stdout=subprocess.DEVNULL
    )
    try:
        yield srv
    finally:
        subprocess.run(
            as_postgres([*pg_ctl, "-m", "fast", "stop"]), check=False, stdout=subprocess.DEVNULL
        )
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def create_database(srv: Server, seg: Segment) -> str:
    """The case's database, migrated, with the no-op task deployed at version 'bench'
    (so triggered runs are QUEUED at once) and, for B2, the prototype cascades."""
    with common.connect(srv.dsn()) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(seg.db)))
    dsn = srv.dsn(seg.db)
    Engine(dsn, retention=seg.retention).migrate()
    with common.connect(dsn) as conn:
        if seg.prototype:
            conn.execute((REPO / "bench" / "retention_cascades.sql").read_text())
        entry = define(Engine(dsn, retention=seg.retention)).deployment_entry()
        conn.execute(
            "SELECT skiplock.register_worker(%s, 'bench', 'bench', 0, NULL, 1, %s::jsonb)",
            ("worker_bench_registrar", Jsonb([entry])),
        )
        conn.execute("SELECT skiplock.stop_worker('worker_bench_registrar')")
    return dsn


def database_exists(srv: Server, db: str) -> bool:
    with common.connect(srv.dsn()) as conn:
        return bool(
            common.scalar(conn, "SELECT count(*) FROM pg_database WHERE datname = %s", [db])
        )


# -- the load: producer process, workers, purger, holder -------------------------------------


def produce(dsn: str, retention: float | None, triggered: Any, stop: Any) -> None:
    """The producer process: keep QUEUE_DEPTH runs queued with batch_trigger x BATCH."""
    items = [{"i": i} for i in range(BATCH)]
    with Engine(dsn, retention=retention) as engine, psycopg.connect(dsn, autocommit=True) as conn:
        task = define(engine)
        while not stop.is_set():
            queued = common.scalar(
                conn, "SELECT count(*) FROM skiplock.runs WHERE status = 'QUEUED'"
            )
            for _ in range(max(0, QUEUE_DEPTH - queued) // BATCH):
                task.batch_trigger(items)
                with triggered.get_lock():
                    triggered.value += BATCH
            stop.wait(0.2)


# a purge() call and its time on the server (the call is done when the row is built)
PURGE_SQL = """
SELECT n, extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000
  FROM skiplock.purge(%s) AS n
"""


@dataclass
class PurgeCall:
    segment: str
    t: float  # seconds since the segment started, at the call's end
    purged: int
    server_ms: float  # the call's time on the server (statement start to its result)
    client_ms: float  # round trip, as this client saw it
    cpu_ms: float  # of that, the backend on a CPU (/proc/PID/schedstat)
    queued_ms: float  # and the backend runnable but waiting for a CPU (other processes)


def schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns waiting on a run queue) of process `pid` so far."""
    on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu), int(waiting)


def purger(dsn: str, seg: str, t0: float, stop: threading.Event, out: list[PurgeCall]) -> None:
    """purge(500) back to back while it returns a full batch, else sleep 1 s. Each call's
    time is split (from the backend's schedstat) into CPU and waiting for a CPU: on this
    shared 2-core machine the second is other processes' doing."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        backend = conn.info.backend_pid
        while not stop.is_set():
            cpu0, queued0 = schedstat(backend)
            started = time.perf_counter()
            row = conn.execute(PURGE_SQL, (PURGE_LIMIT,)).fetchone()
            ended = time.perf_counter()
            cpu1, queued1 = schedstat(backend)
            assert row is not None
            out.append(
                PurgeCall(
                    seg,
                    ended - t0,
                    row[0],
                    float(row[1]),
                    (ended - started) * 1000,
                    (cpu1 - cpu0) / 1e6,
                    (queued1 - queued0) / 1e6,
                )
            )
            if row[0] < PURGE_LIMIT:
                stop.wait(PURGE_SLEEP)


def holder(
    dsn: str, t0: float, at: float, seconds: float, stop: threading.Event, marks: dict[str, Any]
) -> None:
    """From t0 + at, hold a transaction open for `seconds`: an xid and a REPEATABLE READ
    snapshot, which keep vacuum from removing anything newer."""
    if stop.wait(max(0.0, t0 + at - time.perf_counter())):
        return
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        marks["xid"] = common.scalar(conn, "SELECT txid_current()")
        common.scalar(conn, "SELECT count(*) FROM skiplock.queues")
        marks["pid"] = conn.info.backend_pid
        marks["start"] = time.perf_counter() - t0
        stop.wait(seconds)
        conn.rollback()
        marks["end"] = time.perf_counter() - t0


# -- sampling ----------------------------------------------------------------------------------

TABLES = ("runs", "attempts", "batches")
TABLE_STATS = """
SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid), s.n_live_tup, s.n_dead_tup,
       s.autovacuum_count, s.autoanalyze_count, s.n_tup_del
  FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE s.schemaname = 'skiplock' AND c.relname = ANY (%s)
"""
UNFINISHED = """
SELECT (SELECT count(*) FROM skiplock.runs WHERE status = 'QUEUED'),
       (SELECT count(*) FROM skiplock.runs WHERE status IN ('DEQUEUED', 'EXECUTING'))
"""
XMIN_AGE = """
SELECT coalesce(max(greatest(age(backend_xmin), age(backend_xid))), 0)
  FROM pg_stat_activity WHERE datname = current_database()
"""
# the workers' three calls per batch of runs, and purge (the purger's and the ticks')
FUNCTIONS = ("lock_ready", "begin_attempts", "complete_attempts", "purge")
FUNCTION_STATS = """
SELECT funcname, sum(calls), sum(total_time) FROM pg_stat_user_functions
 WHERE schemaname = 'skiplock' AND funcname = ANY (%s) GROUP BY funcname
"""
PURGE_FUNCTION = """
SELECT coalesce(sum(calls), 0), coalesce(sum(total_time), 0) FROM pg_stat_user_functions
 WHERE schemaname = 'skiplock' AND funcname = 'purge'
"""
BACKLOG = """
SELECT count(*), extract(epoch FROM now() - min(
           skiplock.purge_at(finished_at, retention_s, idempotency_key_expires_at)))
  FROM skiplock.runs
 WHERE skiplock.purge_at(finished_at, retention_s, idempotency_key_expires_at) < now()
   AND finished_at IS NOT NULL AND retention_s IS NOT NULL
"""
MB = 2**20
TICK = os.sysconf("SC_CLK_TCK")


def proc_times(pid: int, children: bool) -> int:
    """CPU jiffies of process `pid` (with its reaped children's if `children`); 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return utime + stime + (cutime + cstime if children else 0)


def cluster_pids(postmaster: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU since the last reading: the machine's busy share (of all CPUs), and the CPU
    seconds of our processes, split into the cluster's (postmaster, backends,
    autovacuum: the reaped children count through the postmaster) and the clients'
    (workers, producer, this process)."""

    def __init__(self, postmaster: int, clients: list[int]) -> None:
        self.postmaster, self.clients = postmaster, clients
        self.last = self._read()

    def _read(self) -> tuple[int, int, int, int]:
        cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        total, busy = sum(cpu[:8]), sum(cpu[:8]) - cpu[3] - cpu[4]
        server = proc_times(self.postmaster, True)
        server += sum(proc_times(p, False) for p in cluster_pids(self.postmaster))
        own = os.times()
        clients = sum(proc_times(p, True) for p in self.clients)
        clients += round((own.user + own.system) * TICK)
        return total, busy, server, clients

    def reading(self) -> dict[str, float]:
        now = self._read()
        total, busy, server, clients = (a - b for a, b in zip(now, self.last, strict=True))
        self.last = now
        busy_pct = 100 * busy / max(1, total)
        ours_pct = min(busy_pct, 100 * (server + clients) / max(1, total))
        return {
            "cpu_busy_pct": round(busy_pct, 1),
            "cpu_ours_pct": round(ours_pct, 1),
            "cpu_other_pct": round(busy_pct - ours_pct, 1),
            "cpu_server_s": round(server / TICK, 2),
            "cpu_clients_s": round(clients / TICK, 2),
        }


def table_stats(conn: common.Conn) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for rel, heap, idx, live, dead, av, aa, deleted in conn.execute(TABLE_STATS, [list(TABLES)]):
        row[f"{rel}_table_mb"] = round(heap / MB, 1)
        row[f"{rel}_index_mb"] = round(idx / MB, 1)
        row[f"{rel}_mb"] = round((heap + idx) / MB, 1)
        row[f"{rel}_live"] = live
        row[f"{rel}_dead"] = dead
        row[f"{rel}_autovacuums"] = av
        row[f"{rel}_autoanalyzes"] = aa
        row[f"{rel}_deleted"] = deleted
    return row


def function_stats(conn: common.Conn) -> dict[str, tuple[int, float]]:
    """(calls, total ms) so far of each of FUNCTIONS in this database."""
    out = {name: (0, 0.0) for name in FUNCTIONS}
    for name, calls, ms in conn.execute(FUNCTION_STATS, [list(FUNCTIONS)]):
        out[name] = (int(calls), float(ms))
    return out


def unfinished(conn: common.Conn) -> int:
    row = conn.execute(UNFINISHED).fetchone()
    assert row is not None
    return int(row[0]) + int(row[1])


def phase(seg: Segment, start: float) -> str:
    """What the interval starting at `start` (seconds into the segment) belongs to."""
    if seg.retention is None:
        return "keep"
    if start < seg.retention:
        return "fill"
    if seg.hold_at is None or start < seg.hold_at:
        return "purge"
    return "hold" if start < seg.hold_at + seg.hold_for else "after"


# -- one segment -------------------------------------------------------------------------------


@dataclass
class SegmentResult:
    segment: Segment
    samples: list[dict[str, Any]] = field(default_factory=list)
    purge_calls: list[PurgeCall] = field(default_factory=list)
    marks: dict[str, Any] = field(default_factory=dict)
    triggered: int = 0
    completed: int = 0
    failed_runs: int = 0
    purge_fn_calls: int = 0  # purge() calls in the database, tick's included
    purge_fn_ms: float = 0.0
    retention_seen: float | None = None  # retention_s of the newest run
    backlog: dict[str, Any] | None = None  # due runs not yet purged, at the end


def run_segment(srv: Server, seg: Segment, p: Profile, log_dir: Path) -> SegmentResult:
    dsn = srv.dsn(seg.db) if database_exists(srv, seg.db) else create_database(srv, seg)
    res = SegmentResult(seg)
    mp = multiprocessing.get_context("spawn")
    triggered, produced_stop = mp.Value("q", 0), mp.Event()
    stop = threading.Event()
    env = {
        "SKIPLOCK_DATABASE_URL": dsn,
        "SKIPLOCK_RETENTION": "none" if seg.retention is None else f"{seg.retention}s",
    }
    with common.connect(dsn) as conn:
        base = unfinished(conn)
        fn_calls0, fn_ms0 = conn.execute(PURGE_FUNCTION).fetchone() or (0, 0)
        conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        workers = common.spawn(WORKER_CMD, dsn, WORKERS, log_dir, env)
        producer = mp.Process(
            target=produce, args=(dsn, seg.retention, triggered, produced_stop), daemon=True
        )
        threads = []
        if seg.purger:
            threads.append(
                threading.Thread(target=purger, args=(dsn, seg.name, t0, stop, res.purge_calls))
            )
        if seg.hold_at is not None:
            threads.append(
                threading.Thread(
                    target=holder, args=(dsn, t0, seg.hold_at, seg.hold_for, stop, res.marks)
                )
            )
        try:
            producer.start()
            for th in threads:
                th.start()
            pids = [w.process.pid for w in workers] + [producer.pid or 0]
            cpu = CpuMeter(srv.postmaster_pid(), pids)
            sample_loop(conn, seg, p, res, t0, base, triggered, workers, cpu)
            if seg.retention is not None:  # still under load
                count, age = conn.execute(BACKLOG).fetchone() or (0, None)
                res.backlog = {"due_runs": count, "oldest_due_s": age}
        finally:
            stop.set()
            produced_stop.set()
            if producer.pid is not None:
                producer.join(60)
            common.stop(workers)
            for th in threads:
                if th.is_alive():
                    th.join(60)
        for w in workers:
            for line in w.problems()[:5]:
                print(f"    worker {w.process.pid} logged: {line}", file=sys.stderr)
        res.triggered = triggered.value
        res.completed = res.samples[-1]["completed"] if res.samples else 0
        res.failed_runs = int(
            common.scalar(
                conn,
                "SELECT count(*) FROM skiplock.runs WHERE status IN "
                "('FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT', 'EXPIRED')",
            )
        )
        fn_calls, fn_ms = conn.execute(PURGE_FUNCTION).fetchone() or (0, 0)
        res.purge_fn_calls, res.purge_fn_ms = int(fn_calls - fn_calls0), float(fn_ms - fn_ms0)
        res.retention_seen = common.scalar(
            conn, "SELECT retention_s FROM skiplock.runs ORDER BY id DESC LIMIT 1"
        )
    return res


def sample_loop(
    conn: common.Conn,
    seg: Segment,
    p: Profile,
    res: SegmentResult,
    t0: float,
    base: int,
    triggered: Any,
    workers: list[common.Worker],
    cpu: CpuMeter,
) -> None:
    last_t, last_done, last_calls = 0.0, 0, 0
    last_fn = function_stats(conn)
    k = 0
    while True:
        k += 1
        due = k * p.sample
        if due > seg.seconds + 1e-6:
            return
        time.sleep(max(0.0, t0 + due - time.perf_counter()))
        for w in workers:
            if w.process.poll() is not None:
                raise common.BenchError(
                    f"worker {w.process.pid} exited with {w.process.returncode}:\n{w.log_tail()}"
                )
        now = time.perf_counter() - t0
        done = triggered.value + base - unfinished(conn)
        calls = res.purge_calls[last_calls:]
        last_calls += len(calls)
        row: dict[str, Any] = {
            "segment": seg.name,
            "case": seg.case,
            "phase": phase(seg, last_t),
            "t": round(now, 1),
            "triggered": triggered.value,
            "completed": done,
            "finished": done - last_done,
            "rate": round((done - last_done) / (now - last_t)),
            "purge_calls": len(calls),
            "purged": sum(c.purged for c in calls),
            "purge_max_ms": round(max((c.server_ms for c in calls), default=0.0), 1),
            "xmin_age": common.scalar(conn, XMIN_AGE),
            **table_stats(conn),
            **cpu.reading(),
            "load1": round(os.getloadavg()[0], 2),
        }
        fn = function_stats(conn)
        for name in FUNCTIONS:
            row[f"fn_{name}_calls"] = fn[name][0] - last_fn[name][0]
            row[f"fn_{name}_ms"] = round(fn[name][1] - last_fn[name][1], 1)
        res.samples.append(row)
        last_t, last_done, last_fn = now, done, fn
        print(
            f"  {seg.name:<3} t={row['t']:6.0f}s {row['phase']:<5} {row['rate']:6d} runs/s  "
            f"runs {row['runs_mb']:7.1f} MB ({row['runs_dead']:>8} dead)  "
            f"attempts {row['attempts_mb']:7.1f} MB  purge {row['purge_calls']:3d} calls "
            f"max {row['purge_max_ms']:6.1f} ms  xmin age {row['xmin_age']:>7}  "
            f"cpu other {row['cpu_other_pct']:4.1f}%",
            flush=True,
        )
        if "start" in res.marks and "verified" not in res.marks:
            res.marks["verified"] = common.scalar(
                conn,
                "SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = %s",
                [res.marks["pid"]],
            )
            print(
                f"  hold: pid {res.marks['pid']}, xid {res.marks['xid']}, "
                f"backend_xmin {res.marks['verified']}",
                flush=True,
            )


# -- the purge cost, with nothing else running -------------------------------------------------


def fill(srv: Server, seg: Segment, n: int, log_dir: Path) -> str:
    """`n` runs triggered and finished by the workers in a fresh database (retention 1 h,
    so the workers' ticks purge none of them); VACUUM ANALYZE afterwards."""
    dsn = create_database(srv, seg)
    mp = multiprocessing.get_context("spawn")
    triggered, stop = mp.Value("q", 0), mp.Event()
    env = {"SKIPLOCK_DATABASE_URL": dsn, "SKIPLOCK_RETENTION": f"{seg.retention}s"}
    with common.connect(dsn) as conn:
        workers = common.spawn(WORKER_CMD, dsn, WORKERS, log_dir, env)
        producer = mp.Process(target=produce, args=(dsn, seg.retention, triggered, stop))
        try:
            producer.start()
            common.wait_until(lambda: triggered.value >= n, workers, 600, "the fill", 0.2)
            stop.set()
            producer.join(60)
            common.wait_until(lambda: unfinished(conn) == 0, workers, 600, "the drain", 0.2)
        finally:
            stop.set()
            common.stop(workers)
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return dsn


# What deleting 500 runs costs, part by part, in backend CPU per run: each statement
# rolled back, on runs no earlier statement touched. "delete, no trigger" disables every
# trigger of runs (the foreign keys' too) inside its transaction; it runs in a block of
# its own, after the others, as that ALTER TABLE invalidates cached plans.
BREAKDOWN = {
    "lock (purge's SELECT ... FOR UPDATE)": (
        None,
        "SELECT count(*) FROM (SELECT id FROM skiplock.runs WHERE id = ANY (%s) FOR UPDATE) x",
    ),
    "delete runs (every trigger)": (None, "DELETE FROM skiplock.runs WHERE id = ANY (%s)"),
    "delete their attempts alone": (None, "DELETE FROM skiplock.attempts WHERE run_id = ANY (%s)"),
}
NO_TRIGGER = (
    "ALTER TABLE skiplock.runs DISABLE TRIGGER ALL",
    "DELETE FROM skiplock.runs WHERE id = ANY (%s)",
)


def delete_breakdown(dsn: str, with_no_trigger: bool, rounds: int = 8) -> dict[str, float]:
    """Median backend CPU us per run of each BREAKDOWN statement over `rounds` (after
    one warm-up round), the statements alternating; then NO_TRIGGER's block."""
    blocks = [BREAKDOWN, *([{"delete runs, no trigger": NO_TRIGGER}] if with_no_trigger else [])]
    cpu: dict[str, list[float]] = {}
    with psycopg.connect(dsn) as conn:
        backend = conn.info.backend_pid
        ids = [r[0] for r in conn.execute("SELECT id FROM skiplock.runs ORDER BY id")]
        conn.rollback()
        chunks = iter(range(0, len(ids) - PURGE_LIMIT, PURGE_LIMIT))
        for block in blocks:
            for _ in range(rounds + 1):
                for name, (setup, stmt) in block.items():
                    chunk = ids[(k := next(chunks)) : k + PURGE_LIMIT]
                    if setup:
                        conn.execute(setup)
                    before = schedstat(backend)[0]
                    conn.execute(stmt, [chunk])
                    used = (schedstat(backend)[0] - before) / 1e3 / PURGE_LIMIT
                    cpu.setdefault(name, []).append(used)
                    conn.rollback()
    return {name: round(statistics.median(xs[1:]), 1) for name, xs in cpu.items()}


def purge_cost(srv: Server, p: Profile, prototype: bool, log_dir: Path) -> dict[str, Any]:
    """purge(500) alternately in a database per variant, filled alike: server time and
    backend CPU per run; and the DELETE's parts in the current schema."""
    variants = {"current": False, **({"cascades": True} if prototype else {})}
    dsns = {
        name: fill(
            srv,
            Segment(f"cost_{name}", "cost", f"ret_cost_{name}", 0, 3600, prototype=proto),
            p.cost_runs,
            log_dir,
        )
        for name, proto in variants.items()
    }
    out: dict[str, Any] = {
        f"{name} delete_cpu_us_per_run": delete_breakdown(dsn, name == "current")
        for name, dsn in dsns.items()
    }
    calls: dict[str, list[PurgeCall]] = {name: [] for name in dsns}
    conns = {name: psycopg.connect(dsn, autocommit=True) for name, dsn in dsns.items()}
    try:
        fake_now = common.scalar(conns["current"], "SELECT now() + interval '2 hours'")
        for conn in conns.values():
            conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", [str(fake_now)])
        for _ in range(p.cost_runs // PURGE_LIMIT):
            for name, conn in conns.items():
                backend = conn.info.backend_pid
                cpu0, queued0 = schedstat(backend)
                row = conn.execute(PURGE_SQL, [PURGE_LIMIT]).fetchone()
                cpu1, queued1 = schedstat(backend)
                assert row is not None
                call = PurgeCall(
                    name,
                    0,
                    row[0],
                    float(row[1]),
                    0,
                    (cpu1 - cpu0) / 1e6,
                    (queued1 - queued0) / 1e6,
                )
                if row[0] == PURGE_LIMIT:
                    calls[name].append(call)
    finally:
        for conn in conns.values():
            conn.close()
    for name, xs in calls.items():
        out[name] = purge_figures(xs)
    return out


# -- figures -----------------------------------------------------------------------------------

Sample = dict[str, Any]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def in_phase(samples: list[Sample], phases: tuple[str, ...]) -> list[Sample]:
    """The samples of `phases`, leaving out each segment's first one (start-up)."""
    return [s for i, s in enumerate(samples) if i > 0 and s["phase"] in phases]


def drain(samples: list[Sample]) -> dict[str, Any]:
    """Median rate of `samples`, and the CPU of our processes per run finished."""
    runs = sum(s["finished"] for s in samples)
    server = sum(s["cpu_server_s"] for s in samples)
    clients = sum(s["cpu_clients_s"] for s in samples)
    return {
        "samples": len(samples),
        "runs": runs,
        "rate": median([s["rate"] for s in samples]),
        "cpu_us_per_run": round(1e6 * (server + clients) / runs, 1) if runs else None,
        "server_us_per_run": round(1e6 * server / runs, 1) if runs else None,
        "clients_us_per_run": round(1e6 * clients / runs, 1) if runs else None,
        "other_cpu_pct": median([s["cpu_other_pct"] for s in samples]),
        "ms_per_call": {
            name: round(ms / calls, 2)
            for name in FUNCTIONS
            if (calls := sum(s.get(f"fn_{name}_calls", 0) for s in samples))
            and (ms := sum(s.get(f"fn_{name}_ms", 0) for s in samples))
        },
    }


def first_at(samples: list[Sample], t: float) -> Sample:
    return next((s for s in samples if s["t"] >= t - 0.5), samples[-1])


def purge_figures(calls: list[PurgeCall]) -> dict[str, Any]:
    """Calls and runs purged; over the calls that purged something, server time p50 / p99
    and us per run purged, and the same for the backend's CPU time; over every call (those
    that found nothing to purge too), the max and the calls over 200 ms, and the slowest."""
    useful = [c for c in calls if c.purged > 0]
    ms = [c.server_ms for c in useful]
    cpu = [c.cpu_ms for c in useful]
    purged = sum(c.purged for c in useful)
    slowest = max(calls, key=lambda c: c.server_ms, default=None)

    def pct(xs: list[float], p: float) -> float | None:
        return round(common.percentile(xs, p), 1) if xs else None

    return {
        "calls": len(calls),
        "calls_purging": len(useful),
        "purged": purged,
        "ms_p50": pct(ms, 50),
        "ms_p99": pct(ms, 99),
        "ms_max": round(slowest.server_ms, 1) if slowest else None,
        "calls_over_200ms": sum(1 for c in calls if c.server_ms > TARGET_MS),
        "us_per_run": round(1000 * sum(ms) / purged, 1) if purged else None,
        "cpu_ms_p50": pct(cpu, 50),
        "cpu_ms_p99": pct(cpu, 99),
        "cpu_ms_max": round(max(c.cpu_ms for c in calls), 1) if calls else None,
        "cpu_over_200ms": sum(1 for c in calls if c.cpu_ms > TARGET_MS),
        "cpu_us_per_run": round(1000 * sum(cpu) / purged, 1) if purged else None,
        "queued_share": round(sum(c.queued_ms for c in useful) / sum(ms), 2) if ms else None,
        "slowest": None
        if slowest is None
        else {k: round(v, 1) for k, v in asdict(slowest).items() if k != "segment"},
    }


def sizes(samples: list[Sample], ref_t: float, until: float | None) -> dict[str, Any]:
    """MB (heap + indexes) of runs and attempts at ref_t, at `until` (the end if None),
    their max in between, and the ratios to the first; max dead tuples; autovacuums."""
    ref = first_at(samples, ref_t)
    span = [s for s in samples if until is None or s["t"] <= until + 0.5]
    out: dict[str, Any] = {"ref_t": ref["t"], "until_t": span[-1]["t"]}
    for rel in ("runs", "attempts"):
        key = f"{rel}_mb"
        top = max(s[key] for s in span if s["t"] >= ref["t"])
        out[rel] = {
            "first_period_mb": ref[key],
            "end_mb": span[-1][key],
            "max_mb": top,
            "end_ratio": ratio(span[-1][key], ref[key]),
            "max_ratio": ratio(top, ref[key]),
            "max_dead": max(s[f"{rel}_dead"] for s in span),
            "autovacuums": span[-1][f"{rel}_autovacuums"] - samples[0][f"{rel}_autovacuums"],
        }
    return out


def deleted_rate(samples: list[Sample], since: float) -> float | None:
    """Runs deleted per second (purger and ticks) from `since` to the end."""
    start = first_at(samples, since)
    end = samples[-1]
    if end["t"] <= start["t"]:
        return None
    return round((end["runs_deleted"] - start["runs_deleted"]) / (end["t"] - start["t"]))


def hold_figures(res: SegmentResult) -> dict[str, Any]:
    seg, s = res.segment, res.samples
    assert seg.hold_at is not None
    release = seg.hold_at + seg.hold_for
    before = median([x["rate"] for x in in_phase(s, ("purge",))])
    during = [x["rate"] for x in s if x["phase"] == "hold"]
    late = [
        x["rate"] for x in s if x["phase"] == "hold" and x["t"] > seg.hold_at + seg.hold_for / 2
    ]
    after = [x for x in s if x["phase"] == "after"]
    recovery = None
    for i, x in enumerate(after):
        window = after[i : i + 3]
        if before and len(window) == 3 and all(w["rate"] >= RECOVERED * before for w in window):
            recovery = round(x["t"] - release, 1)
            break
    pre_dead = max(x["runs_dead"] for x in s if x["phase"] == "purge")
    cleared = next((x["t"] for x in after if x["runs_dead"] <= pre_dead), None)
    at_hold, at_release = first_at(s, seg.hold_at), first_at(s, release)
    return {
        "xid": res.marks.get("xid"),
        "backend_xmin": res.marks.get("verified"),
        "max_xmin_age": max(x["xmin_age"] for x in s),
        "rate_before": before,
        "rate_median": median(during),
        "rate_second_half": median(late),
        "rate_min": min(during) if during else None,
        "factor": ratio(median(during), before),
        "factor_second_half": ratio(median(late), before),
        "recovery_s": recovery,
        "dead_cleared_s": None if cleared is None else round(cleared - release, 1),
        "runs_mb": [at_hold["runs_mb"], at_release["runs_mb"], s[-1]["runs_mb"]],
        "attempts_mb": [at_hold["attempts_mb"], at_release["attempts_mb"], s[-1]["attempts_mb"]],
        "max_dead_runs": max(x["runs_dead"] for x in s if x["phase"] in ("hold", "after")),
        "rates_after": [x["rate"] for x in after[:12]],
    }


def summarize(results: list[SegmentResult], p: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {"segments": {}, "drain": {}}
    for r in results:
        out["segments"][r.segment.name] = {
            "seconds": r.segment.seconds,
            "triggered": r.triggered,
            "completed": r.completed,
            "failed_runs": r.failed_runs,
            "retention_seen": r.retention_seen,
            "backlog_at_end": r.backlog,
            "purge_fn_calls": r.purge_fn_calls,
            "purge_fn_ms": round(r.purge_fn_ms, 1),
        }
    out["runs_total"] = sum(r.completed for r in results)
    a_runs = [r for r in results if r.segment.case == "A"]
    a = drain([s for r in a_runs for s in in_phase(r.samples, ("keep",))])
    rows = {"A": a}
    for r in a_runs:
        rows[r.segment.name] = drain(in_phase(r.samples, ("keep",)))
    for r in results:
        if r.segment.case != "A":
            for ph in ("fill", "purge", "hold", "after"):
                if xs := in_phase(r.samples, (ph,)):
                    rows[f"{r.segment.name} {ph}"] = drain(xs)
    for row in rows.values():
        row["ratio_to_a"] = ratio(row["rate"], a["rate"])
        row["cpu_ratio"] = ratio(a["cpu_us_per_run"], row["cpu_us_per_run"])
    out["drain"] = rows
    if a_runs:  # A's segments laid end to end (B runs between them; A does not change)
        joined, offset = [], 0.0
        for r in a_runs:
            joined += [{**s, "t": s["t"] + offset} for s in r.samples]
            offset += r.segment.seconds
        out["sizes"] = {"A": sizes(joined, p.retention, None)}
    out.setdefault("sizes", {})
    out["purge"] = {}
    for r in results:
        seg = r.segment
        if seg.retention is None:
            continue
        out["sizes"][seg.name] = sizes(r.samples, seg.retention, seg.hold_at)
        calls = r.purge_calls
        if seg.hold_at is None:
            out["purge"][seg.name] = purge_figures(calls)
        else:
            release = seg.hold_at + seg.hold_for
            out["sizes"][f"{seg.name} end"] = sizes(r.samples, seg.retention, None)
            out["purge"][seg.name] = purge_figures([c for c in calls if c.t <= seg.hold_at])
            out["purge"][f"{seg.name} hold"] = purge_figures(
                [c for c in calls if seg.hold_at < c.t <= release]
            )
            out["purge"][f"{seg.name} after"] = purge_figures([c for c in calls if c.t > release])
            out["purge"][f"{seg.name} all"] = purge_figures(calls)
            out["hold"] = hold_figures(r)
        fig = out["purge"][seg.name]
        fig["tick_calls"] = r.purge_fn_calls - len(calls)
        steady = [x for x in r.samples if seg.hold_at is None or x["t"] <= seg.hold_at + 0.5]
        fig["deleted_per_s"] = deleted_rate(steady, seg.retention)
        fig["backlog_at_end"] = r.backlog
    return out


def minutes(results: list[SegmentResult]) -> list[Sample]:
    """Per-minute rows from the samples of each segment."""
    rows = []
    for r in results:
        groups: dict[int, list[Sample]] = {}
        for s in r.samples:
            groups.setdefault(int((s["t"] - 0.5) // 60), []).append(s)
        prev_t = 0.0
        for m, group in sorted(groups.items()):
            last = group[-1]
            calls = [c for c in r.purge_calls if prev_t < c.t <= last["t"] and c.purged > 0]
            ms = [c.server_ms for c in calls]
            rows.append(
                {
                    "segment": r.segment.name,
                    "minute": m + 1,
                    "phase": "/".join(dict.fromkeys(s["phase"] for s in group)),
                    "rate": round(sum(s["finished"] for s in group) / (last["t"] - prev_t)),
                    "runs_mb": last["runs_mb"],
                    "attempts_mb": last["attempts_mb"],
                    "runs_dead_max": max(s["runs_dead"] for s in group),
                    "attempts_dead_max": max(s["attempts_dead"] for s in group),
                    "purge_calls": len(calls),
                    "purged": sum(c.purged for c in calls),
                    "purge_p50_ms": round(common.percentile(ms, 50), 1) if ms else None,
                    "purge_max_ms": round(max(ms), 1) if ms else None,
                    "xmin_age_max": max(s["xmin_age"] for s in group),
                    "cpu_other_pct": round(statistics.mean(s["cpu_other_pct"] for s in group), 1),
                }
            )
            prev_t = last["t"]
    return rows


def write_csv(path: Path, rows: list[Sample]) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def fmt(x: Any, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def report(summary: dict[str, Any], cost: dict[str, Any] | None) -> str:
    lines = ["", "Drain (median of the samples; CPU: our processes, per run finished):", ""]
    lines += markdown(
        [
            "case / phase",
            "samples",
            "runs finished",
            "median runs/s",
            "÷ A",
            "CPU us/run (server + clients)",
            "A ÷ this CPU/run",
            "other sessions' CPU %",
            "ms/call lock_ready / begin / complete",
        ],
        [
            [
                name,
                str(d["samples"]),
                fmt(d["runs"]),
                fmt(d["rate"]),
                fmt(d["ratio_to_a"], ".2f"),
                f"{fmt(d['cpu_us_per_run'], '.0f')} ({fmt(d['server_us_per_run'], '.0f')} + "
                f"{fmt(d['clients_us_per_run'], '.0f')})",
                fmt(d["cpu_ratio"], ".2f"),
                fmt(d["other_cpu_pct"], ".1f"),
                " / ".join(fmt(d["ms_per_call"].get(f), ".2f") for f in FUNCTIONS if f != "purge"),
            ]
            for name, d in summary["drain"].items()
        ],
    )
    lines += [
        "",
        "Sizes, MB of heap + indexes: first = at the end of the first retention period; end",
        "= before the hold (B) or at the end; max = the largest sample in between:",
        "",
    ]
    lines += markdown(
        [
            "case",
            "span (s)",
            "runs MB first -> end (max)",
            "end ÷ first (max ÷ first)",
            "attempts MB first -> end (max)",
            "end ÷ first (max ÷ first)",
            "max dead runs / attempts",
            "autovacuums runs / attempts",
        ],
        [
            [
                name,
                f"{z['ref_t']:.0f}-{z['until_t']:.0f}",
                *(
                    cell
                    for rel in ("runs", "attempts")
                    for cell in (
                        f"{z[rel]['first_period_mb']:.0f} -> {z[rel]['end_mb']:.0f} "
                        f"({z[rel]['max_mb']:.0f})",
                        f"{fmt(z[rel]['end_ratio'], '.2f')} ({fmt(z[rel]['max_ratio'], '.2f')})",
                    )
                ),
                f"{z['runs']['max_dead']:,} / {z['attempts']['max_dead']:,}",
                f"{z['runs']['autovacuums']} / {z['attempts']['autovacuums']}",
            ]
            for name, z in summary["sizes"].items()
        ],
    )
    lines += [
        "",
        "purge(500) calls of the purger (tick's calls are extra): p50 / p99 and us per run over",
        "the calls that purged something, max and > 200 ms over all; time on the server, and",
        "of it the backend's CPU (the rest: waiting for a CPU, mostly):",
        "",
    ]
    lines += markdown(
        [
            "case",
            "calls (purging)",
            "runs purged",
            "p50 / p99 / max ms",
            "> 200 ms",
            "us per run",
            "CPU ms p50 / p99 / max",
            "CPU > 200 ms",
            "CPU us per run",
            "tick's calls",
            "deleted/s (all)",
        ],
        [
            [
                name,
                f"{g['calls']} ({g['calls_purging']})",
                fmt(g["purged"]),
                " / ".join(fmt(g[k], ".1f") for k in ("ms_p50", "ms_p99", "ms_max")),
                str(g["calls_over_200ms"]),
                fmt(g["us_per_run"], ".1f"),
                " / ".join(fmt(g[k], ".1f") for k in ("cpu_ms_p50", "cpu_ms_p99", "cpu_ms_max")),
                str(g["cpu_over_200ms"]),
                fmt(g["cpu_us_per_run"], ".1f"),
                fmt(g.get("tick_calls")),
                fmt(g.get("deleted_per_s")),
            ]
            for name, g in summary["purge"].items()
        ],
    )
    lines += ["", "slowest call of each (t: seconds into the case):"]
    lines += [
        f"  {name}: {json.dumps(g['slowest'])}"
        for name, g in summary["purge"].items()
        if g["calls"]
    ]
    if h := summary.get("hold"):
        lines += [
            "",
            f"hold (B): xid {h['xid']}, backend_xmin {h['backend_xmin']}, "
            f"max xmin age {h['max_xmin_age']:,}",
            f"  drain before {fmt(h['rate_before'])} runs/s, during {fmt(h['rate_median'])} "
            f"(second half {fmt(h['rate_second_half'])}, lowest sample {fmt(h['rate_min'])}): "
            f"factor {h['factor']} (second half {h['factor_second_half']})",
            f"  recovered (3 samples >= {RECOVERED}x before) {h['recovery_s']} s after the "
            f"release; dead tuples of runs under the pre-hold max {h['dead_cleared_s']} s after",
            f"  runs MB at hold, release, end: {h['runs_mb']}; attempts: {h['attempts_mb']}",
            f"  rates after the release: {h['rates_after']}",
        ]
    if cost:
        lines += ["", "purge cost, nothing else running (purge(500) alternated):"]
        lines += [f"  {name}: {json.dumps(c)}" for name, c in cost.items()]
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of about 3 minutes")
    ap.add_argument("--out", type=Path, help="where the CSVs and logs go (default: a new /tmp dir)")
    ap.add_argument("--pg-root", type=Path, help="where the cluster lives (default: /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the cluster afterwards")
    ap.add_argument("--no-prototype", action="store_true", help="skip case B2 and its cost")
    ap.add_argument("--no-cost", action="store_true", help="skip the purge-cost measurement")
    ap.add_argument("--only", help="comma-separated segments to run (A1,B,A2,B2,A3,T)")
    ap.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        help="run nothing: the figures and report again from an earlier run's --out",
    )
    return ap.parse_args(argv)


def number(text: str) -> Any:
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def load(out: Path) -> tuple[list[SegmentResult], Profile, dict[str, Any]]:
    """The results of an earlier run, from its files in `out` (for --from)."""
    old = json.loads((out / "summary.json").read_text())
    p = Profile(**old["profile"])
    with open(out / "samples.csv") as f:
        samples = [{k: number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    with open(out / "purge_calls.csv") as f:
        calls = [PurgeCall(**{k: number(v) for k, v in row.items()}) for row in csv.DictReader(f)]
    results = []
    for seg in plan(p, True):
        if seg.name not in old["segments"]:
            continue
        saved = old["segments"][seg.name]
        res = SegmentResult(
            seg,
            [x for x in samples if x["segment"] == seg.name],
            [c for c in calls if c.segment == seg.name],
            triggered=saved["triggered"],
            completed=saved["completed"],
            failed_runs=saved["failed_runs"],
            purge_fn_calls=saved["purge_fn_calls"],
            purge_fn_ms=saved["purge_fn_ms"],
            retention_seen=saved["retention_seen"],
            backlog=saved["backlog_at_end"],
        )
        if seg.hold_at is not None and old.get("hold"):
            res.marks = {"xid": old["hold"]["xid"], "verified": old["hold"]["backend_xmin"]}
        results.append(res)
    return results, p, old


def reanalyze(out: Path) -> int:
    """Figures and report again from an earlier run's files; summary.json is rewritten."""
    results, p, old = load(out)
    summary = summarize(results, p)
    keep = ("cost", "server", "machine", "git", "wall_seconds")
    summary.update({k: old[k] for k in keep if k in old}, profile=asdict(p), reanalyzed=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    write_csv(out / "minutes.csv", minutes(results))
    print(report(summary, summary.get("cost")))
    return 0


def stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so the cluster and workers are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_dir:
        return reanalyze(args.from_dir)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    p = QUICK if args.quick else FULL
    segments = plan(p, not args.no_prototype)
    if args.only:
        wanted = set(args.only.split(","))
        segments = [s for s in segments if s.name in wanted]
    out = args.out or Path(tempfile.mkdtemp(prefix="skiplock-retention-"))
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    log_dir.mkdir(exist_ok=True)
    print(f"output in {out}; profile {asdict(p)}", flush=True)
    results: list[SegmentResult] = []
    cost = None
    started = time.time()
    with server(args.pg_root, args.keep) as srv:
        facts = common.server_facts(srv.dsn())
        print(f"PostgreSQL {facts['server_version']}, machine {common.machine_facts()}", flush=True)
        try:
            for seg in segments:
                print(
                    f"== {seg.name} ({seg.case}): {seg.seconds:.0f} s, retention {seg.retention}",
                    flush=True,
                )
                results.append(run_segment(srv, seg, p, log_dir))
            if not args.no_cost:
                print("== purge cost", flush=True)
                try:
                    cost = purge_cost(srv, p, not args.no_prototype, log_dir)
                except (psycopg.Error, common.BenchError) as exc:
                    print(f"purge cost failed: {exc!r}", file=sys.stderr)
        finally:
            shutil.copy(srv.log, out / "postgresql.log")
            write_csv(out / "samples.csv", [s for r in results for s in r.samples])
            write_csv(out / "purge_calls.csv", [asdict(c) for r in results for c in r.purge_calls])
            write_csv(out / "minutes.csv", minutes(results))
    summary = summarize(results, p)
    summary.update(
        profile=asdict(p),
        cost=cost,
        server=facts,
        machine=common.machine_facts(),
        git=subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        wall_seconds=round(time.time() - started),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    if cost:
        (out / "cost.json").write_text(json.dumps(cost, indent=1))
    print(report(summary, cost))
    print(f"\nwall time {summary['wall_seconds']} s; files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
