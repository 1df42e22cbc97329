"""Statements of the worker runtime: registration, claims, outcomes, heartbeats, tick."""

from __future__ import annotations

from typing import Any

from ...values import RunStatus
from ..database import Query
from ._rows import _as_is, _json, _scalar, _status_or_none


def register_worker(
    worker_id: str,
    version: str,
    hostname: str,
    pid: int,
    queues: list[str] | None,
    concurrency: int,
    tasks: list[dict[str, Any]],
    lease_seconds: float = 30.0,
) -> Query[str]:
    return Query(
        "SELECT skiplock.register_worker(%s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
        (worker_id, version, hostname, pid, queues, concurrency, _json(tasks), lease_seconds),
        _scalar,
        idempotent=False,
    )


def set_worker_polls(worker_id: str) -> Query[None]:
    """The worker polls (poll-only mode): no wake-up NOTIFY on its account."""
    return Query("SELECT skiplock.set_worker_polls(%s)", (worker_id,), lambda rows: None)


def dequeue(
    worker_id: str, version: str, tasks: list[str], queues: list[str] | None, limit: int
) -> Query[list[dict[str, Any]]]:
    """Step 1 of the two-step claim, the SQL API for drivers in other languages: lease up
    to `limit` runs (DEQUEUED). The worker claims with complete_and_claim instead; tests
    drive the SQL API through this and start_attempts."""
    return Query(
        "SELECT * FROM skiplock.dequeue(%s, %s, %s, %s, %s)",
        (worker_id, version, tasks, queues, limit),
        _as_is,
    )


# payload and metadata as JSON text: the worker validates the payload straight from it,
# and decodes metadata only when there is some
_CLAIM = (
    "SELECT run_id, task_identifier, payload::text AS payload, "
    "metadata::text AS metadata, max_duration, attempt_id, attempt_number, resumed, log, "
    "retry_in FROM skiplock.complete_and_claim(%s::jsonb, %s, %s, %s, %s, %s)"
)
_CLAIM_TRACED = (
    "SELECT run_id, task_identifier, payload::text AS payload, "
    "metadata::text AS metadata, max_duration, attempt_id, attempt_number, resumed, log, "
    "queue, trace_context::text AS trace_context, retry_in "
    "FROM skiplock.complete_and_claim(%s::jsonb, %s, %s, %s, %s, %s)"
)


def complete_and_claim(
    results_json: str | None,
    worker_id: str,
    version: str,
    tasks: list[str],
    queues: list[str] | None,
    limit: int,
    traced: bool = False,
) -> Query[list[dict[str, Any]]]:
    """Record finished attempts (JSON as complete_attempts takes, or None) and claim up
    to `limit` runs, in one durable commit. `traced`: with each run's queue and trace
    context (JSON text, or None), for the attempts' spans. `log`: a resumed attempt's
    run log (run_log's rows, decoded), else None. A last row with `run_id` None,
    when present, is no run: its `retry_in` says in how many seconds a run a rate limit
    held back may start (see skiplock.claim)."""
    return Query(
        _CLAIM_TRACED if traced else _CLAIM,
        (results_json, worker_id, version, tasks, queues, limit),
        _as_is,
        # a lost reply leaves runs EXECUTING with nobody running them; re-sending would
        # claim others on top, so it is not retried: the worker's next heartbeat does not
        # list them, and the database queues them again (skiplock.release_lost_attempts).
        # The completions are fenced by attempt: the worker sends them again.
        idempotent=False,
    )


def start_attempts(worker_id: str, run_ids: list[str]) -> Query[list[dict[str, Any]]]:
    """Step 2 of the two-step claim (see dequeue): start the runs DEQUEUED to the worker
    (EXECUTING), one new attempt each."""
    return Query(
        "SELECT * FROM skiplock.start_attempts(%s, %s)",
        (worker_id, run_ids),
        _as_is,
    )


def complete_attempts(results_json: str) -> Query[list[str]]:
    return Query(
        "SELECT run_id FROM skiplock.complete_attempts(%s::jsonb)",
        (results_json,),
        lambda rows: [r["run_id"] for r in rows],
    )


def fail_attempt(
    attempt_id: str, error: dict[str, Any], status: str, retry_delay: float | None
) -> Query[RunStatus | None]:
    return Query(
        "SELECT skiplock.fail_attempt(%s, %s::jsonb, %s::skiplock.run_status, %s)",
        (attempt_id, _json(error), status, retry_delay),
        _status_or_none,
    )


def interrupt_attempt(attempt_id: str, error: dict[str, Any]) -> Query[RunStatus | None]:
    """The worker shuts down without letting the attempt finish: QUEUED again at once, the
    attempt continued by the next claim (FAILED after too many interruptions)."""
    return Query(
        "SELECT skiplock.interrupt_attempt(%s, %s::jsonb)",
        (attempt_id, _json(error)),
        _status_or_none,
    )


def heartbeat(worker_id: str, attempt_ids: list[str]) -> Query[list[str] | None]:
    """The attempts to stop, or None when the worker was declared lost."""
    return Query("SELECT skiplock.heartbeat(%s, %s)", (worker_id, attempt_ids), _scalar)


def peer_workers(worker_id: str) -> Query[int]:
    """How many other workers hold a current lease (automatic claim lanes)."""
    return Query("SELECT skiplock.peer_workers(%s)", (worker_id,), _scalar)


def stop_worker(worker_id: str) -> Query[int]:
    return Query("SELECT skiplock.stop_worker(%s)", (worker_id,), _scalar)


def tick() -> Query[dict[str, Any]]:
    return Query("SELECT skiplock.tick()", (), _scalar)


def wake_due() -> Query[float | None]:
    """Seconds until the next transition wake_due makes is due (None: none waits)."""
    return Query("SELECT next_in FROM skiplock.wake_due()", (), _scalar)


def update_metadata(attempt_id: str, metadata_json: str) -> Query[bool]:
    return Query(
        "SELECT skiplock.update_metadata(%s, %s::jsonb)", (attempt_id, metadata_json), _scalar
    )
