"""The invariants, counted from the database once the workload has drained. Each check
returns the offending rows (run ids first) so that a failure names its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

FINAL = ("COMPLETED", "CANCELED", "FAILED", "TIMED_OUT", "CRASHED", "SYSTEM_FAILURE", "EXPIRED")
LIMITED_QUEUE = "fault-limited"
LIMIT = 2


@dataclass
class Check:
    name: str
    rows: list[tuple[Any, ...]]
    must_be_zero: bool = True

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> bool:
        return not self.must_be_zero or self.count == 0


@dataclass
class Findings:
    checks: list[Check] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    queue_peak: int = 0

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def by_name(self) -> dict[str, Check]:
        return {c.name: c for c in self.checks}


def _rows(conn: psycopg.Connection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    return conn.execute(query.encode(), params or None).fetchall()


def peak_overlap(intervals: list[tuple[datetime, datetime | None]]) -> tuple[int, list[Any]]:
    """The most intervals open at one instant (an end at t comes before a start at t), and
    the instants at which more than LIMIT were open."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals if e is not None],
        key=lambda e: (e[0], e[1]),
    )
    level = peak = 0
    above: list[Any] = []
    for at, step in events:
        level += step
        peak = max(peak, level)
        if step > 0 and level > LIMIT:
            above.append((at, level))
    return peak, above


_FENCED_WRITES = """
SELECT 'completed, not current' AS why, r.id, a.id, a.status::text, r.status::text
  FROM skiplock.attempts a JOIN skiplock.runs r ON r.id = a.run_id
 WHERE a.status = 'COMPLETED'
   AND (r.current_attempt_id IS DISTINCT FROM a.id OR r.status <> 'COMPLETED')
UNION ALL
SELECT 'outcome after a later attempt began', a.run_id, a.id, a.status::text,
       n.started_at::text
  FROM skiplock.attempts a JOIN skiplock.attempts n
       ON n.run_id = a.run_id AND n.number > a.number
 WHERE a.status IN ('COMPLETED', 'FAILED', 'TIMED_OUT') AND a.finished_at > n.started_at
UNION ALL
SELECT 'outcome after its worker was declared lost', a.run_id, a.id, a.status::text,
       w.lost_at::text
  FROM skiplock.attempts a JOIN skiplock.workers w ON w.id = a.worker_id
 WHERE a.status IN ('COMPLETED', 'FAILED', 'TIMED_OUT') AND a.finished_at > w.lost_at
UNION ALL
SELECT 'started by a worker already declared lost', a.run_id, a.id, a.status::text,
       w.lost_at::text
  FROM skiplock.attempts a JOIN skiplock.workers w ON w.id = a.worker_id
 WHERE a.started_at > w.lost_at
   AND NOT (a.status = 'CRASHED' AND a.error->>'type' = 'WorkerLost')
UNION ALL
SELECT 'output without a completion', a.run_id, a.id, a.status::text, NULL
  FROM skiplock.attempts a
 WHERE a.output IS NOT NULL AND a.status <> 'COMPLETED'
UNION ALL
SELECT 'run output from another attempt', r.id, a.id, a.number::text, r.output::text
  FROM skiplock.runs r JOIN skiplock.attempts a ON a.id = r.current_attempt_id
 WHERE r.status = 'COMPLETED'
   AND (r.output IS DISTINCT FROM a.output
        OR (r.task_identifier = 'fault-plain' AND (r.output->>'attempt')::int <> a.number)
        OR (r.task_identifier = 'fault-retry' AND r.output::text::int <> a.number))
ORDER BY 2, 3
"""


