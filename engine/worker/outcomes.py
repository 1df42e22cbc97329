"""Recording finished attempts: the completions queue, batches, the one-by-one fallback.

A successful attempt's outcome is queued (`put`). While the worker takes work, the claim
loop sends whatever is queued with its next claim, in one commit (claims.py); once it
stops, `flush` sends batches on their own. A failed attempt is recorded at once (`fail`).

Guarantees:

* An attempt stays held (in `WorkerState.unrecorded`, so in every heartbeat) until its
  outcome is recorded.
* Every write is fenced by attempt and idempotent: a batch is sent again until the
  database takes it (or refuses its data), a failure until it is recorded or the lease
  has lapsed (maintenance owns the run then).
* A batch whose data the database refuses is recorded one by one (`record_each`), so
  an outcome it cannot store holds up no other: that one fails its attempt instead.
* What attempts logged to their runs and the worker still holds is written before an
  outcome is sent (run_logs.py; the claim loop does the same before its claims).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from ..db import queries as _queries
from ..db.database import Query, refused
from ..errors import InvalidArgumentError, SkiplockError
from . import report, run_logs
from .faults import checkpoint
from .lease import Lease
from .refusals import each_alone
from .state import WorkerState

if TYPE_CHECKING:
    from ..api.context import TaskContext
    from ..api.engine import Engine
    from ..models import RunStatus

log = logging.getLogger("skiplock.worker")

# attempt id, output JSON, metadata JSON or None; for its outcome line, the attempt's
# context (None: no line) and how long its task function ran, in seconds
Completion = tuple[str, str, "str | None", "TaskContext | None", float]
MAX_BATCH = 1000  # completions per call


class Outcomes:
    """The worker's finished attempts on their way to the database."""

    queue: asyncio.Queue[Completion]  # from `open()` on: queued, not yet taken for sending

    def __init__(self, state: WorkerState, lease: Lease, engine: Engine) -> None:
        self._state, self._lease, self._engine = state, lease, engine
        self._unrecorded = state.unrecorded
        # called with (task id, the run's new status) for each outcome recorded, when the
        # worker counts them (its metrics: worker/metrics.py); None costs nothing
        self.counted: Callable[[str, str], None] | None = None

    def open(self) -> None:
        self.queue = asyncio.Queue()

    def put(
        self,
        attempt_id: str,
        output: str,
        metadata: str | None,
        ctx: TaskContext | None,
        seconds: float,
    ) -> None:
        """Queue a successful attempt's outcome; the worker holds it until recorded. Once
        it is, a line says so, unless `ctx` is None."""
        self._unrecorded.add(attempt_id)
        self.queue.put_nowait((attempt_id, output, metadata, ctx, seconds))

    def take(self, batch: list[Completion]) -> None:
        """Move queued completions into `batch`, up to 1,000 in all."""
        queue = self.queue
        while not queue.empty() and len(batch) < MAX_BATCH:
            batch.append(queue.get_nowait())

    def give_back(self, batch: list[Completion]) -> None:
        """Queue taken completions again, for `flush` (counted once, not twice)."""
        for item in batch:
            self.queue.put_nowait(item)
            self.queue.task_done()

    def recorded(self, batch: list[Completion], *, lines: bool = True) -> None:
        """The database has recorded `batch`: the worker no longer holds its attempts.
        Each gets its outcome line (if `lines` and the logger wants them) and is counted
        COMPLETED (`lines` False: recorded as failures instead, `record_each`)."""
        for item in batch:
            self._unrecorded.discard(item[0])
            self.queue.task_done()
        if lines and self.counted is not None:
            for _, _, _, ctx, _ in batch:
                if ctx is not None:
                    self.counted(ctx.task_id, "COMPLETED")
        if lines and report.enabled():  # once per batch: nothing is built when it is not
            for _, _, _, ctx, seconds in batch:
                if ctx is not None:
                    report.completed(ctx, seconds)

    async def flush(self) -> None:
        """Once the fetch loop is done: send completions in batches, whatever finished
        while the last batch was in flight in the next one. Runs until cancelled."""
        while True:
            batch = [await self.queue.get()]
            self.take(batch)
            while batch := await self.record(batch):
                await asyncio.sleep(1.0)  # fenced and idempotent: resent once it is back

    async def record(self, batch: list[Completion], lane: str = "complete") -> list[Completion]:
        """Send `batch` alone (`send`) and mark it recorded; return what is left to send
        again: nothing, or, when the call failed, the batch (any error but a refusal) or
        the outcomes `record_each` could not record one by one (a refusal)."""
        try:
            await self.send(batch, lane)
        except (psycopg.Error, SkiplockError) as exc:
            log.exception("could not record %s; retrying", report.plural(len(batch), "completion"))
            return await self.record_each(batch) if refused(exc) else batch
        checkpoint("completed")
        self.recorded(batch)
        return []

    async def wait_recorded(self) -> None:
        """Wait for `flush` to record every finished attempt, but not past the lease:
        once it lapses (the database unreachable all along) maintenance crashes those runs
        and would fence the late results anyway, so SIGTERM must not hang on them."""
        timeout = self._lease.lease_timeout
        try:
            await asyncio.wait_for(self.queue.join(), timeout=timeout)
        except TimeoutError:
            left = self.queue.qsize()
            log.error(
                "%s could not be recorded within the lease (%.0fs); %s will be marked CRASHED",
                report.plural(left, "finished attempt"),
                timeout,
                "its run" if left == 1 else "their runs",
            )

    async def send(self, batch: list[Completion], lane: str = "complete") -> None:
        """Record the outcomes in `batch` alone (no claim), on the lane of their own."""
        await self._logs_first()
        await self._engine.adb.run(_queries.complete_attempts(completions_json(batch)), lane=lane)

    async def record_each(self, batch: list[Completion]) -> list[Completion]:
        """The database refused the data of a batch of outcomes: record them one by one,
        so that one it cannot store holds up no other. An outcome refused on its own fails
        its attempt (SYSTEM_FAILURE) instead; if even that is refused, the worker lets the
        attempt go, and the database releases it as a lost attempt at the next heartbeat.
        Returns the outcomes left for a later try (any other error)."""
        left: list[Completion] = []
        async for item, exc in each_alone(batch, self.send, (psycopg.Error, SkiplockError)):
            attempt_id, _, _, ctx, seconds = item
            if exc is not None:
                if not refused(exc):
                    left.append(item)
                    continue
                log.error("the outcome of attempt %s was refused: %s", attempt_id, exc)
                refusal = InvalidArgumentError(f"the outcome could not be stored: {exc}")
                query = _queries.fail_attempt(
                    attempt_id, error_json(refusal), "SYSTEM_FAILURE", None
                )
                try:
                    status = await self._engine.adb.run(query)
                except (psycopg.Error, SkiplockError) as again:
                    if not refused(again):
                        left.append(item)
                        continue
                    log.error("gave up on attempt %s: %s", attempt_id, again)
                else:
                    if ctx is not None and report.enabled():
                        report.failed(ctx, _value(status), refusal, None, seconds)
                    if ctx is not None:
                        self._count(ctx, status)
                self.recorded([item], lines=False)
                continue
            self.recorded([item])
        return left

    async def fail(
        self,
        ctx: TaskContext,
        status: str,
        exc: BaseException,
        retry_delay: float | None,
        seconds: float | None = None,
    ) -> RunStatus | None:
        """Record the attempt as failed with `status` (retried after `retry_delay` seconds
        if not None and attempts are left); wake the claim loop when the retry is due.
        Its outcome line says what the database made of it (and that it took `seconds`).
        Returns the run's new status (None: the attempt was no longer current)."""
        query = _queries.fail_attempt(ctx.attempt_id, error_json(exc), status, retry_delay)
        await self._logs_first()
        recorded, new_status = await self._send_fenced(query, ctx, "failed attempt")
        if not recorded:
            return None
        if report.enabled():
            report.failed(ctx, _value(new_status), exc, retry_delay, seconds)
        self._count(ctx, new_status)
        if new_status is not None and new_status.value == "QUEUED" and retry_delay:
            self._state.loop.call_later(retry_delay, self._state.wake.set)
        return new_status

    async def interrupt(self, ctx: TaskContext, grace: float, seconds: float | None) -> None:
        """The worker shuts down before the attempt finished: its run goes back to the
        queue at once, and its attempt is continued there without counting against the
        retry budget (FAILED only after many interruptions: skiplock.interrupt_attempt).
        Logged at WARNING, naming the run, whatever the outcome lines' setting."""
        error = {
            "type": "WorkerShutdown",
            "message": f"worker {self._state.id} shut down before the attempt finished "
            f"(grace period {grace:g}s)",
        }
        query = _queries.interrupt_attempt(ctx.attempt_id, error)
        await self._logs_first()
        recorded, new_status = await self._send_fenced(query, ctx, "interrupted attempt")
        if not recorded or new_status is None:
            return  # lapsed, or no longer current (canceled meanwhile): nothing to say
        self._count(ctx, new_status)
        took = "" if seconds is None else f" after {report.duration(seconds)}"
        if new_status.value == "QUEUED":
            log.warning(
                "interrupted %s run %s attempt %d%s: queued again, to continue elsewhere",
                ctx.task_id,
                ctx.run_id,
                ctx.attempt,
                took,
            )
        else:
            log.warning(
                "interrupted %s run %s attempt %d%s: %s, interrupted too many times",
                ctx.task_id,
                ctx.run_id,
                ctx.attempt,
                took,
                new_status.value,
            )

    async def _logs_first(self) -> None:
        """The run logs held go to the database before an outcome does (run_logs.py)."""
        logs = run_logs.pending(self._engine)
        if logs is not None:
            await logs.write_now()

    def _count(self, ctx: TaskContext, status: RunStatus | None) -> None:
        if self.counted is not None and status is not None:
            self.counted(ctx.task_id, status.value)

    async def _send_fenced(
        self, query: Query[RunStatus | None], ctx: TaskContext, what: str
    ) -> tuple[bool, RunStatus | None]:
        """Send an attempt's fenced write until it is recorded: (True, the run's new
        status), or (False, None) once the lease has lapsed (maintenance owns the run
        then). Resending is safe: it is fenced by attempt, and the attempt stays in hand
        (and in heartbeats) until it is recorded."""
        pause = 0.2
        while True:
            try:
                return True, await self._engine.adb.run(query)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if self._lease.lapsed():
                    log.error("gave up recording %s %s: lease lapsed", what, ctx.attempt_id)
                    return False, None
                log.warning("could not record %s %s; retrying", what, ctx.attempt_id)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)


def _value(status: RunStatus | None) -> str | None:
    return None if status is None else status.value


def error_json(exc: BaseException) -> dict[str, Any]:
    # a NUL character, which jsonb cannot store, is written as the text \x00
    return {
        "type": type(exc).__name__,
        "message": str(exc).replace("\x00", "\\x00"),
        "stack": report.user_stack(exc).replace("\x00", "\\x00"),
    }


def completions_json(batch: list[Completion]) -> str:
    return "[" + ",".join(_completion_json(c[0], c[1], c[2]) for c in batch) + "]"


def _completion_json(attempt_id: str, output: str, metadata: str | None) -> str:
    # output and metadata are JSON text already, and attempt ids (skiplock.gen_id: a
    # prefix, "_" and hex digits) need no escaping: spliced in, nothing encoded twice
    if metadata is None:
        return f'{{"attempt_id":"{attempt_id}","output":{output}}}'
    return f'{{"attempt_id":"{attempt_id}","output":{output},"metadata":{metadata}}}'
