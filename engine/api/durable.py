"""The seam between the public API and the worker runtime for durable calls.

`wait.*`, `ctx.step` and `Task.trigger_and_wait` (public API) find the execution they
belong to here; the worker runtime (`engine.worker.replay.Execution`) is what it is at run time.
The public layer depends only on this protocol, never on the runtime itself.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ..errors import DurableCallError
from .codec import ANY

if TYPE_CHECKING:
    from ..values import Result

T = TypeVar("T")


class DurableExecution(Protocol):
    """What a running task's durable calls need from the runtime."""

    def in_loop(self) -> bool: ...

    def dispatch(self, make: Callable[[], Coroutine[Any, Any, T]]) -> Any: ...

    async def step_async(self, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any: ...

    def step_sync(self, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any: ...

    async def wait_seconds(self, seconds: float) -> None: ...

    async def wait_until(self, until: datetime) -> None: ...

    async def create_token(self, options: dict[str, Any]) -> str: ...

    async def wait_token(self, token_id: str) -> Result: ...

    async def trigger_and_wait(
        self, task: str, payload_json: str, options: dict[str, Any], parse: Callable[[Any], Any]
    ) -> Result: ...

    async def batch_trigger_and_wait(
        self, task: str, items_json: str, options: dict[str, Any], parse: Callable[[Any], Any]
    ) -> list[Result]: ...


current_execution: contextvars.ContextVar[DurableExecution | None] = contextvars.ContextVar(
    "skiplock_execution", default=None
)


def current() -> DurableExecution:
    execution = current_execution.get()
    if execution is None:
        raise DurableCallError("durable calls (waits, steps, trigger_and_wait) need a running task")
    return execution


Work = Callable[[DurableExecution], Coroutine[Any, Any, T]]


def call_async(work: Work[T]) -> Coroutine[Any, Any, T]:
    """A durable call's awaitable form: in an `async def` task, the coroutine to await.

    In a `def` task's thread the same call blocks and returns the value itself (API.md keeps
    one name for both). The type states the async form, so that mypy catches a missing
    `await`; typed `def` tasks call the `_sync` form instead (`call_sync`)."""
    execution = current()
    return cast("Coroutine[Any, Any, T]", execution.dispatch(lambda: work(execution)))


def call_sync(name: str, work: Work[T]) -> T:
    """A durable call's blocking form, for `def` tasks: waits for the value. Raises
    `DurableCallError` in an `async def` task, whose loop it would block."""
    execution = current()
    if execution.in_loop():
        raise DurableCallError(
            f"{name}_sync() blocks, and this is an async def task: use `await {name}(...)`"
        )
    return cast(T, execution.dispatch(lambda: work(execution)))


def to_json(value: Any) -> str:
    return ANY.to_json(value)
