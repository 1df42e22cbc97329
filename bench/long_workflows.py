"""Benchmark: what a resume costs as a run's log grows (10, 100, 1,000 recorded calls).

    python bench/long_workflows.py [--baseline DIR] [--sizes 10,100,1000] [--repeat 5]
                                   [--resumes 3] [--quick] [--dsn postgresql://...]
                                   [--write-results [PATH]]

On resume a task function runs again from the top and every durable call before the
wait returns its recorded result. Two workflows, each N recorded calls, then waits on a
token `--resumes` times (each completion resumes it, and it replays the whole log):

* steps: N `ctx.step` calls of a function that does nothing;
* calls: N/2 `trigger_and_wait` of a trivial child and N/2 waits on tokens, alternating
  (the children finished and the tokens completed beforehand, so the log is built
  without a suspension per call: only the resumes after it are measured).

Per resume: the statements the resumed task function sends through the engine (counted
in-process, per execution: the claim that takes the run is one more, shared with other
runs, and since migration 0032 brings the log, so that a replay sends none), the time
from the token's completion (complete_token returned) to the task's first statement
after the wait, and the part of it from the task function's start on: the replay (with
the log's reads, for a checkout that reads it). Also per workflow: complete_token's own
time (it scans the waiting run's blocking edges) and, in the database, the median time
between consecutive calls recorded among the first and the last 10% of the log (does
recording a call get slower as the log grows?).

Each measurement runs in a subprocess of its own (`--measure`), with an in-process
worker (concurrency 4) on a fresh database migrated by the measured checkout: this one,
and with `--baseline DIR` another (e.g. `git archive COMMIT | tar -x -C DIR` of the
commit before), alternating which goes first, medians over repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Long workflows (bench/long_workflows.py)"
WORKLOADS = ("steps", "calls")


# -- one measurement, in the measured checkout's interpreter path ----------------------------


def measure(dsn: str, sizes: list[int], resumes: int) -> list[dict[str, Any]]:
    """Each workload at each size, once: a list of figures (see `_one`)."""
    import long_app  # bench/, this script's directory, is on the path
    import psycopg

    from engine import Engine
    from engine.api.durable import current_execution
    from engine.db.database import AsyncDatabase, Query

    sent: dict[object, list[float]] = defaultdict(list)  # execution: its queries' starts
    original = AsyncDatabase.run

    async def counted(self: AsyncDatabase, query: Query[Any], *args: Any, **kw: Any) -> Any:
        execution = current_execution.get()
        if execution is not None:
            sent[execution].append(time.perf_counter())
        return await original(self, query, *args, **kw)

    AsyncDatabase.run = counted  # type: ignore[method-assign]
    app = Engine(dsn)
    app.migrate()
    after: dict[str, list[tuple[float, float, int, float]]] = defaultdict(list)
    begun: dict[str, float] = {}  # run id: when its task function last started

    def begin(run_id: str) -> None:
        begun[run_id] = time.perf_counter()

    def mark(run_id: str) -> None:
        """After a wait: when, this process's CPU time, how many queries this execution
        sent, and when the task function started (the replay's start)."""
        now, cpu = time.perf_counter(), time.process_time()
        queries = len(sent[current_execution.get()])
        after[run_id].append((now, cpu, queries, begun[run_id]))

    child = long_app.define(app, mark, begin)
    worker = app.worker(concurrency=4, poll_interval=1.0, tick_interval=1.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    figures = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for n in sizes:
                for workload in WORKLOADS:
                    figures.append(_one(app, conn, workload, n, resumes, after, child))
    finally:
        worker.stop()
        thread.join(60)
        app.close()
    return figures


def _until(predicate: Any, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def _waits_on(conn: Any, run_id: str, token: str) -> bool:
    """Whether run `run_id` is WAITING, blocked on `token`."""
    row = conn.execute(
        "SELECT 1 FROM skiplock.runs r JOIN skiplock.run_waitpoints e ON e.run_id = r.id "
        "WHERE r.id = %s AND r.status = 'WAITING' AND e.waitpoint_id = %s",
        (run_id, token),
    ).fetchone()
    return row is not None


def _one(
    app: Any,
    conn: Any,
    workload: str,
    n: int,
    resumes: int,
    after: dict[str, list[tuple[float, float, int, float]]],
    child: Any,
) -> dict[str, Any]:
    """One run of `workload` with n recorded calls, resumed `resumes` times."""
    lasts = [app.waitpoints.create_token(timeout="1h").id for _ in range(resumes)]
    payload: dict[str, Any] = {"n": n, "lasts": lasts}
    if workload == "calls":
        key = f"k{time.monotonic_ns()}"
        payload.update(key=key, tokens=[])
        for i in range(n // 2):  # finished children, completed tokens: no suspension
            child.trigger(i, idempotency_key=f"{key}-{i}")
            token = app.waitpoints.create_token(timeout="1h").id
            app.waitpoints.complete_token(token, i)
            payload["tokens"].append(token)
        _until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM skiplock.runs WHERE task_identifier = 'long-child' "
                    "AND idempotency_key LIKE %s AND status = 'COMPLETED'",
                    (f"{key}-%",),
                ).fetchone()
                == (n // 2,)
            ),
            "the children",
        )
    run_id = app.trigger(f"long-{workload}", payload).id
    resumed, completes = [], []
    for k, token in enumerate(lasts):
        _until(partial(_waits_on, conn, run_id, token), f"{workload} {n} to wait")
        cpu, started = time.process_time(), time.perf_counter()
        app.waitpoints.complete_token(token, None)
        done = time.perf_counter()
        completes.append((done - started) * 1000)
        _until(partial(lambda k: len(after[run_id]) > k, k), f"{workload} {n} to resume")
        at, cpu_at, queries, began = after[run_id][k]
        resumed.append(
            {
                "ms": (at - done) * 1000,
                "queries": queries,
                "replay_ms": (at - began) * 1000,
                "cpu_ms": (cpu_at - cpu) * 1000,
            }
        )
    recorded = conn.execute(
        "SELECT count(*) FROM skiplock.run_steps WHERE run_id = %s", (run_id,)
    ).fetchone()[0]
    gaps = [
        row[0]
        for row in conn.execute(
            "SELECT extract(epoch FROM created_at - lag(created_at) OVER (ORDER BY position))"
            " * 1000 FROM skiplock.run_steps WHERE run_id = %s ORDER BY position",
            (run_id,),
        ).fetchall()
    ]
    calls = [float(g) for g in gaps[1:n] if g is not None]
    tenth = max(1, len(calls) // 10)
    return {
        "workload": workload,
        "n": n,
        "recorded": recorded - resumes,  # the calls before the first of the last waits
        "resume_ms": statistics.median(r["ms"] for r in resumed),
        "replay_ms": statistics.median(r["replay_ms"] for r in resumed),
        "queries": statistics.median(r["queries"] for r in resumed),
        "cpu_ms": statistics.median(r["cpu_ms"] for r in resumed),
        "replay_us_per_call": statistics.median(r["replay_ms"] for r in resumed) * 1000 / n,
        "complete_token_ms": statistics.median(completes),
        "record_first_ms": statistics.median(calls[:tenth]) if calls else 0.0,
        "record_last_ms": statistics.median(calls[-tenth:]) if calls else 0.0,
    }


# -- the driver ---------------------------------------------------------------------------------


def _measure_in(
    root: Path, server_dsn: str, name: str, sizes: list[int], resumes: int
) -> list[dict[str, Any]]:
    from bench.common import fresh_database

    with fresh_database(server_dsn, name) as dsn:
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
        argv = ["--measure", dsn, "--sizes", ",".join(map(str, sizes)), "--resumes", str(resumes)]
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    result: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


FIELDS = (
    ("queries", "queries per resume", ".0f"),
    ("resume_ms", "resume ms (token completed -> after the wait)", ".1f"),
    ("replay_ms", "replay ms (task function start -> after the wait)", ".1f"),
    ("replay_us_per_call", "replay us per recorded call", ".1f"),
    ("cpu_ms", "process CPU ms per resume (worker + driver)", ".1f"),
    ("complete_token_ms", "complete_token ms", ".2f"),
    ("record_first_ms", "ms between recorded calls, first 10%", ".2f"),
    ("record_last_ms", "ms between recorded calls, last 10%", ".2f"),
)


def _spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def report(results: dict[str, list[list[dict[str, Any]]]], sizes: list[int]) -> str:
    """A table per workload: a row per figure and size, a column per checkout."""
    names = list(results)
    pair = int(len(names) == 2)
    lines = []
    for workload in WORKLOADS:
        lines += [
            "",
            f"{workload}: "
            + (
                "N `ctx.step` calls"
                if workload == "steps"
                else "N/2 `trigger_and_wait` + N/2 token waits"
            ),
            "",
            "| figure | N | "
            + " | ".join(names)
            + (f" | {names[1]} / {names[0]} |" if pair else " |"),
            "|---|---:|" + "---:|" * (len(names) + pair),
        ]
        for key, label, fmt in FIELDS:
            for n in sizes:
                cells = []
                by_name: dict[str, list[float]] = {}
                for name in names:
                    values = [
                        f[key]
                        for rep in results[name]
                        for f in rep
                        if f["workload"] == workload and f["n"] == n
                    ]
                    cells.append(_spread(values, fmt))
                    by_name[name] = values
                if pair:  # per repetition: the two ran one after the other
                    ratios = [
                        b / a
                        for a, b in zip(by_name[names[0]], by_name[names[1]], strict=True)
                        if a > 0
                    ]
                    cells.append(_spread(ratios, ".2f") if ratios else "-")
                lines.append(f"| {label} | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["--measure"]:
        # in the measured checkout's interpreter path: its engine, and its bench/ (which
        # may predate bench.common's helpers), so nothing from bench.common here
        m = argparse.ArgumentParser()
        m.add_argument("--measure", metavar="DSN")
        m.add_argument("--sizes")
        m.add_argument("--resumes", type=int)
        margs = m.parse_args(given)
        sizes = [int(s) for s in margs.sizes.split(",")]
        print(json.dumps(measure(margs.measure, sizes, margs.resumes)))
        return 0
    if str(REPO) not in sys.path:  # `python bench/long_workflows.py` puts bench/ on it
        sys.path.insert(0, str(REPO))
    from bench.common import (
        add_dsn,
        add_write_results,
        cluster,
        machine_facts,
        server_facts,
        write_section,
    )

    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sizes", default="10,100,1000", help="recorded calls before the waits")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--resumes", type=int, default=3, help="resumes per run (median taken)")
    p.add_argument("--baseline", type=Path, help="another checkout to measure alongside")
    p.add_argument("--quick", action="store_true", help="sizes 10,100; 2 repetitions")
    add_dsn(p)
    add_write_results(p, "write the report")
    args = p.parse_args(given)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.repeat = [s for s in sizes if s <= 100], min(args.repeat, 2)

    roots = {"this checkout": REPO}
    if args.baseline:
        roots[f"baseline ({args.baseline.name})"] = args.baseline.resolve()
    results: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in roots}
    with cluster(args.dsn) as server:
        facts = server_facts(server.dsn)
        print(f"PostgreSQL {facts['server_version']}; load {os.getloadavg()[0]:.2f}", flush=True)
        for r in range(args.repeat):
            order = list(roots) if r % 2 == 0 else list(reversed(roots))
            for name in order:
                db = f"skiplock_long_{os.getpid()}_{r}"
                try:
                    figures = _measure_in(roots[name], server.dsn, db, sizes, args.resumes)
                except subprocess.CalledProcessError as exc:
                    print(f"{name}: measurement failed:\n{exc.stderr}", file=sys.stderr)
                    return 1
                results[name].append(figures)
                brief = ", ".join(
                    f"{f['workload']} {f['n']}: {f['queries']:.0f} q {f['resume_ms']:.1f} ms"
                    for f in figures
                )
                print(f"#{r + 1} {name}: {brief}", flush=True)
    table = report(results, sizes)
    print(table)
    if args.write_results:
        machine = machine_facts()
        command = "python bench/long_workflows.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-results"
        )
        text = "\n".join(
            [
                SECTION,
                "",
                f"`{command.strip()}`: PostgreSQL {facts['server_version']} "
                f"(fsync={facts['fsync']}, synchronous_commit={facts['synchronous_commit']}), "
                f"{machine['cpus']} CPUs (shared), Python {machine['python']}; medians of "
                f"{args.repeat} repetitions (min-max), each the median of {args.resumes} "
                "resumes, checkouts alternating.",
                table,
            ]
        )
        write_section(Path(args.write_results), text, SECTION)
        print(f"wrote the {SECTION!r} section of {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
