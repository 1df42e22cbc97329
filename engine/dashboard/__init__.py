"""The web dashboard: runs, a run's whole story, schedules, queues and workers, live over
Server-Sent Events fed by LISTEN/NOTIFY. `skiplock dashboard` serves it; `create_app`
returns the ASGI app for mounting elsewhere."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..api.engine import Engine
from ..models import Attempt, Run
from . import events, metrics
from .cron_words import describe
from .schedules import ScheduleViews, slot
from .security import AccessGuard, Csrf, check_bind
from .views import UNAVAILABLE, Views

if TYPE_CHECKING:
    import uvicorn

__all__ = ["create_app", "serve"]


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _when_ms(value: datetime | None) -> str:
    return value.astimezone().strftime("%H:%M:%S.%f")[:-3] if value else "-"


def _span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _age(value: timedelta | None) -> str:
    return _span(max(value.total_seconds(), 0.0)) if value is not None else "-"


def _run_duration(run: Run[Any, Any]) -> str:
    if run.started_at is None:
        return "-"
    end = run.finished_at or datetime.now().astimezone()
    return _span((end - run.started_at).total_seconds())


def _attempt_duration(attempt: Attempt) -> str:
    if attempt.finished_at is None:
        return "running"
    return _span((attempt.finished_at - attempt.started_at).total_seconds())


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        head = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        stack = error.get("stack")
        return f"{head}\n\n{stack}" if stack else head
    return _pretty(error)


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("engine.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters.update(
        when=_when,
        when_ms=_when_ms,
        age=_age,
        run_duration=_run_duration,
        attempt_duration=_attempt_duration,
        pretty=_pretty,
        error_text=_error_text,
        cron_words=describe,
        slot=slot,
    )
    return Jinja2Templates(env=env)


def create_app(engine: Engine, *, token: str | None = None) -> Starlette:
    """The dashboard for `engine`. Without `token` it answers loopback hosts only."""
    views = Views(engine, _templates(), Csrf())
    schedules = ScheduleViews(views)
    routes = [
        Route("/", views.runs),
        Route("/runs/{run_id}", views.run),
        Route("/schedules", schedules.schedules),
        Route("/schedules/{schedule_id}", schedules.schedule),
        Route("/queues", views.queues),
        Route("/workers", views.workers),
        Route("/database", views.database),
        Route("/metrics", metrics.endpoint(engine)),
        Route("/events/runs", events.list_events(engine)),
        Route("/events/runs/{run_id}", events.run_events(engine)),
        Route("/{kind:str}/{key:str}/{verb:str}", views.action, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(AccessGuard, token=token)],
        # the database unreachable or not migrated: 503 and the one line that says why
        exception_handlers={cls: views.unavailable for cls in UNAVAILABLE},
    )


def serve(
    engine: Engine, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None
) -> None:
    """Serve the dashboard until interrupted; refuses a non-loopback host without a token."""
    server(engine, host=host, port=port, token=token).run()


def server(
    engine: Engine, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None
) -> uvicorn.Server:
    """The dashboard's server, not started: `.run()` serves until a signal or until
    `should_exit` is set. Refuses a non-loopback host without a token."""
    import uvicorn

    check_bind(host, token)
    config = uvicorn.Config(
        create_app(engine, token=token), host=host, port=port, log_level="warning"
    )
    return uvicorn.Server(config)
