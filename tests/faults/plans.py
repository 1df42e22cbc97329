"""The scenarios: small ones for every `pytest` run, and the soak's."""

from __future__ import annotations

import os
import random

from .faults import KINDS
from .scenario import Plan

SEED = int(os.environ["SKIPLOCK_FAULTS_SEED"]) if os.environ.get("SKIPLOCK_FAULTS_SEED") else None


def ci_plans() -> list[Plan]:
    """One scenario per fault kind (so a failing invariant names its fault), then one
    with every kind mixed. A few hundred runs in all."""
    return [
        Plan("sigkill", runs=120, seconds=10, faults=["sigkill_worker"] * 2, seed=SEED),
        Plan(
            "conn_kill",
            runs=120,
            seconds=8,
            faults=["terminate_worker_conns", "terminate_listener_conns"] * 2,
            seed=SEED,
        ),
        Plan("pg_restart", runs=120, seconds=10, faults=["pg_restart"] * 2, seed=SEED),
        Plan("sigstop", runs=100, seconds=8, faults=["sigstop_worker"], seed=SEED),
        Plan(
            "crash_points",
            runs=100,
            seconds=8,
            faults=["crash_after_claim", "crash_during_execution", "crash_after_completion"],
            seed=SEED,
        ),
        Plan(
            "proxy",
            runs=100,
            seconds=10,
            faults=["proxy_cut", "proxy_blackhole", "proxy_cut"],
            seed=SEED,
        ),
        Plan(
            "pgbouncer",
            runs=120,
            seconds=10,
            faults=["pgbouncer_restart"] * 2,
            seed=SEED,
            pooled=True,
        ),
        Plan("mixed", runs=200, seconds=16, faults=list(KINDS), seed=SEED),
    ]


def soak_plan(
    runs: int, seconds: float | None, faults: int | None, workers: int, seed: int | None
) -> Plan:
    seconds = seconds if seconds is not None else max(20.0, runs / 40)
    n = faults if faults is not None else max(len(KINDS), int(seconds / 4))
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    rng.shuffle(kinds)
    return Plan(
        "soak",
        runs=runs,
        seconds=seconds,
        faults=kinds,
        workers=workers,
        drain_timeout=max(120.0, seconds),
        seed=seed,
    )