def fenced_writes(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Writes the database accepted from an attempt it had already fenced off. Every
    outcome a worker writes (complete_attempts, fail_attempt, sql/functions/40_attempts.sql)
    must apply only while its attempt is the run's current one and EXECUTING, and a worker
    declared lost (crash_lost_workers sets workers.lost_at and crashes what it held) must
    get nothing more accepted. One row (why, run id, attempt id, status, detail) for each:

    - an attempt COMPLETED that is not its run's current attempt, or whose run is not
      COMPLETED;
    - an attempt whose worker-written outcome (COMPLETED, FAILED, TIMED_OUT) was recorded
      (finished_at) after a later attempt of the same run had started;
    - an attempt whose worker-written outcome was recorded after its worker's lost_at;
    - an attempt started by a worker after that worker's lost_at (work handed to a fenced
      worker), unless that very crash ended it (CRASHED with the WorkerLost error);
    - an attempt with an output that is not COMPLETED (only a completion writes one);
    - a COMPLETED run whose output is not its current attempt's output, or, for the tasks
      whose output names the attempt number that produced it (fault-plain, fault-retry),
      names another number than its current attempt's.

    Side effects outside the database cannot be fenced (a partitioned worker's effect may
    land after its run was crashed): those are the "allowed" double effects, not these."""
    return _rows(conn, _FENCED_WRITES)


_LEFT_BEHIND = """
SELECT 'attempt', a.run_id FROM skiplock.attempts a
 WHERE NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.id = a.run_id)
UNION ALL
SELECT 'step', s.run_id FROM skiplock.run_steps s
 WHERE NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.id = s.run_id)
UNION ALL
SELECT 'wait', e.run_id FROM skiplock.run_waitpoints e
 WHERE NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.id = e.run_id)
