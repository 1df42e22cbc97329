"""Benchmark: a worker's footprint, its memory (RSS) and its PostgreSQL connections.

    python bench/worker_footprint.py [--runs 1000] [--concurrency 50] [--repeat 3]
                                     [--baseline DIR] [--dsn postgresql://...]
                                     [--write-results [PATH]]

One `skiplock worker footprint_app:app --concurrency 50 --quiet` process (bench/
footprint_app.py: a task that makes one step, then sleeps an hour) in a fresh database:

* idle: RSS (VmRSS of /proc/PID/status) and connections 5 s after it registered;
* waiting: `--runs` runs triggered, each runs its step and suspends; RSS and connections
  5 s after all of them are WAITING;
* peak: the most connections seen at once, sampled every 20 ms from the spawn to the
  end (pg_stat_activity, by the application_name the worker is started with:
  $PGAPPNAME, which libpq applies to the connections that set none, and its LISTEN
  connection's, skiplock-listener:PID), and VmHWM.

With `--baseline DIR` (a checkout of skiplock, e.g. `git archive COMMIT | tar -x -C DIR`)
its worker is measured the same way, in alternating order, each in a database migrated by
its own code. Figures are medians over the repetitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/worker_footprint.py` puts bench/ on it
    sys.path.insert(0, str(REPO))

from bench import common, footprint_app  # noqa: E402
from bench.drain import WORKER_VERSION, BenchError, postgres_server, server_facts  # noqa: E402
from bench.step_times import Drain, drop_database, fresh_database  # noqa: E402
from engine import Engine  # noqa: E402

SECTION = "## Worker footprint (bench/worker_footprint.py)"
VERSION = WORKER_VERSION  # what fresh_database deploys the task at
FOOTPRINT = Drain("footprint", "footprint_app:app", footprint_app.define, 0)
SETTLE = 5.0  # seconds between reaching a state and measuring it
SAMPLE_EVERY = 0.02
FIGURES = ("idle MB", "waiting MB", "peak MB", "idle conns", "waiting conns", "peak conns")


@dataclass
class Kind:
    name: str
    root: Path
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, figure: str, value: float) -> None:
        self.figures.setdefault(figure, []).append(value)

    def median(self, figure: str) -> float:
        return statistics.median(self.figures[figure])


def _env(kind: Kind, dsn: str, appname: str = "") -> dict[str, str]:
    path = os.pathsep.join([str(kind.root), str(REPO / "bench")])
    env = {**os.environ, "SKIPLOCK_DATABASE_URL": dsn, "PYTHONPATH": path}
    if appname:
        env["PGAPPNAME"] = appname
    return env


def proc_status_kb(pid: int, key: str) -> int:
    """A figure of /proc/PID/status in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


