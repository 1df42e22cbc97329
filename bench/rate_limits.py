"""Benchmark: what rate limits cost the claim, the worker's hot path, as its SQL alone.

    python bench/rate_limits.py [--runs 20000] [--batch 50] [--chunk 5] [--repeat 5]
                                [--calls 300] [--base REF] [--dsn postgresql://...]

Every figure times `skiplock.complete_and_claim` calls made from this process on one
connection (autocommit: one durable commit per call, as a worker's), two ways: the wall
time of the call (round trip and commit included) and the database's own time in it
(clock_timestamp() once its rows are out, less statement_timestamp(): no commit, no
network). Median of --repeat rounds (min-max), each round in fresh databases on one
throwaway cluster (or --dsn's server):

1. Unlimited drain, with and without the feature. Two databases side by side: one with
   this checkout's schema, one with sql/ as of git REF (--base, default `main`: before rate
   limits). Each gets N no-op runs in one unlimited queue and is drained by calls that
   record the previous call's attempts as completed and claim --batch more, in turns of
   --chunk calls alternating between the two (ABBA). Besides each drain's total, the k-th
   turns of both (the same stage of the backlog, moments apart) are compared: the median
   of those paired ratios is the figure that the machine's changing load disturbs least.
2. The same drain (this schema) with the queue rate-limited at a rate that never binds
   (1,000,000/s, burst 1,000): what admission by GCRA adds per run claimed.
3. Claims that start nothing: an empty claim; one rate key out of budget (a queue of
   1/hour with 1,000 runs queued); 1,000 keys out of budget (one run queued behind each
   key's first); and, for comparison, 1,000 concurrency units at their limit (what a
   skipped full unit costs). Per call.
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

from bench.common import add_dsn  # noqa: E402
from bench.drain import postgres_server, server_facts  # noqa: E402
from engine.db.migrate import sql_files  # noqa: E402

TASK = "noop"
VERSION = "bench"

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


CLAIM = (
    # the database's own time: the function materialises its rows before the first is read,
    # so clock_timestamp() at the aggregate is its end (the commit comes after)
    "SELECT array_agg(attempt_id) FILTER (WHERE attempt_id IS NOT NULL),"
    " extract(epoch FROM coalesce(max(clock_timestamp()), clock_timestamp())"
    "                    - statement_timestamp())"
    " FROM skiplock.complete_and_claim(%s::jsonb, %s, %s, %s, NULL, %s)"
)


class Drain:
    """One database drained by complete_and_claim calls; `turn` makes up to `calls` of
    them and records their wall time, the database's time in them, and the runs claimed."""

    def __init__(self, dsn: str, batch: int) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.worker = register(self.conn)
        self.batch, self.done, self.claimed = batch, False, 0
        self.results: str | None = None
        self.turns: list[tuple[float, float, int]] = []  # wall s, database s, runs

    def turn(self, calls: int) -> None:
        wall = inside = 0.0
        claimed = 0
        for _ in range(calls):
            if self.done:
                break
            started = time.perf_counter()
            row = self.conn.execute(
                CLAIM, (self.results, self.worker, VERSION, [TASK], self.batch)
            ).fetchone()
            wall += time.perf_counter() - started
            assert row is not None
            ids, seconds = row[0] or [], float(row[1])
            inside += seconds
            claimed += len(ids)
            self.done = not ids and self.results is None
            self.results = (
                json.dumps([{"attempt_id": a, "output": None} for a in ids]) if ids else None
            )
        self.claimed += claimed
        if claimed:
            self.turns.append((wall, inside, claimed))

    def per_run_us(self) -> tuple[float, float]:
        """Microseconds per run claimed: wall, and in the database."""
        return (
            sum(t[0] for t in self.turns) / self.claimed * 1e6,
            sum(t[1] for t in self.turns) / self.claimed * 1e6,
        )


def unlimited_ab(
    server: str, base: Path, n: int, batch: int, chunk: int, rep: int
) -> tuple[Drain, Drain]:
    """The two drains, with the feature and without, in ABBA turns of `chunk` calls: the
    k-th turns of both are at the same stage of their backlog and close in time."""
    names = (f"bench_rl_with_{rep}", f"bench_rl_without_{rep}")
    drains = []
    for name, root in zip(names, (None, base), strict=True):
        d = Drain(fresh(server, name, root), batch)
        enqueue(d.conn, n)
        drains.append(d)
    order = [0, 1, 1, 0]
    i = 0
    while not all(d.done for d in drains):
        drains[order[i % 4]].turn(chunk)
        i += 1
    for d in drains:
        if d.claimed != n:
            raise SystemExit(f"claimed {d.claimed} of {n}")
        d.conn.close()
    for name in names:
        drop(server, name)
    return drains[0], drains[1]


