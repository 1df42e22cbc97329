"""OpenTelemetry (skiplock[otel]): the span tree of triggers, attempts and steps, with the
SDK's in-memory exporter and a worker in this process.

The global TracerProvider can be set once per process, and would leave every test module
after this one traced: the `otel` fixture gives skiplock's tracer from an SDK provider
of its own for one test instead, and the global lookup (`tracing.tracer()`) is checked in
processes of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import fetch, wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from engine import Engine, Retry, RunStatus, TaskContext
from engine.api import tracing
from engine.errors import InvalidArgumentError, UnknownTaskWarning
from engine.worker import tracing as worker_tracing
from engine.worker.lifecycle import OBSERVERS


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    tracer: trace.Tracer  # the application's own (an HTTP request's spans)


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    """Tracing on for one test, as with the application's provider set (before its
    workers start); off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("skiplock"))
    yield Otel(exporter, provider.get_tracer("test"))
    if worker_tracing.observe in OBSERVERS:  # registered by the workers it started
        OBSERVERS.remove(worker_tracing.observe)
    provider.shutdown()


def final(app: Engine, run_id: str) -> Any:
    return wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout=30)


def named(exporter: InMemorySpanExporter, name: str, count: int = 1) -> list[ReadableSpan]:
    """The finished spans called `name`, once there are `count` of them, oldest first."""

    def found() -> list[ReadableSpan]:
        spans = [s for s in exporter.get_finished_spans() if s.name == name]
        return spans if len(spans) >= count else []

    spans: list[ReadableSpan] = wait_for(found, timeout=30)
    return sorted(spans, key=lambda s: s.start_time or 0)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def traceparent(span: ReadableSpan) -> str:
    """The W3C traceparent of `span`, without its flags (sampled, random trace id)."""
    return f"00-{trace_id(span):032x}-{span_id(span):016x}-"


def test_a_run_joins_the_trace_of_the_request_that_triggered_it(
    app: Engine, start_worker: Any, otel: Otel
) -> None:
    @app.task("traced")
    async def traced(payload: int, ctx: TaskContext) -> int:
        return payload + 1

    start_worker()
    exporter = otel.exporter
    with otel.tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as request:
        handle = traced.trigger(1)
    assert final(app, handle.id).output == 2

    (trigger,) = named(exporter, "skiplock.trigger traced")
    (attempt,) = named(exporter, "skiplock.run traced")
    request_id = request.get_span_context().span_id
    assert trigger.kind is SpanKind.PRODUCER and parent_of(trigger) == request_id
    assert trace_id(trigger) == trace_id(attempt) == request.get_span_context().trace_id
    assert trigger.attributes is not None and trigger.attributes["skiplock.run_id"] == handle.id
    assert attempt.kind is SpanKind.CONSUMER and parent_of(attempt) == span_id(trigger)
    assert attempt.attributes is not None
    assert {k: attempt.attributes[k] for k in ("skiplock.run_id", "skiplock.attempt")} == {
        "skiplock.run_id": handle.id,
        "skiplock.attempt": 1,
    }
    assert attempt.attributes["skiplock.queue"] == "traced"
    assert attempt.attributes["skiplock.attempt.status"] == "COMPLETED"
    assert attempt.status.status_code is StatusCode.UNSET

    # stored with the run: the W3C carrier of the trigger's span
    ((stored,),) = fetch(
        app.dsn, "SELECT trace_context FROM skiplock.runs WHERE id = %s", handle.id
    )
    assert stored["traceparent"].startswith(traceparent(trigger))


