"""Durable execution: numbered calls whose results are recorded per run and replayed.

On resume and on retry a task function runs again from the top. Each durable call
(`ctx.step`, the waits of `engine.wait`, `trigger_and_wait`) takes the next position;
a position already in the run's log returns its recorded result at once, so a step that
completed never runs again. A call of another kind or name than the one recorded at its
position is a non-determinism error, and the run ends in SYSTEM_FAILURE.

When a call must wait, the SQL side has already made the run WAITING (slot and worker
freed) in the same transaction that recorded the call; the task function is then
unwound with `Suspended`, a BaseException so that `except Exception` in user code does
not swallow it. Database work always runs on the worker's event loop: an `async def`
task awaits it, a `def` task's thread blocks on it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..api import tracing as _tracing
from ..api.durable import to_json
from ..db import queries as _queries
from ..values import Result

if TYPE_CHECKING:
    from ..api.context import TaskContext
    from ..api.engine import Engine
    from .step_records import StepRecords

T = TypeVar("T")


class Suspended(BaseException):
    """The run is waiting (or its attempt was fenced off): unwind the task function."""


class NonDeterministic(BaseException):
    """A replay asked for a different durable call than the one recorded."""


class Execution:
    """One run of a task function for an attempt: a position counter and the run's log."""

    def __init__(
        self,
        engine: Engine,
        ctx: TaskContext,
        loop: asyncio.AbstractEventLoop,
        before_block: Callable[[], Coroutine[Any, Any, None]] | None = None,
        *,
        records: StepRecords | None = None,
        on_sleep: Callable[[float], None] | None = None,
        fresh: bool = False,
    ) -> None:
        self.engine, self.ctx, self.loop = engine, ctx, loop
        self._before_block = before_block  # e.g. write pending metadata before suspending
        self._records = records  # the worker's group-committed step writer, if any
        self._on_sleep = on_sleep  # told when a sleep started here ends (in seconds)
        self._position = 0
        # `fresh`: the run's first attempt, not resuming: nothing is recorded yet (only
        # a durable call of an attempt writes the log, and a later claim of that run is
        # a resumption or another attempt), so the first durable call reads nothing
        self._log: dict[int, dict[str, Any]] | None = {} if fresh else None
        # the durable call made last: what the run waits on when it suspends (on_wait)
        self.last_call: dict[str, Any] | None = None

    def preload(self, log: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
        """Take the run's log read already (an attempt resuming after a wait); return the
        wait it resumes from: the last durable call recorded."""
        self._log = log
        if not log:
            return None
        last = log[max(log)]
        return {"kind": last["kind"], "name": last["name"], "position": max(log)}

    # -- sync/async dispatch ------------------------------------------------------------

    def in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def dispatch(self, make: Callable[[], Coroutine[Any, Any, T]]) -> Any:
        """In the loop's thread, the coroutine to await; in a task thread, its result."""
        if self.in_loop():
            return make()
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result()

    # -- the log ------------------------------------------------------------------------

    async def _entry(self, kind: str, name: str) -> tuple[int, dict[str, Any] | None]:
        """Take the next position; return it with its recorded entry, if any."""
        position = self._position
        self._position += 1
        self.last_call = {"kind": kind, "name": name, "position": position}
        if self._log is None:
            self._log = await self.engine.adb.run(_queries.run_log(self.ctx.run_id))
        entry = self._log.get(position)
        if entry is not None and (entry["kind"], entry["name"]) != (kind, name):
            raise NonDeterministic(
                f"run {self.ctx.run_id}: durable call {position} was {entry['kind']} "
                f"{entry['name']!r} when first run, and is {kind} {name!r} on replay; "
                "durable calls must happen in the same order every time"
            )
        return position, entry

    async def _suspending(self) -> None:
        if self._before_block is not None:
            await self._before_block()

    def _slept(self, outcome: str, seconds: float) -> None:
        """A sleep's outcome: the run waits `seconds` (the worker wakes it then)."""
        if outcome == "WAITING" and self._on_sleep is not None:
            self._on_sleep(seconds)
        self._blocked(outcome)

    @staticmethod
    def _blocked(outcome: str) -> None:
        if outcome != "CONTINUE":  # WAITING: suspended; FENCED: no longer ours
            raise Suspended(outcome)

    # -- steps --------------------------------------------------------------------------

    async def step_async(self, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        position, entry = await self._entry("step", name)
        if entry is not None:
            return entry["output"]
        with _tracing.step_span(name, position):
            started = time.perf_counter()
            result = fn(*args, **kw)
            if inspect.isawaitable(result):
                result = await result
            await self._record(position, name, result, time.perf_counter() - started)
        return result

    def step_sync(self, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        position, entry = self.dispatch(lambda: self._entry("step", name))
        if entry is not None:
            return entry["output"]
        with _tracing.step_span(name, position):
            started = time.perf_counter()
            result = fn(*args, **kw)
            seconds = time.perf_counter() - started
            self.dispatch(lambda: self._record(position, name, result, seconds))
        return result

    async def _record(self, position: int, name: str, result: Any, seconds: float) -> None:
        """Record a step's result; `seconds`, how long it ran, dates its start in the trace
        (measured here, on a monotonic clock, and sent with the result: no other write)."""
        output = to_json(result)
        if self._records is not None:
            recorded = await self._records.record(
                self.ctx.attempt_id, position, name, output, seconds
            )
        else:
            query = _queries.record_step(self.ctx.attempt_id, position, name, output, seconds)
            recorded = await self.engine.adb.run(query)
        if not recorded:
            raise Suspended("FENCED")

    # -- waits --------------------------------------------------------------------------

    async def wait_seconds(self, seconds: float) -> None:
        name = f"{seconds:g}s"
        position, entry = await self._entry("wait", name)
        if entry is not None and entry["waitpoint_status"] == "COMPLETED":
            return
        await self._suspending()
        query = _queries.wait_seconds(self.ctx.attempt_id, position, name, seconds)
        self._slept(await self.engine.adb.run(query), seconds)

    async def wait_until(self, until: datetime) -> None:
        # the name leaves the time out: code often computes it from the clock, and on
        # replay the recorded waitpoint (with the first time asked for) is what counts
        name = "until"
        position, entry = await self._entry("wait", name)
        if entry is not None and entry["waitpoint_status"] == "COMPLETED":
            return
        await self._suspending()
        query = _queries.wait_until(self.ctx.attempt_id, position, name, until)
        self._slept(await self.engine.adb.run(query), until.timestamp() - time.time())

    async def create_token(self, options: dict[str, Any]) -> str:
        name = "create_token"
        position, entry = await self._entry("step", name)
        if entry is not None:
            return str(entry["output"])
        started = time.perf_counter()
        token = await self.engine.adb.run(_queries.create_token(options))
        seconds = time.perf_counter() - started
        await self._record(position, name, token["waitpoint_id"], seconds)
        return str(token["waitpoint_id"])

    async def wait_token(self, token_id: str) -> Result:
        position, entry = await self._entry("token", token_id)
        if entry is not None and entry["waitpoint_status"] == "COMPLETED":
            # replayed: the log holds the token's output (kept once complete)
            output, is_error = entry["waitpoint_output"], entry["waitpoint_is_error"]
        else:
            await self._suspending()
            query = _queries.block_on(self.ctx.attempt_id, position, "token", token_id, token_id)
            self._blocked(await self.engine.adb.run(query))
            point = await self.engine.adb.run(_queries.waitpoint(token_id))
            output, is_error = point["output"], point["is_error"]

        if is_error:
            return Result(ok=False, error=output)
        return Result(ok=True, output=output)

    # -- child runs ---------------------------------------------------------------------

    async def trigger_and_wait(
        self, task: str, payload_json: str, options: dict[str, Any], parse: Callable[[Any], Any]
    ) -> Result:
        position, entry = await self._entry("run", task)
        if entry is None:
            await self._suspending()
            # the child's trace context is this span's, a child of the attempt's (current)
            with _tracing.trigger_span(task, "trigger_and_wait") as span:
                query = _queries.trigger_and_wait(
                    self.ctx.attempt_id, position, task, payload_json, span.options(options)
                )
                answer = await self.engine.adb.run(query)
                span.run(answer["child_id"])
            self._blocked(answer["outcome"])
            child = answer["child_id"]
        elif entry["waitpoint_status"] != "COMPLETED":
            raise Suspended("WAITING")  # resumed early: cannot happen, but never run on
        else:
            # replayed: the child's RUN waitpoint, read with the log, holds what it ended
            # with (skiplock.run_result), whether or not its row is still there
            ended = entry["waitpoint_output"]
            return _result(ended["run_id"], ended["status"], ended["output"], ended["error"], parse)
        # the child was final already (a key found it): from the primary, never a replica
        # (`runs.retrieve` may read one), as its final state is what this call returns
        from ..models import Run

        run: Run[Any, Any] = Run.model_validate(await self.engine.adb.run(_queries.retrieve(child)))
        return _result(run.id, run.status.value, run.output, run.error, parse)

    async def batch_trigger_and_wait(
        self, task: str, items_json: str, options: dict[str, Any], parse: Callable[[Any], Any]
    ) -> list[Result]:
        position, entry = await self._entry("batch", task)
        if entry is None:
            await self._suspending()
            with _tracing.trigger_span(task, "batch_trigger_and_wait") as span:
                query = _queries.batch_trigger_and_wait(
                    self.ctx.attempt_id, position, task, items_json, span.options(options)
                )
                answer = await self.engine.adb.run(query)
                span.batch(answer["batch_id"])
            self._blocked(answer["outcome"])
            batch = answer["batch_id"]
        elif entry["waitpoint_status"] != "COMPLETED":
            raise Suspended("WAITING")
        else:
            # replayed: the BATCH waitpoint, read with the log, holds its runs' results
            # (skiplock.batch_results, kept when it completed)
            rows = entry["batch_results"]
            return [_result(r["id"], r["status"], r["output"], r["error"], parse) for r in rows]
        rows = await self.engine.adb.run(_queries.batch_results(batch))
        return [_result(r["id"], r["status"], r["output"], r["error"], parse) for r in rows]


def _result(
    run_id: str, status: str, output: Any, error: Any, parse: Callable[[Any], Any]
) -> Result:
    if status == "COMPLETED":
        return Result(ok=True, output=parse(output), run_id=run_id)
    return Result(
        ok=False, error=error or {"type": status, "message": f"run ended {status}"}, run_id=run_id
    )
