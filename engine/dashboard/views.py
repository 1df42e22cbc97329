"""The dashboard's pages and actions. Pages render server-side; `?fragment=1` returns the
live part of a page alone, which the page's script swaps in when an event arrives."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ..api.engine import Engine
from ..db import queries
from ..errors import (
    DatabaseUnreachableError,
    InvalidArgumentError,
    SchemaNotMigratedError,
    SkiplockError,
)
from ..models import Run
from ..values import RateLimit, RunStatus
from . import trace
from .security import Csrf
from .timeline import timeline

_LIST_FILTERS = (
    "status",
    "task",
    "tag",
    "batch",
    "schedule",
    "created_from",
    "created_to",
    "limit",
)
# errors of the database as a whole, not of a request: every page answers 503 with them
UNAVAILABLE = (DatabaseUnreachableError, SchemaNotMigratedError)


class Views:
    def __init__(self, engine: Engine, templates: Jinja2Templates, csrf: Csrf) -> None:
        self.engine = engine
        self.templates = templates
        self.csrf = csrf

    def _render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        context.setdefault("error", request.query_params.get("error"))
        context.setdefault("title", "skiplock")
        context["csrf"] = self.csrf.token
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    async def unavailable(self, request: Request, exc: Exception) -> Response:
        """The page for `UNAVAILABLE` errors (a Starlette exception handler): 503 and the
        error's one line, which says what to do."""
        context = {"title": "Database unavailable", "error": str(exc)}
        return self._render(request, "base.html", context, 503)

    # -- pages -----------------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        params = request.query_params
        f = _Filters.of(params)
        after = params.get("after") or None
        context: dict[str, Any] = {
            "title": "Runs",
            "f": f,
            "statuses": [s.value for s in RunStatus],
            "after": after,
        }
        try:
            page = await self.engine.runs.list_async(
                status=f.status or None,
                task=f.task,
                tag=f.tag,
                batch=f.batch,
                schedule=f.schedule,
                created_from=_datetime(f.created_from, "created_from"),
                created_to=_datetime(f.created_to, "created_to"),
                limit=_int(f.limit, "limit"),
                after=after,
            )
        except UNAVAILABLE:
            raise
        except SkiplockError as exc:
            context.update(page=_EmptyPage(), after=None, error=str(exc))
            return self._render(request, "runs.html", context, 400)
        kept = [(k, v) for k, v in params.multi_items() if k in _LIST_FILTERS and v]
        context.update(
            page=page,
            first_url="/?" + urlencode(kept),
            next_url="/?" + urlencode([*kept, ("after", page.next_cursor or "")]),
        )
        name = "_runs_table.html" if params.get("fragment") else "runs.html"
        return self._render(request, name, context)

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            run = await self.engine.runs.retrieve_async(run_id)
        except UNAVAILABLE:
            raise
        except SkiplockError as exc:
            return self._render(
                request, "base.html", {"title": "Not found", "error": str(exc)}, 404
            )
        children = await self.engine.runs.children_async(run.id)
        context: dict[str, Any] = {"run": run, "trace": await self._trace(run, children)}
        fragment = request.query_params.get("fragment")
        if fragment == "trace":  # the page re-reads the trace alone while the run runs
            return self._render(request, "_trace.html", context)
        waitpoints = await self.engine.waitpoints.for_run_async(run.id)
        try:
            logs = await self.engine.runs.logs_async(run.id, limit=10000)
        except UNAVAILABLE:
            raise
        except SkiplockError:  # purged since: the page shows what it read
            logs = []
        context.update(
            title=f"{run.task_identifier} {run.id}",
            waitpoints=waitpoints,
            children=children,
            reason=await self.engine.runs.status_reason_async(run.id),
            timeline=timeline(run, waitpoints),
            logs=logs,
        )
        return self._render(request, "_run_body.html" if fragment else "run.html", context)

    async def _trace(self, run: Run[Any, Any], children: list[Run[Any, Any]]) -> trace.Trace:
        db = self.engine.adb
        calls = await db.run(queries.run_trace(run.id, trace.CALL_LIMIT + 1))
        logs = await db.run(queries.run_trace_logs(run.id, trace.LOG_LIMIT))
        more = len(calls) > trace.CALL_LIMIT
        return trace.build(run, calls[: trace.CALL_LIMIT], children, logs, more_calls=more)

    async def queues(self, request: Request) -> Response:
        queues = await self.engine.queues.list_async()
        return self._render(request, "queues.html", {"title": "Queues", "queues": queues})

    async def database(self, request: Request) -> Response:
        tables = await self.engine.table_health_async()
        return self._render(request, "database.html", {"title": "Database", "tables": tables})

    async def workers(self, request: Request) -> Response:
        workers = await self.engine.workers.list_async()
        return self._render(request, "workers.html", {"title": "Workers", "workers": workers})

    # -- actions (POST, CSRF-checked) ------------------------------------------------------

    async def action(self, request: Request) -> Response:
        form = await request.form()
        if not self.csrf.valid(request, form.get("csrf")):
            return Response("403: missing or wrong CSRF token", 403)
        p = request.path_params
        back = request.headers.get("referer") or "/"
        try:
            target = await self._act(p["kind"], p["key"], p["verb"], form)
        except UNAVAILABLE:
            raise
        except SkiplockError as exc:
            return RedirectResponse(_with_error(back, str(exc)), 303)
        return RedirectResponse(target or _with_error(back, None), 303)

    async def _act(self, kind: str, key: str, verb: str, form: Any) -> str | None:
        runs, queues = self.engine.runs, self.engine.queues
        if kind == "runs" and verb == "cancel":
            await runs.cancel_async(key)
        elif kind == "runs" and verb == "replay":
            return f"/runs/{(await runs.replay_async(key)).id}"
        elif kind == "runs" and verb == "reschedule":
            await runs.reschedule_async(key, delay=str(form.get("delay") or ""))
        elif kind == "waitpoints" and verb == "complete":
            await self.engine.waitpoints.complete_token_async(key, _json(form.get("output")))
        elif kind == "schedules" and verb == "activate":
            await self.engine.schedules.activate_async(key)
        elif kind == "schedules" and verb == "deactivate":
            await self.engine.schedules.deactivate_async(key)
        elif kind == "queues" and verb == "pause":
            await queues.pause_async(key)
        elif kind == "queues" and verb == "resume":
            await queues.resume_async(key)
        elif kind == "queues" and verb == "limit":
            text = str(form.get("limit") or "").strip()
            await queues.set_limit_async(key, None if text in ("", "none") else _int(text, "limit"))
        elif kind == "queues" and verb == "rate":
            text = str(form.get("rate") or "").strip()
            burst = str(form.get("burst") or "").strip() or "1"
            rate = None if text in ("", "none") else RateLimit.parse(text, _int(burst, "burst"))
            await queues.set_rate_limit_async(key, rate)
        else:
            raise InvalidArgumentError(f"no action {verb!r} on {kind}")
        return None


@dataclass
class _Filters:
    """The runs list's filters as the form sent them (shown back as typed)."""

    status: list[str]
    task: str | None
    tag: str | None
    batch: str | None
    schedule: str | None
    created_from: str | None
    created_to: str | None
    limit: str

    @classmethod
    def of(cls, params: QueryParams) -> _Filters:
        return cls(
            status=[s for s in params.getlist("status") if s],
            task=params.get("task") or None,
            tag=params.get("tag") or None,
            batch=params.get("batch") or None,
            schedule=params.get("schedule") or None,
            created_from=params.get("created_from") or None,
            created_to=params.get("created_to") or None,
            limit=params.get("limit") or "25",
        )


@dataclass
class _EmptyPage:
    data: list[Any] = field(default_factory=list)
    next_cursor: str | None = None


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a whole number, got {text!r}") from None


def _datetime(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a date and time, got {text!r}") from None
    return value if value.tzinfo else value.astimezone()  # the browser's local time


def _json(value: object) -> Any:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"the output must be JSON: {exc}") from None


def _with_error(url: str, error: str | None) -> str:
    base = url.split("?error=", 1)[0].split("&error=", 1)[0]
    if error is None:
        return base
    return base + ("&" if "?" in base else "?") + urlencode({"error": error})
