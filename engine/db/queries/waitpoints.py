"""Statements of durable calls (steps, waits, child runs) and of tokens and waitpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...errors import TokenNotFoundError
from ..database import Query, Rows
from ._rows import _as_is, _column, _json, _scalar


def run_log(run_id: str) -> Query[dict[int, dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.run_log(%s)",
        (run_id,),
        lambda rows: {r["step"]: r for r in rows},
    )


def record_step(
    attempt_id: str, position: int, name: str, output_json: str, seconds: float
) -> Query[bool]:
    """`seconds`: how long the step function ran (its start is dated back from its end)."""
    return Query(
        "SELECT skiplock.record_step(%s, %s, %s, %s::jsonb, %s)",
        (attempt_id, position, name, output_json, seconds),
        _scalar,
    )


def record_steps(steps_json: str) -> Query[list[str]]:
    """Many step records in one statement; returns the attempts fenced off (not written)."""
    return Query("SELECT * FROM skiplock.record_steps(%s::jsonb)", (steps_json,), _column)


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