def test_a_child_run_and_steps_join_the_parents_trace(
    app: Engine, start_worker: Any, otel: Otel
) -> None:
    @app.task("child")
    def child(payload: int, ctx: TaskContext) -> int:  # a def task: its own thread
        return ctx.step_sync("square", lambda: payload * payload)

    @app.task("parent")
    async def parent(payload: int, ctx: TaskContext) -> int:
        doubled = await ctx.step("double", lambda: payload * 2)
        result = await child.trigger_and_wait(doubled)
        return int(result.unwrap())

    start_worker()
    exporter = otel.exporter
    with otel.tracer.start_as_current_span("POST /jobs", kind=SpanKind.SERVER) as request:
        handle = parent.trigger(3)
    assert final(app, handle.id).output == 36

    (trigger_parent,) = named(exporter, "skiplock.trigger parent")
    # the parent runs twice: up to trigger_and_wait (then it waits), then on to the end
    waited, resumed = named(exporter, "skiplock.run parent", 2)
    (double,) = named(exporter, "skiplock.step double")  # replayed on resume: no span
    (trigger_child,) = named(exporter, "skiplock.trigger child")
    (run_child,) = named(exporter, "skiplock.run child")
    (square,) = named(exporter, "skiplock.step square")

    everything = [trigger_parent, waited, resumed, double, trigger_child, run_child, square]
    assert {trace_id(s) for s in everything} == {request.get_span_context().trace_id}
    assert parent_of(trigger_parent) == request.get_span_context().span_id
    assert parent_of(waited) == parent_of(resumed) == span_id(trigger_parent)
    assert waited.attributes is not None and resumed.attributes is not None
    assert waited.attributes["skiplock.attempt.status"] == "WAITING"
    assert resumed.attributes["skiplock.attempt.status"] == "COMPLETED"
    assert waited.status.status_code is StatusCode.UNSET  # a wait is no error
    assert parent_of(double) == span_id(waited)
    assert double.attributes is not None and double.attributes["skiplock.step.position"] == 0
    assert parent_of(trigger_child) == span_id(waited)
    assert trigger_child.attributes is not None
    assert trigger_child.attributes["skiplock.operation"] == "trigger_and_wait"
    assert parent_of(run_child) == span_id(trigger_child)
    assert parent_of(square) == span_id(run_child)  # in the def task's thread


def test_a_failed_attempt_and_step_record_the_error(
    app: Engine, start_worker: Any, otel: Otel
) -> None:
    def explode() -> None:
        raise ValueError("no such order")

    @app.task("failing", retry=Retry(max_attempts=2, min_timeout=0.05, randomize=False))
    async def failing(payload: int, ctx: TaskContext) -> None:
        await ctx.step("explode", explode)

    exporter = otel.exporter
    start_worker()
    handle = failing.trigger(1)
    assert final(app, handle.id).status is RunStatus.FAILED

    (trigger_span,) = named(exporter, "skiplock.trigger failing")
    attempts = named(exporter, "skiplock.run failing", 2)
    steps = named(exporter, "skiplock.step explode", 2)
    assert parent_of(trigger_span) is None  # nothing was current: the trigger starts a trace
    for number, (attempt, step) in enumerate(zip(attempts, steps, strict=True), start=1):
        assert parent_of(attempt) == span_id(trigger_span)
        assert parent_of(step) == span_id(attempt)
        assert attempt.attributes is not None and attempt.attributes["skiplock.attempt"] == number
        assert attempt.attributes["skiplock.attempt.status"] == "FAILED"
        for span in (attempt, step):
            assert span.status.status_code is StatusCode.ERROR
            (event,) = [e for e in span.events if e.name == "exception"]
            assert event.attributes is not None
            assert event.attributes["exception.type"] == "ValueError"
            assert event.attributes["exception.message"] == "no such order"


def test_batches_and_triggers_by_id_carry_the_context(app: Engine, otel: Otel) -> None:
    exporter = otel.exporter

    @app.task("batched")
    async def batched(payload: int, ctx: TaskContext) -> None:
        return None

    batch = batched.batch_trigger([1, 2, 3])
    with pytest.warns(UnknownTaskWarning):
        by_id = app.trigger("not-defined-here", {"x": 1})
    (batch_span,) = named(exporter, "skiplock.trigger batched")
    (by_id_span,) = named(exporter, "skiplock.trigger not-defined-here")
    assert batch_span.attributes is not None
    assert batch_span.attributes["skiplock.batch_id"] == batch.id
    assert batch_span.attributes["skiplock.batch.size"] == 3
    rows = fetch(
        app.dsn,
        "SELECT trace_context->>'traceparent' FROM skiplock.runs WHERE id = ANY(%s)",
        [r.id for r in batch.runs] + [by_id.id],
    )
    assert sorted(stored[:-2] for (stored,) in rows) == sorted(
        [traceparent(batch_span)] * 3 + [traceparent(by_id_span)]
    )


