"""The ceiling: the bare minimum SQL of a job's life on the same cluster, with no Python,
driven by pgbench custom scripts. One table; insert; complete the last 50 claimed and claim
the next 50 with FOR UPDATE SKIP LOCKED, in one transaction (as a skiplock worker records
its finished attempts and claims in one call).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import BenchError, Cluster, connect, scalar
from bench.workloads import Result, Settings, backlog_row, drain_row

CLAIM = 50  # jobs per claim and per completion

SCHEMA = """
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    payload jsonb NOT NULL,
    worker integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz);
CREATE INDEX jobs_queued_idx ON jobs (id) WHERE status = 'queued';
CREATE INDEX jobs_running_idx ON jobs (worker) WHERE status = 'running';
"""

INSERT_ONE = """INSERT INTO jobs (payload) VALUES ('{"i": 1}');\n"""
INSERT_BATCH = (
    "INSERT INTO jobs (payload) SELECT jsonb_build_object('i', g) FROM generate_series(1, {n}) g;\n"
)
FILL = "INSERT INTO jobs (payload) SELECT jsonb_build_object('i', g) FROM generate_series(1, %s) g"
COMPLETE_AND_CLAIM = f"""\
BEGIN;
UPDATE jobs SET status = 'done', finished_at = now()
 WHERE worker = :client_id AND status = 'running';
UPDATE jobs SET status = 'running', worker = :client_id, started_at = now()
 WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT {CLAIM}
              FOR UPDATE SKIP LOCKED);
COMMIT;
"""
COMPLETE_LAST = "UPDATE jobs SET status = 'done', finished_at = now() WHERE status = 'running'"

DESCRIPTION = (
    f"pgbench (-M prepared) custom scripts on one table with a partial index on queued ids: "
    f"enqueue x1 = one INSERT per transaction; enqueue batch = INSERT ... SELECT of 1000 "
    f"rows per transaction; drain and backlog = per script run, one transaction of an UPDATE "
    f"completing the client's {CLAIM} running rows and one claiming the next {CLAIM} queued "
    f"(ORDER BY id LIMIT {CLAIM} FOR UPDATE SKIP LOCKED), then one UPDATE completing the "
    f"last claims (timed too); jobs/s = jobs / (script runs / pgbench tps without "
    f"connection time + the last UPDATE's time). Queued rows are VACUUM ANALYZEd before a "
    f"drain"
)


def pgbench(cluster: Cluster, dsn: str, script: str, clients: int, runs_per_client: int) -> float:
    """Run `script` runs_per_client times on each of `clients` connections; return tps."""
    exe = str(cluster.bin_dir / "pgbench") if cluster.bin_dir else "pgbench"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                exe,
                "-n",
                "-M",
                "prepared",
                "-f",
                f.name,
                "-c",
                str(clients),
                "-j",
                str(clients),
                "-t",
                str(runs_per_client),
                dsn,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        Path(f.name).unlink()
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if out.returncode != 0 or not m:
        raise BenchError(f"pgbench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return float(m.group(1))


def install(dsn: str) -> None:
    with connect(dsn) as conn:
        conn.execute(SCHEMA)


def check(dsn: str, total: int, done: int) -> None:
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'done'), "
            "count(*) FILTER (WHERE status = 'running') FROM jobs"
        ).fetchone()
    if row != (total, done, 0):
        raise BenchError(f"ceiling: (jobs, done, running) = {row}, expected ({total}, {done}, 0)")


def enqueue(cluster: Cluster, dsn: str, s: Settings, batch: bool) -> Result:
    if batch:
        per = 1000
        tps = pgbench(cluster, dsn, INSERT_BATCH.format(n=per), 1, max(1, s.jobs // per))
    else:
        per = 1
        tps = pgbench(cluster, dsn, INSERT_ONE, 1, s.jobs)
    with connect(dsn) as conn:
        n = int(scalar(conn, "SELECT count(*) FROM jobs"))
    row = "enqueue batch" if batch else "enqueue x1"
    return {row: tps * per}, f"{n} rows, {tps:.0f} transactions/s"


def fill(dsn: str, n: int) -> str:
    """Queue n jobs, then VACUUM ANALYZE (untimed: the planner then walks the partial
    index, the best case)."""
    started = time.perf_counter()
    with connect(dsn) as conn:
        conn.execute(FILL, (n,))
        filled = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE jobs")
    return f"{n} jobs queued by SQL in {filled:.1f}s"


def claim_and_complete(
    cluster: Cluster, dsn: str, total: int, n: int, clients: int, row: str
) -> Result:
    per_client = n // CLAIM // clients
    tps = pgbench(cluster, dsn, COMPLETE_AND_CLAIM, clients, per_client)
    with connect(dsn) as conn:
        started = time.perf_counter()
        conn.execute(COMPLETE_LAST)
        last = time.perf_counter() - started
    jobs = per_client * clients * CLAIM
    check(dsn, total, jobs)
    seconds = per_client * clients / tps + last
    return {row: jobs / seconds}, f"{clients} client(s) x {per_client} x {CLAIM} jobs"


def drain(cluster: Cluster, dsn: str, s: Settings, clients: int) -> Result:
    fill(dsn, s.jobs)
    return claim_and_complete(cluster, dsn, s.jobs, s.jobs, clients, drain_row(clients))


def backlog(cluster: Cluster, dsn: str, s: Settings, size: int) -> Result:
    """The database holds `size` queued jobs (see fill); claim and complete min(size, N)."""
    return claim_and_complete(cluster, dsn, size, min(size, s.jobs), 1, backlog_row(size))
