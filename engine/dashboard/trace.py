"""A run's trace: its attempts, durable calls (steps with their durations, waits with what
they waited on), child runs and log records as rows of bars and marks on one time axis,
from the run's creation to its end (or now).

Everything comes from rows the engine writes anyway: the run and its attempts, the
durable call log (`run_steps`, whose `started_at` the worker sends with a step's result),
the waitpoints, the child runs and, where the schema has them, the run's logs. Positions
are percentages of the axis, computed here, so the page draws it with CSS alone.

A run that waited a day and has 5 ms steps has bars far thinner than a pixel: bars keep
a minimum width, and every row says its duration in words beside its bar and in the
label column, so the short ones stay readable."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ..models import Run
from ..values import FINAL_STATUSES, RunStatus

CALL_LIMIT = 500  # durable calls drawn; a note says how many more there are
LOG_LIMIT = 300  # newest log records drawn as marks
_REFRESH_EXECUTING_MS = 2000  # steps and logs arrive without a change of the run's row
_REFRESH_OTHER_MS = 10000  # the open bars grow with the clock
# the axis' tick intervals, in seconds: one is chosen to give at most 6 ticks
_STEPS = [
    *(m * 10.0**e for e in range(-3, 2) for m in (1, 2, 5)),
    *(15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0),
    *(3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0, 2592000.0),
]
_STEPS = sorted(set(_STEPS))


@dataclass(frozen=True)
class Segment:
    """A part of a row's bar drawn apart: a wait within an attempt, a run's queued time."""

    left: float
    width: float
    kind: str
    title: str


@dataclass(frozen=True)
class Mark:
    """A point on the axis: a log record."""

    left: float
    level: str
    title: str


@dataclass
class Row:
    kind: str  # run, attempt, step, wait, child, logs
    label: str  # a step's name, what a wait waited on, a child's task, ...
    note: str = ""  # said after the duration beside the bar: why an attempt failed
    duration: str = ""
    left: float = 0.0
    width: float = 0.0
    status: str = ""  # the bar's colour: a run or attempt status, or the wait's state
    href: str | None = None  # where the label links (a child run, the run waited on)
    title: str = ""  # the bar's tooltip: start, end
    depth: int = 0
    open: bool = False  # not ended: the bar reaches now
    segments: list[Segment] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    has_bar: bool = True

    @property
    def text(self) -> str:
        """What the bar says beside (or in) itself."""
        return " · ".join(x for x in (self.label, self.duration, self.note) if x)

    @property
    def text_style(self) -> str:
        """Where the bar's duration goes: inside a wide bar, else beside it, on the side
        with room."""
        if self.width >= 18:
            return f"left:calc({self.left:.4f}% + 6px)"
        end = self.left + self.width
        if end <= 72:
            return f"left:calc({end:.4f}% + 6px)"
        return f"right:calc({100 - self.left:.4f}% + 6px)"

    @property
    def text_inside(self) -> bool:
        return self.width >= 18


@dataclass(frozen=True)
class Tick:
    left: float
    label: str


@dataclass
class Trace:
    start: datetime
    end: datetime
    rows: list[Row]
    ticks: list[Tick]
    now: float | None  # where now is on the axis, while the run is not final
    refresh_ms: int | None  # how often the page re-reads the trace (None: final)
    notes: list[str]


def duration(seconds: float) -> str:
    """A duration in words, precise for short ones: '20 µs', '0.3 ms', '5.2 ms', '512 ms',
    '2.35 s', '3 min 20 s', '1 d 2 h'."""
    seconds = max(seconds, 0.0)
    if seconds < 0.0001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s" if whole % 60 else f"{whole // 60} min"
    if whole < 86400:
        h, m = whole // 3600, whole % 3600 // 60
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = whole // 86400, whole % 86400 // 3600
    return f"{d} d {h} h" if h else f"{d} d"


def _offset(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"+{seconds * 1000:g} ms"
    if seconds < 60:
        return f"+{seconds:g} s"
    if seconds < 3600:
        return f"+{seconds / 60:g} min"
    if seconds < 86400:
        return f"+{seconds / 3600:g} h"
    return f"+{seconds / 86400:g} d"


def _ticks(span: float) -> list[Tick]:
    step = next((s for s in _STEPS if span / s <= 6), _STEPS[-1])
    ticks, k = [], 0
    while k * step <= span * 1.0001:
        ticks.append(Tick(k * step / span * 100, _offset(k * step)))
        k += 1
    return ticks


def _clock(value: datetime) -> str:
    return value.astimezone().strftime("%H:%M:%S.%f")[:-3]


class _Axis:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1e-3)

    def at(self, t: datetime) -> float:
        return min(max((t - self.start).total_seconds() / self.span * 100, 0.0), 100.0)

    def place(self, row: Row, start: datetime, end: datetime) -> Row:
        row.left = self.at(start)
        row.width = max(self.at(end) - row.left, 0.0)
        row.duration = duration((end - start).total_seconds())
        ended = "now" if row.open else _clock(end)
        row.title = f"{_clock(start)} → {ended} ({row.duration})"
        return row

    def segment(self, start: datetime, end: datetime, kind: str, title: str) -> Segment:
        left = self.at(start)
        return Segment(left, max(self.at(end) - left, 0.0), kind, title)


def _waited_on(call: dict[str, Any]) -> tuple[str, str | None]:
    """What a durable call that waits waited on, and where that links: "2s", "until
    2026-12-01 09:00:00", "token waitpoint_...", "run run_... (task)", "batch batch_..."."""
    kind, name = call["kind"], call["name"]
    if kind == "wait":
        if name == "until" and call["completes_at"] is not None:
            return f"until {call['completes_at'].astimezone():%Y-%m-%d %H:%M:%S}", None
        return name, None
    if kind == "token":
        return f"token {name}", None
    if kind == "run":
        target = call["target_run_id"]
        return f"run {target} ({name})", f"/runs/{target}" if target else None
    if kind == "batch":
        batch = call["target_batch_id"]
        return f"batch {batch} ({name})", f"/?batch={quote(batch)}" if batch else None
    return f"{kind} {name}", None


