"""Tasks: a decorated function plus its queue, retry policy and limits, and triggering."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

import psycopg

from .._durations import UNSET, Duration, Unset, parse_seconds, retention_seconds
from .._jsonb import has_nul
from ..db import queries as _queries
from ..db.database import Query
from ..errors import BatchTooLargeError, InvalidArgumentError, PayloadValidationError
from ..values import BatchHandle, Queue, Retry, RunHandle
from . import codec as _codec
from . import options as _options
from . import tracing as _tracing
from .connections import Connections
from .durable import Work, call_async, call_sync
from .hooks import Hooks
from .options import TriggerOptions

if TYPE_CHECKING:
    from ..values import Result

P = TypeVar("P")
O = TypeVar("O")  # noqa: E741

MAX_BATCH = 1000
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # as Trigger.dev; the runs table checks it too
ANY_PAYLOAD = _codec.ANY


def encode_payload(codec: _codec.Codec, payload: Any, task_id: str) -> str:
    """`payload` validated by `codec` and encoded as JSON, or `PayloadValidationError`."""
    try:
        encoded = codec.to_json(payload)
    except Exception as exc:
        kind = _codec.error_kind(exc)
        if kind == "invalid":
            raise PayloadValidationError(
                f"payload for task {task_id!r} is invalid: {exc}"
            ) from None
        if kind == "unserialisable":
            raise PayloadValidationError(
                f"payload for task {task_id!r} is not JSON-serialisable: {exc}"
            ) from None
        raise
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise PayloadValidationError(
            f"payload for task {task_id!r} is {len(encoded):,} bytes of JSON; "
            f"the limit is {MAX_PAYLOAD_BYTES:,}"
        )
    return encoded


@dataclass(frozen=True)
class BatchItem(Generic[P]):
    """One item of a batch trigger with options of its own."""

    payload: P
    options: dict[str, Any]


class Task(Generic[P, O]):
    """A task definition. Create with `@app.task(...)`; trigger with `trigger`."""

    def __init__(
        self,
        conns: Connections,
        task_id: str,
        fn: Callable[..., O] | Callable[..., Awaitable[O]],
        *,
        queue: Queue | str | None,
        retry: Retry | None,
        max_duration: float | timedelta | None,
        ttl: Duration | None,
        retention: Duration | Unset | None = UNSET,
        default_retention: float | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        hooks: Hooks | None = None,
        capture_logs: bool | None = None,
    ) -> None:
        if not isinstance(task_id, str) or not 1 <= len(task_id) <= 256 or "\x00" in task_id:
            raise InvalidArgumentError("task id must be 1 to 256 characters")
        self._conns = conns
        self.id = task_id
        self.fn = fn
        self.queue = Queue(queue) if isinstance(queue, str) else (queue or Queue(task_id))
        self.retry = retry or Retry()
        self.max_duration = (
            None if max_duration is None else parse_seconds(max_duration, "max_duration")
        )
        self.ttl = None if ttl is None else parse_seconds(ttl, "ttl")
        # retention, in seconds (None: forever): the task's own if it says, else UNSET;
        # the fallback is its queue's, else the engine's (skiplock.run_retention)
        self.retention: float | Unset | None = (
            UNSET if retention is UNSET else retention_seconds(retention, "retention")
        )
        queue_retention = self.queue.retention
        self.default_retention: float | None = (
            default_retention
            if queue_retention is UNSET
            else retention_seconds(queue_retention, "retention")
        )
        self.engine_retention = default_retention
        # a declared schedule, checked in SQL when a worker registers the task
        if cron is not None and (not isinstance(cron, str) or not cron.strip()):
            raise InvalidArgumentError(f"cron must be a cron expression, got {cron!r}")
        if not isinstance(timezone, str) or not timezone:
            raise InvalidArgumentError(f"timezone must be an IANA zone name, got {timezone!r}")
        self.cron, self.timezone = cron, timezone
        self.hooks = hooks or Hooks()  # the task's own; the worker adds the engine's
        self.capture_logs = capture_logs  # None: the engine's setting
        self.is_async = inspect.iscoroutinefunction(fn)
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        self.payload_type: Any = hints.get(params[0], Any) if params else Any
        self.output_type: Any = hints.get("return", Any)
        # pydantic only for typed payloads and outputs (engine/api/codec.py)
        self.payload_codec = _codec.Codec(self.payload_type)
        self.output_codec = _codec.Codec(self.output_type)
        self._entries_codec: _codec.Codec | None = None  # _entries_json

    def __repr__(self) -> str:
        return f"Task({self.id!r})"

    def warm(self) -> None:
        """Build what a typed payload or output needs (pydantic's adapters) now."""
        self.payload_codec.warm()
        self.output_codec.warm()

    # -- what a worker registers -------------------------------------------------------

    def deployment_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id,
            "queue": self.queue.name,
            "concurrency_limit": self.queue.concurrency_limit,
            "max_attempts": self.retry.max_attempts,
            "max_duration": self.max_duration,
            "ttl": self.ttl,
            "default_retention": self.engine_retention,
        }
        # retentions: seconds, None for forever; left out when not declared
        if self.retention is not UNSET:
            entry["retention"] = self.retention
        if self.queue.retention is not UNSET:
            entry["queue_retention"] = self.default_retention
        if self.queue.rate_limit is not UNSET:  # None: declared none; left out: not declared
            rate = self.queue.rate_limit
            entry["rate_limit"] = None if rate is None else rate.as_json()
        if self.cron is not None:
            entry["cron"], entry["timezone"] = self.cron, self.timezone
        return entry

    def defaults(self) -> dict[str, Any]:
        out: dict[str, Any] = {"queue": self.queue.name, "max_attempts": self.retry.max_attempts}
        if self.max_duration is not None:
            out["max_duration"] = self.max_duration
        if self.ttl is not None:
            out["ttl"] = self.ttl
        return out

    def _run_options(self, options: TriggerOptions) -> dict[str, Any]:
        """The JSON options of a trigger: `options` over the task's defaults, and its
        retention (the task's own, else its fallback: see skiplock.run_retention)."""
        out = _options.build(options, self.defaults())
        if self.retention is not UNSET:
            out["retention"] = self.retention
        out["default_retention"] = self.default_retention
        return out

    # -- payloads ------------------------------------------------------------------------

    def payload_json(self, payload: Any) -> str:
        """Validate `payload` against the task's payload type and return it as JSON."""
        return encode_payload(self.payload_codec, payload, self.id)

    def _entries_json(self, payloads: list[Any]) -> str | None:
        """A batch's items without options of their own, `[{"payload": ...}, ...]`, validated
        and encoded in one call (0.5 us an item instead of 1.3 one call per payload), or
        None when a payload is invalid or the whole is over the size limit of one payload:
        then the caller encodes item by item, and its error names the payload."""
        plain = [self.payload_codec.plain_json(p) for p in payloads]
        if all(text is not None for text in plain):
            joined = ",".join(f'{{"payload":{text}}}' for text in plain)
            return f"[{joined}]" if len(joined) + 2 <= MAX_PAYLOAD_BYTES else None
        if self._entries_codec is None:
            entry_type: Any = dict[str, self.payload_type]  # type: ignore[name-defined]
            self._entries_codec = _codec.Codec(list[entry_type])
        try:
            text = self._entries_codec.to_json([{"payload": p} for p in payloads])
        except Exception as exc:
            if _codec.error_kind(exc) is None:
                raise
            return None
        return text if len(text) <= MAX_PAYLOAD_BYTES else None

    def parse_payload(self, payload_json: str) -> P:
        """The stored payload (JSON text) as the task's payload type: parsed and validated
        in one pass (pydantic's JSON mode), not decoded to Python first."""
        parsed: P = self.payload_codec.from_json(payload_json)
        return parsed

    def output_json(self, output: Any) -> str:
        """The task's return value as JSON text, checked against its type and against
        what jsonb can store."""
        text = self.output_codec.to_json(output)
        if has_nul(text):
            raise InvalidArgumentError(
                "the task's output holds a NUL character (\\u0000), which PostgreSQL "
                "cannot store in JSON"
            )
        return text

    # -- triggering ----------------------------------------------------------------------

    def _trigger_query(
        self, payload: P, options: TriggerOptions, span: _tracing.TriggerSpan = _tracing.UNTRACED
    ) -> Query[RunHandle]:
        run_options = span.options(self._run_options(options))
        return _queries.trigger(self.id, self.payload_json(payload), run_options)

    def trigger(
        self,
        payload: P,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Unpack[TriggerOptions],
    ) -> RunHandle:
        """Create a run. Given `conn`, the run commits or rolls back with the caller's
        transaction and no worker sees it before commit. Invalid payloads or options raise
        before anything is written."""
        with _tracing.trigger_span(self.id) as span:
            handle = self._conns.db.run(self._trigger_query(payload, options, span), conn)
            span.run(handle.id, handle.is_cached)
        return handle

    async def trigger_async(
        self,
        payload: P,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Unpack[TriggerOptions],
    ) -> RunHandle:
        with _tracing.trigger_span(self.id) as span:
            query = self._trigger_query(payload, options, span)
            handle = await self._conns.adb.run(query, conn)
            span.run(handle.id, handle.is_cached)
        return handle

    def _batch_query(
        self,
        items: Sequence[P | BatchItem[P]],
        options: TriggerOptions,
        span: _tracing.TriggerSpan = _tracing.UNTRACED,
    ) -> Query[BatchHandle]:
        if len(items) > MAX_BATCH:
            raise BatchTooLargeError(f"a batch holds at most {MAX_BATCH} items, got {len(items)}")
        if not items:
            raise InvalidArgumentError("a batch needs at least one item")
        if options.get("debounce") is not None or any(
            isinstance(item, BatchItem) and item.options.get("debounce") is not None
            for item in items
        ):
            raise InvalidArgumentError("a batch cannot be debounced: trigger each item")
        shared = span.options(self._run_options(options))
        payloads = [item.payload if isinstance(item, BatchItem) else item for item in items]
        if not any(isinstance(item, BatchItem) and item.options for item in items):
            entries = self._entries_json(payloads)
            if entries is not None:
                return _queries.trigger_batch(self.id, entries, shared)
        encoded = []
        for item, payload in zip(items, payloads, strict=True):
            if isinstance(item, BatchItem) and item.options:
                own = json.dumps(_options.build(item.options))
                encoded.append(f'{{"payload":{self.payload_json(payload)},"options":{own}}}')
            else:
                encoded.append(f'{{"payload":{self.payload_json(payload)}}}')
        return _queries.trigger_batch(self.id, "[" + ",".join(encoded) + "]", shared)

    def batch_trigger(
        self,
        items: Sequence[P | BatchItem[P]],
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Unpack[TriggerOptions],
    ) -> BatchHandle:
        """Create up to 1,000 runs in one round trip, all or none, under one batch id."""
        with _tracing.trigger_span(self.id, "batch_trigger") as span:
            handle = self._conns.db.run(self._batch_query(items, options, span), conn)
            span.batch(handle.id, len(handle.runs))
        return handle

    # -- from inside another task: trigger and wait ---------------------------------------

    def _parse_output(self, output: Any) -> Any:
        return self.output_codec.validate(output)

    def _child_work(self, payload: P, options: TriggerOptions) -> Work[Result]:
        payload_json = self.payload_json(payload)
        opts = self._run_options(options)
        return lambda ex: ex.trigger_and_wait(self.id, payload_json, opts, self._parse_output)

    def trigger_and_wait(
        self, payload: P, **options: Unpack[TriggerOptions]
    ) -> Coroutine[Any, Any, Result]:
        """From inside a task: trigger a child run and wait for it (durably: the parent
        suspends and frees its slot). Gives a `Result`; await it in an `async def` task
        (in a `def` task the call blocks; typed code there calls `trigger_and_wait_sync`).
        The child runs on the parent's version unless `version=` pins another."""
        return call_async(self._child_work(payload, options))

    def trigger_and_wait_sync(self, payload: P, **options: Unpack[TriggerOptions]) -> Result:
        """`trigger_and_wait` in a `def` task."""
        return call_sync("trigger_and_wait", self._child_work(payload, options))

    def _children_work(
        self, items: Sequence[P | BatchItem[P]], options: TriggerOptions
    ) -> Work[list[Result]]:
        query = self._batch_query(items, options)
        items_json, opts = query.params[1], json.loads(query.params[2])
        return lambda ex: ex.batch_trigger_and_wait(self.id, items_json, opts, self._parse_output)

    def batch_trigger_and_wait(
        self, items: Sequence[P | BatchItem[P]], **options: Unpack[TriggerOptions]
    ) -> Coroutine[Any, Any, list[Result]]:
        """From inside a task: trigger up to 1,000 child runs and wait for all of them.
        Gives a list of `Result`, in item order (failed children have `ok=False`)."""
        return call_async(self._children_work(items, options))

    def batch_trigger_and_wait_sync(
        self, items: Sequence[P | BatchItem[P]], **options: Unpack[TriggerOptions]
    ) -> list[Result]:
        """`batch_trigger_and_wait` in a `def` task."""
        return call_sync("batch_trigger_and_wait", self._children_work(items, options))

    async def batch_trigger_async(
        self,
        items: Sequence[P | BatchItem[P]],
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Unpack[TriggerOptions],
    ) -> BatchHandle:
        with _tracing.trigger_span(self.id, "batch_trigger") as span:
            query = self._batch_query(items, options, span)
            handle = await self._conns.adb.run(query, conn)
            span.batch(handle.id, len(handle.runs))
        return handle
