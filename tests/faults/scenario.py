"""One fault scenario end to end: a fresh database on the suite's own cluster, worker
processes, the workload, faults at intervals while it runs, the drain, the invariants."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from engine import Engine

from . import fault_app
from .cluster import Cluster
from .faults import PROXY_FAULTS, Injector
from .invariants import Findings, check
from .pooler import PgBouncer
from .report import table
from .workers import WorkerPool, WorkerSettings
from .workload import Triggerer, drain


@dataclass
class Plan:
    name: str
    runs: int = 200
    seconds: float = 12.0  # triggering spread over this long
    faults: list[str] = field(default_factory=list)  # injected in this order, evenly spaced
    workers: int = 3
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    drain_timeout: float = 90.0
    seed: int | None = None
    # workers reach the server through a PgBouncer (transaction mode) with SKIPLOCK_POOLED=1
    # and no listen DSN: poll-only (the triggerer and the checks connect directly)
    pooled: bool = False

    @property
    def proxied(self) -> bool:
        """Workers reach the server through proxies (and the driver directly)."""
        return any(k in PROXY_FAULTS for k in self.faults)


@dataclass
class Outcome:
    plan: Plan
    seed: int
    findings: Findings
    injector: Injector
    pool: WorkerPool
    timings: dict[str, float]
    report: str

    def failed(self) -> bool:
        return bool(self.findings.failed())


def run(cluster: Cluster, plan: Plan, log_dir: Path) -> Outcome:
    seed = plan.seed if plan.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    began = time.monotonic()
    dsn = cluster.create_database(f"faults_{plan.name}_{uuid.uuid4().hex[:6]}")
    engine = Engine(f"{dsn} application_name=fault-driver")
    engine.migrate()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(fault_app.LEDGER_DDL)
    log_dir.mkdir(parents=True, exist_ok=True)
    upstream = ("127.0.0.1", cluster.port) if plan.proxied else None
    bouncer = PgBouncer(cluster.dsn()).start() if plan.pooled else None
    if bouncer is not None:
        pool = WorkerPool(bouncer.dsn_for(dsn), log_dir, plan.settings, upstream)
        pool.env["SKIPLOCK_POOLED"] = "1"
    else:
        pool = WorkerPool(dsn, log_dir, plan.settings, upstream)
    for _ in range(plan.workers):
        pool.spawn()
    _wait_registered(dsn, plan.workers)
    injector = Injector(cluster, dsn, pool, rng, bouncer=bouncer)
    triggerer = Triggerer(engine, plan.runs, plan.seconds, random.Random(seed + 1))
    timings: dict[str, float] = {"setup": time.monotonic() - began}
    injector.started = time.monotonic()
    triggerer.start()
    try:
        gap = plan.seconds / (len(plan.faults) + 1)
        for i, kind in enumerate(plan.faults):
            _sleep_until(injector.started + gap * (i + 1))
            injector.inject(kind)
        triggerer.join(timeout=plan.seconds + 120)
        timings["load"] = time.monotonic() - injector.started
        stall = 2 * plan.settings.lease_timeout + 3
        timings["drain"] = drain(dsn, plan.drain_timeout, stall)
    finally:
        exits = pool.stop_all()
        engine.close()
        if bouncer is not None:
            bouncer.close()
    findings = check(dsn, triggerer.acked, injector.process_fault_pids(), triggerer.purgeable)
    timings["total"] = time.monotonic() - began
    report = table(plan.name, seed, findings, injector, timings, triggerer.retried, exits)
    return Outcome(plan, seed, findings, injector, pool, timings, report)


def _sleep_until(at: float) -> None:
    ahead = at - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)


def _wait_registered(dsn: str, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute(
                "SELECT count(*) FROM skiplock.workers WHERE stopped_at IS NULL"
            ).fetchone()
        if row and row[0] >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{n} workers did not register within {timeout}s")
