"""What the parts of one worker share: its id, the attempts it holds, its loop's events.

A worker is composed of parts with one concern each: runtime.py (lifecycle), claims.py
(taking work), execution.py (running attempts), outcomes.py (recording them), lease.py
(heartbeat and self-fencing). They share one `WorkerState`, by explicit reference, and
touch it on the event loop's thread only (the database's signals reach the loop through
`call_soon_threadsafe`), so nothing in it needs a lock.

An attempt is held by the worker from its claim until its outcome is recorded: in
`running` while its task function runs, then in `unrecorded` while its outcome waits
for the database. Every heartbeat lists both, and the database may release any run of
this worker that it does not list.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api.context import TaskContext
    from ..api.tasks import Task

# why an attempt was asked to stop (TaskContext.stop_reason)
CANCELED = "canceled"
TIMED_OUT = "max_duration exceeded"
SHUTDOWN = "worker shut down"
LEASE_LOST = "worker lease lost"
SETTLED = (CANCELED, LEASE_LOST)  # stop reasons after which the database owns the run


@dataclass
class RunningAttempt:
    ctx: TaskContext
    task: Task[Any, Any]
    payload: str  # JSON text
    max_duration: float | None
    future: asyncio.Task[None] | None = None
    metadata_flushed: int = 0  # the metadata version last written
    resumed: bool = False  # continues after a wait (else a fresh attempt)
    log: list[dict[str, Any]] | None = None  # a resumed attempt's run log, from its claim
    parsed: Any = None  # the payload, as the task's type, once parsed (for hooks)
    output: Any = None  # what the task function returned (for on_success)
    execution: Any = None  # its replay.Execution (what it waits on, for on_wait)
    # a worker that traces (tracing.py) claims these too: the run's queue, and the trace
    # context stored with it (JSON text; None if its trigger was not traced)
    queue: str | None = None
    trace_context: str | None = None


class WorkerState:
    """The state the worker's parts share. `loop`, `stopping` and `wake` exist from
    `open()` on, which the worker calls first thing in `run_async`."""

    loop: asyncio.AbstractEventLoop
    stopping: asyncio.Event  # set: stop taking work, drain, stop
    wake: asyncio.Event  # set: look for work now (a NOTIFY, a freed slot, a retry due)

    def __init__(self) -> None:
        self.id = new_worker_id()  # a new one on each registration
        self.running: dict[str, RunningAttempt] = {}  # by attempt id
        self.by_run: dict[str, str] = {}  # run id -> attempt id
        # finished attempts whose outcome is queued for the database but not yet recorded:
        # the worker still holds them, and says so in every heartbeat
        self.unrecorded: set[str] = set()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stopping, self.wake = asyncio.Event(), asyncio.Event()

    def stop_run(self, run_id: str, reason: str = CANCELED) -> None:
        """Ask the run's attempt, if this worker runs it, to stop; an async one is
        cancelled too (a thread cannot be: it sees `ctx.stop_reason`)."""
        attempt_id = self.by_run.get(run_id)
        attempt = self.running.get(attempt_id) if attempt_id else None
        if attempt is None:
            return
        attempt.ctx.request_stop(reason)
        if attempt.task.is_async and attempt.future is not None:
            attempt.future.cancel()

    def stop_all(self, reason: str) -> None:
        for attempt in list(self.running.values()):
            self.stop_run(attempt.ctx.run_id, reason)


def new_worker_id() -> str:
    return f"worker_{uuid.uuid4().hex}"


async def wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Return once any of `events` is set, or after `timeout` seconds."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
