"""The faults: each one injected, timed and logged, so the invariants can tell a double
execution caused by killing the executing worker from one that had no excuse."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from .cluster import Cluster
from .pooler import PgBouncer
from .workers import WorkerPool, WorkerProc

KINDS = (
    "sigkill_worker",
    "terminate_worker_conns",
    "terminate_listener_conns",
    "pg_restart",
    "sigstop_worker",
    "crash_after_claim",
    "crash_during_execution",
    "crash_after_completion",
    "long_transaction",
    "proxy_cut",
    "proxy_blackhole",
)
# process faults: a run executing in the target may legitimately crash or run twice
# the named crash points: a worker started with SKIPLOCK_CRASH_AT kills itself there
# (engine/worker/faults.py): after a claim commits, as a task starts, after completions commit
CRASH_POINTS = {
    "crash_after_claim": "claimed",
    "crash_during_execution": "executing",
    "crash_after_completion": "completed",
}
PROCESS_FAULTS = ("sigkill_worker", "sigstop_worker", *CRASH_POINTS)
# partitions longer than the lease: the target self-fences and its runs are crashed, like
# a process fault (its side effects cannot be fenced; its database writes must be)
PARTITION_FAULTS = ("proxy_blackhole",)
# the faults that need each worker behind a proxy of its own
PROXY_FAULTS = ("proxy_cut", "proxy_blackhole")
# not in KINDS (the mixed plans): it needs the workers behind a PgBouncer (Plan(pooled=True))
POOLER_FAULTS = ("pgbouncer_restart",)


@dataclass
class Fault:
    kind: str
    at: float  # seconds since the workload started
    took: float
    pids: list[int] = field(default_factory=list)
    detail: str = ""


@dataclass
class Injector:
    cluster: Cluster
    dsn: str
    pool: WorkerPool
    rng: random.Random
    bouncer: PgBouncer | None = None  # the workers' PgBouncer, in a pooled plan
    started: float = field(default_factory=time.monotonic)
    log: list[Fault] = field(default_factory=list)

    def inject(self, kind: str) -> Fault:
        began = time.monotonic()
        pids, detail = getattr(self, kind)()
        fault = Fault(kind, began - self.started, time.monotonic() - began, pids, detail)
        self.log.append(fault)
        return fault

    def counts(self) -> Counter[str]:
        return Counter(f.kind for f in self.log)

    def process_fault_pids(self) -> set[int]:
        """Workers killed, stopped or partitioned past their lease."""
        excused = PROCESS_FAULTS + PARTITION_FAULTS
        return {p for f in self.log if f.kind in excused for p in f.pids}

    # -- the faults ------------------------------------------------------------------------

    def sigkill_worker(self) -> tuple[list[int], str]:
        victim = self.rng.choice(self.pool.live())
        self.pool.kill(victim)
        replacement = self.pool.spawn()
        return [victim.pid], f"killed {victim.name}, spawned {replacement.name}"

    def _crash_at(self, kind: str) -> tuple[list[int], str]:
        """A worker that SIGKILLs itself the n-th time it passes a named point; if it
        never gets there within 20 s it is SIGKILLed like any other."""
        point, n = CRASH_POINTS[kind], self.rng.randint(1, 2)
        victim = self.pool.spawn(env={"SKIPLOCK_CRASH_AT": f"{point}:{n}"})
        # work for it, whatever is left of the load (these runs are checked like any)
        with psycopg.connect(self.dsn, autocommit=True, application_name="fault-driver") as c:
            for i in range(20):
                c.execute(
                    "SELECT skiplock.trigger('fault-plain', %s::jsonb)",
                    (f'{{"n": {-1 - i}, "sleep": 0.05}}',),
                )
        deadline = time.monotonic() + 20.0
        while victim.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        died = not victim.alive()
        self.pool.kill(victim)
        how = f"died at {point!r} (pass {n})" if died else f"never reached {point!r}; killed"
        return [victim.proc.pid], f"{victim.name} {how}"

    def crash_after_claim(self) -> tuple[list[int], str]:
        return self._crash_at("crash_after_claim")

    def crash_during_execution(self) -> tuple[list[int], str]:
        return self._crash_at("crash_during_execution")

    def crash_after_completion(self) -> tuple[list[int], str]:
        return self._crash_at("crash_after_completion")

    def sigstop_worker(self) -> tuple[list[int], str]:
        victim = self.rng.choice(self.pool.live())
        seconds = self.pool.settings.lease_timeout * 1.5 + 1.0
        self.pool.freeze(victim, seconds)
        return [victim.pid], f"stopped {victim.name} for {seconds:.1f}s"

    def terminate_worker_conns(self) -> tuple[list[int], str]:
        n = self._terminate("application_name LIKE 'fault-worker-%'")
        return [], f"{n} backends"

    def terminate_listener_conns(self) -> tuple[list[int], str]:
        n = self._terminate("application_name LIKE 'skiplock-listener:%'")
        return [], f"{n} backends"

    def pg_restart(self) -> tuple[list[int], str]:
        """Under load: once a task doing database work of its own is in flight (so that a
        task fails on the outage), or after 15 s."""
        busy = self._wait_for_db_work(15.0)
        down = self.cluster.restart_immediate(down_for=self.rng.uniform(0.5, 1.0))
        lease = self.pool.settings.lease_timeout
        return [], f"unreachable {down:.1f}s (lease {lease:.0f}s), {busy} db tasks in flight"

    def pgbouncer_restart(self) -> tuple[list[int], str]:
        """The workers' PgBouncer SIGKILLed under load (every client and server connection
        cut, transactions in flight aborted or committed unanswered) and started again on
        its port after 0.5-1 s."""
        if self.bouncer is None:
            raise RuntimeError("pgbouncer_restart needs a pooled plan (Plan(pooled=True))")
        busy = self._wait_for_db_work(15.0)
        down = self.bouncer.restart(down_for=self.rng.uniform(0.5, 1.0))
        return [], f"pgbouncer down {down:.1f}s, {busy} db tasks in flight"

    def _wait_for_db_work(self, timeout: float) -> int:
        query = (
            "SELECT count(*) FROM fault_ledger s WHERE s.kind = 'start' "
            "AND s.task = 'fault-db-touch' AND s.at > clock_timestamp() - interval '0.5 s' "
            "AND NOT EXISTS (SELECT 1 FROM fault_ledger e "
            "                WHERE e.run_id = s.run_id AND e.kind = 'effect')"
        )
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn, autocommit=True, application_name="fault-driver") as c:
            while True:
                row = c.execute(query).fetchone()
                if (row and row[0]) or time.monotonic() > deadline:
                    return int(row[0]) if row else 0
                time.sleep(0.05)

    def long_transaction(self) -> tuple[list[int], str]:
        """Another session holds a transaction open (a snapshot, and a row lock on a run)
        for twice the lease, on a thread, while the workload goes on."""
        seconds = 2 * self.pool.settings.lease_timeout
        ready = threading.Event()

        def hold() -> None:
            try:
                with psycopg.connect(self.dsn, application_name="fault-driver") as c:
                    c.execute("SELECT txid_current()")
                    c.execute(
                        "SELECT id FROM skiplock.runs WHERE status = 'QUEUED' "
                        "ORDER BY order_at LIMIT 1 FOR UPDATE"
                    )
                    ready.set()
                    time.sleep(seconds)
                    c.rollback()
            except psycopg.OperationalError:
                pass  # a restart ended it early
            finally:
                ready.set()

        threading.Thread(target=hold, name="fault-long-tx", daemon=True).start()
        ready.wait(10)
        return [], f"open for {seconds:.0f}s, one queued run locked"

    def proxy_cut(self) -> tuple[list[int], str]:
        """Reset every TCP connection of every worker (its pool, LISTEN connection, ledger
        and task connections) at the proxy: no process fault, no partition."""
        live = self.pool.live()
        if any(w.proxy is None for w in live):
            raise RuntimeError("proxy_cut needs a proxied pool (Plan with proxy faults)")
        n = sum(w.proxy.cut() for w in live if w.proxy is not None)
        return [], f"{n} connections reset ({len(live)} workers)"

    def proxy_blackhole(self) -> tuple[list[int], str]:
        """Partition one worker from the server for the lease + 2 s: maintenance (the other
        workers' ticks) declares it lost and crashes its runs; it must fence itself. The
        sessions are reset when the partition ends (see proxy.py)."""
        victim = self._busiest(5.0)
        if victim.proxy is None:
            raise RuntimeError("proxy_blackhole needs a proxied pool (Plan with proxy faults)")
        seconds = self.pool.settings.lease_timeout + 2.0
        reset, held = victim.proxy.blackhole(seconds)
        return [victim.pid], (
            f"partitioned {victim.name} for {seconds:.1f}s; {reset} sessions reset, "
            f"{held} bytes dropped"
        )

    def _busiest(self, timeout: float) -> WorkerProc:
        """The live worker with the most EXECUTING runs, once one has any (a partition of
        an idle worker tests nothing), or a random one after `timeout`."""
        live = {w.pid: w for w in self.pool.live()}
        query = (
            "SELECT w.pid FROM skiplock.runs r JOIN skiplock.workers w ON w.id = r.worker_id "
            "WHERE r.status = 'EXECUTING' AND w.pid = ANY (%s) "
            "GROUP BY w.pid ORDER BY count(*) DESC, w.pid LIMIT 1"
        )
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn, autocommit=True, application_name="fault-driver") as c:
            while time.monotonic() < deadline:
                row = c.execute(query, (list(live),)).fetchone()
                if row:
                    return live[row[0]]
                time.sleep(0.05)
        return self.rng.choice(list(live.values()))

    def _terminate(self, where: str) -> int:
        query = (
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}"
        )
        with psycopg.connect(self.dsn, autocommit=True, application_name="fault-driver") as c:
            row = c.execute(query.encode()).fetchone()
        return int(row[0]) if row else 0
