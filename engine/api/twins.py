"""Each API call written once: a plan of queries, from which the blocking method and its
`_async` twin are both made.

A plan is a generator method: it yields `Query` values, receives each one's result, and
returns the call's value. Validation before the first `yield` raises before anything is
sent, in both forms. In a class body:

    @twin
    def pause(self, name: str) -> Plan[QueueInfo]:
        yield queries.queue_call("pause_queue", _name(name))
        return QueueInfo.model_validate((yield queries.queue_stat(name)))

    pause_async = pause.aio

The class provides `_conns` (a `Connections`); `app.queues.pause("q")` runs the plan on the
blocking shell, `await app.queues.pause_async("q")` on the async one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from ..db.database import Query
from .connections import Connections

P = ParamSpec("P")
T = TypeVar("T")
Plan = Generator[Query[Any], Any, T]


class HasConnections(Protocol):
    @property
    def _conns(self) -> Connections: ...


S = TypeVar("S", bound=HasConnections)


def run_plan(plan: Plan[T], conns: Connections) -> T:
    """Drive `plan` on the blocking shell."""
    try:
        query = next(plan)
        while True:
            query = plan.send(conns.db.run(query))
    except StopIteration as done:
        result: T = done.value
        return result


async def run_plan_async(plan: Plan[T], conns: Connections) -> T:
    """Drive `plan` on the async shell of the running loop."""
    try:
        query = next(plan)
        while True:
            query = plan.send(await conns.adb.run(query))
    except StopIteration as done:
        result: T = done.value
        return result


class twin(Generic[S, P, T]):
    """The blocking method made from a plan; `.aio` is its `_async` twin. A `replica`
    twin runs on the shells of `_conns.reader` (the `read_dsn`'s, when there is one)."""

    replica = False

    def __init__(self, plan: Callable[Concatenate[S, P], Plan[T]]) -> None:
        self._plan = plan
        self.aio = _AsyncTwin(plan, replica=self.replica)  # `name_async = name.aio`
        self.__doc__ = plan.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> twin[S, P, T]: ...

    @overload
    def __get__(self, obj: S, owner: type[Any]) -> Callable[P, T]: ...

    def __get__(self, obj: S | None, owner: type[Any]) -> twin[S, P, T] | Callable[P, T]:
        if obj is None:
            return self
        plan = self._plan

        replica = self.replica

        @functools.wraps(plan)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            conns = obj._conns.reader if replica else obj._conns
            return run_plan(plan(obj, *args, **kwargs), conns)

        return call


class replica_twin(twin[S, P, T]):
    """A twin whose reads may come from a replica (`Engine(read_dsn=...)`): for calls
    that show state, never for one a claim or a wait depends on."""

    replica = True


class _AsyncTwin(Generic[S, P, T]):
    """The `_async` method made from the same plan as its blocking twin."""

    def __init__(self, plan: Callable[Concatenate[S, P], Plan[T]], *, replica: bool) -> None:
        self._plan = plan
        self._replica = replica
        self.__doc__ = plan.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _AsyncTwin[S, P, T]: ...

    @overload
    def __get__(self, obj: S, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(
        self, obj: S | None, owner: type[Any]
    ) -> _AsyncTwin[S, P, T] | Callable[P, Coroutine[Any, Any, T]]:
        if obj is None:
            return self
        plan = self._plan

        replica = self._replica

        @functools.wraps(plan)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            conns = obj._conns.reader if replica else obj._conns
            return await run_plan_async(plan(obj, *args, **kwargs), conns)

        return call
