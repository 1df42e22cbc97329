"""What a running task sees: its run, its attempt, durable steps, metadata, stop signals,
its logger."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, overload

from .._jsonb import has_nul
from ..errors import DurableCallError, InvalidArgumentError, TaskRunCanceledError
from . import durable as _durable

P = ParamSpec("P")
T = TypeVar("T")

MAX_METADATA_BYTES = 256 * 1024


class Metadata:
    """The run's metadata, changed from inside the run and flushed to the run row while
    it executes (so that whoever watches the run sees progress). At most 256 KB of JSON:
    a change beyond that raises `InvalidArgumentError` and is not applied."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(initial or {})
        self._lock = threading.Lock()
        self._version = 0  # bumped by every change; the flusher compares it

    def _change(self, apply: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            candidate = json.loads(json.dumps(self._data))
            apply(candidate)
            try:
                encoded = json.dumps(candidate, allow_nan=False)  # jsonb has no NaN
            except ValueError as exc:
                raise InvalidArgumentError(
                    f"metadata must be JSON, without NaN or infinities: {exc}"
                ) from exc
            if has_nul(encoded):
                raise InvalidArgumentError(
                    "metadata must not hold NUL characters (\\u0000): PostgreSQL cannot "
                    "store them in JSON"
                )
            if len(encoded.encode()) > MAX_METADATA_BYTES:
                raise InvalidArgumentError(
                    f"metadata would be {len(encoded.encode()):,} bytes; the limit is "
                    f"{MAX_METADATA_BYTES:,}"
                )
            self._data = candidate
            self._version += 1

    def set(self, key: str, value: Any) -> None:
        self._change(lambda d: d.__setitem__(key, value))

    def delete(self, key: str) -> None:
        self._change(lambda d: d.pop(key, None))

    def increment(self, key: str, by: float = 1) -> None:
        def apply(d: dict[str, Any]) -> None:
            current = d.get(key, 0)
            if not isinstance(current, int | float) or isinstance(current, bool):
                raise InvalidArgumentError(f"metadata {key!r} is not a number: {current!r}")
            d[key] = current + by

        self._change(apply)

    def append(self, key: str, value: Any) -> None:
        def apply(d: dict[str, Any]) -> None:
            current = d.setdefault(key, [])
            if not isinstance(current, list):
                raise InvalidArgumentError(f"metadata {key!r} is not a list: {current!r}")
            current.append(value)

        self._change(apply)

    def remove(self, key: str, value: Any) -> None:
        """Remove every occurrence of `value` from the list at `key`."""

        def apply(d: dict[str, Any]) -> None:
            current = d.get(key, [])
            if not isinstance(current, list):
                raise InvalidArgumentError(f"metadata {key!r} is not a list: {current!r}")
            d[key] = [v for v in current if v != value]

        self._change(apply)

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def current(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._data))  # type: ignore[no-any-return]

    @property
    def version(self) -> int:
        """Bumped by every change."""
        return self._version

    def snapshot(self) -> tuple[int, str]:
        """(version, JSON) for the flusher."""
        with self._lock:
            return self._version, json.dumps(self._data)


# Where ctx.logger's records go besides its handlers: the run's log. The worker runtime
# sets it (engine/worker/run_logs.py); outside a worker, ctx.logger is a plain logger.
LogSink = Callable[["TaskContext", logging.LogRecord], None]
log_sink: LogSink | None = None


class _RunLogger(logging.Logger):
    """`ctx.logger`: a logger named like the task's (skiplock.task.<task id>), whose
    records go to the run's log as well as to that logger's handlers and its parents',
    from whichever thread. Made per attempt, outside logging's registry."""

    def __init__(self, ctx: TaskContext) -> None:
        parent = _task_loggers.get(ctx.task_id)
        if parent is None:
            parent = _task_loggers[ctx.task_id] = logging.getLogger(f"skiplock.task.{ctx.task_id}")
        super().__init__(parent.name, _task_level(parent))
        self.parent = parent
        self._ctx = ctx

    def callHandlers(self, record: logging.LogRecord) -> None:
        sink = log_sink
        if sink is not None:
            sink(self._ctx, record)
        super().callHandlers(record)


_task_loggers: dict[str, logging.Logger] = {}  # skiplock.task.<task id>, by task id


def _task_level(logger: logging.Logger) -> int:
    """ctx.logger's level: the one set on skiplock.task.<task id> or skiplock.task, if
    any; else INFO (not the root logger's WARNING: `ctx.logger.info(...)` is stored)."""
    node: logging.Logger | None = logger
    while node is not None and node.name.startswith("skiplock.task"):
        if node.level:
            return node.level
        node = node.parent
    return logging.INFO


@dataclass
class TaskContext:
    """Passed to every task as its second argument.

    `def` tasks run in a thread that cannot be interrupted: long ones should call
    `check_canceled()` (or read `is_canceled`) now and then, so that a cancel or an
    exceeded `max_duration` stops them. Their late results are ignored either way."""

    run_id: str
    attempt: int
    attempt_id: str
    task_id: str
    worker_id: str
    metadata: Metadata = field(default_factory=Metadata)
    # a plain flag (nothing blocks on it; assignment is atomic): an Event per run cost
    # more than the rest of the context together
    _stopped: bool = field(default=False, repr=False)
    stop_reason: str | None = None
    # made on first use: ctx.logger, and the run's log buffer of this attempt (the
    # worker's; None while the attempt has logged nothing)
    _logger: logging.Logger | None = field(default=None, init=False, repr=False, compare=False)
    _run_log: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def logger(self) -> logging.Logger:
        """A `logging.Logger` (named skiplock.task.<task id>) whose records are stored
        with the run (`app.runs.logs`), whichever thread logs, and go to the logging
        handlers as usual. Level: INFO, or what skiplock.task.<task id> or skiplock.task
        is set to."""
        logger = self._logger
        if logger is None:
            logger = self._logger = _RunLogger(self)
        return logger

    @property
    def is_canceled(self) -> bool:
        return self._stopped

    def check_canceled(self) -> None:
        """Raise `TaskRunCanceledError` if the run was canceled or timed out."""
        if self._stopped:
            raise TaskRunCanceledError(f"run {self.run_id} stopped: {self.stop_reason}")

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopped = True

    @overload
    def step(
        self, name: str, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, T]: ...

    @overload
    def step(
        self, name: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, T]: ...

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` once for this run: its result is recorded, and on a
        resume or a retry the recorded result comes back without running it again. In an
        `async def` task, await it (fn may be sync or async). In a `def` task it returns
        the result (typed code there calls `step_sync`). Results must be
        JSON-serialisable; a replay gets the JSON form."""
        execution = _step_execution(name)
        if execution.in_loop():
            return execution.step_async(name, fn, *args, **kwargs)
        return execution.step_sync(name, fn, *args, **kwargs)

    def step_sync(self, name: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`step` in a `def` task: runs `fn` in this thread (once) and returns its result.
        Raises `DurableCallError` in an `async def` task."""
        execution = _step_execution(name)
        if execution.in_loop():
            raise DurableCallError(
                "ctx.step_sync() blocks, and this is an async def task: use `await ctx.step(...)`"
            )
        result: T = execution.step_sync(name, fn, *args, **kwargs)
        return result


def _step_execution(name: str) -> _durable.DurableExecution:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("a step needs a name")
    return _durable.current()
