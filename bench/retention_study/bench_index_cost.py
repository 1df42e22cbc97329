"""Cost of runs_purge_idx on the hot path: serial claim + complete (complete_and_claim,
batch 100) of N queued runs on one connection, with and without the index, alternated
--rounds times. Reports us per run (wall time of the calls; the difference between the two
is the index's cost per completion: one more index insert per finished run, as the
completion UPDATE is never HOT on runs).

  .venv/bin/python bench/retention_study/bench_index_cost.py --dsn DSN
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--runs", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    from engine.db import migrate

    with psycopg.connect(args.dsn, autocommit=True) as c:
        c.execute("DROP SCHEMA IF EXISTS skiplock CASCADE")
        migrate.migrate(c)
        c.execute((HERE / "purge.sql").read_text())
        src = Path("/work/main/sql/functions/10_trigger.sql").read_text()
        start = src.index("CREATE OR REPLACE FUNCTION skiplock.new_run(")
        end = src.index("$$;", src.index("::skiplock.runs", start)) + 3
        c.execute(
            src[start:end].replace(
                "0                                                           -- interruptions",
                "0, (p_options->>'retention')::double precision",
            )
        )
        c.execute(
            "SELECT skiplock.register_worker('w0', 'v1', 'b', 0, NULL, 100, %s::jsonb, 1e7)",
            (Jsonb([{"id": "noop", "queue": "default", "max_attempts": 3}]),),
        )
        items = Jsonb([{"payload": {"i": i, "pad": "x" * 40}} for i in range(1000)])
        res: dict[str, list[float]] = {"without": [], "with": []}
        for rnd in range(args.rounds):
            for mode in ("without", "with") if rnd % 2 == 0 else ("with", "without"):
                if mode == "with":
                    c.execute("""CREATE INDEX IF NOT EXISTS runs_purge_idx ON skiplock.runs
                        (skiplock.purge_at(finished_at, retention_s, idempotency_key_expires_at))
                        WHERE finished_at IS NOT NULL AND retention_s IS NOT NULL""")
                else:
                    c.execute("DROP INDEX IF EXISTS skiplock.runs_purge_idx")
                c.execute("TRUNCATE skiplock.runs, skiplock.attempts CASCADE")
                for _ in range(args.runs // 1000):
                    c.execute(
                        "SELECT count(*) FROM skiplock.insert_runs('noop', %s, %s)",
                        (items, Jsonb({"retention": 60})),
                    )
                c.execute("VACUUM ANALYZE skiplock.runs")
                held: list[str] = []
                t0 = time.perf_counter()
                done = 0
                while True:
                    r = Jsonb([{"attempt_id": a, "output": None} for a in held]) if held else None
                    rows = c.execute(
                        "SELECT attempt_id FROM skiplock.complete_and_claim("
                        "%s, 'w0', 'v1', ARRAY['noop'], NULL, 100)",
                        (r,),
                    ).fetchall()
                    done += len(held)
                    held = [x[0] for x in rows]
                    if not held:
                        break
                us = (time.perf_counter() - t0) * 1e6 / done
                res[mode].append(us)
                print(mode, round(us, 2), "us/run", flush=True)
        out = {
            k: {
                "median_us_per_run": round(statistics.median(v), 2),
                "all": [round(x, 2) for x in v],
            }
            for k, v in res.items()
        }
        out["index_cost_us_per_run"] = round(
            out["with"]["median_us_per_run"] - out["without"]["median_us_per_run"], 2
        )
        print(json.dumps(out))
        (HERE / "results" / "index_cost.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
