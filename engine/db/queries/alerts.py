"""Statements of alert delivery (engine/worker/alerts.py): the outbox of runs that failed
for good (sql/functions/66_alerts.sql)."""

from __future__ import annotations

from typing import Any

from ..database import Query
from ._rows import _as_is, _scalar


def claim_alerts(
    worker_id: str, limit: int, lease: float, max_age: float
) -> Query[list[dict[str, Any]]]:
    """Take up to `limit` due alerts for `lease` seconds (abandoning those older than
    `max_age` seconds)."""
    return Query(
        "SELECT * FROM skiplock.claim_alerts(%s, %s, %s, %s)",
        (worker_id, limit, lease, max_age),
        _as_is,
        # a lost reply leaves the alerts taken until their lease runs out; re-sending
        # would take others on top
        idempotent=False,
    )


def record_alert(
    alert_id: str, attempt: int, delivered_to: list[str], error: str | None, retry_delay: float
) -> Query[bool]:
    """How delivery `attempt` went: the sinks it reached, and the error (None: delivered)."""
    return Query(
        "SELECT skiplock.record_alert(%s, %s, %s, %s, %s)",
        (alert_id, attempt, delivered_to, error, retry_delay),
        _scalar,
    )
