"""Retention bench (research): a steady trigger + claim/complete workload on skiplock's SQL
API, with or without a concurrent purge, sampled every --sample seconds.

Run from /work/main with its venv:
  .venv/bin/python bench/retention_study/bench_retention.py --dsn DSN --variant NAME \
      --purge {none,index,id} --limit 1000 --retention 60 --duration 240 \
      [--hold-at 90 --hold-for 120] [--autovac tuned|default] [--fresh]

Workload: one producer keeps 10k-30k QUEUED runs (skiplock.insert_runs, 1000 a call, as
trigger_batch does); --workers connections loop complete_and_claim(batch 100) (the Python
worker's hot path). Purger: calls skiplock.purge(limit) back to back while it returns a
full batch, else sleeps --purge-sleep seconds (a tick's cadence). Optional: a connection
holds a REPEATABLE READ snapshot open from --hold-at for --hold-for seconds (blocks vacuum).
Writes <out>/<variant>.samples.csv, <variant>.purge.csv, <variant>.summary.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import threading
import time
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

HERE = Path(__file__).resolve().parent
VERSION = "v1"
TASKS = ["noop"]

stop = threading.Event()
completed = [0]
triggered = [0]
lock = threading.Lock()


def setup(dsn: str, args) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        if args.fresh:
            c.execute("DROP SCHEMA IF EXISTS skiplock CASCADE")
            from engine.db import migrate

            migrate.migrate(c)
        c.execute((HERE / "purge.sql").read_text())
        # new_run builds the whole runs row: give it the new column, from the options
        # (in the real design: run_values.retention, resolved from task / queue / engine)
        src = Path("/work/main/sql/functions/10_trigger.sql").read_text()
        start = src.index("CREATE OR REPLACE FUNCTION skiplock.new_run(")
        end = src.index("$$;", src.index("::skiplock.runs", start)) + 3
        fn = src[start:end].replace(
            "0                                                           -- interruptions",
            "0, (p_options->>'retention')::double precision",
        )
        assert "retention" in fn
        c.execute(fn)
        if args.purge in ("index", "cursor") or args.index_only:
            c.execute("""CREATE INDEX IF NOT EXISTS runs_purge_idx ON skiplock.runs
                (skiplock.purge_at(finished_at, retention_s, idempotency_key_expires_at))
                WHERE finished_at IS NOT NULL AND retention_s IS NOT NULL""")
        else:
            c.execute("DROP INDEX IF EXISTS skiplock.runs_purge_idx")
        for t in ("runs", "attempts"):
            if args.autovac == "tuned":
                c.execute(f"""ALTER TABLE skiplock.{t} SET (
                    autovacuum_vacuum_scale_factor = {args.av_scale},
                    autovacuum_vacuum_threshold = 1000,
                    autovacuum_analyze_scale_factor = {args.av_scale},
                    autovacuum_vacuum_insert_scale_factor = {args.av_scale},
                    autovacuum_vacuum_cost_delay = 0)""")
            else:
                c.execute(f"""ALTER TABLE skiplock.{t} RESET (autovacuum_vacuum_scale_factor,
                    autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor,
                    autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_cost_delay)""")
        if args.runs_fillfactor:
            c.execute(f"ALTER TABLE skiplock.runs SET (fillfactor = {args.runs_fillfactor})")
        c.execute("DELETE FROM skiplock.workers")
        c.execute("DELETE FROM skiplock.deployments")
        c.execute("DELETE FROM skiplock.deployment_tasks")
        c.execute(
            "SELECT skiplock.register_worker(%s, %s, 'bench', 0, NULL, 1, %s::jsonb, 1e7)",
            ("w_reg", VERSION, Jsonb([{"id": "noop", "queue": "default", "max_attempts": 3}])),
        )
        for i in range(args.workers):
            c.execute(
                "SELECT skiplock.register_worker(%s, %s, 'bench', 0, NULL, 100, %s::jsonb, 1e7)",
                (f"w{i}", VERSION, Jsonb([{"id": "noop", "queue": "default", "max_attempts": 3}])),
            )


def producer(dsn: str, retention) -> None:
    opts = Jsonb({"retention": retention} if retention else {})
    items = Jsonb([{"payload": {"i": i, "pad": "x" * 40}} for i in range(1000)])
    with psycopg.connect(dsn, autocommit=True) as c:
        while not stop.is_set():
            q = c.execute("SELECT count(*) FROM skiplock.runs WHERE status = 'QUEUED'").fetchone()[
                0
            ]
            if q > 30000:
                time.sleep(0.05)
                continue
            for _ in range(max(1, (30000 - q) // 1000)):
                c.execute(
                    "SELECT count(*) FROM skiplock.insert_runs('noop', %s, %s)", (items, opts)
                )
                with lock:
                    triggered[0] += 1000


def worker(dsn: str, wid: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        held: list[str] = []
        while not stop.is_set():
            res = Jsonb([{"attempt_id": a, "output": None} for a in held]) if held else None
            rows = c.execute(
                "SELECT attempt_id FROM skiplock.complete_and_claim(%s, %s, %s, %s, NULL, 100)",
                (res, wid, VERSION, TASKS),
            ).fetchall()
            with lock:
                completed[0] += len(held)
            held = [r[0] for r in rows]
            if not held:
                time.sleep(0.01)


def purger(dsn: str, fn: str, limit: int, sleep: float, out: list) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            n = c.execute(f"SELECT skiplock.{fn}(%s)", (limit,)).fetchone()[0]
            ms = (time.perf_counter() - t0) * 1000
            out.append((time.time(), n, ms))
            if n < limit:
                stop.wait(sleep)


def holder(dsn: str, at: float, dur: float, t_start: float, marks: dict) -> None:
    if stop.wait(max(0, t_start + at - time.time())):
        return
    with psycopg.connect(dsn) as c:
        c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        c.execute("SELECT count(*) FROM skiplock.queues").fetchone()
        marks["hold_start"] = time.time() - t_start
        stop.wait(dur)
        c.rollback()
        marks["hold_end"] = time.time() - t_start


SAMPLE_SQL = """
SELECT c.relname, pg_relation_size(c.oid), pg_indexes_size(c.oid), s.n_live_tup, s.n_dead_tup,
       s.autovacuum_count, s.n_tup_upd, s.n_tup_hot_upd
  FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE s.schemaname = 'skiplock' AND c.relname IN ('runs', 'attempts')
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--purge", choices=["none", "index", "id", "cursor"], default="none")
    ap.add_argument(
        "--index-only", action="store_true", help="create runs_purge_idx without purging"
    )
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--retention", type=float, default=60)
    ap.add_argument("--duration", type=float, default=240)
    ap.add_argument("--sample", type=float, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--purge-sleep", type=float, default=1.0)
    ap.add_argument("--hold-at", type=float)
    ap.add_argument("--hold-for", type=float)
    ap.add_argument("--autovac", choices=["default", "tuned"], default="default")
    ap.add_argument("--av-scale", type=float, default=0.02)
    ap.add_argument("--runs-fillfactor", type=int)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    setup(args.dsn, args)

    purge_log: list = []
    marks: dict = {}
    threads = [
        threading.Thread(
            target=producer,
            args=(args.dsn, args.retention if args.purge != "none" else None),
            daemon=True,
        )
    ]
    threads += [
        threading.Thread(target=worker, args=(args.dsn, f"w{i}"), daemon=True)
        for i in range(args.workers)
    ]
    if args.purge != "none":
        fn = {"index": "purge", "id": "purge_by_id", "cursor": "purge_cursor"}[args.purge]
        threads.append(
            threading.Thread(
                target=purger,
                daemon=True,
                args=(args.dsn, fn, args.limit, args.purge_sleep, purge_log),
            )
        )
    t_start = time.time()
    if args.hold_at is not None:
        threads.append(
            threading.Thread(
                target=holder,
                daemon=True,
                args=(args.dsn, args.hold_at, args.hold_for, t_start, marks),
            )
        )
    for t in threads:
        t.start()

    samples = []
    with psycopg.connect(args.dsn, autocommit=True) as c:
        last_t, last_done = t_start, 0
        while time.time() - t_start < args.duration:
            time.sleep(args.sample)
            now = time.time()
            with lock:
                done = completed[0]
            rate = (done - last_done) / (now - last_t)
            last_t, last_done = now, done
            row = {
                "t": round(now - t_start, 1),
                "completed": done,
                "rate": round(rate),
                "purged": sum(p[1] for p in purge_log),
            }
            for rel, heap, idx, live, dead, av, upd, hot in c.execute(SAMPLE_SQL).fetchall():
                row.update(
                    {
                        f"{rel}_heap_mb": round(heap / 2**20, 1),
                        f"{rel}_idx_mb": round(idx / 2**20, 1),
                        f"{rel}_live": live,
                        f"{rel}_dead": dead,
                        f"{rel}_av": av,
                        f"{rel}_hot_pct": round(100 * hot / upd, 1) if upd else 0,
                    }
                )
            samples.append(row)
            print(json.dumps(row), flush=True)
    stop.set()
    for t in threads:
        t.join(timeout=30)

    with open(out / f"{args.variant}.samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[-1].keys()))
        w.writeheader()
        w.writerows(samples)
    with open(out / f"{args.variant}.purge.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "deleted", "ms"])
        w.writerows(purge_log)
    full = [p[2] for p in purge_log if p[1] == args.limit]
    allc = [p[2] for p in purge_log if p[1] > 0]

    def pct(xs, q):
        return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else None

    summary = {
        "variant": args.variant,
        "args": vars(args),
        "marks": marks,
        "completed": completed[0],
        "seconds": round(time.time() - t_start),
        "rate_mean": round(completed[0] / args.duration),
        "rate_median_sample": statistics.median(s["rate"] for s in samples[1:])
        if len(samples) > 1
        else None,
        "purged": sum(p[1] for p in purge_log),
        "purge_calls": len(purge_log),
        "purge_calls_nonempty": len(allc),
        "purge_ms_p50": pct(allc, 0.5),
        "purge_ms_p99": pct(allc, 0.99),
        "purge_ms_max": max(allc) if allc else None,
        "purge_full_ms_p50": pct(full, 0.5),
        "purge_calls_over_200ms": sum(1 for x in allc if x > 200),
        "purge_us_per_run": round(1000 * sum(allc) / max(1, sum(p[1] for p in purge_log)), 1),
    }
    (out / f"{args.variant}.summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