class ConnectionSampler:
    """Counts the sessions named `appname` every SAMPLE_EVERY seconds, on a thread."""

    def __init__(self, dsn: str, appname: str) -> None:
        self.dsn, self.appname = dsn, appname
        self.pid = 0  # the worker's, once spawned: its LISTEN connection is named for it
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def count(self, conn: psycopg.Connection[Any]) -> int:
        names = [self.appname, f"skiplock-listener:{self.pid}", f"skiplock-poller:{self.pid}"]
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)", (names,)
        ).fetchone()
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(row[0]) if row else 0

    def now(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return self.count(conn)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.count(conn))
                self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_until(
    conn: psycopg.Connection[Any],
    query: str,
    params: tuple[Any, ...],
    want: int,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 120.0,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(query, params).fetchone()
        if row is not None and row[0] >= want:
            return
        if process.poll() is not None:
            raise BenchError(
                f"the worker exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {query!r} to reach {want} (at {row})")
        time.sleep(0.05)


def measure(dsn: str, kind: Kind, args: argparse.Namespace, log_dir: Path) -> None:
    appname = f"skiplock-footprint-{os.getpid()}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "engine.cli", "worker", "footprint_app:app", "--quiet"]
    cmd += ["--concurrency", str(args.concurrency), "--version", VERSION]
    log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
    sampler = ConnectionSampler(dsn, appname)
    with (
        sampler,
        psycopg.connect(dsn, autocommit=True) as conn,
        open(log_path, "wb") as log,
    ):
        process = subprocess.Popen(
            cmd,
            cwd=kind.root,
            env=_env(kind, dsn, appname),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        sampler.pid = process.pid
        try:
            registered = (
                "SELECT count(*) FROM skiplock.workers WHERE pid = %s AND stopped_at IS NULL"
            )
            wait_until(conn, registered, (process.pid,), 1, process, log_path)
            time.sleep(SETTLE)
            kind.add("idle MB", proc_status_kb(process.pid, "VmRSS") / 1024)
            kind.add("idle conns", sampler.now())
            with Engine(dsn) as engine:
                task = footprint_app.define(engine)
                for start in range(0, args.runs, 1000):
                    task.batch_trigger(
                        [{"i": i} for i in range(start, min(args.runs, start + 1000))]
                    )
            waiting = "SELECT count(*) FROM skiplock.runs WHERE status = 'WAITING'"
            wait_until(conn, waiting, (), args.runs, process, log_path)
            time.sleep(SETTLE)
            kind.add("waiting MB", proc_status_kb(process.pid, "VmRSS") / 1024)
            kind.add("waiting conns", sampler.now())
            kind.add("peak MB", proc_status_kb(process.pid, "VmHWM") / 1024)
        finally:
            common.stop([common.Worker(process, log_path)])
    kind.add("peak conns", sampler.peak)
    if process.returncode != 0:
        raise BenchError(f"worker exit code {process.returncode}:\n{log_path.read_text()[-3000:]}")


def table(kinds: list[Kind], runs: int) -> str:
    lines = [
        f"| worker | RSS idle (MB) | RSS, {runs} runs waiting (MB) | peak RSS (MB) "
        "| connections idle | connections, runs waiting | most connections at once |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        cells = [
            f"{kind.median(f):.1f}" if f.endswith("MB") else f"{kind.median(f):.0f}"
            for f in FIGURES
        ]
        lines.append(f"| {kind.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(text: str, command: str, facts: dict[str, str], started: str) -> str:
    return "\n".join(
        [
            SECTION,
            "",
            f"Measured {started} with `{command}` (PostgreSQL {facts['server_version']}, "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs). Medians of the "
            "repetitions; RSS is VmRSS of /proc/PID/status, connections are the sessions "
            "of pg_stat_activity with the worker's application_name, sampled every 20 ms.",
            "",
            text,
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000, help="runs left waiting (default 1000)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--baseline", type=Path, help="another checkout to measure alongside")
    common.add_dsn(p)
    common.add_write_results(p, f'replace or add the "{SECTION}" section of PATH')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    kinds = [Kind("this checkout", REPO)]
    if args.baseline is not None:
        kinds.append(Kind(f"baseline ({args.baseline.name})", args.baseline.resolve()))
    with (
        postgres_server(args.dsn) as server_dsn,
        tempfile.TemporaryDirectory(prefix="skiplock-bench-logs-") as log_dir,
    ):
        facts = server_facts(server_dsn)
        for r in range(args.repeat):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                name = f"skiplock_footprint_{os.getpid()}_{r}"
                dsn = fresh_database(server_dsn, name, kind, FOOTPRINT)
                try:
                    measure(dsn, kind, args, Path(log_dir))
                except BenchError as exc:
                    print(f"benchmark failed: {exc}", file=sys.stderr)
                    return 1
                finally:
                    drop_database(server_dsn, name)
                print(
                    f"#{r + 1} {kind.name:<24} "
                    + ", ".join(f"{f} {kind.figures[f][-1]:.1f}" for f in FIGURES),
                    flush=True,
                )
    text = table(kinds, args.runs)
    print()
    print(text)
    if args.write_results:
        command = "python bench/worker_footprint.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        common.write_section(
            Path(args.write_results),
            section(text, command.strip(), facts, started),
            heading=SECTION,
        )
        print(f"wrote the {SECTION!r} section of {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
