"""`/metrics`: the database-wide figures for Prometheus (engine/db/metrics.py), read in one
query at each scrape.

It sits behind the same access check as every page (security.py): with a token, the
scraper sends it as `Authorization: Bearer <token>` (Prometheus: `authorization:
{credentials: <token>}` in the scrape config); without one, only loopback hosts are
answered. A database that does not answer gives `skiplock_database_up 0`, not an error
page, so that an alert can tell it from a dashboard that is down. Without the
`skiplock[metrics]` extra it answers 501, saying what to install.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..api.engine import Engine
from ..db import queries
from ..errors import SkiplockError


def endpoint(engine: Engine) -> Callable[[Request], Awaitable[Response]]:
    async def metrics(request: Request) -> Response:
        try:
            from ..db import metrics as db_metrics
        except SkiplockError as exc:  # the extra is not installed
            return PlainTextResponse(f"{exc}\n", 501)
        try:
            rows: list[dict[str, Any]] = await engine.adb.run(queries.metrics())
            failure: Exception | None = None
        except Exception as exc:
            rows, failure = [], exc

        def read() -> list[dict[str, Any]]:
            if failure is not None:
                raise failure
            return rows

        body, content_type = db_metrics.exposition(
            db_metrics.DatabaseCollector(read), request.headers.get("accept")
        )
        return Response(body, headers={"Content-Type": content_type})

    return metrics
