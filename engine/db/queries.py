"""Every statement the Python layer sends, as named sans-I/O `Query` builders.

Every write is a call of one SQL function from sql/functions, so the logic lives in SQL
and any language can drive the same transitions. Reads select from the views
(run_details, queue_stats, worker_status) or, for waitpoints and batches, the tables.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, LiteralString

from ..errors import RunNotFoundError, TokenNotFoundError, UnknownQueueError
from ..models import BatchHandle, RunHandle, RunStatus
from .database import Query, Rows


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _as_is(rows: Rows) -> list[dict[str, Any]]:
    """The rows themselves: dict_row makes each a dict already (copying them cost the
    worker's claim 0.5 us a run)."""
    return rows


def _scalar(rows: Rows) -> Any:
    return next(iter(rows[0].values())) if rows else None


_STATUSES = RunStatus._value2member_map_  # a dict lookup: RunStatus(s) costs 4x more


def _handle(task: str, run_id: str, status: str, cached: bool) -> RunHandle:
    return RunHandle(run_id, task, _STATUSES[status], cached)  # type: ignore[arg-type]


# -- triggering ---------------------------------------------------------------------


def trigger(task: str, payload_json: str, options: dict[str, Any]) -> Query[RunHandle]:
    return Query(
        "SELECT run_id, run_status, is_cached FROM skiplock.trigger(%s, %s::jsonb, %s::jsonb)",
        (task, payload_json, _json(options)),
        lambda rows: _handle(task, rows[0]["run_id"], rows[0]["run_status"], rows[0]["is_cached"]),
        # with a key, re-sending cannot make a second run
        idempotent="idempotency_key" in options,
    )


def trigger_batch(task: str, items_json: str, options: dict[str, Any]) -> Query[BatchHandle]:
    def parse(rows: Rows) -> BatchHandle:
        row = rows[0]
        return BatchHandle(
            row["batch_id"],
            [
                _handle(task, *run)
                for run in zip(row["run_ids"], row["statuses"], row["cached"], strict=True)
            ],
        )

    # one row of arrays, not a row per run (each repeating the batch id) to turn into dicts
    return Query(
        "SELECT min(b.batch_id) AS batch_id, array_agg(b.run_id ORDER BY b.n) AS run_ids, "
        "array_agg(b.run_status::text ORDER BY b.n) AS statuses, "
        "array_agg(b.is_cached ORDER BY b.n) AS cached "
        "FROM skiplock.trigger_batch(%s, %s::jsonb, %s::jsonb) WITH ORDINALITY AS b("
        "batch_id, run_id, run_status, is_cached, n)",
        (task, items_json, _json(options)),
        parse,
        idempotent=False,
    )


# -- runs API -----------------------------------------------------------------------


def retrieve(run_id: str) -> Query[dict[str, Any]]:
    def parse(rows: Rows) -> dict[str, Any]:
        if not rows:
            raise RunNotFoundError(f"run {run_id} does not exist")
        return dict(rows[0])

    return Query("SELECT * FROM skiplock.run_details WHERE id = %s", (run_id,), parse)


def list_runs(
    *,
    status: list[str] | None,
    tasks: list[str] | None,
    tags: list[str] | None,
    batch: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    after: str | None,
    limit: int,
) -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.list_runs(%s::skiplock.run_status[], %s, %s, %s, %s, %s, %s, %s)",
        (status, tasks, tags, batch, created_from, created_to, after, limit),
        _as_is,
    )


def runs_by_id(ids: list[str]) -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.run_details WHERE id = ANY (%s)",
        (ids,),
        _as_is,
    )


def watch(kinds: list[str], keys: list[str]) -> Query[None]:
    return Query("SELECT skiplock.watch(%s, %s)", (kinds, keys), lambda rows: None)


def unwatch(kinds: list[str], keys: list[str]) -> Query[None]:
    return Query("SELECT skiplock.unwatch(%s, %s)", (kinds, keys), lambda rows: None)


def changed_runs(
    ids: list[str], run_ids: list[str], tags: list[str], batches: list[str]
) -> Query[list[dict[str, Any]]]:
    """Of the runs `ids` (just announced as changed), those a subscription watches: by id,
    by any of `tags`, or by batch."""
    return Query(
        "SELECT * FROM skiplock.run_details WHERE id = ANY (%s)"
        " AND (id = ANY (%s) OR tags && %s::text[] OR batch_id = ANY (%s))",
        (ids, run_ids, tags, batches),
        _as_is,
    )


