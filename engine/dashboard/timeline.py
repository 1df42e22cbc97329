"""A run's status changes over time, derived from the timestamps it already has (the run,
its attempts, its waitpoints): no history table is written on the hot path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api.waitpoints import Waitpoint
from ..models import Run

_ATTEMPT_END = {
    "COMPLETED": "COMPLETED",
    "FAILED": "FAILED",
    "TIMED_OUT": "TIMED_OUT",
    "CRASHED": "CRASHED",
    "CANCELED": "CANCELED",
}


@dataclass(frozen=True)
class Event:
    at: datetime
    status: str | None
    label: str


def timeline(run: Run[Any, Any], waitpoints: list[Waitpoint]) -> list[Event]:
    first = "DELAYED" if run.delayed_until and run.delayed_until > run.created_at else "QUEUED"
    events = [Event(run.created_at, first, "triggered")]
    if first == "DELAYED" and run.delayed_until is not None and run.started_at is not None:
        events.append(Event(run.delayed_until, "QUEUED", "delay over"))
    for a in run.attempts:
        events.append(Event(a.started_at, "EXECUTING", f"attempt {a.number} started"))
        if a.finished_at is not None and a.status in _ATTEMPT_END:
            ended = f"attempt {a.number} {a.status.lower().replace('_', ' ')}"
            events.append(Event(a.finished_at, None, ended))
    for w in waitpoints:
        events.append(Event(w.created_at, "WAITING", f"waiting on {w.type.lower()} {w.id}"))
        if w.completed_at is not None:
            how = "timed out" if w.is_error else "completed"
            events.append(Event(w.completed_at, "QUEUED", f"{w.type.lower()} {how}; queued again"))
    if run.finished_at is not None and run.is_completed:
        events.append(Event(run.finished_at, run.status.value, "final"))
    return sorted(events, key=lambda e: e.at)