def paired_ratios(a: Drain, b: Drain, column: int) -> list[float]:
    """Per-run time of a's k-th turn over b's, for every k (column 0: wall, 1: database)."""
    return [
        (ta[column] / ta[2]) / (tb[column] / tb[2])
        for ta, tb in zip(a.turns, b.turns, strict=False)
        if ta[2] == tb[2]
    ]


def rate_limited_drain(server: str, n: int, batch: int, chunk: int, rep: int) -> Drain:
    """The drain of a queue whose rate limit never binds."""
    name = f"bench_rl_rated_{rep}"
    d = Drain(fresh(server, name, None), batch)
    d.conn.execute("SELECT skiplock.set_queue_rate_limit('bench-q', 1000000, 1, 1000)")
    enqueue(d.conn, n)
    while not d.done:
        d.turn(chunk)
    if d.claimed != n:
        raise SystemExit(f"claimed {d.claimed} of {n}")
    d.conn.close()
    drop(server, name)
    return d


def claim_calls(conn: Conn, worker: str, calls: int) -> tuple[float, float]:
    """Microseconds per complete_and_claim call (limit 50) that must start nothing: wall,
    and in the database."""
    wall = inside = 0.0
    for _ in range(calls):
        started = time.perf_counter()
        row = conn.execute(CLAIM, (None, worker, VERSION, [TASK], 50)).fetchone()
        wall += time.perf_counter() - started
        assert row is not None
        if row[0]:
            raise SystemExit("a claim that should find nothing started a run")
        inside += float(row[1])
    return wall / calls * 1e6, inside / calls * 1e6


def held_back(server: str, rep: int, calls: int) -> dict[str, tuple[float, float]]:
    """Per-call microseconds of claims that start nothing, by what they skip: wall, and
    in the database."""

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
    out: dict[str, tuple[float, float]] = {}
    for label, setup in cases.items():
        name = f"bench_rl_held_{rep}"
        with psycopg.connect(fresh(server, name, None), autocommit=True) as conn:
            worker = register(conn)
            setup(conn, worker)
            claim_calls(conn, worker, 20)  # warm: plans cached
            out[label] = claim_calls(conn, worker, calls)
        drop(server, name)
    return out


def claim_once(conn: Conn, worker: str) -> None:
    conn.execute(CLAIM, (None, worker, VERSION, [TASK], 50)).fetchone()


def spread(values: list[float], digits: int = 1) -> str:
    return (
        f"{statistics.median(values):10.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def quartiles(values: list[float]) -> str:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{q2:10.3f} (quartiles {q1:.3f}-{q3:.3f}, {len(values)} pairs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=5, help="calls per ABBA turn")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300, help="held-back claims timed")
    parser.add_argument("--base", default="main", help="git ref of the schema without")
    add_dsn(parser)
    args = parser.parse_args()
    base = sql_at(args.base)
    figures: dict[str, list[float]] = {}
    pairs: dict[str, list[float]] = {"wall": [], "in the database": []}

    def add(label: str, value: float) -> None:
        figures.setdefault(label, []).append(value)

    with postgres_server(args.dsn) as server:
        facts = server_facts(server)
        for rep in range(args.repeat):
            with_, without = unlimited_ab(server, base, args.runs, args.batch, args.chunk, rep)
            (w, w_in), (wo, wo_in) = with_.per_run_us(), without.per_run_us()
            add("unlimited, with rate limits: wall", w)
            add("unlimited, with rate limits: in the database", w_in)
            add(f"unlimited, without ({args.base}): wall", wo)
            add(f"unlimited, without ({args.base}): in the database", wo_in)
            pairs["wall"] += paired_ratios(with_, without, 0)
            pairs["in the database"] += paired_ratios(with_, without, 1)
            rated, rated_in = rate_limited_drain(
                server, args.runs, args.batch, args.chunk, rep
            ).per_run_us()
            add("rate-limited, never binding: wall", rated)
            add("rate-limited, never binding: in the database", rated_in)
            for label, (wall, inside) in held_back(server, rep, args.calls).items():
                add(f"{label}: wall", wall)
                add(f"{label}: in the database", inside)
            print(
                f"#{rep + 1}: unlimited {w:.1f} us/run with, {wo:.1f} without "
                f"(in the database {w_in:.1f} and {wo_in:.1f}); rate-limited {rated:.1f} "
                f"({rated_in:.1f})",
                flush=True,
            )
    print(
        f"\ncomplete_and_claim from one connection, autocommit, median of {args.repeat} "
        f"(min-max). Drains: {args.runs} no-op runs claimed {args.batch} a call, us per run. "
        f"Claims that start nothing: us per call. PostgreSQL {facts.get('server_version')}, "
        f"fsync={facts.get('fsync')}, synchronous_commit={facts.get('synchronous_commit')}"
    )
    for label, values in figures.items():
        print(f"  {label:58} {spread(values)}")
    print(f"per-run time with / without, turn by turn ({args.chunk} calls a turn, ABBA):")
    for label, values in pairs.items():
        print(f"  {label:58} {quartiles(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
