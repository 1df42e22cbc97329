"""Server-Sent Events fed by LISTEN/NOTIFY: one stream per open page.

A run page gets an event per change of its run and per write of new records to its logs
(one per worker write, at most every 0.5 s a worker), and an `end` event after its final
status; the runs list gets an event per change of any run (it re-fetches its table,
debounced). Comments every 15 s keep proxies from closing an idle stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..api.engine import Engine
from ..errors import DatabaseUnreachableError, SchemaNotMigratedError, SkiplockError
from ..models import Run

_KEEPALIVE = 15.0
Endpoint = Callable[[Request], Awaitable[Response]]


def _event(run: Run[Any, Any], name: str | None = None) -> str:
    data = json.dumps({"id": run.id, "status": run.status.value, "updated_at": str(run.updated_at)})
    return (f"event: {name}\n" if name else "") + f"data: {data}\n\n"


def _logs_event(run_id: str) -> str:
    return f"data: {json.dumps({'id': run_id, 'logs': True})}\n\n"


_END = object()


async def _merged(
    runs: AsyncIterator[Run[Any, Any]], logs: AsyncIterator[None]
) -> AsyncIterator[Run[Any, Any] | None]:
    """The run's snapshots and its logs' changes (None), as they come; ends with `runs`
    (or with the error either raises)."""
    queue: asyncio.Queue[tuple[AsyncIterator[Any], Any]] = asyncio.Queue()

    async def pump(it: AsyncIterator[Any]) -> None:
        try:
            async for item in it:
                await queue.put((it, item))
        except Exception as exc:
            await queue.put((it, exc))
        else:
            await queue.put((it, _END))

    tasks = [asyncio.create_task(pump(runs)), asyncio.create_task(pump(logs))]
    try:
        while True:
            source, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item is _END:
                if source is runs:
                    return
                continue
            yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for it in (runs, logs):
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()


async def _with_keepalive(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """`events`, with a comment line whenever none came for _KEEPALIVE seconds."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for e in events:
                await queue.put(e)
        finally:
            await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), _KEEPALIVE)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if item is None:
                break
            yield item
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()  # ends the subscription now, not when collected


def _stream(events: AsyncIterator[str]) -> Response:
    return StreamingResponse(
        _with_keepalive(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def run_events(engine: Engine) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            await engine.runs.retrieve_async(run_id)
        except (DatabaseUnreachableError, SchemaNotMigratedError) as exc:
            return Response(str(exc), 503)
        except SkiplockError as exc:
            return Response(str(exc), 404)

        async def events() -> AsyncIterator[str]:
            runs = engine.runs.subscribe_to_run_async(run_id)
            async for run in _merged(runs, engine.runs.log_changes_async(run_id)):
                if run is None:  # new log records: the page re-reads its body
                    yield _logs_event(run_id)
                    continue
                yield _event(run)
                if run.is_completed:
                    yield _event(run, "end")

        return _stream(events())

    return endpoint


def list_events(engine: Engine) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            async for run in engine.runs.subscribe_to_changes_async():
                yield _event(run)

        return _stream(events())

    return endpoint
