"""Statements of the schedules API (sql/functions/72_schedules.sql)."""

from __future__ import annotations

from typing import Any, Final, LiteralString

from ..database import Query
from ._rows import _as_is, _json

# a schedule row with its next 5 slots (from now, or from its next slot when later)
_WITH_UPCOMING: Final[LiteralString] = (
    "s.*, skiplock.cron_slots(s.cron, s.timezone, "
    "greatest(skiplock.now(), s.next_slot - interval '1 second'), 5) AS upcoming"
)


def create_schedule(task: str, cron: str, timezone: str, options: dict[str, Any]) -> Query[str]:
    return Query(
        "SELECT (skiplock.create_schedule(%s, %s, %s, %s::jsonb)).id",
        (task, cron, timezone, _json(options)),
        lambda rows: str(rows[0]["id"]),
        idempotent="deduplication_key" in options,
    )


def update_schedule(schedule_id: str, changes: dict[str, Any]) -> Query[str]:
    return Query(
        "SELECT (skiplock.update_schedule(%s, %s::jsonb)).id",
        (schedule_id, _json(changes)),
        lambda rows: str(rows[0]["id"]),
    )


def set_schedule_active(schedule_id: str, active: bool) -> Query[str]:
    return Query(
        "SELECT (skiplock.set_schedule_active(%s, %s)).id",
        (schedule_id, active),
        lambda rows: str(rows[0]["id"]),
    )


def delete_schedule(schedule_id: str) -> Query[None]:
    return Query("SELECT skiplock.delete_schedule(%s)", (schedule_id,), lambda rows: None)


def retrieve_schedule(schedule_id: str) -> Query[dict[str, Any] | None]:
    return Query(
        "SELECT " + _WITH_UPCOMING + " FROM skiplock.schedules s WHERE s.id = %s",
        (schedule_id,),
        lambda rows: dict(rows[0]) if rows else None,
    )


def list_schedules(
    *,
    tasks: list[str] | None,
    active: bool | None,
    type: str | None,
    external_id: str | None,
    after: str | None,
    limit: int,
) -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT " + _WITH_UPCOMING + " FROM skiplock.list_schedules(%s, %s, %s, %s, %s, %s) s",
        (tasks, active, type, external_id, after, limit),
        _as_is,
    )