"""


def check(
    dsn: str, acked: list[str], process_fault_pids: set[int], purgeable: set[str] | None = None
) -> Findings:
    final = list(FINAL)
    faulted = list(process_fault_pids)
    with psycopg.connect(dsn, autocommit=True, application_name="fault-driver") as conn:
        f = Findings()
        f.statuses = dict(
            _rows(conn, "SELECT status::text, count(*) FROM skiplock.runs GROUP BY 1")
        )
        f.runs = sum(f.statuses.values())
        # worker ids whose process was SIGKILLed or SIGSTOPped (re-registrations share the pid)
        faulted_workers = [
            r[0]
            for r in _rows(conn, "SELECT id FROM skiplock.workers WHERE pid = ANY (%s)", faulted)
        ]

        lost = _rows(
            conn,
            "SELECT id, status::text, task_identifier, worker_id FROM skiplock.runs "
            "WHERE status::text <> ALL (%s) ORDER BY id",
            final,
        )
        present = {
            r[0] for r in _rows(conn, "SELECT id FROM skiplock.runs WHERE id = ANY (%s)", acked)
        }
        # a run of the purged task may be gone: purged once final (retention 1 s)
        missing = [(i,) for i in acked if i not in present and i not in (purgeable or ())]
        purged = [(i,) for i in purgeable or () if i not in present]
        left_behind = _rows(conn, _LEFT_BEHIND)
        open_attempts = _rows(
            conn,
            "SELECT r.id, r.status::text, a.id, a.status::text FROM skiplock.runs r "
            "JOIN skiplock.attempts a ON a.run_id = r.id "
            "WHERE r.status::text = ANY (%s) AND a.status IN ('EXECUTING', 'SUSPENDED') "
            "ORDER BY r.id",
            final,
        )
        not_one_outcome = _rows(
            conn,
            "SELECT r.id, r.status::text, count(a.id) FILTER (WHERE a.status = 'COMPLETED') "
            "FROM skiplock.runs r LEFT JOIN skiplock.attempts a ON a.run_id = r.id "
            "GROUP BY r.id, r.status "
            "HAVING (r.status = 'COMPLETED') <> (count(a.id) FILTER "
            "        (WHERE a.status = 'COMPLETED') = 1) "
            "    OR count(a.id) FILTER (WHERE a.status = 'COMPLETED') > 1 ORDER BY r.id",
        )
        intervals = _rows(
            conn,
            "SELECT a.started_at, a.finished_at FROM skiplock.attempts a "
            "JOIN skiplock.runs r ON r.id = a.run_id WHERE r.queue = %s",
            LIMITED_QUEUE,
        )
        f.queue_peak, above = peak_overlap([(s, e) for s, e in intervals])
        doubles = _rows(
            conn,
            "SELECT l.run_id, count(*), array_agg(l.pid ORDER BY l.at), "
            "       bool_or(l.pid = ANY (%s)) OR EXISTS (SELECT 1 FROM skiplock.attempts a "
            "           WHERE a.run_id = l.run_id AND a.worker_id = ANY (%s)) "
            "FROM fault_ledger l WHERE l.kind = 'effect' GROUP BY l.run_id "
            "HAVING count(*) > 1 ORDER BY l.run_id",
            faulted,
            faulted_workers,
        )
        no_effect = _rows(
            conn,
            "SELECT r.id, r.task_identifier FROM skiplock.runs r WHERE r.status = 'COMPLETED' "
            "AND NOT EXISTS (SELECT 1 FROM fault_ledger l "
            "                WHERE l.run_id = r.id AND l.kind = 'effect') ORDER BY r.id",
        )
        fenced = fenced_writes(conn)
        # a blocking edge is pending while its waitpoint is (migration 0033): one that
        # says otherwise would keep its run waiting, or resume it early
        stale_edges = _rows(
            conn,
            "SELECT e.run_id, e.waitpoint_id, e.pending, w.status::text "
            "FROM skiplock.run_waitpoints e JOIN skiplock.waitpoints w ON w.id = e.waitpoint_id "
            "WHERE e.pending <> (w.status = 'PENDING') ORDER BY 1, 2",
        )
        # a waiting task records 'start' when entered: once, and once more when its wait
        # (a duration or a child run) resumes it, all within one attempt (a resume
        # continues the suspended attempt; a retry or a crash makes a new one). A third
        # entry in one attempt means the attempt was resumed twice.
        resumed_twice = _rows(
            conn,
            "SELECT run_id, attempt, count(*), array_agg(pid ORDER BY at) FROM fault_ledger "
            "WHERE kind = 'start' AND task IN ('fault-wait', 'fault-parent') "
            "GROUP BY run_id, attempt HAVING count(*) > 2 ORDER BY run_id",
        )
        late_effects = _rows(
            conn,
            "SELECT r.id, r.task_identifier, l.pid, r.finished_at, l.at FROM skiplock.runs r "
            "JOIN fault_ledger l ON l.run_id = r.id AND l.kind = 'effect' "
            "WHERE r.status = 'CRASHED' AND l.at > r.finished_at ORDER BY r.id",
        )
        healthy_crashed = _rows(
            conn,
            "SELECT r.id, a.id, a.worker_id, w.pid, r.error->>'message' FROM skiplock.runs r "
            "JOIN skiplock.attempts a ON a.id = r.current_attempt_id "
            "LEFT JOIN skiplock.workers w ON w.id = a.worker_id "
            "WHERE r.status = 'CRASHED' AND NOT (a.worker_id = ANY (%s)) ORDER BY r.id",
            faulted_workers,
        )
    f.checks = [
        Check("lost runs (not final after the drain)", lost),
        Check("acknowledged triggers missing", missing),
        Check("runs purged meanwhile (retention 1 s)", purged, must_be_zero=False),
        Check("rows left behind by purged runs", left_behind),
        Check("final runs with an attempt still open", open_attempts),
        Check("runs without exactly one outcome", not_one_outcome),
        Check(f"attempts starting above the limit of {LIMITED_QUEUE}", above),
        Check("double effects, no process fault or partition", [r for r in doubles if not r[3]]),
        Check(
            "double effects, executing worker killed/stopped/cut off",
            [r for r in doubles if r[3]],
            must_be_zero=False,
        ),
        Check("COMPLETED runs without an effect", no_effect),
        Check("waitpoints resumed twice (an attempt entered 3+ times)", resumed_twice),
        Check("blocking edges pending or not unlike their waitpoint", stale_edges),
        Check("writes accepted from a fenced attempt or lost worker", fenced),
        # a side effect cannot be fenced: a frozen or partitioned worker's task may finish
        # its effect after the database crashed its run (reported, not a failure)
        Check("effects landing after their run was CRASHED", late_effects, must_be_zero=False),
        Check("healthy runs CRASHED (worker not killed/stopped/cut off)", healthy_crashed),
    ]
    return f
