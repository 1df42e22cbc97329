"""Around each attempt: the worker's own observers (run logs, traces, metrics), the
middleware and lifecycle hooks a task and its engine declare (api/hooks.py), and
`catch_error`'s say on a failure's retry.

Order, for an attempt: observers are entered (first registered, outermost), then the
engine's middleware, then the task's; then `on_start` (a fresh attempt: the first, or a
retry) or `on_resume` (an attempt continuing after a wait); then the task function. As it
ends: `on_success` or (the run failed for good) `on_failure`, then `on_complete`; or
`on_wait` when it suspends on a wait. Each list runs engine hooks first.

A hook or middleware exit that raises is logged (on `skiplock.hooks`, with the run id and
the error) and changes nothing: the run's outcome is the task's. Async hooks are awaited
on the worker's loop; plain functions run in a thread (they may block), with the attempt's
context variables. A `def` task's sync middleware is entered in the task's own thread,
around its function (a database session or a Sentry scope belongs to that thread); async
middleware always on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..api.hooks import Hook, Hooks, NoRetry, RetryAt, RetryNow, positional_arity
from ..values import Result

if TYPE_CHECKING:
    from ..api.context import TaskContext
    from ..api.engine import Engine
    from ..api.tasks import Task
    from .state import RunningAttempt

log = logging.getLogger("skiplock.hooks")

# An observer: called with an attempt as it starts, returns an async context manager
# entered around the whole attempt (middleware and hooks included). The worker's run
# logs, OpenTelemetry spans and Prometheus metrics register themselves here.
Observer = Callable[["RunningAttempt"], AbstractAsyncContextManager[None]]
OBSERVERS: list[Observer] = []


async def call_hook(name: str, fn: Hook, ctx: TaskContext, *args: Any) -> Any:
    """Call hook `fn` with (ctx, *args), or as many of them as it takes; log what it
    raises and return None then."""
    n = positional_arity(fn)
    given = (ctx, *args)[: n if n is not None else None]
    try:
        if inspect.iscoroutinefunction(fn):
            return await fn(*given)
        result = await asyncio.to_thread(contextvars.copy_context().run, fn, *given)
        if inspect.isawaitable(result):
            return await result
        return result
    except Exception:
        log.exception(
            "%s hook %s of %s run %s raised; the run's outcome is unchanged",
            name,
            getattr(fn, "__qualname__", fn),
            ctx.task_id,
            ctx.run_id,
        )
        return None


class Lifecycle:
    """The hooks of each task (its engine's, then its own), resolved once per task."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._hooks: dict[str, Hooks] = {}

    def is_plain(self, task: Task[Any, Any]) -> bool:
        """No observer, no middleware, no on_start or on_resume: nothing around the call
        (the common case costs nothing)."""
        hooks = self.hooks(task)
        return not (OBSERVERS or hooks.middleware or hooks.on_start or hooks.on_resume)

    def has_outcome_hooks(self, task: Task[Any, Any]) -> bool:
        hooks = self.hooks(task)
        return bool(hooks.on_success or hooks.on_failure or hooks.on_complete)

    def hooks(self, task: Task[Any, Any]) -> Hooks:
        hooks = self._hooks.get(task.id)
        if hooks is None:
            hooks = self._hooks[task.id] = self._engine.hooks.then(task.hooks)
        return hooks

    async def run_hooks(self, name: str, attempt: RunningAttempt, *args: Any) -> None:
        for fn in getattr(self.hooks(attempt.task), name):
            await call_hook(name, fn, attempt.ctx, *args)

    @contextlib.asynccontextmanager
    async def around(
        self, attempt: RunningAttempt, payload: Any, wait: dict[str, Any] | None
    ) -> AsyncIterator[None]:
        """Observers, then middleware (a def task's sync ones excepted: `in_thread`),
        then on_start, or on_resume when the attempt continues after `wait`."""
        hooks = self.hooks(attempt.task)
        async with contextlib.AsyncExitStack() as stack:
            for observer in OBSERVERS:
                await stack.enter_async_context(observer(attempt))
            for make in hooks.middleware:
                if attempt.task.is_async or _is_async_middleware(make):
                    await _enter(stack, make, attempt.ctx)
            if wait is None:
                await self.run_hooks("on_start", attempt, payload)
            else:
                await self.run_hooks("on_resume", attempt, payload, wait)
            yield

    def in_thread(self, task: Task[Any, Any], fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` (a def task's function) wrapped in the task's sync middleware, entered in
        the thread it runs in."""
        makers = [m for m in self.hooks(task).middleware if not _is_async_middleware(m)]
        if not makers:
            return fn

        def wrapped(payload: Any, ctx: TaskContext) -> Any:
            with contextlib.ExitStack() as stack:
                for make in makers:
                    stack.enter_context(_guarded_sync(make(ctx), ctx))
                return fn(payload, ctx)

        return wrapped

    async def decide(self, attempt: RunningAttempt, error: BaseException) -> float | bool | None:
        """`catch_error`'s decision on a failed attempt: a delay in seconds (0: now), None
        (no retry), or False: no hook decided (the retry policy applies)."""
        for fn in self.hooks(attempt.task).catch_error:
            answer = await call_hook("catch_error", fn, attempt.ctx, error)
            if isinstance(answer, RetryNow):
                return 0.0
            if isinstance(answer, RetryAt):
                return max(0.0, (answer.at - datetime.now(answer.at.tzinfo)).total_seconds())
            if isinstance(answer, NoRetry):
                return None
            if answer is not None:
                log.warning(
                    "catch_error hook of %s run %s returned %r, not RetryNow(), RetryAt(), "
                    "NoRetry() or None: the retry policy applies",
                    attempt.ctx.task_id,
                    attempt.ctx.run_id,
                    answer,
                )
        return False

    async def succeeded(self, attempt: RunningAttempt, payload: Any, output: Any) -> None:
        await self.run_hooks("on_success", attempt, payload, output)
        if self.hooks(attempt.task).on_complete:
            await self.run_hooks("on_complete", attempt, payload, Result(ok=True, output=output))

    async def failed(self, attempt: RunningAttempt, payload: Any, error: BaseException) -> None:
        """The run failed for good (no retry left, or none wanted)."""
        await self.run_hooks("on_failure", attempt, payload, error)
        if self.hooks(attempt.task).on_complete:
            failure = {"type": type(error).__name__, "message": str(error)}
            await self.run_hooks("on_complete", attempt, payload, Result(ok=False, error=failure))

    async def waiting(self, attempt: RunningAttempt, payload: Any, wait: dict[str, Any]) -> None:
        await self.run_hooks("on_wait", attempt, payload, wait)


def _is_async_middleware(make: Hook) -> bool:
    return inspect.iscoroutinefunction(make) or inspect.isasyncgenfunction(
        getattr(make, "__wrapped__", None)
    )


async def _enter(stack: contextlib.AsyncExitStack, make: Hook, ctx: TaskContext) -> None:
    """Enter middleware `make(ctx)`: an async context manager, or a sync one."""
    manager = make(ctx)
    if inspect.isawaitable(manager) and not hasattr(manager, "__aenter__"):
        manager = await manager
    if hasattr(manager, "__aenter__"):
        await stack.enter_async_context(_guarded_async(manager, ctx))
    else:
        stack.enter_context(_guarded_sync(manager, ctx))


@contextlib.asynccontextmanager
async def _guarded_async(manager: Any, ctx: TaskContext) -> AsyncIterator[None]:
    """`manager` entered (an error entering fails the attempt); its exit never changes
    the outcome: an error it raises is logged, and it cannot swallow the task's error."""
    await manager.__aenter__()
    try:
        yield
    except BaseException as exc:
        try:
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
        except Exception:
            _exit_failed(manager, ctx)
        raise
    else:
        try:
            await manager.__aexit__(None, None, None)
        except Exception:
            _exit_failed(manager, ctx)


@contextlib.contextmanager
def _guarded_sync(manager: Any, ctx: TaskContext) -> Iterator[None]:
    """As `_guarded_async`, for a sync context manager."""
    manager.__enter__()
    try:
        yield
    except BaseException as exc:
        try:
            manager.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:
            _exit_failed(manager, ctx)
        raise
    else:
        try:
            manager.__exit__(None, None, None)
        except Exception:
            _exit_failed(manager, ctx)


def _exit_failed(manager: Any, ctx: TaskContext) -> None:
    log.exception(
        "middleware %r of %s run %s raised on exit; the run's outcome is unchanged",
        manager,
        ctx.task_id,
        ctx.run_id,
    )
