"""Benchmark: resume_if_ready and complete_waitpoint on a run with many past blocking edges.

    python bench/resume_edges.py [--baseline DIR] [--edges 1000] [--runs 50] [--calls 200]
                                 [--rounds 7] [--dsn postgresql://...]

A run that made N durable calls on waitpoints (waits, child runs, tokens) has N blocking
edges (run_waitpoints), kept for its life. Each checkout (this one, and with `--baseline
DIR` another, e.g. `git archive COMMIT | tar -x -C DIR`) gets a database of its own,
migrated by it, holding `--runs` WAITING runs of `--edges` completed edges and one
pending edge each (the other long workflows a planner sees), and the measured runs:

* check: resume_if_ready on a run of N completed edges and one pending (it stays WAITING:
  the decision alone);
* complete: complete_waitpoint of a run's last pending waitpoint, which resumes it (in a
  subtransaction rolled back, so that each call finds the same state);
* the same two at 10 edges, for scale.

Timed in the server (a loop in one statement, no round trips), `--calls` calls a round,
the checkouts alternating round by round; medians over `--rounds` rounds (min-max), in us
a call, with the backend's CPU a call (from /proc, when the server is on this machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

FILL = """
INSERT INTO skiplock.runs (id, task_identifier, status, payload, queue, max_attempts,
                           order_at, available_at, created_at, updated_at)
SELECT r, 'long', 'WAITING', 'null', 'bench', 1, now(), now(), now(), now()
  FROM unnest(%(runs)s::text[]) r;
INSERT INTO skiplock.waitpoints (id, type, status, created_at, completed_at)
SELECT r || '_wp_' || g, 'TOKEN', 'COMPLETED', now(), now()
  FROM unnest(%(runs)s::text[]) r, generate_series(1, %(edges)s) g
 WHERE g <= CASE WHEN r LIKE '%%small%%' THEN 10 ELSE %(edges)s END;
INSERT INTO skiplock.waitpoints (id, type, status, created_at)
SELECT r || '_xopen', 'TOKEN', 'PENDING', now() FROM unnest(%(runs)s::text[]) r;
INSERT INTO skiplock.run_waitpoints (run_id, waitpoint_id, created_at)
SELECT split_part(w.id, '_wp_', 1), w.id, now() FROM skiplock.waitpoints w
 WHERE w.id LIKE '%%\\_wp\\_%%'
UNION ALL
SELECT left(w.id, -6), w.id, now() FROM skiplock.waitpoints w WHERE w.id LIKE '%%\\_xopen';
"""

# the flag of migration 0033, where the checkout has it (the backfill it makes)
MARK = """
UPDATE skiplock.run_waitpoints e SET pending = true FROM skiplock.waitpoints w
 WHERE w.id = e.waitpoint_id AND w.status = 'PENDING'
"""

TIMER = """
CREATE FUNCTION pg_temp.time_calls(p_what text, p_run text, p_calls integer)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1 .. p_calls LOOP
        IF p_what = 'check' THEN
            PERFORM skiplock.resume_if_ready(p_run);
        ELSE
            BEGIN
                PERFORM skiplock.complete_waitpoint(p_run || '_xopen', 'null', false);
                RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'roll back';
            EXCEPTION WHEN raise_exception THEN
                NULL;
            END;
        END IF;
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / p_calls;
END;
$$;
"""

CASES = (
    ("check", "run_big"),
    ("complete", "run_big"),
    ("check", "run_small"),
    ("complete", "run_small"),
)


def _migrate(root: Path, dsn: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import sys; from engine import Engine; Engine(sys.argv[1]).migrate()"
    subprocess.run([sys.executable, "-c", code, dsn], check=True, env=env, cwd=root)


def _fill(conn: Any, runs: int, edges: int) -> None:
    ids = [f"run_other{k}" for k in range(runs)] + ["run_big", "run_small"]
    for statement in FILL.split(";")[:-1]:
        conn.execute(statement, {"runs": ids, "edges": edges})
    has_flag = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = 'skiplock'"
        " AND table_name = 'run_waitpoints' AND column_name = 'pending'"
    ).fetchone()
    if has_flag:
        conn.execute(MARK)
    # each run waits on its `_xopen` token (its id sorts last, as a newer gen_id does);
    # `complete` rolls its completion back
    conn.execute("VACUUM ANALYZE skiplock.run_waitpoints")
    conn.execute("VACUUM ANALYZE skiplock.waitpoints")
    conn.execute("ANALYZE skiplock.runs")


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(conn: Any, pid: int, what: str, run: str, calls: int) -> tuple[float, float | None]:
    cpu0 = _cpu_seconds(pid)
    row = conn.execute("SELECT pg_temp.time_calls(%s, %s, %s)", (what, run, calls)).fetchone()
    cpu1 = _cpu_seconds(pid)
    cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) * 1e6 / calls
    return float(row[0]), cpu


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="another checkout to measure alongside")
    p.add_argument("--edges", type=int, default=1000, help="past edges of the big run")
    p.add_argument("--runs", type=int, default=50, help="other waiting runs of as many edges")
    p.add_argument("--calls", type=int, default=200, help="calls a round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--dsn", default=os.environ.get("SKIPLOCK_BENCH_DSN"))
    args = p.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import psycopg

    from bench.common import cluster, fresh_database, server_facts

    roots = {"this checkout": REPO}
    if args.baseline:
        roots[f"baseline ({args.baseline.name})"] = args.baseline.resolve()
    wall: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    with cluster(args.dsn) as server:
        facts = server_facts(server.dsn)
        print(f"PostgreSQL {facts['server_version']}; load {os.getloadavg()[0]:.2f}", flush=True)
        with contextlib.ExitStack() as stack:
            conns: dict[str, Any] = {}
            for k, (name, root) in enumerate(roots.items()):
                dsn = stack.enter_context(fresh_database(server.dsn, f"resume_edges_{k}"))
                _migrate(root, dsn)
                conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
                _fill(conn, args.runs, args.edges)
                conn.execute(TIMER)
                conns[name] = conn
            for r in range(args.rounds):
                order = list(roots) if r % 2 == 0 else list(reversed(roots))
                for what, run in CASES:
                    for name in order:
                        conn = conns[name]
                        pid = conn.info.backend_pid
                        key = (name, what, run)
                        w, c = _round(conn, pid, what, run, args.calls)
                        wall.setdefault(key, []).append(w)
                        if c is not None:
                            cpu.setdefault(key, []).append(c)
                print(f"round {r + 1} done; load {os.getloadavg()[0]:.2f}", flush=True)
    small = 10
    print(
        f"\nus a call (median of {args.rounds} rounds of {args.calls}, min-max); "
        f"backend CPU us a call"
    )
    print("| checkout | case | edges | wall us | CPU us |")
    print("|---|---|---:|---:|---:|")
    for name in roots:
        for what, run in CASES:
            key = (name, what, run)
            edges = args.edges if run == "run_big" else small
            c = _summary(cpu[key]) if key in cpu else "-"
            print(f"| {name} | {what} | {edges + 1} | {_summary(wall[key])} | {c} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
