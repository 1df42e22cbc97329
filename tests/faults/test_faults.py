"""Fault injection: a mixed workload on real worker processes and a PostgreSQL cluster of
the suite's own, with workers SIGKILLed and frozen past their lease, their connections
and LISTEN connections terminated, and the server stopped hard and restarted; then the
invariants, counted from the database.

The default `pytest` run does the small scenarios of plans.ci_plans() (about a minute
and a half); `SKIPLOCK_SOAK=1 pytest -m faults` adds the long mixed one
(SKIPLOCK_SOAK_RUNS runs, default 5000), as does `python -m tests.faults.soak`.
SKIPLOCK_FAULTS_SEED replays a scenario's random choices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .cluster import Cluster
from .plans import ci_plans, soak_plan
from .scenario import Plan, run

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

SOAK = os.environ.get("SKIPLOCK_SOAK") == "1"


def _params() -> list[object]:
    params: list[object] = []
    for plan in ci_plans():
        params.append(pytest.param(plan, id=plan.name))
    return params


def _assert_clean(cluster: Cluster, plan: Plan, tmp_path: Path) -> None:
    outcome = run(cluster, plan, tmp_path / "logs")
    print(outcome.report)
    failed = outcome.findings.failed()
    assert not failed, (
        f"{', '.join(c.name for c in failed)}\n{outcome.report}\nworker logs: {tmp_path / 'logs'}"
    )


@pytest.mark.parametrize("plan", _params())
def test_invariants_hold_under_faults(cluster: Cluster, plan: Plan, tmp_path: Path) -> None:
    _assert_clean(cluster, plan, tmp_path)


@pytest.mark.skipif(not SOAK, reason="the soak runs with SKIPLOCK_SOAK=1")
def test_soak(cluster: Cluster, tmp_path: Path) -> None:
    runs = int(os.environ.get("SKIPLOCK_SOAK_RUNS", "5000"))
    _assert_clean(cluster, soak_plan(runs, None, None, 3, None), tmp_path)
