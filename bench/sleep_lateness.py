"""Benchmark: how late sleeping runs wake, this checkout against another.

    python bench/sleep_lateness.py --baseline DIR [--runs 1000] [--seconds 2]
                                   [--repeat 3] [--dsn postgresql://...]
                                   [--write-results [PATH]]

DIR is a checkout to compare with (e.g. `git archive COMMIT | tar -x -C DIR`). Each
repetition, for each checkout in alternating order: a fresh database migrated by that
checkout, N runs of a task that sleeps S seconds (`wait.for_`) triggered at once, and one
worker process (`skiplock worker sleep_app:app --concurrency 50`, its default tick of
1 s). "All done" is the time from the trigger to the last run's end. Two latenesses:
"wake", the waitpoint's completion (completed_at, the database's clock) after its due
time, which is what the worker's timers control; "resume", when the task went on, which
adds the queueing of 1,000 runs resumed at once for 50 slots. Figures: medians over the repetitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import common, sleep_app  # noqa: E402
from bench.drain import WORKER_CONCURRENCY, WORKER_VERSION, postgres_server  # noqa: E402
from bench.step_times import Drain, Kind, _env, drop_database, fresh_database  # noqa: E402
from engine import Engine  # noqa: E402

DRAIN = Drain("sleep", "sleep_app:app", sleep_app.define, 0)  # type: ignore[arg-type]
SECTION = "## Sleep lateness (bench/sleep_lateness.py)"


def measure(dsn: str, kind: Kind, n: int, seconds: float, log_dir: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "engine.cli", "worker", DRAIN.app, "--quiet"]
    cmd += ["--concurrency", str(WORKER_CONCURRENCY), "--version", WORKER_VERSION]
    log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=kind.root,
            env=_env(kind, dsn),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    workers = [common.Worker(process, log_path)]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            common.wait_until(
                lambda: bool(common.scalar(conn, "SELECT count(*) FROM skiplock.workers")),
                workers,
                60,
                "the worker to register",
            )
            time.sleep(0.5)
            started = time.perf_counter()
            with Engine(dsn) as engine:
                sleep_app.define(engine).batch_trigger([{"seconds": seconds}] * n)
            done_q = "SELECT count(*) FROM skiplock.runs WHERE status = 'COMPLETED'"
            ended = common.wait_until(
                lambda: common.scalar(conn, done_q) == n, workers, 120 + n / 10, "all runs"
            )
            rows = conn.execute(
                "SELECT (r.output::text)::double precision - extract(epoch FROM w.completes_at),"
                "       extract(epoch FROM w.completed_at - w.completes_at)"
                "  FROM skiplock.runs r"
                "  JOIN skiplock.run_steps s ON s.run_id = r.id AND s.position = 0"
                "  JOIN skiplock.waitpoints w ON w.id = s.waitpoint_id"
            ).fetchall()
    finally:
        common.stop(workers)
    late = sorted(float(r[0]) * 1000 for r in rows)
    woke = sorted(float(r[1]) * 1000 for r in rows)
    if len(late) != n:
        raise common.BenchError(f"{len(late)} of {n} runs have a lateness")
    return {
        "wake p50 ms": common.percentile(woke, 50),
        "wake p99 ms": common.percentile(woke, 99),
        "wake max ms": woke[-1],
        "resume p50 ms": common.percentile(late, 50),
        "resume p99 ms": common.percentile(late, 99),
        "all done s": ended - started,
    }


def section(
    results: dict[str, dict[str, list[float]]], command: str, setting: str, args: Any
) -> str:
    """The RESULTS.md section: the medians of each checkout, and how they were taken."""

    def med(figures: dict[str, list[float]], key: str) -> float:
        return statistics.median(figures[key])

    rows = []
    for name, figures in results.items():
        rows.append(
            f"| {name} | {med(figures, 'wake p50 ms'):.1f} / {med(figures, 'wake p99 ms'):.1f}"
            f" / {med(figures, 'wake max ms'):.1f} | {med(figures, 'resume p50 ms'):.1f} / "
            f"{med(figures, 'resume p99 ms'):.1f} | {med(figures, 'all done s'):.1f} |"
        )
    return "\n".join(
        [
            SECTION,
            "",
            f"`{command}` ({setting}). {args.runs:,} runs each sleep {args.seconds:g} s "
            '(`wait.for_`), triggered at once. "wake": the DATETIME waitpoint\'s completion '
            'after its due time (the database\'s clock); "resume": the task going on after '
            "the sleep (the worker's clock), which adds the queueing of the runs resumed at "
            f"once for {WORKER_CONCURRENCY} slots. Medians of {args.repeat} alternated "
            "repetitions.",
            "",
            "| | wake p50 / p99 / max, ms | resume p50 / p99, ms | all done, s |",
            "|---|---|---|---|",
            *rows,
            "",
            "Issue #25's target: p99 lateness under 50 ms, with no busy polling. Between ticks "
            "the worker calls `wake_due` only when the next due time says, or when a run of its "
            "own starts a sleep that ends sooner.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=3)
    common.add_dsn(p)
    p.add_argument("--baseline", type=Path, required=True)
    common.add_write_results(p, f'replace or add the "{SECTION}" section of PATH')
    args = p.parse_args(argv)
    new = Kind("this checkout", REPO, True)
    base = Kind(f"baseline ({args.baseline.name})", args.baseline.resolve(), False)
    results: dict[str, dict[str, list[float]]] = {new.name: {}, base.name: {}}
    with (
        postgres_server(args.dsn) as server_dsn,
        tempfile.TemporaryDirectory(prefix="skiplock-bench-logs-") as log_dir,
    ):
        load_start = os.getloadavg()[0]
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        facts = common.server_facts(server_dsn)
        print(f"load average: {load_start:.2f}", flush=True)
        for r in range(args.repeat):
            for kind in (new, base) if r % 2 == 0 else (base, new):
                name = f"skiplock_sleep_{os.getpid()}_{r}"
                dsn = fresh_database(server_dsn, name, kind, DRAIN)
                try:
                    figures = measure(dsn, kind, args.runs, args.seconds, Path(log_dir))
                finally:
                    drop_database(server_dsn, name)
                print(
                    f"#{r + 1} {kind.name:24} "
                    + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()),
                    flush=True,
                )
                for k, v in figures.items():
                    results[kind.name].setdefault(k, []).append(v)
    print(f"\n{args.runs} runs sleeping {args.seconds:g} s, medians of {args.repeat}:")
    for kind_name, values in results.items():
        print(
            f"  {kind_name:24} "
            + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in values.items())
        )
    load_end = os.getloadavg()[0]
    print(f"load average: {load_end:.2f}")
    if args.write_results:
        command = "python bench/sleep_lateness.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        setting = (
            f"PostgreSQL {facts.get('server_version', '?')}, durability on; one worker, "
            f"`--concurrency {WORKER_CONCURRENCY}`, default tick 1 s; {os.cpu_count()} CPUs, "
            f"load average {load_start:.1f} at the start, {load_end:.1f} at the end; {when}"
        )
        common.write_section(
            Path(args.write_results),
            section(results, command.strip(), setting, args),
            heading=SECTION,
        )
        print(f"wrote the {SECTION!r} section of {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
