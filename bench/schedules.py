"""What schedules cost tick(): 10,000 active schedules with none due, and 1,000 due at once.

    python bench/schedules.py [--dsn DSN] [--schedules 10000] [--due 1000] [--repeat 5]

Targets (issue #17): tick() under 50 ms when none of 10,000 schedules is due; firing 1,000
due schedules (a run each, triggered in the transaction that advances its schedule) under
1 s. The clock is faked per session (skiplock.fake_now), so "due" needs no waiting: the
schedules are made at T0 and tick() runs at T0 + 30 s (none due) and T0 + 61 s (the
minutely ones due). Medians of --repeat rounds, each on a fresh database; tick() as a
whole is timed (expiry, delays, waitpoints, purge and the rest run too, on empty tables),
and, apart, baseline: tick() with no schedule at all.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cluster, connect, fresh_database
from engine import Engine

T0 = datetime(2030, 1, 7, 8, 0, 0, tzinfo=UTC)  # a Monday, 08:00


def timed_tick(conn: object, at: datetime) -> tuple[float, dict[str, object]]:
    conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (at.isoformat(),))  # type: ignore[attr-defined]
    began = time.perf_counter()
    row = conn.execute("SELECT skiplock.tick()").fetchone()  # type: ignore[attr-defined]
    return (time.perf_counter() - began) * 1000, row[0]


def one_round(server_dsn: str, n: int, due: int, i: int) -> dict[str, float]:
    with fresh_database(server_dsn, f"bench_schedules_{i}") as dsn:
        Engine(dsn).migrate()
        with connect(dsn) as conn:
            conn.autocommit = True
            baseline, _ = timed_tick(conn, T0 + timedelta(seconds=30))
            conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (T0.isoformat(),))
            # `due` minutely schedules; the rest daily at 09:00 (a mix of forms), never due
            conn.execute(
                "SELECT skiplock.create_schedule('bench-task', "
                "CASE WHEN g <= %s THEN '* * * * *' "
                "     WHEN g %% 3 = 0 THEN '0 9 * * 1-5' "
                "     WHEN g %% 3 = 1 THEN '*/15 9-17 * * MON-FRI' ELSE '30 9 1,15 * *' END, "
                "CASE WHEN g %% 2 = 0 THEN 'Europe/Paris' ELSE 'America/New_York' END) "
                "FROM generate_series(1, %s) g",
                (due, n),
            )
            conn.execute("ANALYZE skiplock.schedules")
            idle, _ = timed_tick(conn, T0 + timedelta(seconds=30))
            idle2, _ = timed_tick(conn, T0 + timedelta(seconds=31))
            fire, result = timed_tick(conn, T0 + timedelta(seconds=61))
            fired = int(result["scheduled"])  # type: ignore[call-overload]
            runs = conn.execute("SELECT count(*) FROM skiplock.runs").fetchone()[0]  # type: ignore[index]
            if fired != due or runs != due:
                raise SystemExit(f"expected {due} runs, tick fired {fired} and made {runs}")
            again, result = timed_tick(conn, T0 + timedelta(seconds=62))
            if int(result["scheduled"]) != 0:  # type: ignore[call-overload]
                raise SystemExit("a slot fired twice")
    return {"baseline": baseline, "idle": min(idle, idle2), "fire": fire, "after": again}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", help="a server to CREATE DATABASE on (default: a throwaway one)")
    ap.add_argument("--schedules", type=int, default=10_000)
    ap.add_argument("--due", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with cluster(args.dsn) as c:
        rounds = [one_round(c.dsn, args.schedules, args.due, i) for i in range(args.repeat)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    head = f"{args.schedules:,} active schedules, {args.due:,} due at once"
    print(f"{head}; medians of {args.repeat}")
    print(f"  tick(), no schedules at all        {med['baseline']:8.1f} ms")
    print(f"  tick(), none due                   {med['idle']:8.1f} ms   (target < 50 ms)")
    print(
        f"  tick(), {args.due:,} due: fired        {med['fire']:8.1f} ms   (target < 1000 ms; "
        f"{med['fire'] * 1000 / args.due:.0f} us a schedule)"
    )
    print(f"  tick(), the next second: none       {med['after']:8.1f} ms")


if __name__ == "__main__":
    main()
