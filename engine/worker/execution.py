"""Running one attempt: calling the task function, and classifying how it ended.

`async def` tasks run on the worker's loop, `def` tasks in its pool of daemon threads
(threads.py); a task's `max_duration` bounds either. No transaction is open while the
task function runs. How an attempt ends decides what is recorded (`Executor.execute`):

* it returned: its output is queued for recording (outcomes.py), with its final metadata;
* `Suspended`: the run is WAITING, or no longer ours: the database has it, nothing to do;
* a replay that asked for another durable call: SYSTEM_FAILURE, not retried;
* `max_duration` exceeded: TIMED_OUT, not retried;
* `AbortTaskRunError`, a stored payload the task cannot parse: FAILED, not retried;
* stopped by the worker's shutdown: FAILED, retried at once (if attempts are left);
* any other exception: FAILED, retried after the task's retry delay;
* canceled, or the lease lost: nothing; the database has already settled the run.

Each end gets a line on the `skiplock.runs` logger (report.py): a failure's once the
database has said what became of the run, a success's once its batch is recorded.

Whatever happens, the attempt leaves `WorkerState.running` and the claim loop is woken
(a slot is free). While attempts run, their metadata changes are written every
`metadata_interval` seconds, and before a durable call suspends the run.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import psycopg

from ..api.context import TaskContext
from ..api.durable import current_execution as _execution_var
from ..db import queries as _queries
from ..errors import (
    AbortTaskRunError,
    NonDeterminismError,
    PayloadValidationError,
)
from . import report
from .faults import checkpoint
from .lifecycle import Lifecycle
from .outcomes import Outcomes
from .replay import Execution, NonDeterministic, Suspended
from .state import (
    CANCELED,
    LEASE_LOST,
    SETTLED,
    SHUTDOWN,
    TIMED_OUT,
    RunningAttempt,
    WorkerState,
)
from .step_records import StepRecords
from .threads import DaemonThreadPool

if TYPE_CHECKING:
    from ..api.engine import Engine

log = logging.getLogger("skiplock.worker")


class Executor:
    """Runs the worker's attempts, one asyncio task each (`execute`), and writes their
    metadata while they run."""

    def __init__(
        self,
        state: WorkerState,
        outcomes: Outcomes,
        engine: Engine,
        threads: DaemonThreadPool,
        *,
        metadata_interval: float,
        shutdown_grace: float,
        on_sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._state, self._outcomes, self._engine = state, outcomes, engine
        self._on_sleep = on_sleep  # told how long a run that starts to sleep will sleep
        self._running, self._by_run = state.running, state.by_run
        self._threads = threads
        self._metadata_interval = metadata_interval
        self._shutdown_grace = shutdown_grace
        self._lifecycle = Lifecycle(engine)
        self._steps = StepRecords(engine)

    async def interrupt(self, ctx: TaskContext, seconds: float | None = None) -> None:
        """The worker shuts down before the attempt finished: queue its run again, to
        continue the attempt elsewhere (Outcomes.interrupt)."""
        await self._outcomes.interrupt(ctx, self._shutdown_grace, seconds)

    async def execute(self, attempt: RunningAttempt) -> None:
        """Run the attempt and record how it ended (see the module's docstring); a line
        on the `skiplock.runs` logger says how (report.py)."""
        ctx, task = attempt.ctx, attempt.task
        started = time.perf_counter()
        try:
            output = await self._call(attempt)
        except Suspended as exc:
            # the run is WAITING (or no longer ours): the database has it
            waiting = exc.args == ("WAITING",)
            if report.enabled():
                outcome = "WAITING" if waiting else _stopped(ctx.stop_reason)
                report.ended(ctx, outcome, time.perf_counter() - started)
            if waiting and attempt.execution is not None and attempt.execution.last_call:
                await self._lifecycle.waiting(attempt, attempt.parsed, attempt.execution.last_call)
        except NonDeterministic as exc:
            # where the task made the call that differs: its frames, from the task's down
            error = NonDeterminismError(str(exc)).with_traceback(exc.__traceback__)
            await self._fail(attempt, "SYSTEM_FAILURE", error, None, started)
        except asyncio.CancelledError:
            if ctx.stop_reason == SHUTDOWN:
                await self.interrupt(ctx, time.perf_counter() - started)
            elif ctx.stop_reason is None:
                raise
            # canceled or lease lost: the database already settled the run; nothing to record
            elif report.enabled():
                report.ended(ctx, _stopped(ctx.stop_reason), time.perf_counter() - started)
        except TimeoutError as exc:
            if ctx.stop_reason == TIMED_OUT:
                await self._fail(attempt, "TIMED_OUT", _timed_out(attempt, exc), None, started)
            else:
                await self._fail(attempt, "FAILED", exc, await self._delay(attempt, exc), started)
        except (AbortTaskRunError, PayloadValidationError) as exc:
            await self._fail(attempt, "FAILED", exc, None, started)
        except Exception as exc:
            seconds = time.perf_counter() - started
            if ctx.stop_reason == SHUTDOWN:
                if task.is_async:  # it raised once stopped: interrupted all the same
                    await self.interrupt(ctx, seconds)
                else:
                    _dropped(ctx)
            elif ctx.stop_reason not in SETTLED:
                await self._fail(attempt, "FAILED", exc, await self._delay(attempt, exc), started)
            elif report.enabled():
                report.ended(ctx, _stopped(ctx.stop_reason), seconds)
        else:
            seconds = time.perf_counter() - started
            if ctx.stop_reason == SHUTDOWN and not task.is_async:
                _dropped(ctx)
            elif ctx.stop_reason not in SETTLED:  # else the database settles the run
                # the final metadata goes with the outcome: one round trip, one commit
                metadata = None
                if ctx.metadata.version != attempt.metadata_flushed:
                    metadata = ctx.metadata.snapshot()[1]
                self._outcomes.put(ctx.attempt_id, output, metadata, ctx, seconds)
                if self._lifecycle.has_outcome_hooks(task):
                    await self._lifecycle.succeeded(attempt, attempt.parsed, attempt.output)
            elif report.enabled():
                report.ended(ctx, _stopped(ctx.stop_reason), seconds)
        finally:
            self._running.pop(ctx.attempt_id, None)
            if self._by_run.get(ctx.run_id) == ctx.attempt_id:
                del self._by_run[ctx.run_id]
            self._state.wake.set()

    async def _call(self, attempt: RunningAttempt) -> str:
        """Run the task function once; return its output as JSON text."""
        ctx, task = attempt.ctx, attempt.task
        try:
            payload = task.parse_payload(attempt.payload)
        except Exception as exc:
            raise PayloadValidationError(
                f"stored payload does not match the task's type: {exc}"
            ) from exc
        attempt.parsed = payload
        # durable calls find their execution here (a def task's thread copies the context)
        execution = Execution(
            self._engine,
            ctx,
            self._state.loop,
            lambda: self.flush_metadata(attempt),
            records=self._steps,
            on_sleep=self._on_sleep,
            fresh=ctx.attempt == 1 and not attempt.resumed,
        )
        attempt.execution = execution
        _execution_var.set(execution)
        checkpoint("executing")
        wait = None
        if attempt.resumed:  # the replay reads the run's log: the claim brought it
            wait = execution.preload({entry["step"]: entry for entry in attempt.log or ()})
            attempt.log = None
        if self._lifecycle.is_plain(task):
            return await self._run(attempt, payload)
        async with self._lifecycle.around(attempt, payload, wait):
            return await self._run(attempt, payload)

    async def _fail(
        self,
        attempt: RunningAttempt,
        status: str,
        error: BaseException,
        delay: float | None,
        started: float,
    ) -> None:
        """Record the failed attempt; if the run failed for good, its on_failure hooks."""
        seconds = time.perf_counter() - started
        new_status = await self._outcomes.fail(attempt.ctx, status, error, delay, seconds)
        if (
            new_status is not None
            and new_status.value != "QUEUED"
            and self._lifecycle.has_outcome_hooks(attempt.task)
        ):
            await self._lifecycle.failed(attempt, attempt.parsed, error)

    async def _delay(self, attempt: RunningAttempt, error: BaseException) -> float | None:
        """When to retry after `error`: what `catch_error` says, else the retry policy."""
        decided = await self._lifecycle.decide(attempt, error)
        if decided is False:
            return attempt.task.retry.delay(attempt.ctx.attempt)
        return decided if decided is None else float(decided)

    async def _run(self, attempt: RunningAttempt, payload: Any) -> str:
        """Call the task function, bounded by its max_duration; return its output as JSON
        text (and keep the value, for on_success)."""
        ctx, task = attempt.ctx, attempt.task
        if task.is_async and attempt.max_duration is None:
            attempt.output = await task.fn(payload, ctx)
            return task.output_json(attempt.output)
        if task.is_async:
            # awaited in this task: a cancel or the timeout reaches the coroutine directly
            deadline = asyncio.timeout(attempt.max_duration)
            try:
                async with deadline:
                    result = await task.fn(payload, ctx)
            except TimeoutError:
                if deadline.expired():
                    ctx.request_stop(TIMED_OUT)
                raise
            attempt.output = result
            return task.output_json(result)
        work = self._threads.submit(self._lifecycle.in_thread(task, task.fn), payload, ctx)
        try:
            # shielded: the thread cannot be interrupted, so its future must outlive us
            async with asyncio.timeout(attempt.max_duration):
                result = await asyncio.shield(work)
        except TimeoutError:
            if work.done() and not work.cancelled() and work.exception() is not None:
                raise  # the task itself raised TimeoutError
            ctx.request_stop(TIMED_OUT)
            await asyncio.wait([work])  # hold the slot until the thread returns; ignore it
            raise
        except asyncio.CancelledError:
            # canceled or timed out: hold the slot until the thread returns. Not at
            # shutdown: the attempt was interrupted, and the process must not wait for a
            # thread that may never return (daemon threads do not hold its exit).
            if ctx.stop_reason is not None and ctx.stop_reason != SHUTDOWN:
                await asyncio.wait([work])
            raise
        attempt.output = result
        return task.output_json(result)

    async def flush_metadata(self, attempt: RunningAttempt) -> None:
        """Write the attempt's metadata to its run if it changed since the last write."""
        if attempt.ctx.metadata.version == attempt.metadata_flushed:
            return  # unchanged: no encoding, no round trip (the common case)
        version, encoded = attempt.ctx.metadata.snapshot()
        if version != attempt.metadata_flushed:
            await self._engine.adb.run(_queries.update_metadata(attempt.ctx.attempt_id, encoded))
            attempt.metadata_flushed = version

    async def metadata_flusher(self) -> None:
        """Flush running attempts' metadata changes every `metadata_interval` seconds, so
        that whoever watches a run sees its progress while it runs. Until cancelled."""
        while True:
            await asyncio.sleep(self._metadata_interval)
            for attempt in list(self._running.values()):
                try:
                    await self.flush_metadata(attempt)
                except psycopg.Error:
                    log.warning("metadata flush failed", exc_info=True)


def _timed_out(attempt: RunningAttempt, exc: TimeoutError) -> TimeoutError:
    """The error stored for an attempt past its `max_duration`: says so, and (for an
    async task) has the stack of where the task was when it was stopped, not the chain
    of asyncio's cancel that stopped it."""
    error = TimeoutError(
        f"exceeded max_duration of {attempt.max_duration:g}s (attempt {attempt.ctx.attempt})"
    )
    stopped = exc.__cause__ or exc.__context__
    if isinstance(stopped, asyncio.CancelledError):
        error = error.with_traceback(stopped.__traceback__)
    return error


def _stopped(reason: str | None) -> str:
    """How an attempt that the database settled ended, for its line."""
    if reason == CANCELED:
        return "CANCELED"
    if reason == LEASE_LOST:
        return "stopped: worker lease lost"
    return "stopped: no longer this worker's attempt"


if sys.version_info >= (3, 12):

    def start_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A run's task, started eagerly: it runs here up to its first wait, and a run
        that never waits finishes here, with no round through the event loop. Measured, a
        worker's CPU a no-op run on Python 3.12: 15-24 us against 26-38 scheduled."""
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name, eager_start=True)

else:

    def start_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=name)


def _dropped(ctx: TaskContext) -> None:
    """A def task's outcome that came after the worker interrupted its attempt at shutdown
    (runtime.py, `_drain`): the run was queued again to continue that same attempt (same
    id) elsewhere, so nothing of this one may be recorded for it."""
    log.info("dropped the late outcome of interrupted run %s", ctx.run_id)
