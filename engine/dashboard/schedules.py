"""The schedules pages: every schedule with its cron in words, next slots and last run;
and one schedule with its last runs. Activating and deactivating are actions of
`Views.action` (POST, CSRF-checked)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.requests import Request
from starlette.responses import Response

from ..errors import SkiplockError
from .views import UNAVAILABLE, Views, _EmptyPage, _int

_LIST_FILTERS = ("task", "state", "type", "limit")
_TYPES: dict[str, Literal["DECLARATIVE", "IMPERATIVE"]] = {
    "declarative": "DECLARATIVE",
    "imperative": "IMPERATIVE",
}


class ScheduleViews:
    def __init__(self, views: Views) -> None:
        self.views = views
        self.engine = views.engine

    async def schedules(self, request: Request) -> Response:
        params = request.query_params
        f = {name: params.get(name) or "" for name in _LIST_FILTERS}
        f["limit"] = f["limit"] or "50"
        after = params.get("after") or None
        context: dict[str, Any] = {"title": "Schedules", "f": f, "after": after}
        try:
            page = await self.engine.schedules.list_async(
                task=f["task"] or None,
                active={"active": True, "inactive": False}.get(f["state"]),
                type=_TYPES.get(f["type"]),
                limit=_int(f["limit"], "limit"),
                after=after,
            )
        except UNAVAILABLE:
            raise
        except SkiplockError as exc:
            context.update(page=_EmptyPage(), after=None, error=str(exc))
            return self.views._render(request, "schedules.html", context, 400)
        kept = [(k, v) for k, v in params.multi_items() if k in _LIST_FILTERS and v]
        context.update(
            page=page,
            first_url="/schedules?" + urlencode(kept),
            next_url="/schedules?" + urlencode([*kept, ("after", page.next_cursor or "")]),
        )
        return self.views._render(request, "schedules.html", context)

    async def schedule(self, request: Request) -> Response:
        schedule_id = request.path_params["schedule_id"]
        try:
            schedule = await self.engine.schedules.retrieve_async(schedule_id)
        except UNAVAILABLE:
            raise
        except SkiplockError as exc:
            return self.views._render(
                request, "base.html", {"title": "Not found", "error": str(exc)}, 404
            )
        runs = await self.engine.runs.list_async(schedule=schedule.id, limit=10)
        every_run = [("schedule", schedule.id), ("limit", "10")]
        context = {
            "title": f"{schedule.task_identifier} {schedule.id}",
            "schedule": schedule,
            "page": runs,
            "after": None,
            "all_runs_url": "/?" + urlencode(every_run[:1]),
            "next_url": "/?" + urlencode([*every_run, ("after", runs.next_cursor or "")]),
        }
        return self.views._render(request, "schedule.html", context)


def slot(value: datetime | None, zone: str) -> str:
    """A slot (or any instant) on the clock of the schedule's zone: Mon 2026-12-07 09:00 CET."""
    if value is None:
        return "-"
    return value.astimezone(_zone(zone)).strftime("%a %Y-%m-%d %H:%M %Z")


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # a zone PostgreSQL knows and Python not
        return UTC
