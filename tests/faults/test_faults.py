"""Fault injection: a mixed workload on real worker processes and a PostgreSQL cluster of
the suite's own, with workers SIGKILLed and frozen past their lease, their connections
and LISTEN connections terminated, the server stopped hard and restarted, and (through a
TCP proxy per worker) every worker connection reset and a worker partitioned past its
lease; then the invariants, counted from the database.

The default `pytest` run does the small scenarios of plans.ci_plans() (about a minute
and three quarters); `python -m tests.faults.soak --runs 20000` is the long mixed one.
SKIPLOCK_FAULTS_SEED replays a scenario's random choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from .cluster import Cluster
from .plans import ci_plans
from .scenario import Plan, run

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


@pytest.mark.parametrize("plan", [pytest.param(p, id=p.name) for p in ci_plans()])
def test_invariants_hold_under_faults(cluster: Cluster, plan: Plan, tmp_path: Path) -> None:
    outcome = run(cluster, plan, tmp_path / "logs")
    print(outcome.report)
    failed = outcome.findings.failed()
    assert not failed, (
        ", ".join(c.name for c in failed) + f"\n{outcome.report}\nworker logs: {tmp_path / 'logs'}"
    )
    # the workers' ticks purged runs while faults struck (and nothing was lost: above)
    assert outcome.findings.by_name()["runs purged meanwhile (retention 1 s)"].count > 0