def children(run_id: str, limit: int) -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.run_details WHERE parent_id = %s ORDER BY id LIMIT %s",
        (run_id, limit),
        _as_is,
    )


def cancel(run_id: str) -> Query[RunStatus]:
    return Query("SELECT skiplock.cancel_run(%s)", (run_id,), lambda rows: RunStatus(_scalar(rows)))


def replay(run_id: str) -> Query[str]:
    return Query("SELECT skiplock.replay_run(%s)", (run_id,), _scalar, idempotent=False)


def reschedule(run_id: str, delay: dict[str, Any]) -> Query[datetime]:
    return Query(
        "SELECT skiplock.reschedule_run(%s, coalesce(%s::timestamptz, "
        "skiplock.now() + make_interval(secs => %s::double precision)))",
        (run_id, delay.get("delay_until"), delay.get("delay_seconds")),
        _scalar,
    )


# -- workers ------------------------------------------------------------------------


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


def complete_and_claim(
    results_json: str | None,
    worker_id: str,
    version: str,
    tasks: list[str],
    queues: list[str] | None,
    limit: int,
) -> Query[list[dict[str, Any]]]:
    """Record finished attempts (JSON as complete_attempts takes, or None) and claim up
    to `limit` runs, in one durable commit."""
    return Query(
        # payload and metadata as JSON text: the worker validates the payload straight from
        # it, and decodes metadata only when there is some
        "SELECT run_id, task_identifier, payload::text AS payload, "
        "metadata::text AS metadata, max_duration, attempt_id, attempt_number "
        "FROM skiplock.complete_and_claim(%s::jsonb, %s, %s, %s, %s, %s)",
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


def _status_or_none(rows: Rows) -> RunStatus | None:
    value = _scalar(rows)
    return None if value is None else _STATUSES[value]  # type: ignore[return-value]


def heartbeat(worker_id: str, attempt_ids: list[str]) -> Query[list[str] | None]:
    """The attempts to stop, or None when the worker was declared lost."""
    return Query("SELECT skiplock.heartbeat(%s, %s)", (worker_id, attempt_ids), _scalar)


def stop_worker(worker_id: str) -> Query[int]:
    return Query("SELECT skiplock.stop_worker(%s)", (worker_id,), _scalar)


def tick() -> Query[dict[str, Any]]:
    return Query("SELECT skiplock.tick()", (), _scalar)


# -- queues -------------------------------------------------------------------------

_QUEUE_CALLS: dict[str, LiteralString] = {
    "pause_queue": "SELECT skiplock.pause_queue(%s)",
    "resume_queue": "SELECT skiplock.resume_queue(%s)",
    "set_queue_limit": "SELECT skiplock.set_queue_limit(%s, %s)",
}


def queue_call(function: str, *args: Any) -> Query[Any]:
    return Query(_QUEUE_CALLS[function], args, _scalar)


def queue_stats() -> Query[list[dict[str, Any]]]:
    return Query("SELECT * FROM skiplock.queue_stats ORDER BY name", (), _as_is)


def queue_stat(name: str) -> Query[dict[str, Any]]:
    def parse(rows: Rows) -> dict[str, Any]:
        if not rows:
            raise UnknownQueueError(f"queue {name!r} does not exist")
        return dict(rows[0])

    return Query("SELECT * FROM skiplock.queue_stats WHERE name = %s", (name,), parse)


# -- waitpoints and durable calls -----------------------------------------------------


def run_log(run_id: str) -> Query[dict[int, dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.run_log(%s)",
        (run_id,),
        lambda rows: {r["step"]: r for r in rows},
    )


def record_step(attempt_id: str, position: int, name: str, output_json: str) -> Query[bool]:
    return Query(
        "SELECT skiplock.record_step(%s, %s, %s, %s::jsonb)",
        (attempt_id, position, name, output_json),
        _scalar,
    )


def wait_seconds(attempt_id: str, position: int, name: str, seconds: float) -> Query[str]:
    return Query(
        "SELECT skiplock.wait_until(%s, %s, %s, "
        "skiplock.now() + make_interval(secs => %s::double precision))",
        (attempt_id, position, name, seconds),
        _scalar,
        idempotent=False,
    )


def wait_until(attempt_id: str, position: int, name: str, until: datetime) -> Query[str]:
    return Query(
        "SELECT skiplock.wait_until(%s, %s, %s, %s)",
        (attempt_id, position, name, until),
        _scalar,
        idempotent=False,
    )


def block_on(attempt_id: str, position: int, kind: str, name: str, waitpoint_id: str) -> Query[str]:
    return Query(
        "SELECT skiplock.block_run(%s, %s, %s, %s, ARRAY[%s])",
        (attempt_id, position, kind, name, waitpoint_id),
        _scalar,
    )


def trigger_and_wait(
    attempt_id: str, position: int, task: str, payload_json: str, options: dict[str, Any]
) -> Query[dict[str, Any]]:
    return Query(
        "SELECT * FROM skiplock.trigger_and_wait(%s, %s, %s, %s::jsonb, %s::jsonb)",
        (attempt_id, position, task, payload_json, _json(options)),
        lambda rows: dict(rows[0]),
        idempotent=False,
    )


def batch_trigger_and_wait(
    attempt_id: str, position: int, task: str, items_json: str, options: dict[str, Any]
) -> Query[dict[str, Any]]:
    return Query(
        "SELECT * FROM skiplock.batch_trigger_and_wait(%s, %s, %s, %s::jsonb, %s::jsonb)",
        (attempt_id, position, task, items_json, _json(options)),
        lambda rows: dict(rows[0]),
        idempotent=False,
    )


def batch_results(batch_id: str) -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT id, status, output, error FROM skiplock.runs WHERE batch_id = %s"
        " AND id = ANY ((SELECT run_ids FROM skiplock.batches WHERE id = %s)::text[]) ORDER BY id",
        (batch_id, batch_id),
        _as_is,
    )


def create_token(options: dict[str, Any]) -> Query[dict[str, Any]]:
    return Query(
        "SELECT waitpoint_id, is_cached FROM skiplock.create_token(%s::jsonb)",
        (_json(options),),
        lambda rows: dict(rows[0]),
        idempotent="idempotency_key" in options,
    )


def complete_token(token_id: str, output_json: str) -> Query[bool]:
    return Query("SELECT skiplock.complete_token(%s, %s::jsonb)", (token_id, output_json), _scalar)


def waitpoint(waitpoint_id: str) -> Query[dict[str, Any]]:
    def parse(rows: Rows) -> dict[str, Any]:
        if not rows:
            raise TokenNotFoundError(f"waitpoint {waitpoint_id} does not exist")
        return dict(rows[0])

    return Query(
        "SELECT id, type, status, output, is_error, tags, created_at, completed_at, timeout_at, "
        "idempotency_key FROM skiplock.waitpoints WHERE id = %s",
        (waitpoint_id,),
        parse,
    )


def run_waitpoints(run_id: str) -> Query[list[dict[str, Any]]]:
    """Every waitpoint the run has blocked on, in the order it did."""
    return Query(
        "SELECT w.id, w.type, w.status, w.output, w.is_error, w.tags, w.created_at, "
        "w.completed_at, w.timeout_at, w.idempotency_key "
        "FROM skiplock.run_waitpoints e JOIN skiplock.waitpoints w ON w.id = e.waitpoint_id "
        "WHERE e.run_id = %s ORDER BY e.created_at, w.id",
        (run_id,),
        _as_is,
    )


def workers() -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.worker_status ORDER BY state = 'active' DESC, started_at DESC "
        "LIMIT 200",
        (),
        _as_is,
    )


def status_reason(run_id: str) -> Query[str | None]:
    return Query("SELECT skiplock.run_status_reason(%s)", (run_id,), _scalar)


def deployed_task_ids() -> Query[list[str]]:
    """Every task id some deployment has registered, at any version."""
    return Query(
        "SELECT DISTINCT task_identifier FROM skiplock.deployment_tasks",
        (),
        lambda rows: [r["task_identifier"] for r in rows],
    )


def update_metadata(attempt_id: str, metadata_json: str) -> Query[bool]:
    return Query(
        "SELECT skiplock.update_metadata(%s, %s::jsonb)", (attempt_id, metadata_json), _scalar
    )


# -- schema ---------------------------------------------------------------------------


def migrations_applied() -> Query[set[str]]:
    """The sql/ files the database's migration ledger records."""
    return Query(
        "SELECT name FROM skiplock.migrations", (), lambda rows: {row["name"] for row in rows}
    )
