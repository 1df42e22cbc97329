"""The long form: `python -m tests.faults.soak --runs 20000` (from the repository root).

Runs one mixed scenario on a cluster of its own, with faults of every kind spread over
the load, prints the table and exits non-zero if an invariant failed."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from .cluster import Cluster
from .plans import soak_plan
from .scenario import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__)
    p.add_argument("--runs", type=int, default=20000)
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="spread the triggers over this long (default: runs / 40)",
    )
    p.add_argument(
        "--faults",
        type=int,
        default=None,
        help="how many faults (default: one per 4 seconds of load)",
    )
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--logs", type=Path, default=None, help="worker logs (default: a temp dir)")
    args = p.parse_args(argv)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # every restart is noisy
    plan = soak_plan(args.runs, args.seconds, args.faults, args.workers, args.seed)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="skiplock-soak-logs-"))
    cluster = Cluster().init()
    cluster.start()
    try:
        outcome = run(cluster, plan, logs)
    finally:
        cluster.destroy()
    print(outcome.report)
    print(f"worker logs: {logs}")
    return 1 if outcome.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
