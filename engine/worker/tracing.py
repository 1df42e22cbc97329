"""OpenTelemetry, the worker's side (the `skiplock[otel]` extra): a span for each attempt.

An observer of every attempt (lifecycle.py), registered when `opentelemetry-api` is
installed. While tracing is active (the application set a TracerProvider: see
engine/api/tracing.py) it starts the attempt's span, "skiplock.run <task>" (kind
CONSUMER), as a child of the trace context stored with the run (its trigger's span), and
makes it current for the task function: a def task's thread gets it with the attempt's
context variables, so the task's steps, the runs it triggers and whatever else the
application traces in it are its children. As the attempt ends the span says how
(`skiplock.attempt.status`); an exception that failed it is recorded, with the error
status. Untraced, the observer is the shared null context, and nothing is read.

The stored trace contexts are read here, not returned by the claim, so that a worker that
does not trace never pays for them: the attempts a claim starts together ask at once
(each awaits before its task function runs), and one query reads all of theirs
(`_Batches`). So tracing costs one indexed read per claimed batch, not one per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from ..api import tracing as _tracing
from ..db import queries as _queries
from .lifecycle import OBSERVERS
from .replay import NonDeterministic, Suspended
from .state import CANCELED, LEASE_LOST, SHUTDOWN, TIMED_OUT, RunningAttempt

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from ..db.database import AsyncDatabase

log = logging.getLogger("skiplock.worker")

_NOTHING = contextlib.nullcontext()  # reusable: the untraced attempt

# how an attempt that the worker stopped ended, by ctx.stop_reason
_STOPPED = {
    CANCELED: "CANCELED",
    TIMED_OUT: "TIMED_OUT",
    SHUTDOWN: "INTERRUPTED",
    LEASE_LOST: "LEASE_LOST",
}


def observe(attempt: RunningAttempt) -> AbstractAsyncContextManager[None]:
    """The attempt's span around it, while tracing is active."""
    tracer = _tracing.tracer()
    if tracer is None:
        return _NOTHING
    return _attempt_span(tracer, attempt)


@contextlib.asynccontextmanager
async def _attempt_span(tracer: Tracer, attempt: RunningAttempt) -> AsyncIterator[None]:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace

    ctx, task = attempt.ctx, attempt.task
    stored = await _batches().get(task._conns.adb, ctx.run_id)
    span = tracer.start_span(
        f"skiplock.run {task.id}",
        context=_tracing.parent_context(stored and stored["trace_context"]),
        kind=otel_trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "skiplock",
            "messaging.operation.type": "process",
            "skiplock.task": task.id,
            "skiplock.run_id": ctx.run_id,
            "skiplock.attempt": ctx.attempt,
            "skiplock.attempt_id": ctx.attempt_id,
            "skiplock.queue": stored["queue"] if stored else task.queue.name,
            "skiplock.worker_id": ctx.worker_id,
        },
    )
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    status = "COMPLETED"
    try:
        yield
    except Suspended as exc:
        status = "WAITING" if exc.args == ("WAITING",) else _stopped(ctx.stop_reason)
        raise
    except NonDeterministic as exc:
        status = "SYSTEM_FAILURE"
        _tracing.record_error(span, exc)
        raise
    except asyncio.CancelledError:
        status = _stopped(ctx.stop_reason)
        raise
    except Exception as exc:
        status = "TIMED_OUT" if ctx.stop_reason == TIMED_OUT else "FAILED"
        _tracing.record_error(span, exc)
        raise
    else:
        if ctx.stop_reason is not None:  # it returned, but too late to count
            status = _stopped(ctx.stop_reason)
    finally:
        span.set_attribute("skiplock.attempt.status", status)
        otel_context.detach(token)
        span.end()


def _stopped(reason: str | None) -> str:
    return _STOPPED.get(reason or "", "FENCED")  # FENCED: no longer this worker's attempt


class _Batches:
    """The stored trace contexts of the runs whose attempts start, read in one query for
    those that ask in one turn of the event loop (one per loop: each worker has its own)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._asked: dict[AsyncDatabase, dict[str, list[asyncio.Future[Any]]]] = {}
        self._reading: set[asyncio.Task[None]] = set()  # strong references

    def get(self, db: AsyncDatabase, run_id: str) -> asyncio.Future[Any]:
        """The run's row of `trace_contexts` (None if it could not be read)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self._asked:
            self._loop.call_soon(self._read)
        self._asked.setdefault(db, {}).setdefault(run_id, []).append(future)
        return future

    def _read(self) -> None:
        asked, self._asked = self._asked, {}
        for db, runs in asked.items():
            reading = self._loop.create_task(self._read_from(db, runs))
            self._reading.add(reading)
            reading.add_done_callback(self._reading.discard)

    async def _read_from(
        self, db: AsyncDatabase, runs: dict[str, list[asyncio.Future[Any]]]
    ) -> None:
        rows: dict[str, dict[str, Any]] = {}
        try:
            rows = await db.run(_queries.trace_contexts(list(runs)))
        except Exception:
            # the attempts run all the same: their spans start new traces
            log.warning("could not read the trace context of %d run(s)", len(runs), exc_info=True)
        for run_id, futures in runs.items():
            for future in futures:
                if not future.done():  # its attempt may have been canceled meanwhile
                    future.set_result(rows.get(run_id))


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batches] = (
    weakref.WeakKeyDictionary()
)


def _batches() -> _Batches:
    loop = asyncio.get_running_loop()
    batches = _by_loop.get(loop)
    if batches is None:
        batches = _by_loop[loop] = _Batches(loop)
    return batches


if _tracing.available():
    OBSERVERS.append(observe)
