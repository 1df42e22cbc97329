"""The subscriber process of bench/realtime.py, and the benchmark's handle on it.

The process is `python bench/realtime.py --subscriber` (see `subscriber_main`): it holds a
tag subscription that matches no benchmark run until SIGTERM, then prints what its feed
handled. See bench/realtime.py's docstring for how it is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench import common
from bench.common import BenchError, Conn
from engine import Engine

ENTRY = Path(__file__).resolve().with_name("realtime.py")  # started with --subscriber
IDLE_TAG = "bench-nobody"  # the subscriber process's tag: no run has it
REGISTER_TIMEOUT = 60.0
STATS_PREFIX = "SUBSCRIBER_STATS "


class _Stop(Exception):
    """Raised in the subscriber's main thread by SIGTERM."""


def subscriber_main(dsn: str) -> int:
    """Hold one tag subscription that matches nothing until SIGTERM, then unsubscribe,
    wait for the registration to be gone, and print what the feed handled."""
    from engine.api.realtime import RunFeed  # counting only: the feed itself is unchanged

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
    cmd = [sys.executable, str(ENTRY), "--subscriber"]
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
