"""Benchmark: what the alerts trigger (runs_failed_alert) costs runs that do not fail.

    python bench/alerts_overhead.py [--rounds 15] [--runs 3000] [--dsn ...]

The trigger fires AFTER UPDATE OF status on skiplock.runs. Its WHEN clause (a failed
status, changed) is prepared once per statement that updates runs and tested per row,
without calling the function: that is what a run that succeeds pays, at its claim and
at its completion. Measured as CPU time of the database backend (the scheduler's count
in /proc/PID/schedstat, so the server must run on this machine): wall time on a shared
machine varies more than the effect. Each measurement runs with the trigger enabled and
disabled (ALTER TABLE ... DISABLE TRIGGER), in alternating order, `--rounds` times; the
figures are medians. Sessions commit with synchronous_commit off: the trigger costs CPU,
and a WAL flush per statement would only add noise.

1. statement: a loop of UPDATEs that flip the status of 1 (or 50) runs between QUEUED
   and EXECUTING, one commit each, in a DO block: the cost per status-changing statement.
2. drain: N no-op runs queued (untimed), then drained by `complete_and_claim` calls as a
   worker makes them (complete the previous batch, claim the next), 50 runs a call.
3. failure: fail_attempt of claimed runs, one a call: what a final failure pays for its
   outbox row and NOTIFY check.

Without --dsn (or $SKIPLOCK_BENCH_DSN) a throwaway cluster is started (bench/common.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_dsn, cluster, fresh_database
from engine import Engine
from engine.db import queries

TASK = "bench-noop"


def _backend_cpu(conn: psycopg.Connection[Any]) -> float:
    """Seconds of CPU the session's backend has used so far."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(Path(f"/proc/{row[0]}/schedstat").read_text().split()[0]) / 1e9


def _set_trigger(conn: psycopg.Connection[Any], on: bool) -> None:
    conn.execute(
        f"ALTER TABLE skiplock.runs {'ENABLE' if on else 'DISABLE'} TRIGGER runs_failed_alert"
    )


def _compare(
    conn: psycopg.Connection[Any], rounds: int, measure: Callable[[], tuple[float, int]]
) -> dict[bool, float]:
    """Median CPU us per unit of `measure()` (which returns its CPU seconds and units),
    with the trigger on and off, alternating."""
    per_unit: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for on in (True, False) if r % 2 == 0 else (False, True):
            _set_trigger(conn, on)
            cpu, units = measure()
            per_unit[on].append(cpu / units * 1e6)
    _set_trigger(conn, True)
    return {on: statistics.median(v) for on, v in per_unit.items()}


def _engine(dsn: str) -> tuple[Engine, str]:
    app = Engine(dsn)
    app.task(TASK)(_noop)
    worker = f"worker_bench_{uuid.uuid4().hex[:8]}"
    entries = [t.deployment_entry() for t in app.tasks.values()]
    app.db.run(queries.register_worker(worker, "bench", "bench", 0, None, 50, entries, 3600.0))
    return app, worker


def _fill(app: Engine, n: int) -> None:
    task = app.tasks[TASK]
    for start in range(0, n, 1000):
        task.batch_trigger([{"i": i} for i in range(start, min(n, start + 1000))])


def _clear(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DELETE FROM skiplock.alerts")
    conn.execute("DELETE FROM skiplock.attempts")
    conn.execute("DELETE FROM skiplock.runs")
    conn.execute("VACUUM skiplock.runs")


def statement_cost(dsn: str, rounds: int, rows: int, loops: int) -> dict[bool, float]:
    app, _ = _engine(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        _clear(conn)
        _fill(app, rows)
        block = f"""
            DO $$
            DECLARE ids text[] := ARRAY(SELECT r.id FROM skiplock.runs r);
            BEGIN
              FOR k IN 1..{loops} LOOP
                UPDATE skiplock.runs r
                   SET status = CASE WHEN r.status = 'QUEUED' THEN 'EXECUTING'
                                     ELSE 'QUEUED' END::skiplock.run_status,
                       updated_at = now()
                 WHERE r.id = ANY (ids);
                COMMIT;
              END LOOP;
            END $$"""

        def measure() -> tuple[float, int]:
            c0 = _backend_cpu(conn)
            conn.execute(block.encode())
            cpu = _backend_cpu(conn) - c0
            conn.execute("VACUUM skiplock.runs")
            return cpu, loops

        result = _compare(conn, rounds, measure)
        _clear(conn)
    app.close()
    return result


def drain_cost(dsn: str, rounds: int, runs: int, batch: int) -> dict[bool, float]:
    app, worker = _engine(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")

        def measure() -> tuple[float, int]:
            _fill(app, runs)
            conn.execute("VACUUM ANALYZE skiplock.runs")
            c0 = _backend_cpu(conn)
            drained, results = 0, None
            while True:
                claimed = conn.execute(
                    "SELECT attempt_id FROM skiplock.complete_and_claim("
                    "%s::jsonb, %s, 'bench', %s, NULL, %s)",
                    (results, worker, [TASK], batch),
                ).fetchall()
                if not claimed:
                    break
                drained += len(claimed)
                results = json.dumps([{"attempt_id": a, "output": None} for (a,) in claimed])
            cpu = _backend_cpu(conn) - c0
            assert drained == runs, (drained, runs)
            _clear(conn)
            return cpu, runs

        result = _compare(conn, rounds, measure)
    app.close()
    return result


def failure_cost(dsn: str, rounds: int, runs: int) -> dict[bool, float]:
    app, worker = _engine(dsn)
    error = json.dumps({"type": "Boom", "message": "boom"})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")

        def measure() -> tuple[float, int]:
            _fill(app, runs)
            attempts = conn.execute(
                "SELECT attempt_id FROM skiplock.claim(%s, 'bench', %s, NULL, %s)",
                (worker, [TASK], runs),
            ).fetchall()
            c0 = _backend_cpu(conn)
            for (a,) in attempts:
                conn.execute("SELECT skiplock.fail_attempt(%s, %s::jsonb)", (a, error))
            cpu = _backend_cpu(conn) - c0
            _clear(conn)
            return cpu, len(attempts)

        result = _compare(conn, rounds, measure)
    app.close()
    return result


async def _noop(payload: dict[str, Any], ctx: Any) -> None:
    return None


def _show(what: str, unit: str, d: dict[bool, float]) -> None:
    on, off = d[True], d[False]
    print(
        f"{what:<34} trigger on {on:8.2f}  off {off:8.2f}  "
        f"diff {on - off:+6.2f} us {unit} ({(on - off) / off * 100:+.1f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=3000, help="runs a drain")
    add_dsn(parser)
    args = parser.parse_args()
    with cluster(args.dsn) as c, fresh_database(c.dsn, "skiplock_bench_alerts") as dsn:
        Engine(dsn).migrate()
        print(f"backend CPU, median of {args.rounds} rounds")
        _show("statement, 1 run", "a statement", statement_cost(dsn, args.rounds, 1, 1000))
        _show("statement, 50 runs", "a statement", statement_cost(dsn, args.rounds, 50, 200))
        _show(
            f"drain of {args.runs}, 50 runs a call",
            "a run",
            drain_cost(dsn, max(args.rounds // 3, 2), args.runs, 50),
        )
        _show("fail_attempt, 1 run a call", "a run", failure_cost(dsn, args.rounds, 200))


if __name__ == "__main__":
    main()
