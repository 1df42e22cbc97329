"""Statements of run logs: the worker's batched writes, the API's reads."""

from __future__ import annotations

from typing import Any

from ..database import Query
from ._rows import _as_is, _scalar


def append_run_logs(batch_json: str) -> Query[int]:
    """Store a batch of records (see skiplock.append_run_logs for its shape). Not sent
    again after a lost connection (it may have committed): the writer decides."""
    return Query(
        "SELECT skiplock.append_run_logs(%s::jsonb)",
        (batch_json,),
        _scalar,
        idempotent=False,
    )


def run_logs_of(run_id: str, after: int | None, limit: int) -> Query[list[dict[str, Any]]]:
    return Query(
        "SELECT * FROM skiplock.run_logs_of(%s, %s, %s)",
        (run_id, after, limit),
        _as_is,
    )
