"""Side-by-side benchmark: skiplock against PgQueuer, Procrastinate and Chancy, and against
the bare SQL of a job's life (pgbench), on one PostgreSQL 18 cluster it starts itself.

    python bench/compare.py [--quick] [--repeat 3] [--only skiplock,pgqueuer,...]
                            [--workloads enqueue,drain,pickup,backlog] [--write-results]

Install the peers first: pip install -e '.[bench]'. Durability stays on (fsync and
synchronous_commit, printed at the start). Every measurement gets a fresh database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/compare.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench import ceiling, workloads  # noqa: E402
from bench.common import (  # noqa: E402
    BenchError,
    Cluster,
    add_dsn,
    add_write_results,
    checkpoint_and_settle,
    cluster,
    connect,
    copy_database,
    drop_database,
    fresh_database,
    machine_facts,
    server_facts,
)
from bench.peers import NAMES, systems  # noqa: E402
from bench.report import CEILING, Results, markdown, started_at, table, versions  # noqa: E402
from bench.workloads import PICKUP_ROWS, Result, Settings, backlog_row, drain_row  # noqa: E402

WORKLOADS = ("enqueue", "drain", "pickup", "backlog")

Measure = Callable[[str], Result]  # database DSN -> result
Fill = Callable[[str], str]  # database DSN -> detail (fills a template database)


@dataclass
class Entry:
    workload: str
    label: str  # the table row it fills (the pickup entry fills three: PICKUP_ROWS)
    measure: Callable[[str], Measure | None]  # system name -> its measurement (None: n/a)
    fill: Callable[[str], Fill] | None = None  # system name -> template filler, if any


def plan(s: Settings, server: Cluster, wanted: list[str]) -> list[Entry]:
    every = systems()

    def pick(
        peer: Callable[..., Result], sql: Callable[..., Result] | None, *args: object
    ) -> Callable[[str], Measure | None]:
        def measure(name: str) -> Measure | None:
            if name == CEILING:
                return None if sql is None else (lambda dsn: sql(server, dsn, s, *args))
            return lambda dsn: peer(every[name], dsn, s, *args)

        return measure

    def filler(size: int) -> Callable[[str], Fill]:
        def fill(name: str) -> Fill:
            if name == CEILING:
                return lambda dsn: ceiling.fill(dsn, size)
            return lambda dsn: workloads.fill_backlog(every[name], dsn, size)

        return fill

    out = [
        Entry("enqueue", "enqueue x1", pick(workloads.enqueue, ceiling.enqueue, False)),
        Entry("enqueue", "enqueue batch", pick(workloads.enqueue, ceiling.enqueue, True)),
        *(Entry("drain", drain_row(k), pick(workloads.drain, ceiling.drain, k)) for k in (1, 2)),
        Entry("pickup", "pickup latency", pick(workloads.pickup, None)),
        *(
            Entry("backlog", backlog_row(n), pick(workloads.backlog, ceiling.backlog, n), filler(n))
            for n in s.backlogs
        ),
    ]
    return [e for e in out if e.workload in wanted]


def install(name: str, dsn: str) -> None:
    if name == CEILING:
        ceiling.install(dsn)
    else:
        systems()[name].install(dsn)


@contextlib.contextmanager
def database(
    server: Cluster, name: str, entry: Entry, templates: dict[str, str | None], res: Results
) -> Iterator[str]:
    """A fresh database with `name` installed; for entries with a filler, a copy of a
    template filled once per system (and kept for the other repetitions)."""
    db = f"compare_{name}_{entry.workload}_{os.getpid()}"
    if entry.fill is None:
        with fresh_database(server.dsn, db) as dsn:
            install(name, dsn)
            yield dsn
        return
    if name not in templates:
        templates[name] = None
        template = f"template_{db}"
        with fresh_database(server.dsn, template) as dsn:
            install(name, dsn)
            res.details.append(f"{entry.label:<18} {name:<14} template: {entry.fill(name)(dsn)}")
            print(res.details[-1], flush=True)
            with connect(server.dsn) as conn:  # keep it past the context: rename a copy
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(template + "_kept"), sql.Identifier(template)
                    )
                )
        templates[name] = template + "_kept"
    template_db = templates[name]
    if template_db is None:
        raise BenchError("its template database could not be made (see the first repetition)")
    with copy_database(server.dsn, template_db, db) as dsn:
        # after the copy: CREATE DATABASE writes the copy through the WAL and the shared
        # buffers, and a measurement must not pay for flushing it (a 1M-job copy is
        # 200-500 MB, depending on the system)
        checkpoint_and_settle(server.dsn)
        yield dsn


def run(args: argparse.Namespace, server: Cluster, s: Settings, res: Results) -> None:
    for entry in plan(s, server, args.workloads):
        templates: dict[str, str | None] = {}
        try:
            for rep in range(args.repeat):
                for name in res.systems:
                    measure = entry.measure(name)
                    if measure is not None:
                        run_one(server, entry, name, rep, measure, templates, res)
        finally:
            for t in templates.values():
                if t is not None:
                    drop_database(server.dsn, t)


def run_one(
    server: Cluster,
    entry: Entry,
    name: str,
    rep: int,
    measure: Measure,
    templates: dict[str, str | None],
    res: Results,
) -> None:
    checkpoint_and_settle(server.dsn)
    started = time.perf_counter()
    try:
        with database(server, name, entry, templates, res) as dsn:
            values, detail = measure(dsn)
    except Exception as exc:  # report it, and go on with the others
        why = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
        for row in PICKUP_ROWS if entry.workload == "pickup" else (entry.label,):
            res.failures[(row, name)] = why.strip().splitlines()[-1][:300]
        line = f"{entry.label:<18} {name:<14} #{rep + 1}: FAILED {why.strip()[:2000]}"
    else:
        for row, value in values.items():
            res.add(row, name, value)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in values.items())
        line = (
            f"{entry.label:<18} {name:<14} #{rep + 1}: {shown}; {detail} "
            f"[{time.perf_counter() - started:.0f}s]"
        )
    res.details.append(line)
    print(line, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; quick 1)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2000 jobs, 50 pickups, backlogs 1k and 20k, 1 repetition",
    )
    p.add_argument("--jobs", type=int, default=None, help="jobs per enqueue/drain (20000)")
    p.add_argument(
        "--backlogs", default=None, help="comma-separated backlog sizes (default 1000,1000000)"
    )
    p.add_argument(
        "--only",
        default=",".join([*NAMES, CEILING]),
        help=f"systems to run (default all: {','.join([*NAMES, CEILING])})",
    )
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"workloads to run (default all: {','.join(WORKLOADS)})",
    )
    add_dsn(p)
    add_write_results(p, "write the report")
    args = p.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    args.workloads = [x.strip() for x in args.workloads.split(",") if x.strip()]
    for x in args.only:
        if x not in (*NAMES, CEILING):
            p.error(f"unknown system {x!r}")
    for x in args.workloads:
        if x not in WORKLOADS:
            p.error(f"unknown workload {x!r}")
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.jobs = args.jobs or (2000 if args.quick else 20000)
    default_backlogs = "1000,20000" if args.quick else "1000,1000000"
    args.backlogs = tuple(int(x) for x in (args.backlogs or default_backlogs).split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    order = [n for n in (*NAMES, CEILING) if n in args.only]
    started, vers = started_at(), versions(order)  # the tree measured is the one at the start
    res = Results(order)
    with cluster(args.dsn) as server, tempfile.TemporaryDirectory(prefix="compare-logs-") as logs:
        pg = server_facts(server.dsn)
        print(
            f"PostgreSQL {pg['server_version']}: fsync={pg['fsync']}, "
            f"synchronous_commit={pg['synchronous_commit']}, "
            f"full_page_writes={pg['full_page_writes']}; {os.cpu_count()} CPUs",
            flush=True,
        )
        s = Settings(args.jobs, 50 if args.quick else 200, args.backlogs, Path(logs))
        run(args, server, s, res)
    print()
    print(table(res))
    if args.write_results:
        every = systems()
        text = markdown(
            res,
            command="python bench/compare.py " + " ".join(sys.argv[1:] if argv is None else argv),
            machine=machine_facts(),
            pg=pg,
            settings={
                **{n: every[n].settings for n in order if n != CEILING},
                **({CEILING: ceiling.DESCRIPTION} if CEILING in order else {}),
            },
            timed=TIMED,
            vers=vers,
            started=started,
            config=[
                f"Jobs per enqueue/drain: {s.jobs}; pickup jobs: {s.pickups}; "
                f"backlogs: {', '.join(map(str, s.backlogs))}; "
                f"repetitions: {args.repeat}"
            ],
        )
        Path(args.write_results).write_text(text)
        print(f"\nwrote {args.write_results}")
    return 1 if res.failures else 0


TIMED = [
    "**enqueue x1**: N single enqueue calls in a loop from one client (one transaction "
    "each): skiplock `task.trigger()`, PgQueuer `Queries.enqueue()`, Procrastinate "
    "`task.defer()`, Chancy `push()`. The client's connection is opened before the clock "
    "starts. Afterwards the database must hold exactly N queued jobs.",
    "**enqueue batch**: the same N jobs through each system's batch API, 1000 per call.",
    "**drain**: N jobs queued first (batch API, untimed, no ANALYZE: as after a burst), then "
    "1 or 2 worker processes are spawned; time from just before the first spawn (database "
    "clock) until the N-th success was recorded, by the system's own database timestamps "
    "(skiplock attempts.finished_at, PgQueuer's 'successful' log rows, Procrastinate's "
    "'succeeded' events; Chancy has none, so the 50 ms poll that saw N successes). "
    "Includes worker start-up; the detail lines give start-up and the rate after it. "
    "Then every job is checked to have run exactly once (see the settings above).",
    "**pickup latency**: one worker, warmed up by one job, idle for 1 s; then jobs of a "
    "task that records `clock_timestamp()` on its own connection as its first statement "
    "are triggered 20 ms apart; latency = that timestamp minus `clock_timestamp()` read "
    "(on the producer's connection) just before the trigger call: both database clock. "
    "For skiplock the details also give its own created_at -> attempt started_at.",
    "**backlog B**: B jobs queued with one SQL statement through each system's bulk path "
    "(skiplock: `SELECT ... FROM generate_series(1, B), LATERAL skiplock.trigger(...)`; the "
    "peers: their own INSERT with its log rows, triggers and NOTIFY), then VACUUM ANALYZE, "
    "once per system into a template database; each repetition runs on a fresh copy of it. "
    "One worker process; the rate is min(B, N) divided by the time from the first job's "
    "start to the min(B, N)-th success (timestamps as for drain), so start-up is excluded. "
    "A drain still running after 30 s is stopped and the rate of what finished is taken.",
    "**SQL ceiling**: see its settings above; no pickup figure.",
    "**exactly once**: skiplock: every run COMPLETED with attempt_count 1 and exactly one "
    "attempts row; PgQueuer: one 'picked' and one 'successful' log row per job and the "
    "queue table empty; Procrastinate: every job 'succeeded' with one 'started' event; "
    "Chancy: every job 'succeeded' with attempts = 1 (Chancy keeps no per-execution "
    "record, so this is the weakest of the checks); pickup: one bench_started row per job.",
]


if __name__ == "__main__":
    sys.exit(main())
