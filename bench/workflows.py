"""Durable workflows side by side: skiplock against DBOS Transact and Absurd, on one
PostgreSQL 18 cluster the benchmark starts itself, a fresh database per measurement.

    python bench/workflows.py [--quick] [--repeat 3] [--only skiplock,dbos,absurd]
                              [--workloads steps,resume,sleep,fanout,drain,idle]
                              [--write-results [PATH]]

Install the peers first: pip install -e '.[bench]'. Each system runs real worker
processes at its fastest documented setting for the workload (concurrency 50, polling
10 ms where it polls; the peer's `fastest` variant per workflow kind, printed in the
report). `--only absurd:threads,absurd:async` compares a peer's variants instead (names
in each peer's `variants`); a workflow that fails ends its measurement at once. Within a
repetition the systems take turns, workload by workload; figures are medians over
repetitions. Every step of every
workflow appends a ledger line, and a measurement counts only if each expected
(workflow, step) appears exactly once.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/workflows.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench import workflow_workloads as wl  # noqa: E402
from bench.common import (  # noqa: E402
    BenchError,
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
    write_section,
)
from bench.report import started_at  # noqa: E402
from bench.workflow_peers import NAMES, peer  # noqa: E402
from bench.workflow_peers.base import Peer  # noqa: E402
from bench.workflows_report import SECTION, Results, section, table  # noqa: E402

WORKLOADS = ("steps", "resume", "sleep", "fanout", "drain", "idle")
Measure = Callable[[Peer, str, wl.Settings], wl.Result]


def plan(wanted: list[str]) -> list[tuple[str, int, Measure]]:
    """(workload, worker processes, measurement), in the order they run."""
    every: list[tuple[str, int, Measure]] = [
        ("steps", 1, wl.steps),
        ("resume", 1, wl.resume),
        ("sleep", 1, wl.sleep),
        ("fanout", 1, wl.fanout),
        ("drain", 1, partial(wl.drain, workers=1)),
        ("drain", 2, partial(wl.drain, workers=2)),
        ("idle", 1, wl.idle),
    ]
    return [x for x in every if x[0] in wanted]


def one(
    server: str,
    peer: Peer,
    workload: str,
    workers: int,
    measure: Measure,
    s: wl.Settings,
    res: Results,
    template: str | None,
    rep: int,
) -> None:
    checkpoint_and_settle(server)
    db = f"wf_{peer.name}_{os.getpid()}"
    label = workload if workload != "drain" else f"drain x{workers}"
    started = time.perf_counter()
    try:
        if template is not None:
            with copy_database(server, template, db) as dsn:
                checkpoint_and_settle(server)
                values, detail = measure(peer, dsn, s)
        else:
            with fresh_database(server, db) as dsn:
                peer.install(dsn)
                values, detail = measure(peer, dsn, s)
    except Exception as exc:
        why = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
        for row in wl.rows(workload, s, workers):
            res.failures[(row, peer.label)] = why.strip().splitlines()[-1][:300]
        res.note(f"{label:<16} {peer.label:<9} #{rep + 1}: FAILED {why.strip()[:3000]}")
        return
    for row, value in values.items():
        res.add(row, peer.label, value)
    res.ledger_lines += int(detail.rsplit("; ", 1)[-1].split()[0])
    took = time.perf_counter() - started
    res.note(f"{label:<16} {peer.label:<9} #{rep + 1}: {detail} [{took:.0f}s]")


def template_for(server: str, peer: Peer, s: wl.Settings, res: Results) -> str:
    """A database with the system installed and s.drain workflows started, no worker yet."""
    name = f"wf_template_{peer.name}_{os.getpid()}"
    drop_database(server, name)
    with connect(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    from psycopg.conninfo import make_conninfo

    dsn = make_conninfo(server, dbname=name)
    peer.install(dsn)
    res.note(f"{'drain template':<16} {peer.name:<9}: {wl.fill_drain(peer, dsn, s)}")
    return name


def run(args: argparse.Namespace, server: str, s: wl.Settings, res: Results) -> None:
    chosen = [peer(spec) for spec in res.systems]
    templates: dict[str, str] = {}
    try:
        for workload, workers, measure in plan(args.workloads):
            for rep in range(args.repeat):
                order = chosen if rep % 2 == 0 else chosen[::-1]  # alternate who goes first
                for system in order:
                    template = None
                    if workload == "drain":  # variants of one peer share its template
                        if system.name not in templates:
                            templates[system.name] = template_for(server, system, s, res)
                        template = templates[system.name]
                    one(server, system, workload, workers, measure, s, res, template, rep)
    finally:
        for t in templates.values():
            drop_database(server, t)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; quick 1)")
    p.add_argument(
        "--quick", action="store_true", help="smaller counts (a few minutes), 1 repetition"
    )
    p.add_argument("--only", default=",".join(NAMES), help=f"systems (default {','.join(NAMES)})")
    p.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"default all: {','.join(WORKLOADS)}"
    )
    add_dsn(p)
    add_write_results(p, "replace or add this benchmark's section of PATH")
    args = p.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    args.workloads = [x.strip() for x in args.workloads.split(",") if x.strip()]
    for x in args.only:
        if x.partition(":")[0] not in NAMES:
            p.error(f"unknown system {x!r}")
        try:
            peer(x)
        except ValueError as exc:
            p.error(str(exc))
    for x in args.workloads:
        if x not in WORKLOADS:
            p.error(f"unknown workload {x!r}")
    args.repeat = args.repeat or (1 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = Results(sorted(args.only, key=lambda x: NAMES.index(x.partition(":")[0])))
    started = started_at()
    with cluster(args.dsn) as server, tempfile.TemporaryDirectory(prefix="wf-logs-") as logs:
        q = args.quick
        s = wl.Settings(
            steps=500 if q else 2000,
            resumes=50 if q else 200,
            sleeps=200 if q else 1000,
            children=100 if q else 500,
            drain=2000 if q else 20000,
            idle=200 if q else 1000,
            logs=Path(logs),
        )
        pg = server_facts(server.dsn)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        res.note(
            f"PostgreSQL {pg['server_version']}: fsync={pg['fsync']}, synchronous_commit="
            f"{pg['synchronous_commit']}; {os.cpu_count()} CPUs; load average at start {load}"
        )
        run(args, server.dsn, s, res)
    machine = machine_facts()
    res.note(f"load average at the end (1, 5, 15 min): {machine['load']}")
    print()
    print(table(res))
    if args.write_results:
        every = {n: peer(n) for n in res.systems}
        versions = ", ".join(dict.fromkeys(f"{p.name} {p.version()}" for p in every.values()))
        command = "python bench/workflows.py " + " ".join(sys.argv[1:] if argv is None else argv)
        facts = [
            f"Run from {started} to {started_at()} on {machine['cpus']} cores "
            f"({machine['cpu']}), Python {machine['python']}, PostgreSQL "
            f"{pg['server_version']} (fsync={pg['fsync']}, synchronous_commit="
            f"{pg['synchronous_commit']}); {versions}. The machine was shared with other "
            f"benchmarks (load average at the end {machine['load']}): compare within the run.",
            f"Counts: {s.steps} x 3 steps, {s.resumes} resumes (completed 20 ms apart), "
            f"{s.sleeps} sleeps, {s.children} children, a drain of {s.drain}, {s.idle} "
            f"waiting; {args.repeat} repetition(s).",
        ]
        write_section(
            Path(args.write_results),
            section(
                res,
                command=command,
                facts=facts,
                settings={n: every[n].describe() for n in res.systems},
            ),
            SECTION,
        )
        print(f"\nwrote {args.write_results}")
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
