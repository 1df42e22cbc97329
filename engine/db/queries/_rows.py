"""Row parsers and encoders shared by the query modules."""

from __future__ import annotations

import json
from typing import Any

from ...values import RunHandle, RunStatus
from ..database import Rows


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _as_is(rows: Rows) -> list[dict[str, Any]]:
    """The rows themselves: dict_row makes each a dict already (copying them cost the
    worker's claim 0.5 us a run)."""
    return rows


def _column(rows: Rows) -> list[Any]:
    """The first column of every row."""
    return [next(iter(r.values())) for r in rows]


def _scalar(rows: Rows) -> Any:
    return next(iter(rows[0].values())) if rows else None


_STATUSES = RunStatus._value2member_map_  # a dict lookup: RunStatus(s) costs 4x more


def _handle(task: str, run_id: str, status: str, cached: bool) -> RunHandle:
    return RunHandle(run_id, task, _STATUSES[status], cached)  # type: ignore[arg-type]


def _status_or_none(rows: Rows) -> RunStatus | None:
    value = _scalar(rows)
    return None if value is None else _STATUSES[value]  # type: ignore[return-value]
