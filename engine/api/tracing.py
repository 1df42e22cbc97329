"""OpenTelemetry, the triggering side (the `skiplock[otel]` extra): a span for each
trigger, and the trace context that travels with the run.

skiplock never makes a TracerProvider: its spans come from the application's, the
global one (`opentelemetry.trace.set_tracer_provider`), through
`trace.get_tracer("skiplock", version)`. Tracing is active once such a provider is set
and it is not the no-op one; until then nothing is traced and no trace context is sent.
Without `opentelemetry-api` installed, `tracer()` is one test of a module global.

A trigger's span ("skiplock.trigger <task>", kind PRODUCER) is current while the trigger
runs, and its context goes with the run as the trigger option `trace_context`: the W3C
carrier (`traceparent`, `tracestate`), kept in `skiplock.runs.trace_context`. The
worker starts each attempt's span as its child (engine/worker/tracing.py), so a run's
spans join the trace of the request that triggered it, and a child run's the parent's.
The W3C propagator is used whatever propagators the application configured: the column
holds one known format, small and bounded (baggage is not carried).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

# opentelemetry, once imported (`_load`): until the application imports it, it cannot have
# set a provider, and a process that never does (a worker that does not trace) never
# loads it (0.6 MB of RSS)
otel_trace: Any = None
otel_context: Any = None
_PROPAGATOR: Any = None
_tracer: Tracer | None = None
_UNKNOWN = object()
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _load() -> bool:
    """Import opentelemetry if a provider may be set: the application imported
    `opentelemetry.trace`, or $OTEL_PYTHON_TRACER_PROVIDER names one. False: not traced
    (not installed, or not imported by anyone yet)."""
    global otel_trace, otel_context, _PROPAGATOR
    if otel_trace is not None:
        return True
    if "opentelemetry.trace" not in sys.modules and not _PROVIDER_FROM_ENV:
        return False
    try:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:  # the extra is not installed: nothing is traced, at no cost
        return False
    otel_context, _PROPAGATOR, otel_trace = context, TraceContextTextMapPropagator(), trace
    return True


def available() -> bool:
    """Whether `opentelemetry-api` is installed."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def tracer() -> Tracer | None:
    """skiplock's tracer from the application's TracerProvider, or None: opentelemetry is
    not installed, or no provider is set (or the no-op one is). A provider can be set
    once per process, so the tracer, once found, is kept."""
    global _tracer
    if _tracer is not None:
        _load()  # set from outside (tests): what its spans use must be there
        return _tracer
    if not _load():
        return None
    # While none is set, get_tracer_provider() looks $OTEL_PYTHON_TRACER_PROVIDER up in
    # the environment on every call: most of what tracing cost a trigger without a
    # provider (bench/otel_cost.py). The API's global says "none set" for an attribute
    # read; the public call decides whenever that global is not there.
    if getattr(otel_trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENV:
        return None
    provider = otel_trace.get_tracer_provider()
    if isinstance(provider, otel_trace.ProxyTracerProvider | otel_trace.NoOpTracerProvider):
        return None
    _tracer = otel_trace.get_tracer("skiplock", _version())
    return _tracer


def _version() -> str | None:
    try:
        return importlib.metadata.version("skiplock")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was not installed
        return None


def carrier(span: Span) -> dict[str, str] | None:
    """`span`'s context as a W3C carrier, or None when it has no valid context."""
    if _PROPAGATOR is None or not span.get_span_context().is_valid:
        return None
    out: dict[str, str] = {}
    _PROPAGATOR.inject(out, context=otel_trace.set_span_in_context(span))
    return out or None


def parent_context(stored: dict[str, Any] | None) -> Context:
    """The context a run's attempt span starts in: the one stored with the run (its
    trigger's span), else an empty one (the attempt's span starts a trace)."""
    empty: Context = otel_context.Context()
    if _PROPAGATOR is None or not stored:
        return empty
    extracted: Context = _PROPAGATOR.extract(
        {k: v for k, v in stored.items() if isinstance(v, str)}, context=empty
    )
    return extracted


def record_error(span: Span, error: BaseException) -> None:
    """Mark `span` failed by `error`: the exception event, and the error status."""
    span.record_exception(error, escaped=True)
    span.set_status(otel_trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")


class TriggerSpan:
    """A trigger's span, as a context manager: this one, untraced, does nothing (one is
    shared by every trigger), `_TracedTrigger` does."""

    def __enter__(self) -> TriggerSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        """`options` (a trigger's JSON options) with the span's trace context."""
        return options

    def run(self, run_id: str, cached: bool = False) -> None:
        """The trigger made (or, `cached`, found by idempotency key) run `run_id`."""

    def batch(self, batch_id: str, size: int | None = None) -> None:
        """The trigger made batch `batch_id` (of `size` runs)."""


UNTRACED = TriggerSpan()


class _TracedTrigger(TriggerSpan):
    def __init__(self, tracer: Tracer, task_id: str, operation: str) -> None:
        self._span = tracer.start_span(
            f"skiplock.trigger {task_id}",
            kind=otel_trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "skiplock",
                "messaging.operation.type": "send",
                "skiplock.task": task_id,
                "skiplock.operation": operation,
            },
        )
        self._carrier = carrier(self._span)
        self._token: Token[Context] | None = None

    def __enter__(self) -> TriggerSpan:
        # current while the trigger runs: a traced database driver's spans nest in it
        self._token = otel_context.attach(otel_trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, Exception):
                record_error(self._span, exc)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
            self._span.end()

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        if self._carrier is None:
            return options
        return {**options, "trace_context": self._carrier}

    def run(self, run_id: str, cached: bool = False) -> None:
        self._span.set_attribute("skiplock.run_id", run_id)
        if cached:
            self._span.set_attribute("skiplock.cached", True)

    def batch(self, batch_id: str, size: int | None = None) -> None:
        self._span.set_attribute("skiplock.batch_id", batch_id)
        if size is not None:
            self._span.set_attribute("skiplock.batch.size", size)


def trigger_span(task_id: str, operation: str = "trigger") -> TriggerSpan:
    """The span of one trigger of `task_id` (`operation`: trigger, batch_trigger,
    trigger_and_wait or batch_trigger_and_wait); `UNTRACED` unless tracing is active."""
    active = tracer()
    if active is None:
        return UNTRACED
    return _TracedTrigger(active, task_id, operation)


_NOTHING = contextlib.nullcontext()  # reusable: the untraced step


def step_span(name: str, position: int) -> contextlib.AbstractContextManager[Any]:
    """The span of a durable step that runs (not of one replayed from the run's log):
    "skiplock.step <name>", a child of the current span (the attempt's), current while
    the step's function runs. An exception from it is recorded; a run suspending is not
    an error."""
    active = tracer()
    if active is None:
        return _NOTHING
    return _traced_step(active, name, position)


@contextlib.contextmanager
def _traced_step(tracer: Tracer, name: str, position: int) -> Iterator[None]:
    span = tracer.start_span(
        f"skiplock.step {name}",
        attributes={"skiplock.step": name, "skiplock.step.position": position},
    )
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    try:
        yield
    except Exception as exc:
        record_error(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()
