"""OpenTelemetry, the worker's side (the `skiplock[otel]` extra): a span for each attempt.

An observer of every attempt (lifecycle.py), registered as a worker starts if tracing is
active then: the application set a TracerProvider (see engine/api/tracing.py), so set it
before starting workers. Not registered, it costs nothing: an attempt of a task without
hooks or middleware is called with nothing around it (`Lifecycle.is_plain`). It starts
the attempt's span, "skiplock.run <task>" (kind CONSUMER), as a child of the trace
context stored with the run (its trigger's span), and makes it current for the task
function: a def task's thread gets it with the attempt's context variables, so the
task's steps, the runs it triggers and whatever else the application traces in it are
its children. As the attempt ends the span says how
(`skiplock.attempt.status`); an exception that failed it is recorded, with the error
status.

The claim brings each run's stored trace context and queue (claims.py), selected only
by a worker that traces: one that does not pays nothing for them. (Read apart, one
query per claimed batch, they halved a drain of no-op runs: under load a claim takes
the few slots just freed, so a batch is a run or two, and the read a round trip each.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from ..api import tracing as _tracing
from .lifecycle import OBSERVERS
from .replay import NonDeterministic, Suspended
from .state import CANCELED, LEASE_LOST, SHUTDOWN, TIMED_OUT, RunningAttempt

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

# how an attempt that the worker stopped ended, by ctx.stop_reason
_STOPPED = {
    CANCELED: "CANCELED",
    TIMED_OUT: "TIMED_OUT",
    SHUTDOWN: "INTERRUPTED",
    LEASE_LOST: "LEASE_LOST",
}


def install() -> None:
    """Register the observer if tracing is active (once: a provider, once set, stays)."""
    if _tracing.tracer() is not None and observe not in OBSERVERS:
        OBSERVERS.append(observe)


def tracing_attempts() -> bool:
    """Whether attempts are traced: the observer is registered."""
    return observe in OBSERVERS


def observe(attempt: RunningAttempt) -> AbstractAsyncContextManager[None]:
    """The attempt's span around it."""
    tracer = _tracing.tracer()
    if tracer is None:  # registered only once tracing is active; never off again but in tests
        return contextlib.nullcontext()
    return _attempt_span(tracer, attempt)


@contextlib.asynccontextmanager
async def _attempt_span(tracer: Tracer, attempt: RunningAttempt) -> AsyncIterator[None]:
    # imported already: the tracer came from it (api/tracing.py imports it lazily)
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace

    ctx, task = attempt.ctx, attempt.task
    stored = json.loads(attempt.trace_context) if attempt.trace_context else None
    span = tracer.start_span(
        f"skiplock.run {task.id}",
        context=_tracing.parent_context(stored),
        kind=otel_trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "skiplock",
            "messaging.operation.type": "process",
            "skiplock.task": task.id,
            "skiplock.run_id": ctx.run_id,
            "skiplock.attempt": ctx.attempt,
            "skiplock.attempt_id": ctx.attempt_id,
            "skiplock.queue": attempt.queue or task.queue.name,
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
