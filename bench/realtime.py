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
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/realtime.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench import common  # noqa: E402
from bench.drain import BenchError, fresh_database, postgres_server  # noqa: E402
from bench.realtime_latency import latency, percentiles  # noqa: E402
from bench.realtime_report import (  # noqa: E402
    SECTION,
    Results,
    describe,
    facts_lines,
    latency_table,
    section,
    throughput_table,
)
from bench.realtime_subscriber import subscriber_main  # noqa: E402
from bench.realtime_throughput import THROUGHPUT  # noqa: E402


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
    common.add_dsn(p)
    common.add_write_results(p, f'replace or add the "{SECTION}" section of PATH')
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
        common.write_section(Path(args.write_results), text, SECTION)
        print(f"wrote the {SECTION!r} section of {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