def _error(error: Any) -> str:
    if not isinstance(error, dict):
        return ""
    text = f"{error.get('type', 'error')}: {error.get('message', '')}".strip().rstrip(":")
    return text if len(text) <= 90 else text[:89] + "…"


def _wait_state(call: dict[str, Any]) -> str:
    if call["waitpoint_status"] != "COMPLETED":
        return "PENDING"
    if call["is_error"]:
        return "FAILED" if call["kind"] in ("run", "batch") else "TIMED_OUT"
    return "COMPLETED"


def build(
    run: Run[Any, Any],
    calls: Sequence[dict[str, Any]],
    children: Sequence[Run[Any, Any]],
    logs: Sequence[dict[str, Any]],
    now: datetime | None = None,
    *,
    more_calls: bool = False,
) -> Trace:
    """The trace of `run` from its rows: `calls` from skiplock.run_trace, `children` the
    runs it triggered, `logs` from skiplock.run_trace_logs."""
    now = now or datetime.now(UTC)
    final = run.status in FINAL_STATUSES
    known = [run.created_at, run.finished_at, run.updated_at]
    known += [t for a in run.attempts for t in (a.started_at, a.finished_at)]
    known += [t for c in calls for t in (c["started_at"], c["ended_at"])]
    known += [t for c in children for t in (c.created_at, c.finished_at)]
    known += [log["at"] for log in logs]
    open_items = (
        not final
        or any(c["ended_at"] is None for c in calls)
        or any(c.finished_at is None for c in children)
    )
    # the dashboard's clock may be behind the database's: now is never before a timestamp
    latest = max(t for t in known if t is not None)
    end = max(latest, now) if open_items else latest
    axis = _Axis(run.created_at, end)

    rows: list[Row] = []
    run_end = run.finished_at if final and run.finished_at else end
    top = axis.place(Row("run", run.task_identifier), run.created_at, run_end)
    top.status, top.open = run.status.value, not final
    first_start = min((a.started_at for a in run.attempts), default=None)
    if first_start is not None and first_start > run.created_at:
        queued = duration((first_start - run.created_at).total_seconds())
        top.segments.append(axis.segment(run.created_at, first_start, "queued", f"queued {queued}"))
    rows.append(top)

    attempts = sorted(run.attempts, key=lambda a: a.number)
    spans = []
    for a in attempts:
        a_end = a.finished_at or (run.finished_at if final and run.finished_at else end)
        spans.append((a, a.started_at, a_end))

    def owner(t: datetime) -> int | None:
        found = None
        for i, (_, s, e) in enumerate(spans):
            if s <= t <= e:
                found = i  # the last attempt that covers it: attempts do not overlap
        return found

    placed_children: set[str] = set()
    by_attempt: dict[int | None, list[Row]] = {}
    for call in calls:
        started, ended = call["started_at"], call["ended_at"]
        if call["kind"] == "step":
            row = Row("step", call["name"], status="COMPLETED", depth=1)
            axis.place(row, started, ended)
        else:
            what, href = _waited_on(call)
            row = Row("wait", what, status=_wait_state(call), href=href, depth=1)
            row.open = ended is None
            axis.place(row, started, ended or end)
        group = by_attempt.setdefault(owner(started), [])
        group.append(row)
        for child in children:
            if child.id in placed_children:
                continue
            if (call["kind"] == "run" and child.id == call["target_run_id"]) or (
                call["kind"] == "batch" and child.batch_id == call["target_batch_id"]
            ):
                group.append(_child_row(axis, child, end, depth=2))
                placed_children.add(child.id)
    for child in children:  # triggered without waiting: under the attempt that made it
        if child.id not in placed_children:
            by_attempt.setdefault(owner(child.created_at), []).append(
                _child_row(axis, child, end, depth=1)
            )

    logs_by_attempt: dict[int, list[dict[str, Any]]] = {}
    for log in logs:
        logs_by_attempt.setdefault(int(log["attempt"] or 0), []).append(log)

    for i, (a, started, a_end) in enumerate(spans):
        row = Row("attempt", f"attempt {a.number}", _error(a.error), status=a.status)
        row.open = a.finished_at is None and not final
        axis.place(row, started, a_end)
        for call_row in by_attempt.get(i, []):
            if call_row.kind == "wait":
                row.segments.append(
                    Segment(call_row.left, call_row.width, "waiting", f"waiting: {call_row.label}")
                )
        rows.append(row)
        rows.extend(by_attempt.get(i, []))
        records = logs_by_attempt.pop(a.number, [])
        if records:
            rows.append(_log_row(axis, records, depth=1))
    rows.extend(by_attempt.get(None, []))
    for records in logs_by_attempt.values():  # logged outside any attempt we know of
        rows.append(_log_row(axis, records, depth=0))

    notes = []
    if more_calls:
        notes.append(f"Only the first {CALL_LIMIT} durable calls are drawn.")
    if len(logs) >= LOG_LIMIT:
        notes.append(f"Only the newest {LOG_LIMIT} log records are drawn.")
    refresh = None
    if not final:
        executing = run.status in (RunStatus.EXECUTING, RunStatus.DEQUEUED)
        refresh = _REFRESH_EXECUTING_MS if executing else _REFRESH_OTHER_MS
    return Trace(
        start=run.created_at,
        end=end,
        rows=rows,
        ticks=_ticks(axis.span),
        now=axis.at(now) if not final else None,
        refresh_ms=refresh,
        notes=notes,
    )


def _child_row(axis: _Axis, child: Run[Any, Any], end: datetime, depth: int) -> Row:
    row = Row(
        "child",
        child.task_identifier,
        status=child.status.value,
        href=f"/runs/{child.id}",
        depth=depth,
    )
    row.open = child.finished_at is None
    axis.place(row, child.created_at, child.finished_at or end)
    if child.started_at is not None and child.started_at > child.created_at:
        queued = duration((child.started_at - child.created_at).total_seconds())
        row.segments.append(
            axis.segment(child.created_at, child.started_at, "queued", f"queued {queued}")
        )
    return row


def _level(value: Any) -> str:
    text = str(value or "")
    return logging.getLevelName(int(text)) if text.isdigit() else text.upper()


def _log_row(axis: _Axis, records: list[dict[str, Any]], depth: int) -> Row:
    marks = []
    for r in records:
        level = _level(r["level"])
        title = f"{_clock(r['at'])} {level} {r['logger']}: {r['message']}"
        marks.append(Mark(axis.at(r["at"]), level.lower(), title))
    n = len(records)
    return Row(
        "logs",
        f"{n} record{'s' if n != 1 else ''}",
        depth=depth,
        marks=marks,
        has_bar=False,
    )
