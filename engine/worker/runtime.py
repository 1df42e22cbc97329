"""The worker: takes runs from the database and executes their attempts.

One asyncio loop per worker process. One coroutine takes work: each of its calls records
the attempts that finished since the last one and claims runs for the free slots (one
durable commit for both), so under load many runs share a commit. `async def` tasks run
on the loop, `def` tasks in a pool of daemon threads. No transaction is open while user
code runs: every database call is one autocommit function call.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from ..api.context import Metadata, TaskContext
from ..api.durable import current_execution as _execution_var
from ..db import queries as _queries
from ..db.listener import Listener, Registration
from ..errors import (
    AbortTaskRunError,
    InvalidArgumentError,
    NonDeterminismError,
    PayloadValidationError,
    SkiplockError,
    TaskRunCanceledError,
)
from .replay import Execution, NonDeterministic, Suspended
from .threads import DaemonThreadPool

if TYPE_CHECKING:
    from ..api.engine import Engine
    from ..api.tasks import Task

log = logging.getLogger("skiplock.worker")

DEFAULT_VERSION = "dev"
_CANCELED = "canceled"
_TIMED_OUT = "max_duration exceeded"
_SHUTDOWN = "worker shut down"
_LEASE_LOST = "worker lease lost"
_SETTLED = (_CANCELED, _LEASE_LOST)  # stop reasons after which the database owns the run
_START_UP_BACKOFF, _START_UP_BACKOFF_MAX = 0.5, 5.0  # seconds between tries to register


def _parse_crash_points(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, n = item.partition(":")
        points[name] = int(n or "1")
    return points


# Fault injection for tests/faults: SKIPLOCK_CRASH_AT="point:n,..." makes the worker
# SIGKILL itself the n-th time it passes `point`: "claimed" (a claim has committed, its
# runs not started), "executing" (a task function is about to run), "completed" (a batch
# of completions has committed, not yet acknowledged in the worker). Unset: no effect.
_CRASH_AT = _parse_crash_points(os.environ.get("SKIPLOCK_CRASH_AT", ""))


def _crash_point(name: str) -> None:
    if name in _CRASH_AT:
        _CRASH_AT[name] -= 1
        if _CRASH_AT[name] <= 0:
            log.warning("SKIPLOCK_CRASH_AT: killing this worker at %r", name)
            os.kill(os.getpid(), signal.SIGKILL)


def error_json(exc: BaseException) -> dict[str, Any]:
    # a NUL character, which jsonb cannot store, is written as the text \x00
    return {
        "type": type(exc).__name__,
        "message": str(exc).replace("\x00", "\\x00"),
        "stack": "".join(traceback.format_exception(exc)).replace("\x00", "\\x00"),
    }


@dataclass
class _Attempt:
    ctx: TaskContext
    task: Task[Any, Any]
    payload: str  # JSON text
    max_duration: float | None
    future: asyncio.Task[None] | None = None
    metadata_flushed: int = 0  # the metadata version last written


class Worker:
    """Executes runs of its engine's tasks. `run()` blocks until SIGTERM or SIGINT (or
    `stop()`), then stops taking work and lets running attempts finish for up to
    `shutdown_grace` seconds; attempts still running then are failed as retryable.

    The worker holds its runs under a lease of `lease_timeout` seconds, renewed every
    `heartbeat_interval`. If the lease lapses (process killed, host lost, partition),
    maintenance crashes its started runs and requeues the rest; a worker that cannot
    renew its lease for that long stops its own runs first (self-fencing).

    A worker started while the database cannot be reached waits for it (see `_start_up`).

    `freeze_gc=True` (what `skiplock worker` sets) moves everything alive at start-up out
    of the garbage collector's sight, for a process that is nothing but the worker."""

    def __init__(
        self,
        engine: Engine,
        *,
        queues: list[str] | None = None,
        concurrency: int = 10,
        version: str | None = None,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        lease_timeout: float = 30.0,
        tick_interval: float = 1.0,
        shutdown_grace: float = 30.0,
        metadata_interval: float = 0.25,
        default_ttl: float | None = None,
        freeze_gc: bool = False,
    ) -> None:
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, got {concurrency}")
        if not 0 < heartbeat_interval < lease_timeout:
            raise InvalidArgumentError(
                f"need 0 < heartbeat_interval ({heartbeat_interval}) < lease_timeout "
                f"({lease_timeout})"
            )
        self.engine = engine
        self.queues = list(queues) if queues else None
        self.concurrency = concurrency
        self.version = version or os.environ.get("SKIPLOCK_VERSION") or DEFAULT_VERSION
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.lease_timeout = lease_timeout
        self._renewed_at = 0.0  # loop time of the last successful heartbeat
        self.tick_interval = tick_interval
        self.shutdown_grace = shutdown_grace
        self.metadata_interval = metadata_interval
        self.default_ttl = default_ttl  # for tasks without a ttl (`skiplock dev`: 10 minutes)
        # for a process that is the worker (`skiplock worker` sets it): see run_async
        self.freeze_gc = freeze_gc
        self.id = _new_worker_id()
        self._running: dict[str, _Attempt] = {}  # by attempt id
        # finished attempts whose outcome is queued for the database but not yet recorded:
        # the worker still holds them, and says so in every heartbeat
        self._unrecorded: set[str] = set()
        # a claim and a heartbeat never overlap: a heartbeat lists every attempt held, so
        # the database may release runs of this worker it does not list (see heartbeat)
        self._claim_lock = asyncio.Lock()
        self._by_run: dict[str, str] = {}  # run id -> attempt id
        self._threads = DaemonThreadPool(concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._completions: asyncio.Queue[tuple[str, str, str | None]] | None = None
        self._background: set[asyncio.Future[None]] = set()  # fire-and-forget tasks
        self._stop_requested = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (when called in the main thread) or `stop()`."""
        asyncio.run(
            self.run_async(install_signals=threading.current_thread() is threading.main_thread())
        )

    def stop(self) -> None:
        """Ask the worker to drain and stop; safe from any thread or signal handler."""
        self._stop_requested.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)

    async def run_async(self, *, install_signals: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping, self._wake = asyncio.Event(), asyncio.Event()
        self._completions = asyncio.Queue()
        if self._stop_requested.is_set():
            self._stopping.set()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stopping.set)
        db = self.engine.adb
        if not await self._start_up():
            self._threads.shutdown()
            await db.close()
            return
        if self.freeze_gc:
            # Everything alive now (modules, the app, pydantic's schemas: some 10^5
            # objects) lives as long as the process: out of the collector's sight, a full
            # collection takes well under a millisecond instead of 15-25 ms, a pause that
            # every run waiting to start would sit through. Not for a worker inside a
            # bigger process: its objects alive now would never be collected either.
            gc.collect()
            gc.freeze()
        registrations = self._listen()
        background = [
            asyncio.create_task(self._heartbeat(), name="skiplock-heartbeat"),
            asyncio.create_task(self._fence(), name="skiplock-fence"),
            asyncio.create_task(self._tick(), name="skiplock-tick"),
            asyncio.create_task(self._metadata_flusher(), name="skiplock-metadata"),
        ]
        flusher: asyncio.Task[None] | None = None
        try:
            await self._fetch_loop()
            # from here on attempts only finish: their outcomes are recorded on their own
            flusher = asyncio.create_task(self._flush_completions(), name="skiplock-flush")
            await self._drain()
        finally:
            if flusher is None:
                flusher = asyncio.create_task(self._flush_completions(), name="skiplock-flush")
            for reg in registrations:
                Listener.for_dsn(self.engine.dsn).remove(reg)
            await self._record_completions()
            flusher.cancel()
            for t in background:
                t.cancel()
            await asyncio.gather(flusher, *background, return_exceptions=True)
            try:
                await db.run(_queries.stop_worker(self.id))
            finally:
                self._threads.shutdown()
                await db.close()
            log.info("worker %s stopped", self.id)

    async def _record_completions(self) -> None:
        """Wait for the flusher to record every finished attempt, but not past the lease:
        once it lapses (the database unreachable all along) maintenance crashes those runs
        and would fence the late results anyway, so SIGTERM must not hang on them."""
        assert self._completions is not None
        try:
            await asyncio.wait_for(self._completions.join(), timeout=self.lease_timeout)
        except TimeoutError:
            log.error(
                "%d finished attempt(s) could not be recorded within the lease (%.0fs); "
                "their runs will be marked CRASHED",
                self._completions.qsize(),
                self.lease_timeout,
            )

    async def _start_up(self) -> bool:
        """Register, and take a first heartbeat before any claim (its session compiles the
        heartbeat's functions now, not later while a claim waits for it: the claim lock).
        While the database cannot be reached (started alongside the worker, restarting,
        failing over), try again with backoff up to 5 s, until stopped: False then. Each
        try registers under a new id: one whose reply was lost may have committed, and its
        row lapses with its lease, holding no runs."""
        assert self._stopping is not None
        delay = _START_UP_BACKOFF
        while not self._stopping.is_set():
            try:
                await self._register()
                await self._check_current()
                return True
            except psycopg.OperationalError as exc:
                log.warning("database unreachable (%s); trying again in %.1fs", exc, delay)
            await _wait_any(self._stopping, timeout=delay)
            delay = min(delay * 2, _START_UP_BACKOFF_MAX)
            self.id = _new_worker_id()
        return False

    async def _register(self) -> None:
        tasks = [t.deployment_entry() for t in self.engine.tasks.values()]
        for entry in tasks:
            if entry["ttl"] is None:
                entry["ttl"] = self.default_ttl
        await self.engine.adb.run(
            _queries.register_worker(
                self.id,
                self.version,
                socket.gethostname(),
                os.getpid(),
                self.queues,
                self.concurrency,
                tasks,
                self.lease_timeout,
            )
        )
        assert self._loop is not None
        self._renewed_at = self._loop.time()
        log.info("worker %s started: version %s, %d tasks", self.id, self.version, len(tasks))

    async def _drain(self) -> None:
        """Let running attempts finish within the grace period. Then async attempts are
        cancelled and every one left is failed as retryable (its run goes back to QUEUED
        if it has attempts left); a thread's late result is fenced off."""
        pending = [a.future for a in self._running.values() if a.future is not None]
        if not pending:
            return
        log.info("waiting up to %.0fs for %d running attempts", self.shutdown_grace, len(pending))
        _, late = await asyncio.wait(pending, timeout=self.shutdown_grace)
        for attempt in list(self._running.values()):
            attempt.ctx.request_stop(_SHUTDOWN)
            if attempt.task.is_async and attempt.future is not None:
                attempt.future.cancel()  # _execute reports it
            else:
                await self._fail(attempt.ctx, "FAILED", TaskRunCanceledError(_SHUTDOWN), 0.0)
        if late:
            await asyncio.wait(late, timeout=1.0)

    # -- taking work -----------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        """Until the worker stops: record finished attempts and claim runs for the free
        slots, in one call. The claim commits durably before anything it took starts: a
        claim lost to a server crash would leave its run queued while this worker ran it,
        and the run would run twice. Sharing that commit with the completions keeps its
        cost (a WAL flush) to one per round, as a completion needs one anyway."""
        assert self._stopping is not None and self._wake is not None
        assert self._completions is not None
        db, queue = self.engine.adb, self._completions
        task_ids = list(self.engine.tasks)
        done: list[tuple[str, str, str | None]] = []  # taken from the queue, not recorded
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            self._take_completions(done)
            found = 0
            if free > 0 or done:
                self._wake.clear()
                query = _queries.complete_and_claim(
                    _completions_json(done) if done else None,
                    self.id,
                    self.version,
                    task_ids,
                    self.queues,
                    max(free, 0),
                )
                try:
                    async with self._claim_lock:
                        rows = await db.run(query, lane="claim")
                        if done:
                            _crash_point("completed")
                            self._recorded(done)
                            done = []
                        found = len(rows)
                        if rows:
                            _crash_point("claimed")
                        self._start(rows)
                except (psycopg.Error, SkiplockError) as exc:
                    # completions are fenced by attempt: sent again in the next round
                    log.exception("claim failed; retrying after the poll interval")
                    if done and _refused(exc):
                        done = await self._record_each(done)
                    await _wait_any(self._stopping, timeout=self.poll_interval)
                    continue
            if found < free or free <= 0:
                # nothing more to take: sleep until a NOTIFY, a freed slot, or the poll
                await _wait_any(self._wake, self._stopping, timeout=self.poll_interval)
        for item in done:  # back to the queue, for the flusher (counted once, not twice)
            queue.put_nowait(item)
            queue.task_done()

    def _start(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            task = self.engine.tasks[row["task_identifier"]]
            ctx = TaskContext(
                run_id=row["run_id"],
                attempt=row["attempt_number"],
                attempt_id=row["attempt_id"],
                task_id=task.id,
                worker_id=self.id,
                metadata=Metadata(None if row["metadata"] == "{}" else json.loads(row["metadata"])),
            )
            attempt = _Attempt(ctx, task, row["payload"], row["max_duration"])
            self._running[ctx.attempt_id] = attempt
            self._by_run[ctx.run_id] = ctx.attempt_id
            attempt.future = _start_task(self._execute(attempt), f"run {ctx.run_id}")

    # -- executing ---------------------------------------------------------------------------

    async def _execute(self, attempt: _Attempt) -> None:
        ctx, task = attempt.ctx, attempt.task
        try:
            output = await self._call(attempt)
        except Suspended:
            pass  # the run is WAITING (or no longer ours): the database has it
        except NonDeterministic as exc:
            await self._fail(ctx, "SYSTEM_FAILURE", NonDeterminismError(str(exc)), None)
        except asyncio.CancelledError:
            if ctx.stop_reason == _SHUTDOWN:
                await self._fail(ctx, "FAILED", TaskRunCanceledError(_SHUTDOWN), retry_delay=0.0)
            elif ctx.stop_reason is None:
                raise
            # canceled or lease lost: the database already settled the run; nothing to report
        except TimeoutError as exc:
            if ctx.stop_reason == _TIMED_OUT:
                await self._fail(ctx, "TIMED_OUT", exc, retry_delay=None)
            else:
                await self._fail(ctx, "FAILED", exc, retry_delay=task.retry.delay(ctx.attempt))
        except (AbortTaskRunError, PayloadValidationError) as exc:
            await self._fail(ctx, "FAILED", exc, retry_delay=None)
        except Exception as exc:
            if ctx.stop_reason == _SHUTDOWN:
                await self._fail(ctx, "FAILED", exc, retry_delay=0.0)
            elif ctx.stop_reason not in _SETTLED:
                await self._fail(ctx, "FAILED", exc, retry_delay=task.retry.delay(ctx.attempt))
        else:
            assert self._completions is not None
            if ctx.stop_reason not in _SETTLED:  # else the database settles the run
                # the final metadata goes with the outcome: one round trip, one commit
                metadata = None
                if ctx.metadata.version != attempt.metadata_flushed:
                    metadata = ctx.metadata.snapshot()[1]
                self._unrecorded.add(ctx.attempt_id)
                self._completions.put_nowait((ctx.attempt_id, output, metadata))
        finally:
            self._running.pop(ctx.attempt_id, None)
            if self._by_run.get(ctx.run_id) == ctx.attempt_id:
                del self._by_run[ctx.run_id]
            assert self._wake is not None
            self._wake.set()

    async def _call(self, attempt: _Attempt) -> str:
        """Run the task function once; return its output as JSON text."""
        ctx, task = attempt.ctx, attempt.task
        try:
            payload = task.parse_payload(attempt.payload)
        except Exception as exc:
            raise PayloadValidationError(
                f"stored payload does not match the task's type: {exc}"
            ) from exc
        assert self._loop is not None
        # durable calls find their execution here (a def task's thread copies the context)
        _execution_var.set(
            Execution(self.engine, ctx, self._loop, lambda: self._flush_metadata(attempt))
        )
        _crash_point("executing")
        if task.is_async and attempt.max_duration is None:
            return task.output_json(await task.fn(payload, ctx))
        if task.is_async:
            # awaited in this task: a cancel or the timeout reaches the coroutine directly
            deadline = asyncio.timeout(attempt.max_duration)
            try:
                async with deadline:
                    result = await task.fn(payload, ctx)
            except TimeoutError:
                if deadline.expired():
                    ctx.request_stop(_TIMED_OUT)
                raise
            return task.output_json(result)
        work = self._threads.submit(task.fn, payload, ctx)
        try:
            # shielded: the thread cannot be interrupted, so its future must outlive us
            async with asyncio.timeout(attempt.max_duration):
                result = await asyncio.shield(work)
        except TimeoutError:
            if work.done() and not work.cancelled() and work.exception() is not None:
                raise  # the task itself raised TimeoutError
            ctx.request_stop(_TIMED_OUT)
            await asyncio.wait([work])  # hold the slot until the thread returns; ignore it
            raise
        except asyncio.CancelledError:
            if ctx.stop_reason is not None:
                await asyncio.wait([work])
            raise
        return task.output_json(result)

    async def _fail(
        self, ctx: TaskContext, status: str, exc: BaseException, retry_delay: float | None
    ) -> None:
        query = _queries.fail_attempt(ctx.attempt_id, error_json(exc), status, retry_delay)
        pause = 0.2
        while True:
            try:
                new_status = await self.engine.adb.run(query)
                break
            except (psycopg.OperationalError, psycopg.InterfaceError):
                # fenced by attempt, so resending is safe; the attempt stays in hand (and
                # in heartbeats) until it is recorded. Past the lease, maintenance owns it.
                assert self._loop is not None
                if self._loop.time() - self._renewed_at > self.lease_timeout:
                    log.error("gave up recording failed attempt %s: lease lapsed", ctx.attempt_id)
                    return
                log.warning("could not record failed attempt %s; retrying", ctx.attempt_id)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
        if new_status is not None and new_status.value == "QUEUED" and retry_delay:
            assert self._loop is not None and self._wake is not None
            self._loop.call_later(retry_delay, self._wake.set)

    async def _flush_metadata(self, attempt: _Attempt) -> None:
        """Write the attempt's metadata to its run if it changed since the last write."""
        if attempt.ctx.metadata.version == attempt.metadata_flushed:
            return  # unchanged: no encoding, no round trip (the common case)
        version, encoded = attempt.ctx.metadata.snapshot()
        if version != attempt.metadata_flushed:
            await self.engine.adb.run(_queries.update_metadata(attempt.ctx.attempt_id, encoded))
            attempt.metadata_flushed = version

    async def _metadata_flusher(self) -> None:
        """Flush running attempts' metadata changes every `metadata_interval` seconds, so
        that whoever watches a run sees its progress while it runs."""
        while True:
            await asyncio.sleep(self.metadata_interval)
            for attempt in list(self._running.values()):
                try:
                    await self._flush_metadata(attempt)
                except psycopg.Error:
                    log.warning("metadata flush failed", exc_info=True)

    async def _flush_completions(self) -> None:
        """Once the fetch loop is done: send completions in batches, whatever finished
        while the last batch was in flight in the next one."""
        assert self._completions is not None
        while True:
            batch = [await self._completions.get()]
            self._take_completions(batch)
            while batch:
                try:
                    await self._send_completions(batch)
                    _crash_point("completed")
                    self._recorded(batch)
                    break
                except (psycopg.Error, SkiplockError) as exc:
                    # fenced and idempotent: safe to resend until the database is back
                    log.exception("could not record %d completions; retrying", len(batch))
                    if _refused(exc):
                        batch = await self._record_each(batch)
                    if batch:
                        await asyncio.sleep(1.0)

    async def _send_completions(self, batch: list[tuple[str, str, str | None]]) -> None:
        """Record the outcomes in `batch` alone (no claim), on the lane of their own."""
        await self.engine.adb.run(
            _queries.complete_attempts(_completions_json(batch)), lane="complete"
        )

    async def _record_each(
        self, batch: list[tuple[str, str, str | None]]
    ) -> list[tuple[str, str, str | None]]:
        """The database refused the data of a batch of outcomes: record them one by one,
        so that one it cannot store holds up no other. An outcome refused on its own fails
        its attempt (SYSTEM_FAILURE) instead; if even that is refused, the worker lets the
        attempt go, and the database releases it as a lost attempt at the next heartbeat.
        Returns the outcomes left for a later try (any other error)."""
        left: list[tuple[str, str, str | None]] = []
        for item in batch:
            attempt_id = item[0]
            try:
                await self._send_completions([item])
            except (psycopg.Error, SkiplockError) as exc:
                if not _refused(exc):
                    left.append(item)
                    continue
                log.error("the outcome of attempt %s was refused: %s", attempt_id, exc)
                refusal = InvalidArgumentError(f"the outcome could not be stored: {exc}")
                query = _queries.fail_attempt(
                    attempt_id, error_json(refusal), "SYSTEM_FAILURE", None
                )
                try:
                    await self.engine.adb.run(query)
                except (psycopg.Error, SkiplockError) as again:
                    if not _refused(again):
                        left.append(item)
                        continue
                    log.error("gave up on attempt %s: %s", attempt_id, again)
            self._recorded([item])
        return left

    def _take_completions(self, batch: list[tuple[str, str, str | None]]) -> None:
        """Move queued completions into `batch`, up to 1,000 in all."""
        assert self._completions is not None
        while not self._completions.empty() and len(batch) < 1000:
            batch.append(self._completions.get_nowait())

    def _recorded(self, batch: list[tuple[str, str, str | None]]) -> None:
        assert self._completions is not None
        for attempt_id, _, _ in batch:
            self._unrecorded.discard(attempt_id)
            self._completions.task_done()

    # -- signals from the database ----------------------------------------------------------

    def _stop_run(self, run_id: str, reason: str = _CANCELED) -> None:
        attempt_id = self._by_run.get(run_id)
        attempt = self._running.get(attempt_id) if attempt_id else None
        if attempt is None:
            return
        attempt.ctx.request_stop(reason)
        if attempt.task.is_async and attempt.future is not None:
            attempt.future.cancel()

    def _stop_all(self, reason: str) -> None:
        for attempt in list(self._running.values()):
            self._stop_run(attempt.ctx.run_id, reason)

    def _listen(self) -> list[Registration]:
        """Wake-ups and cancels from the process's shared LISTEN connection. Each read's
        notifications reach the loop as one call (a burst of triggers is one wake-up)."""
        assert self._loop is not None
        loop = self._loop

        def on_wake(payloads: list[str] | None, _conn: object) -> None:
            # None: (re)connected, so anything may have been missed: look, and renew
            if payloads is None or any(
                not p or self.queues is None or p in self.queues for p in payloads
            ):
                loop.call_soon_threadsafe(self._on_wake, payloads is None)

        def on_cancel(payloads: list[str] | None, _conn: object) -> None:
            for run_id in payloads or ():
                loop.call_soon_threadsafe(self._stop_run, run_id)

        listener = Listener.for_dsn(self.engine.dsn)
        return [listener.add("skiplock_wake", on_wake), listener.add("skiplock_cancel", on_cancel)]

    def _on_wake(self, reconnected: bool) -> None:
        assert self._wake is not None
        self._wake.set()
        if reconnected:
            task = asyncio.ensure_future(self._check_current_logged())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _check_current_logged(self) -> None:
        try:
            await self._check_current()
        except psycopg.Error:
            log.warning("could not renew the lease after reconnecting", exc_info=True)

    async def _check_current(self) -> None:
        """Renew the lease, and stop attempts the database no longer considers current."""
        assert self._loop is not None
        async with self._claim_lock:
            held = [*self._running, *self._unrecorded]
            # the lease is renewed at some moment after this: counting from here, the
            # worker's idea of its lease never outlasts the database's
            sent_at = self._loop.time()
            stale = await self.engine.adb.run(_queries.heartbeat(self.id, held), lane="heartbeat")
        if stale is None:
            # declared lost while we could not reach the database: our runs were crashed
            log.error("worker %s was declared lost; stopping its runs, registering anew", self.id)
            self._stop_all(_LEASE_LOST)
            self.id = _new_worker_id()
            await self._register()
            return
        self._renewed_at = sent_at
        for attempt_id in stale:
            attempt = self._running.get(attempt_id)
            if attempt is not None:
                self._stop_run(attempt.ctx.run_id)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                # a partition can swallow the call without an error: give up on it (and
                # on the claim lock) rather than wait for TCP to notice, minutes later
                await asyncio.wait_for(self._check_current(), timeout=self.lease_timeout)
            except (psycopg.Error, TimeoutError):
                log.warning("heartbeat failed", exc_info=True)

    async def _fence(self) -> None:
        """Self-fencing, on the clock alone (a hung heartbeat reports nothing): once the
        lease may have lapsed, maintenance will crash this worker's runs, so stop them."""
        assert self._loop is not None
        lapsed_since: float | None = None
        while True:
            await asyncio.sleep(min(self.heartbeat_interval, 0.5))
            if self._loop.time() - self._renewed_at <= self.lease_timeout:
                lapsed_since = None
            elif self._running and lapsed_since != self._renewed_at:
                lapsed_since = self._renewed_at  # once per lapse
                log.error(
                    "lease not renewed for %.0fs; stopping %d runs",
                    self.lease_timeout,
                    len(self._running),
                )
                self._stop_all(_LEASE_LOST)

    async def _tick(self) -> None:
        """Drive time-based transitions; the SQL side lets one caller work at a time."""
        while True:
            try:
                await self.engine.adb.run(_queries.tick())
            except psycopg.Error:
                log.warning("tick failed", exc_info=True)
            await asyncio.sleep(self.tick_interval)


if sys.version_info >= (3, 12):

    def _start_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A run's task, started eagerly: it runs here up to its first wait, and a run
        that never waits finishes here, with no round through the event loop. Measured, a
        worker's CPU a no-op run on Python 3.12: 15-24 us against 26-38 scheduled."""
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name, eager_start=True)

else:

    def _start_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=name)


def _new_worker_id() -> str:
    return f"worker_{uuid.uuid4().hex}"


def _refused(exc: BaseException) -> bool:
    """The database refused the data sent (resending the same will not help). Any other
    error (a connection lost, a read-only server during a failover, a function missing
    mid-upgrade) may pass: outcomes are sent again until their lease runs out."""
    return isinstance(exc, (psycopg.DataError, InvalidArgumentError))


def _completions_json(batch: list[tuple[str, str, str | None]]) -> str:
    return "[" + ",".join(_completion_json(*c) for c in batch) + "]"


def _completion_json(attempt_id: str, output: str, metadata: str | None) -> str:
    # output and metadata are JSON text already, and attempt ids (skiplock.gen_id: a
    # prefix, "_" and hex digits) need no escaping: spliced in, nothing encoded twice
    if metadata is None:
        return f'{{"attempt_id":"{attempt_id}","output":{output}}}'
    return f'{{"attempt_id":"{attempt_id}","output":{output},"metadata":{metadata}}}'


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
