"""The measurements of bench/workflows.py, each on a fresh database with one system
installed: worker processes are spawned, workflows started through the system's client,
and every step's ledger line checked (bench/workflow_peers/ledger.py) before a figure
counts. Each returns (row -> value, detail line)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError, Worker, connect, percentile, running, wait_until
from bench.workflow_peers import ledger
from bench.workflow_peers.base import SLEEP_SECONDS, Client, Peer, expected

WARM = 999_999  # the warm-up workflow one-999999: proves the workers are serving
POLL = 0.02
FAILED_EVERY = 0.5  # seconds between two looks for a failed workflow while waiting
TIMEOUT = 600.0
Values = dict[str, float]
Result = tuple[Values, str]


@dataclass(frozen=True)
class Settings:
    steps: int  # workflows x 3 steps
    resumes: int
    sleeps: int
    children: int
    drain: int
    idle: int
    logs: Path


def rows(workload: str, s: Settings, workers: int = 1) -> list[str]:
    """The table rows a measurement of `workload` fills, in its values' order (a failed
    measurement is shown as FAILED in each)."""
    if workload == "drain":
        return [f"drain {s.drain:,}, {workers} worker{'s' if workers > 1 else ''}"]
    return {
        "steps": [f"{s.steps:,} workflows x 3 steps"],
        "resume": ["wait-resume p50", "wait-resume p99"],
        "sleep": [f"{s.sleeps:,} sleeping {SLEEP_SECONDS:g} s"]
        + [f"sleep lateness {x}" for x in ("p50", "p99", "max")],
        "fanout": [f"fan-out of {s.children}"],
        "idle": [f"worker {x}, {s.idle:,} waiting" for x in ("RSS", "connections")],
    }[workload]


def named(workload: str, s: Settings, *values: float, workers: int = 1) -> Values:
    return dict(zip(rows(workload, s, workers), values, strict=True))


@dataclass
class Session:
    client: Client
    workers: list[Worker]
    ledger_dir: Path

    def until(self, done: Callable[[], bool], what: str) -> float:
        """Wait for `done`; fail at once when a workflow of the system failed (its status
        table, looked at every FAILED_EVERY s) rather than after TIMEOUT."""
        looked = time.perf_counter()

        def ready() -> bool:
            nonlocal looked
            if done():
                return True
            if time.perf_counter() - looked >= FAILED_EVERY:
                looked = time.perf_counter()
                if (why := self.client.failed()) is not None:
                    raise BenchError(f"a workflow failed while waiting for {what}: {why}")
            return False

        return wait_until(ready, self.workers, TIMEOUT, what, POLL)

    def check(self, kind: str, n: int, warm: bool = True) -> int:
        want = expected(kind, n) | ({f"one-{WARM}": ("s0",)} if warm else {})
        try:
            return ledger.check(ledger.read(self.ledger_dir), want)
        except ledger.LedgerError as exc:
            raise BenchError(f"EXACTLY-ONCE VIOLATED: {exc}") from exc


@contextlib.contextmanager
def session(peer: Peer, dsn: str, kind: str, s: Settings, workers: int = 1) -> Iterator[Session]:
    """Worker processes for `kind`, warmed up by one one-step workflow, and a client."""
    with (
        tempfile.TemporaryDirectory(prefix="wf-ledger-") as d,
        peer.client(dsn) as client,
    ):
        env = {**peer.worker_env(dsn), ledger.ENV: d, "BENCH_KIND": kind}
        cmd = peer.worker_command(kind)
        with running(cmd, dsn, workers, s.logs, env, stop_timeout=peer.stop_grace) as ws:
            sess = Session(client, ws, Path(d))
            if kind != "one":
                client.start("one", [WARM])
                sess.until(lambda: ledger.count(sess.ledger_dir, "s0") >= 1, "the warm-up")
                time.sleep(0.5)
            yield sess


def steps(peer: Peer, dsn: str, s: Settings) -> Result:
    with session(peer, dsn, "steps", s) as w:
        t0 = time.perf_counter()
        w.client.start("steps", list(range(s.steps)))
        started = time.perf_counter()
        t1 = w.until(lambda: w.client.finished("steps") >= s.steps, "all workflows")
        lines = w.check("steps", s.steps)
    return named(
        "steps", s, t1 - t0
    ), f"{t1 - t0:.2f} s (starting took {started - t0:.2f} s); {lines} ledger"


def resume(peer: Peer, dsn: str, s: Settings) -> Result:
    n = s.resumes
    with session(peer, dsn, "resume", s) as w:
        w.client.start("resume", list(range(n)))
        w.until(lambda: w.client.waiting("resume") >= n, "every workflow to wait")
        time.sleep(0.5)  # DBOS: those whose `before` is recorded have entered recv
        called = {}
        for i in range(n):
            called[f"resume-{i}"] = time.time()
            w.client.complete(i)
            time.sleep(0.02)
        w.until(lambda: w.client.finished("resume") >= n, "every workflow to finish")
        lines = w.check("resume", n)
        after = ledger.times(ledger.read(w.ledger_dir), "after")
    ms = [(after[wf] - t) * 1000 for wf, t in called.items()]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    return (
        named("resume", s, p50, p99),
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(ms):.1f} ms; {lines} ledger",
    )


def sleep(peer: Peer, dsn: str, s: Settings) -> Result:
    n = s.sleeps
    with session(peer, dsn, "sleep", s) as w:
        t0 = time.perf_counter()
        w.client.start("sleep", list(range(n)))
        t1 = w.until(lambda: w.client.finished("sleep") >= n, "every sleeper")
        lines = w.check("sleep", n)
        read = ledger.read(w.ledger_dir)
    start, woke = ledger.times(read, "start"), ledger.times(read, "woke")
    late = [(woke[wf] - start[wf] - SLEEP_SECONDS) * 1000 for wf in start]
    p50, p99, worst = percentile(late, 50), percentile(late, 99), max(late)
    return (
        named("sleep", s, t1 - t0, p50, p99, worst),
        f"{t1 - t0:.2f} s; late p50 {p50:.0f} / p99 {p99:.0f} / max {worst:.0f} ms; {lines} ledger",
    )


def fanout(peer: Peer, dsn: str, s: Settings) -> Result:
    with session(peer, dsn, "fanout", s) as w:
        t0 = time.perf_counter()
        w.client.start("fanout", [s.children])
        t1 = w.until(lambda: w.client.finished("fanout") >= 1, "the parent")
        lines = w.check("fanout", s.children)
    return named("fanout", s, t1 - t0), f"{t1 - t0:.2f} s; {lines} ledger"


def fill_drain(peer: Peer, dsn: str, s: Settings) -> str:
    """Start s.drain one-step workflows with no worker running (the template database)."""
    with peer.client(dsn) as client:
        t0 = time.perf_counter()
        client.start("one", list(range(s.drain)))
    return f"{s.drain} workflows started in {time.perf_counter() - t0:.1f} s"


def drain(peer: Peer, dsn: str, s: Settings, workers: int) -> Result:
    """Rate from the first step (ledger time) to the poll that saw the last done, so that
    start-up (DBOS.launch takes a second or more) is not counted; the detail gives both."""
    n = s.drain
    spawned = time.time()
    with session(peer, dsn, "one", s, workers) as w:
        w.until(lambda: w.client.finished("one") >= n, "the drain")
        done = time.time()
        lines = w.check("one", n, warm=False)
        first = min(line.at for line in ledger.read(w.ledger_dir))
    rate = n / (done - first)
    return named("drain", s, rate, workers=workers), (
        f"{rate:.0f} wf/s after start-up, {n / (done - spawned):.0f} wf/s with it "
        f"(start-up {first - spawned:.2f} s); {lines} ledger"
    )


def idle(peer: Peer, dsn: str, s: Settings) -> Result:
    from bench import workflow_probe  # psutil: the bench extra, not the test one

    n = s.idle
    with session(peer, dsn, "wait", s) as w:
        w.client.start("wait", list(range(n)))
        w.until(lambda: w.client.waiting("wait") >= n, "every workflow to wait")
        time.sleep(1.0)
        pid = w.workers[0].process.pid
        with connect(dsn) as conn:
            rss = workflow_probe.rss_bytes(pid) / 2**20
            conns = workflow_probe.connections(conn, pid)
        lines = w.check("wait", n)
    return (
        named("idle", s, rss, conns),
        f"RSS {rss:.0f} MB, {conns} PostgreSQL connections; {lines} ledger",
    )
