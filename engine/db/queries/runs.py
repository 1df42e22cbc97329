"""Statements of the public API: triggering, the runs API, realtime re-reads, queues,
workers as listed, the migration ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any, LiteralString

from ...errors import RunNotFoundError, UnknownQueueError
from ...values import BatchHandle, RunHandle, RunStatus
from ..database import Query, Rows
from ._rows import _as_is, _handle, _json, _scalar


def trigger(task: str, payload_json: str, options: dict[str, Any]) -> Query[RunHandle]:
    return Query(
        "SELECT run_id, run_status, is_cached FROM skiplock.trigger(%s, %s::jsonb, %s::jsonb)",
        (task, payload_json, _json(options)),
        lambda rows: _handle(task, rows[0]["run_id"], rows[0]["run_status"], rows[0]["is_cached"]),
        # with a key, re-sending cannot make a second run; a debounced one joins its run
        idempotent="idempotency_key" in options or "debounce" in options,
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
    schedule: str | None = None,
) -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.list_runs("
        "%s::skiplock.run_status[], %s, %s, %s, %s, %s, %s, %s, %s)",
        (status, tasks, tags, batch, created_from, created_to, after, limit, schedule),
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


def run_trace(run_id: str, limit: int) -> Query[list[dict[str, Any]]]:
    """The run's first `limit` durable calls with their times and waitpoints (the trace)."""
    return Query("SELECT * FROM skiplock.run_trace(%s, %s)", (run_id, limit), _as_is)


def run_trace_logs(run_id: str, limit: int) -> Query[list[dict[str, Any]]]:
    """The run's newest `limit` log records, oldest first (none without run logs)."""
    return Query("SELECT * FROM skiplock.run_trace_logs(%s, %s)", (run_id, limit), _as_is)


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


def status_reason(run_id: str) -> Query[str | None]:
    return Query("SELECT skiplock.run_status_reason(%s)", (run_id,), _scalar)


def deployed_task_ids() -> Query[list[str]]:
    """Every task id some deployment has registered, at any version."""
    return Query(
        "SELECT DISTINCT task_identifier FROM skiplock.deployment_tasks",
        (),
        lambda rows: [r["task_identifier"] for r in rows],
    )


_QUEUE_CALLS: dict[str, LiteralString] = {
    "pause_queue": "SELECT skiplock.pause_queue(%s)",
    "resume_queue": "SELECT skiplock.resume_queue(%s)",
    "set_queue_limit": "SELECT skiplock.set_queue_limit(%s, %s)",
    "set_queue_rate_limit": "SELECT skiplock.set_queue_rate_limit(%s, %s, %s, %s)",
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


def queue_rate_stats(name: str) -> Query[list[dict[str, Any]]]:
    """The rate keys of queue `name` (queue_rate_stats), those out of budget first."""
    return Query(
        "SELECT * FROM skiplock.queue_rate_stats WHERE queue = %s "
        "ORDER BY next_allowed_at DESC, key LIMIT 1000",
        (name,),
        _as_is,
    )


def workers() -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.worker_status ORDER BY state = 'active' DESC, started_at DESC "
        "LIMIT 200",
        (),
        _as_is,
    )


def table_health() -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.table_health ORDER BY total_bytes DESC, table_name", (), _as_is
    )


def metrics() -> Query[list[dict[str, Any]]]:
    """The database-wide figures of skiplock.metrics: (metric, label, value) rows."""
    return Query("SELECT metric, label, value FROM skiplock.metrics", (), _as_is)


def migrations_applied() -> Query[set[str]]:
    """The sql/ files the database's migration ledger records."""
    return Query(
        "SELECT name FROM skiplock.migrations", (), lambda rows: {row["name"] for row in rows}
    )


def purge_runs(
    before: datetime | None,
    older_than: float | None,
    statuses: list[str] | None,
    tasks: list[str] | None,
    limit: int,
    dry_run: bool,
) -> Query[int]:
    """Finished before `before`, or `older_than` seconds before the database's now (neither:
    any finished run)."""
    return Query(
        "SELECT skiplock.purge_runs(coalesce(%s::timestamptz, skiplock.now() - "
        "make_interval(secs => coalesce(%s, 0))), %s::skiplock.run_status[], %s, %s, %s)",
        (before, older_than, statuses, tasks, limit, dry_run),
        lambda rows: int(_scalar(rows)),
    )