def test_untraced_runs_carry_nothing(app: Engine, start_worker: Any) -> None:
    """No provider set (this process sets none): no span, no trace context stored, and the
    worker neither registers its observer nor claims trace contexts."""

    @app.task("plain")
    async def plain(payload: int, ctx: TaskContext) -> int:
        return await ctx.step("add", lambda: payload + 1)

    assert tracing.tracer() is None
    start_worker()
    handle = plain.trigger(1)
    assert final(app, handle.id).output == 2
    assert fetch(app.dsn, "SELECT trace_context FROM skiplock.runs WHERE id = %s", handle.id) == [
        (None,)
    ]
    assert worker_tracing.observe not in OBSERVERS and not worker_tracing.tracing_attempts()


def test_the_trace_context_option_is_checked(app: Engine) -> None:
    from engine.db.database import Query

    def trigger(options: dict[str, Any]) -> Any:
        query = Query(
            "SELECT * FROM skiplock.trigger('t', '1', %s::jsonb)",
            (json.dumps(options),),
            lambda rows: rows,
        )
        return app.db.run(query)

    with pytest.raises(InvalidArgumentError, match="trace_context must be a JSON object"):
        trigger({"trace_context": "00-abc"})
    with pytest.raises(InvalidArgumentError, match="at most 4 KB"):
        trigger({"trace_context": {"tracestate": "x" * 5000}})


_GLOBAL = """
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from engine.api import tracing

assert tracing.available() and tracing.tracer() is None  # installed, no provider set
if sys.argv[1] == "no-op":
    trace.set_tracer_provider(trace.NoOpTracerProvider())
    assert tracing.tracer() is None and tracing.trigger_span("t") is tracing.UNTRACED
else:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with tracing.trigger_span("t") as span:
        options = span.options({"queue": "q"})
    (made,) = exporter.get_finished_spans()
    assert made.name == "skiplock.trigger t" and made.instrumentation_scope.name == "skiplock"
    assert set(options) == {"queue", "trace_context"}, options
print("ok")
"""


@pytest.mark.parametrize("provider", ["sdk", "no-op"])
def test_the_applications_global_provider_is_used(provider: str) -> None:
    """skiplock's tracer comes from the global TracerProvider once the application sets
    one (none set, or the no-op one: no tracing); in a process of its own, as a provider
    can be set once per process."""
    done = subprocess.run(
        [sys.executable, "-c", _GLOBAL, provider],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_without_opentelemetry_nothing_is_traced(dsn: str) -> None:
    """With `opentelemetry` not importable, a run is triggered and run as ever: no span,
    no observer, nothing stored."""
    script = textwrap.dedent(
        """
        import sys

        class NoOtel:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"blocked: {name}")

        sys.meta_path.insert(0, NoOtel())

        from helpers import RunningWorker, fetch, wait_for
        from engine import Engine, TaskContext
        from engine.api import tracing
        from engine.worker.lifecycle import OBSERVERS

        assert not tracing.available() and tracing.tracer() is None
        app = Engine(sys.argv[1])

        @app.task("no-otel")
        async def no_otel(payload: int, ctx: TaskContext) -> int:
            return await ctx.step("add", lambda: payload + 1)

        with RunningWorker(app.worker(poll_interval=0.1)):
            run_id = no_otel.trigger(1).id
            run = wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r)
        assert run.output == 2, run
        assert OBSERVERS == []
        rows = fetch(app.dsn, "SELECT trace_context FROM skiplock.runs WHERE id = %s", run_id)
        assert rows == [(None,)], rows
        assert not any(m.startswith("opentelemetry") for m in sys.modules)
        app.close()
        print("ok")
        """
    )
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}
    done = subprocess.run(
        [sys.executable, "-c", script, dsn],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
