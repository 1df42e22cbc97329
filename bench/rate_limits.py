"""Benchmark: what rate limits cost the claim, the worker's hot path, as its SQL alone.

    python bench/rate_limits.py [--runs 20000] [--batch 50] [--repeat 3] [--base REF]
                                [--dsn postgresql://...]

Every figure is the time of `skiplock.complete_and_claim` calls made from this process
on one connection (autocommit: one durable commit per call, as a worker's), per run
claimed or per call, median of --repeat rounds (min-max), each round in fresh databases
on one throwaway cluster (or --dsn's server):

1. Unlimited drain, with and without the feature. Two databases side by side: one with
   this checkout's schema, one with sql/ as of git REF (--base, default `main`: before rate
   limits). Each gets N no-op runs in one unlimited queue and is drained by calls that
   record the previous call's attempts as completed and claim --batch more, in chunks of
   20 calls alternating between the two (ABBA), so both share the machine's state.
2. The same drain (this schema) with the queue rate-limited at a rate that never binds
   (1,000,000/s, burst 1,000): what admission by GCRA adds per run claimed.
3. Claims that find rate-limited work held back: 1 key (a queue of 1/hour with 1,000
   runs queued), and 1,000 keys (one run queued behind each key's first); against an
   empty claim and against 1,000 concurrency units at their limit (what a skipped full
   unit costs, for comparison). Per call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.drain import postgres_server, server_facts  # noqa: E402
from engine.db.migrate import sql_files  # noqa: E402

TASK = "noop"
VERSION = "bench"
CHUNK = 20  # calls per turn when two databases alternate

Conn = psycopg.Connection[Any]


def sql_at(ref: str) -> Path:
    """sql/ as of git `ref`, extracted into a temporary directory."""
    out = Path(tempfile.mkdtemp(prefix="skiplock-sql-"))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "sql"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "sql"


def fresh(server: str, name: str, root: Path | None) -> str:
    """A new database `name` with the schema of `root` (None: this checkout's sql/)."""
    ident = sql.Identifier(name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET track_functions = 'pl'").format(ident))
    dsn = make_conninfo(server, dbname=name)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA skiplock")
        for f in sql_files(root):
            conn.execute(f.text.encode())
    return dsn


def drop(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def register(conn: Conn) -> str:
    """A worker of version VERSION with task TASK in queue bench-q, through the SQL API;
    returns its id."""
    worker = f"worker_bench_{os.getpid()}"
    conn.execute(
        "SELECT skiplock.register_worker(%s, %s, 'bench', 0, NULL, 50, %s::jsonb)",
        (worker, VERSION, json.dumps([{"id": TASK, "queue": "bench-q", "max_attempts": 3}])),
    )
    return worker


def enqueue(conn: Conn, n: int, options: Callable[[int], dict[str, Any]] | None = None) -> None:
    for start in range(0, n, 1000):
        items = [
            {"payload": {"i": i}, **({"options": options(i)} if options else {})}
            for i in range(start, min(n, start + 1000))
        ]
        conn.execute(
            "SELECT count(*) FROM skiplock.trigger_batch(%s, %s::jsonb, '{}')",
            (TASK, json.dumps(items)),
        )


class Drain:
    """One database drained by complete_and_claim calls; `turn` makes `calls` of them."""

    def __init__(self, dsn: str, batch: int) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.worker = register(self.conn)
        self.batch, self.done, self.seconds, self.claimed = batch, False, 0.0, 0
        self.results: str | None = None

    def turn(self, calls: int) -> None:
        for _ in range(calls):
            if self.done:
                return
            started = time.perf_counter()
            rows = self.conn.execute(
                "SELECT attempt_id FROM skiplock.complete_and_claim("
                "%s::jsonb, %s, %s, %s, NULL, %s)",
                (self.results, self.worker, VERSION, [TASK], self.batch),
            ).fetchall()
            self.seconds += time.perf_counter() - started
            ids = [r[0] for r in rows if r[0] is not None]
            self.claimed += len(ids)
            self.done = not ids and self.results is None
            self.results = (
                json.dumps([{"attempt_id": a, "output": None} for a in ids]) if ids else None
            )

    def per_run_us(self) -> float:
        return self.seconds / self.claimed * 1e6

    def close(self) -> float:
        """Close the connection; return the database's own time in complete_and_claim per
        run claimed, in microseconds (pg_stat_user_functions, flushed as the session ends)."""
        dsn = self.conn.info.dsn
        self.conn.close()
        return server_us(dsn, "complete_and_claim") / self.claimed


def server_us(dsn: str, function: str) -> float:
    """Total microseconds spent in skiplock.`function` by sessions that have ended."""
    deadline = time.monotonic() + 10
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT total_time FROM pg_stat_user_functions"
                " WHERE schemaname = 'skiplock' AND funcname = %s",
                (function,),
            ).fetchone()
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchone()
            if row is not None and others == (0,):
                return float(row[0]) * 1000
            if time.monotonic() > deadline:
                raise SystemExit(f"no statistics for {function}")
            time.sleep(0.1)


def unlimited_ab(
    server: str, base: Path, n: int, batch: int, rep: int
) -> tuple[float, float, float, float]:
    """Per-run microseconds with the feature and without it, the drains interleaved: wall
    time of the calls (with, without), then the database's time in them (with, without)."""
    names = (f"bench_rl_with_{rep}", f"bench_rl_without_{rep}")
    drains = []
    for name, root in zip(names, (None, base), strict=True):
        dsn = fresh(server, name, root)
        d = Drain(dsn, batch)
        enqueue(d.conn, n)
        drains.append(d)
    order = [0, 1, 1, 0]
    i = 0
    while not all(d.done for d in drains):
        drains[order[i % 4]].turn(CHUNK)
        i += 1
    for d in drains:
        if d.claimed != n:
            raise SystemExit(f"claimed {d.claimed} of {n}")
    inside = [d.close() for d in drains]
    for name in names:
        drop(server, name)
    return drains[0].per_run_us(), drains[1].per_run_us(), inside[0], inside[1]


def rate_limited_drain(server: str, n: int, batch: int, rep: int) -> tuple[float, float]:
    """Per-run microseconds of the drain of a queue whose rate limit never binds (wall,
    then the database's own)."""
    name = f"bench_rl_rated_{rep}"
    d = Drain(fresh(server, name, None), batch)
    d.conn.execute("SELECT skiplock.set_queue_rate_limit('bench-q', 1000000, 1, 1000)")
    enqueue(d.conn, n)
    while not d.done:
        d.turn(CHUNK)
    if d.claimed != n:
        raise SystemExit(f"claimed {d.claimed} of {n}")
    inside = d.close()
    drop(server, name)
    return d.per_run_us(), inside


def claim_calls(conn: Conn, worker: str, calls: int) -> float:
    """Microseconds per complete_and_claim call (limit 50), which must start nothing."""
    started = time.perf_counter()
    for _ in range(calls):
        rows = conn.execute(
            "SELECT run_id FROM skiplock.complete_and_claim(NULL, %s, %s, %s, NULL, 50)",
            (worker, VERSION, [TASK]),
        ).fetchall()
        if any(r[0] is not None for r in rows):
            raise SystemExit("a claim that should find nothing started a run")
    return (time.perf_counter() - started) / calls * 1e6


def held_back(server: str, rep: int, calls: int) -> dict[str, tuple[float, float]]:
    """Per-call microseconds of claims that start nothing, by what they skip: wall, and
    the database's own time in them."""
    out: dict[str, tuple[float, float]] = {}

    def empty(conn: Conn, worker: str) -> None:
        pass

    def one_key(conn: Conn, worker: str) -> None:
        conn.execute("SELECT skiplock.set_queue_rate_limit('bench-q', 1, 3600, 1)")
        enqueue(conn, 1000)
        claim_once(conn, worker)  # the key's one run: the rest are held back

    def many_keys(conn: Conn, worker: str) -> None:
        conn.execute("SELECT skiplock.set_queue_rate_limit('bench-q', 1, 3600, 1)")
        enqueue(conn, 2000, lambda i: {"rate_limit_key": f"k{i % 1000}"})
        for _ in range(20):
            claim_once(conn, worker)  # each key's first run

    def full_units(conn: Conn, worker: str) -> None:
        conn.execute("SELECT skiplock.set_queue_limit('bench-q', 1)")
        enqueue(conn, 2000, lambda i: {"concurrency_key": f"k{i % 1000}"})
        for _ in range(20):
            claim_once(conn, worker)  # each unit's one slot

    cases: dict[str, Callable[[Conn, str], None]] = {
        "empty claim (nothing queued)": empty,
        "1 rate key out of budget (1,000 runs held)": one_key,
        "1,000 rate keys out of budget": many_keys,
        "1,000 concurrency units at their limit": full_units,
    }
    for label, setup in cases.items():
        name = f"bench_rl_held_{rep}"
        dsn = fresh(server, name, None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            worker = register(conn)
            setup(conn, worker)
            claim_once(conn, worker)  # so that the function has statistics
        before = server_us(dsn, "complete_and_claim")
        with psycopg.connect(dsn, autocommit=True) as conn:  # a session for the timed calls
            claim_calls(conn, worker, 20)  # warm: plans cached
            wall = claim_calls(conn, worker, calls)
        inside = (server_us(dsn, "complete_and_claim") - before) / (calls + 20)
        out[label] = (wall, inside)
        drop(server, name)
    return out


def claim_once(conn: Conn, worker: str) -> None:
    conn.execute(
        "SELECT run_id FROM skiplock.complete_and_claim(NULL, %s, %s, %s, NULL, 50)",
        (worker, VERSION, [TASK]),
    ).fetchall()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300, help="held-back claims timed")
    parser.add_argument("--base", default="main", help="git ref of the schema without")
    parser.add_argument("--dsn", default=os.environ.get("SKIPLOCK_BENCH_DSN"))
    args = parser.parse_args()
    base = sql_at(args.base)
    figures: dict[str, list[float]] = {}

    def add(label: str, value: float) -> None:
        figures.setdefault(label, []).append(value)

    with postgres_server(args.dsn) as server:
        facts = server_facts(server)
        for rep in range(args.repeat):
            w, wo, w_in, wo_in = unlimited_ab(server, base, args.runs, args.batch, rep)
            add("unlimited, with rate limits: wall", w)
            add("unlimited, with rate limits: in the database", w_in)
            add(f"unlimited, without ({args.base}): wall", wo)
            add(f"unlimited, without ({args.base}): in the database", wo_in)
            add("ratio with/without: wall", w / wo)
            add("ratio with/without: in the database", w_in / wo_in)
            rated, rated_in = rate_limited_drain(server, args.runs, args.batch, rep)
            add("rate-limited, never binding: wall", rated)
            add("rate-limited, never binding: in the database", rated_in)
            for label, (wall, inside) in held_back(server, rep, args.calls).items():
                add(f"{label}: wall", wall)
                add(f"{label}: in the database", inside)
            print(
                f"#{rep + 1}: unlimited {w:.1f} us/run with, {wo:.1f} without "
                f"({w / wo:.3f}; in the database {w_in:.1f} and {wo_in:.1f}: "
                f"{w_in / wo_in:.3f}); rate-limited {rated:.1f} ({rated_in:.1f})",
                flush=True,
            )
    print(
        f"\ncomplete_and_claim, median of {args.repeat} (min-max); the drains: {args.runs} "
        f"no-op runs claimed {args.batch} a call, per run; the claims that start nothing: per "
        f"call. PostgreSQL {facts.get('server_version')}, fsync={facts.get('fsync')}, "
        f"synchronous_commit={facts.get('synchronous_commit')}"
    )
    for label, values in figures.items():
        print(f"  {label:62} {spread(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
