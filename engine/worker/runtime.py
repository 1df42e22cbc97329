"""The worker: takes runs from the database and executes their attempts.

One asyncio loop per worker process. `Worker` holds the lifecycle: start-up and
registration, the tasks that run beside the claim loop, signals (from the OS and from
the database's LISTEN connection), draining and stopping. The rest is composed of parts
that share one `WorkerState` (state.py): claims.py takes work, execution.py runs
attempts, outcomes.py records them, lease.py keeps the lease and fences the worker,
faults.py holds the crash points of the fault suite. No transaction is open while user
code runs: every database call is one autocommit function call.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING

import psycopg

from ..db import queries as _queries
from ..db.listener import Listener, Registration
from ..errors import DatabaseUnreachableError, InvalidArgumentError
from . import memory as _memory
from . import sessions as _sessions
from .alerts import AlertDelivery
from .claims import Claims
from .execution import Executor
from .lease import Lease
from .outcomes import Outcomes
from .report import plural
from .run_logs import RunLogWriter
from .state import SHUTDOWN, WorkerState, new_worker_id, wait_any
from .threads import DaemonThreadPool
from .timers import Timers
from .tracing import install as _trace_attempts

if TYPE_CHECKING:
    from ..api.engine import Engine
    from .metrics import WorkerMetrics

log = logging.getLogger("skiplock.worker")

DEFAULT_VERSION = "dev"
_START_UP_BACKOFF, _START_UP_BACKOFF_MAX = 0.5, 5.0  # seconds between tries to register


class Worker:
    """Executes runs of its engine's tasks. `run()` blocks until SIGTERM or SIGINT (or
    `stop()`), then stops taking work and lets running attempts finish for up to
    `shutdown_grace` seconds; attempts still running then are failed as retryable.

    The worker holds its runs under a lease of `lease_timeout` seconds, renewed every
    `heartbeat_interval`. If the lease lapses (process killed, host lost, partition),
    maintenance crashes its started runs and requeues the rest; a worker that cannot
    renew its lease for that long stops its own runs first (self-fencing).

    A worker started while the database cannot be reached waits for it (see `_start_up`);
    with `migrate=True` it applies the migrations first (`skiplock worker --migrate`). On a
    database never migrated it raises `SchemaNotMigratedError` at start-up.

    `freeze_gc=True` (what `skiplock worker` sets) moves everything alive at start-up out
    of the garbage collector's sight, for a process that is nothing but the worker.

    `metrics_port` serves the worker's Prometheus metrics on that port of `metrics_host`
    while it runs (worker/metrics.py; needs `skiplock[metrics]`), with the database-wide
    figures too if `metrics_database`. A port taken fails `run()` at once.

    `claim_lanes` (default None, automatic) says how the claim loop uses the worker's
    second session (engine/worker/claims.py). Automatic: while no other worker holds a
    lease, it records completions there, apart from the claims, so that the two overlap;
    beside other workers, the claims carry the completions (one commit a round), as
    their calls overlap each other's already. `claim_lanes=1` always carries them (one
    realtime notification a round, not two: for a worker feeding many subscribers);
    `claim_lanes=2` claims in two lanes, each half the slots, on the two sessions.

    The settings are read when the worker is made: change them on a new `Worker`."""

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
        migrate: bool = False,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        metrics_database: bool = False,
        claim_lanes: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, got {concurrency}")
        if claim_lanes not in (None, 1, 2):
            raise InvalidArgumentError(
                f"claim_lanes must be 1, 2 or None (automatic), got {claim_lanes}"
            )
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
        self.tick_interval = tick_interval
        self.shutdown_grace = shutdown_grace
        self.metadata_interval = metadata_interval
        self.default_ttl = default_ttl  # for tasks without a ttl (`skiplock dev`: 10 minutes)
        # for a process that is the worker (`skiplock worker` sets it): see run_async
        self.freeze_gc = freeze_gc
        self.migrate = migrate  # apply the migrations at start-up, before registering
        self._state = state = WorkerState()
        self._threads = DaemonThreadPool(concurrency)
        self._lease = Lease(
            state,
            engine,
            heartbeat_interval=heartbeat_interval,
            lease_timeout=lease_timeout,
            register=self._register,
        )
        self._outcomes = Outcomes(state, self._lease, engine)
        self._timers = Timers(engine, tick_interval)
        self._executor = Executor(
            state,
            self._outcomes,
            engine,
            self._threads,
            metadata_interval=metadata_interval,
            shutdown_grace=shutdown_grace,
            on_sleep=self._timers.due_in,
        )
        self._claims = Claims(
            state,
            self._lease,
            self._outcomes,
            self._executor,
            engine,
            version=self.version,
            queues=self.queues,
            concurrency=concurrency,
            poll_interval=poll_interval,
            lanes=claim_lanes,
            peer_interval=heartbeat_interval,
        )
        # where LISTEN goes, or poll-only: known once started (see _start_up)
        self._listen_dsn: str | None = None
        self._poll_only = False
        self._metrics: WorkerMetrics | None = None
        if metrics_port is not None:
            # imported only when asked for: a SkiplockError here without the extra
            from .metrics import WorkerMetrics

            self._metrics = WorkerMetrics(
                state, engine, port=metrics_port, host=metrics_host, database=metrics_database
            )
            self._outcomes.counted = self._metrics.finished
        self._loop: asyncio.AbstractEventLoop | None = None  # while and after running
        self._stop_requested = threading.Event()
        self._hurry_requested = threading.Event()  # stop(now=True) before the loop ran
        self._hurry = asyncio.Event()  # set: interrupt the running attempts now

    @property
    def id(self) -> str:
        """The worker's id; a worker that registers anew (see `_start_up`, and the lease's
        being declared lost) takes a new one."""
        return self._state.id

    @property
    def claim_lanes_active(self) -> int:
        """How many sessions the claim loop uses now: 2 (completions apart, or two claim
        lanes) or 1 (see `claim_lanes`)."""
        return self._claims.lanes_active

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (when called in the main thread) or `stop()`."""
        asyncio.run(
            self.run_async(install_signals=threading.current_thread() is threading.main_thread())
        )

    def stop(self, *, now: bool = False) -> None:
        """Ask the worker to drain and stop; safe from any thread or signal handler. With
        `now`, it does not wait out the grace period: running attempts are interrupted at
        once (their runs queued again to continue elsewhere, see `_drain`)."""
        self._stop_requested.set()
        if now:
            self._hurry_requested.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_stop, now)

    def _on_stop(self, now: bool) -> None:
        self._state.stopping.set()
        if now:
            self._hurry.set()

    def _on_signal(self) -> None:
        """SIGTERM/SIGINT: the first one drains, a second one stops at once."""
        if not self._state.stopping.is_set():
            log.info(
                "stopping: draining for up to %gs (a second signal stops at once)",
                self.shutdown_grace,
            )
            self._on_stop(False)
        elif not self._hurry.is_set():
            log.warning("second signal: interrupting the running attempts now")
            self._on_stop(True)

    async def run_async(self, *, install_signals: bool = False) -> None:
        if self._metrics is None:
            await self._run(install_signals)
            return
        self._metrics.start(asyncio.get_running_loop())  # before anything: the port taken?
        try:
            await self._run(install_signals)
        finally:
            self._metrics.stop()

    async def _run(self, install_signals: bool) -> None:
        state = self._state
        state.open(asyncio.get_running_loop())
        self._outcomes.open()
        self._loop = state.loop  # from here on, stop() reaches the loop
        self._hurry = asyncio.Event()
        if self._stop_requested.is_set():
            self._on_stop(self._hurry_requested.is_set())
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                state.loop.add_signal_handler(sig, self._on_signal)
        db = self.engine.adb
        await _sessions.confine(self.engine)  # at most 3 connections: see sessions.py
        started = False
        try:
            started = await self._start_up()
        finally:  # stopped, or raised (an unmigrated database, a failed migration)
            if not started:
                _sessions.release(self.engine)
                self._threads.shutdown()
                await db.close()
        if not started:
            return
        _trace_attempts()  # spans for attempts, if the application set a TracerProvider
        for task in self.engine.tasks.values():
            task.warm()  # typed tasks' pydantic adapters: at start-up, not in a first run
        if self.freeze_gc:
            # Everything alive now (modules, the app, pydantic's schemas: some 10^5
            # objects) lives as long as the process: out of the collector's sight, a full
            # collection takes well under a millisecond instead of 15-25 ms, a pause that
            # every run waiting to start would sit through. Not for a worker inside a
            # bigger process: its objects alive now would never be collected either.
            gc.collect()
            gc.freeze()
            _memory.trim()  # the imports' scratch: 0.9 MB
        listener = None if self._poll_only else Listener.for_dsn(self._listen_dsn or "")
        registrations = self._listen(listener) if listener is not None else []
        run_logs = RunLogWriter.acquire(self.engine)
        background = [
            asyncio.create_task(self._lease.heartbeat(), name="skiplock-heartbeat"),
            asyncio.create_task(self._lease.fence(), name="skiplock-fence"),
            asyncio.create_task(self._timers.run(), name="skiplock-tick"),
            asyncio.create_task(self._executor.metadata_flusher(), name="skiplock-metadata"),
            asyncio.create_task(AlertDelivery(state, self.engine).run(), name="skiplock-alerts"),
            asyncio.create_task(_memory.trim_when_idle(state), name="skiplock-trim"),
        ]
        flusher: asyncio.Task[None] | None = None
        try:
            await self._claims.run()
            # from here on attempts only finish: their outcomes are recorded on their own
            flusher = asyncio.create_task(self._outcomes.flush(), name="skiplock-flush")
            await self._drain()
        finally:
            if flusher is None:
                flusher = asyncio.create_task(self._outcomes.flush(), name="skiplock-flush")
            for reg in registrations:
                assert listener is not None
                listener.remove(reg)
            await self._outcomes.wait_recorded()
            flusher.cancel()
            for t in background:
                t.cancel()
            await asyncio.gather(flusher, *background, return_exceptions=True)
            await run_logs.release()  # what the last attempts logged late
            try:
                await db.run(_queries.stop_worker(state.id))
            finally:
                _sessions.release(self.engine)
                self._threads.shutdown()
                await db.close()
            log.info("worker %s stopped", state.id)

    async def _start_up(self) -> bool:
        """Register, and take a first heartbeat before any claim (its session compiles the
        heartbeat's functions now, not later while a claim waits for it: the claim lock).
        While the database cannot be reached (started alongside the worker, restarting,
        failing over), try again with backoff up to 5 s, until stopped: False then; each
        failure logs one line (the address, where it came from, why). Each try registers
        under a new id: one whose reply was lost may have committed, and its row lapses
        with its lease, holding no runs. With `migrate`, the migrations are applied first,
        in the same loop. A database never migrated raises `SchemaNotMigratedError`."""
        state = self._state
        delay = _START_UP_BACKOFF
        migrated = not self.migrate
        while not state.stopping.is_set():
            try:
                if self._listen_dsn is None and not self._poll_only:
                    # pooled or not (a detection connects: in a thread), and so where to
                    # LISTEN, or whether to poll
                    self._listen_dsn = await asyncio.to_thread(lambda: self.engine.listen_dsn)
                    self._poll_only = self._claims.poll_only = self._listen_dsn is None
                    if self._poll_only:
                        self._lease.cancel_poll = self.poll_interval
                        log.info(
                            "poll-only (a pooled DSN, no listen DSN): polling for work, and "
                            "for cancels while running attempts, every %gs",
                            self.poll_interval,
                        )
                if not migrated:
                    # blocking: in a thread, so that SIGTERM is still heard meanwhile
                    applied = await asyncio.to_thread(self.engine.migrate)
                    log.info("migrations: %s applied", plural(len(applied), "file"))
                    migrated = True
                await self._lease.register()
                await self._lease.check_current()
                return True
            except DatabaseUnreachableError as exc:  # the first contact failed
                log.warning("%s; trying again in %.1fs", exc, delay)
            except psycopg.OperationalError as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning("database unreachable (%s); trying again in %.1fs", reason, delay)
            await wait_any(state.stopping, timeout=delay)
            delay = min(delay * 2, _START_UP_BACKOFF_MAX)
            state.id = new_worker_id()
        return False

    async def _register(self) -> None:
        """Register this worker (under `id`) and a deployment of its tasks at `version`.
        Called through the lease, whose lease this starts."""
        tasks = [t.deployment_entry() for t in self.engine.tasks.values()]
        for entry in tasks:
            if entry["ttl"] is None:
                entry["ttl"] = self.default_ttl
        await self.engine.adb.run(
            _queries.register_worker(
                self._state.id,
                self.version,
                socket.gethostname(),
                os.getpid(),
                self.queues,
                self.concurrency,
                tasks,
                self.lease_timeout,
            )
        )
        if self._poll_only:
            await self.engine.adb.run(_queries.set_worker_polls(self._state.id))
        log.info(
            "worker %s started: version %s, %s",
            self.id,
            self.version,
            plural(len(tasks), "task"),
        )

    async def _drain(self) -> None:
        """Let running attempts finish within the grace period (or until `stop(now=True)`
        or a second signal). Then every attempt still running is interrupted: its run goes
        back to the queue at once, to continue that attempt on another worker without
        using its retry budget, and the log names it. Async attempts are cancelled; a
        thread cannot be, and its late outcome is dropped (the process does not wait for
        it: the pool's threads are daemons)."""
        running = self._state.running
        pending = [a.future for a in running.values() if a.future is not None]
        if not pending:
            return
        if not self._hurry.is_set():
            log.info(
                "waiting up to %gs for %s",
                self.shutdown_grace,
                plural(len(pending), "running attempt"),
            )
            # whichever comes first: all finished, the grace period over, a hurry
            finished = asyncio.ensure_future(asyncio.wait(pending))
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait(
                [finished, hurry], timeout=self.shutdown_grace, return_when=asyncio.FIRST_COMPLETED
            )
            finished.cancel()  # the attempts go on: asyncio.wait does not cancel them
            hurry.cancel()
        interrupted = []
        for attempt in list(running.values()):
            attempt.ctx.request_stop(SHUTDOWN)
            if attempt.task.is_async and attempt.future is not None:
                attempt.future.cancel()  # Executor.execute interrupts it
                interrupted.append(attempt.future)
            else:
                await self._executor.interrupt(attempt.ctx)
        if interrupted:
            await asyncio.wait(interrupted, timeout=self.lease_timeout)

    # -- signals from the database ----------------------------------------------------------

    def _listen(self, listener: Listener) -> list[Registration]:
        """Wake-ups and cancels from the process's shared LISTEN connection. Each read's
        notifications reach the loop as one call (a burst of triggers is one wake-up).
        Not in poll-only mode: the claim loop polls, and the heartbeat's reply names the
        attempts canceled meanwhile."""
        state = self._state
        loop = state.loop

        def on_wake(payloads: list[str] | None, _conn: object) -> None:
            # None: (re)connected, so anything may have been missed: look, and renew
            if payloads is None or any(
                not p or self.queues is None or p in self.queues for p in payloads
            ):
                loop.call_soon_threadsafe(self._on_wake, payloads is None)

        def on_cancel(payloads: list[str] | None, _conn: object) -> None:
            for run_id in payloads or ():
                loop.call_soon_threadsafe(state.stop_run, run_id)

        def on_workers(payloads: list[str] | None, _conn: object) -> None:
            # another worker registered or stopped: the automatic claim lanes count again
            if payloads is None or any(p != state.id for p in payloads):
                loop.call_soon_threadsafe(self._claims.peers_changed.set)

        return [
            listener.add("skiplock_wake", on_wake),
            listener.add("skiplock_cancel", on_cancel),
            listener.add("skiplock_workers", on_workers),
        ]

    def _on_wake(self, reconnected: bool) -> None:
        self._state.wake.set()
        if reconnected:
            self._lease.check_soon()
