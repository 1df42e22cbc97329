"""Benchmark: what a call of skiplock.notify_runs costs while subscriptions exist.

    python bench/notify_cost.py [--baseline DIR] [--runs 20000] [--subs 10000]
                                [--calls 200] [--rounds 7] [--dsn postgresql://...]

Each checkout (this one, and with `--baseline DIR` another, e.g. `git archive COMMIT |
tar -x -C DIR`) gets a database of its own, migrated by it, holding `--runs` runs (every
other one tagged with one of 100 tags, every fifth in a batch of 10) and the
subscriptions of two sessions: `--subs` runs watched by id, 10 tags and 20 batches. The
calls, timed in the server (a loop in one statement, each call in a subtransaction rolled
back, so that nothing is sent and each finds the same state):

* watched 50: 50 runs, all watched by id (and some by tag or batch);
* mixed 50: 50 runs watched by no id, some by a tag or batch;
* unwatched 1: one run nobody watches (the cost of looking);
* mixed 500: 500 runs, half of them watched by id.

The checkouts alternate round by round; medians over `--rounds` rounds (min-max), us a
call, with the backend's CPU a call (from /proc, when the server is on this machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.resume_edges import _cpu_seconds, _migrate, _summary  # noqa: E402

FILL = """
INSERT INTO skiplock.runs (id, task_identifier, status, payload, queue, max_attempts,
                           order_at, available_at, created_at, updated_at, tags, batch_id)
SELECT 'run_' || lpad(to_hex(g), 32, '0'), 'notify', 'QUEUED', 'null', 'bench', 1,
       now(), now(), now(), now(),
       CASE WHEN g %% 2 = 0 THEN ARRAY['tag' || (g %% 100)] ELSE '{}' END,
       CASE WHEN g %% 5 = 0 THEN 'batch_' || (g / 50) END
  FROM generate_series(1, %(runs)s) g;
INSERT INTO skiplock.subscribers (pid) VALUES (1), (2);
INSERT INTO skiplock.subscriptions (kind, key, pid)
SELECT 'run', id, 1 FROM skiplock.runs ORDER BY id LIMIT %(subs)s;
INSERT INTO skiplock.subscriptions (kind, key, pid)
SELECT 'tag', 'tag' || g, 2 FROM generate_series(0, 9) g;
INSERT INTO skiplock.subscriptions (kind, key, pid)
SELECT 'batch', 'batch_' || g, 2 FROM generate_series(0, 19) g;
"""

TIMER = """
CREATE FUNCTION pg_temp.time_notify(p_ids text[], p_calls integer)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1 .. p_calls LOOP
        BEGIN
            PERFORM skiplock.notify_runs(p_ids);
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'roll back';
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / p_calls;
END;
$$;
"""


def _cases(conn: Any, subs: int) -> dict[str, list[str]]:
    def ids(query: str) -> list[str]:
        return [r[0] for r in conn.execute(query)]

    return {
        "watched 50": ids("SELECT id FROM skiplock.runs ORDER BY id LIMIT 50"),
        "mixed 50": ids("SELECT id FROM skiplock.runs ORDER BY id DESC LIMIT 50"),
        "unwatched 1": ids("SELECT id FROM skiplock.runs ORDER BY id DESC LIMIT 1 OFFSET 1"),
        "mixed 500": ids(f"SELECT id FROM skiplock.runs ORDER BY id LIMIT 500 OFFSET {subs - 250}"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="another checkout to measure alongside")
    p.add_argument("--runs", type=int, default=20000)
    p.add_argument("--subs", type=int, default=10000, help="runs watched by id")
    p.add_argument("--calls", type=int, default=200, help="calls a round (a tenth for 500 ids)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--dsn", default=os.environ.get("SKIPLOCK_BENCH_DSN"))
    args = p.parse_args(argv)
    import psycopg

    from bench.common import cluster, fresh_database, server_facts

    roots = {"this checkout": REPO}
    if args.baseline:
        roots[f"baseline ({args.baseline.name})"] = args.baseline.resolve()
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    with cluster(args.dsn) as server, contextlib.ExitStack() as stack:
        facts = server_facts(server.dsn)
        print(f"PostgreSQL {facts['server_version']}; load {os.getloadavg()[0]:.2f}", flush=True)
        conns: dict[str, Any] = {}
        for k, (name, root) in enumerate(roots.items()):
            dsn = stack.enter_context(fresh_database(server.dsn, f"notify_cost_{k}"))
            _migrate(root, dsn)
            conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
            for statement in FILL.split(";")[:-1]:
                conn.execute(statement, {"runs": args.runs, "subs": args.subs})
            conn.execute("ANALYZE")
            conn.execute(TIMER)
            conns[name] = conn
        cases = _cases(next(iter(conns.values())), args.subs)
        for r in range(args.rounds):
            order = list(roots) if r % 2 == 0 else list(reversed(roots))
            for case, ids in cases.items():
                calls = args.calls if len(ids) < 100 else max(1, args.calls // 10)
                for name in order:
                    conn = conns[name]
                    cpu0 = _cpu_seconds(conn.info.backend_pid)
                    row = conn.execute("SELECT pg_temp.time_notify(%s, %s)", (ids, calls))
                    us = float(row.fetchone()[0])
                    cpu1 = _cpu_seconds(conn.info.backend_pid)
                    wall.setdefault((name, case), []).append(us)
                    if cpu0 is not None and cpu1 is not None:
                        cpu.setdefault((name, case), []).append((cpu1 - cpu0) * 1e6 / calls)
            print(f"round {r + 1} done; load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\nus a call (median of {args.rounds} rounds, min-max); backend CPU us a call")
    print("| checkout | call | wall us | CPU us |")
    print("|---|---|---:|---:|")
    for name in roots:
        for case in cases:
            c = _summary(cpu[(name, case)]) if (name, case) in cpu else "-"
            print(f"| {name} | {case} | {_summary(wall[(name, case)])} | {c} |")
    if len(roots) == 2:
        base = list(roots)[1]
        for case in cases:
            ratio = statistics.median(wall[(base, case)]) / statistics.median(
                wall[("this checkout", case)]
            )
            print(f"- {case}: baseline / this checkout {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
