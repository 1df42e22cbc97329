"""Taking work: the claim loop, and starting the attempts it claims.

One coroutine takes work for the whole worker. Each of its calls records the attempts
that finished since the last one and claims runs for the free slots, in one durable
commit, so under load many runs share a commit. Guarantees:

* A claim commits durably before anything it took starts: a claim lost to a server
  crash would leave its run queued while this worker ran it, and the run would run
  twice. Sharing that commit with the completions keeps its cost (a WAL flush) to one
  per round, as a completion needs one anyway.
* No more attempts run than `concurrency`.
* A claim never overlaps a heartbeat (the lease's `claim_lock`, a `ClaimGate`).
* Completions that could not be sent are sent again (they are fenced by attempt), and
  handed to the outcomes' flusher when the loop stops. A completion recorded apart
  (below) is committed on its own, and a claim no longer sees the slots of a limited
  queue it frees until then (the completion's commit wakes the queue's workers).
* A run held back by its queue's rate limit becomes claimable at a time nothing
  announces (no NOTIFY): the claim says when (its last row, computed by the database's
  clock), and the loop sleeps at most until then, so a rate-limited queue runs at its
  limit without polling. Claims of queues without a rate limit carry no such row.

With one loop carrying both, a drain of no-op runs alternates 3-5 ms of database work
and about 2.5 ms of Python a round of 50: nothing overlaps. Two ways to use the worker's
second session (its calls session) for that:

* Completions apart (automatic, while no other worker holds a lease): the claims carry
  no completions, and `_complete_apart` records them on the calls session as they come,
  while the next claim is in the database. The claim's round gets shorter by the
  completion's part and the two run at once in two backends, at the price of a second
  commit. One worker, against two claim lanes (bench/drain_matrix.py, 5 pairs): 1.04x
  at batch 50 and 1.00x at 200 on Python 3.11, 1.15x and 1.00x on 3.12, with 0.88x of
  the database's CPU a job. It sends two realtime notifications a round instead of
  one: a process with 10,000 subscriptions saw updates p99 208 ms late instead of 38
  (bench/RESULTS.md), hence `claim_lanes=1` for a worker feeding that many.
* Two claim lanes (`claim_lanes=2`): two claim loops, each claiming at most half the
  slots a call, the second on the calls session, so that one lane's call is in the
  database while the other lane's attempts run. They pay the fixed cost of a call twice
  as often. The slots a lane's call may fill are reserved before it is sent, so the
  lanes together never start more than `concurrency` attempts, and the lease's
  `ClaimGate` lets claims overlap each other but never a heartbeat.

Either costs CPU that busy cores do not have: two workers on two cores went 0.85x with
two lanes each, their calls overlapping each other's Python already. Hence the default
(`claim_lanes=None`, automatic): completions apart while no other worker holds a lease
(skiplock.peer_workers, counted at start, when a worker registers or stops: NOTIFY
skiplock_workers, and every heartbeat interval), one loop carrying both otherwise;
`claim_lanes=1` or `2` fixes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import psycopg

from ..api.context import Metadata, TaskContext
from ..db import queries as _queries
from ..db.database import refused
from ..errors import SkiplockError
from . import run_logs
from .execution import Executor, start_task
from .faults import checkpoint
from .lease import Lease
from .outcomes import Completion, Outcomes, completions_json
from .report import plural
from .state import RunningAttempt, WorkerState, wait_any
from .tracing import tracing_attempts

if TYPE_CHECKING:
    from ..api.engine import Engine

log = logging.getLogger("skiplock.worker")

POLL_ONLY_MIN_INTERVAL = 0.05
"""Poll-only mode: seconds before the next look for work after a claim found some."""

LANES_FROM = 4
"""The least concurrency for which a worker uses its second session (completions apart,
or two claim lanes)."""

COMPLETE_APART = "complete2"
"""The database lane of completions recorded apart from claims: the calls session."""

LANE_NAMES = ("claim", "claim2")
"""The lanes' database lanes: the claims session, and the calls session (sessions.py),
so that both lanes' calls run at once, in two backends."""


class Claims:
    """The claim loop of one worker (`run`), and the start of what it claims."""

    def __init__(
        self,
        state: WorkerState,
        lease: Lease,
        outcomes: Outcomes,
        executor: Executor,
        engine: Engine,
        *,
        version: str,
        queues: list[str] | None,
        concurrency: int,
        poll_interval: float,
        lanes: int | None = None,
        peer_interval: float = 5.0,
    ) -> None:
        self._state, self._lease, self._outcomes = state, lease, outcomes
        self._executor, self._engine = executor, engine
        self._version, self._queues = version, queues
        self._concurrency, self._poll_interval = concurrency, poll_interval
        # no NOTIFY wakes the loop (a pooled DSN, nothing to LISTEN on): poll adaptively
        self.poll_only = False
        self._reserved = 0  # slots the lanes' calls in flight may fill
        self._lanes = lanes  # None: automatic (see the module's docstring)
        self._peer_interval = peer_interval  # automatic lanes: seconds between counts
        self._halves = False  # two claim lanes, each half the slots (claim_lanes=2)
        # set: the second session is in use (two claim lanes, or completions apart)
        self._second = asyncio.Event()
        self.peers_changed = asyncio.Event()  # a worker registered or stopped: count again

    async def run(self) -> None:
        """Until the worker stops: the claim lanes (see the module's docstring)."""
        one = self.poll_only or self._concurrency < LANES_FROM or self._lanes == 1
        self._halves = not one and self._lanes == 2
        self._use_second(self._halves)
        names = LANE_NAMES if self._halves else LANE_NAMES[:1]
        lanes = [asyncio.create_task(self._lane(name)) for name in names]
        helpers = []  # end when the lanes do
        completer = None
        if not one and self._lanes is None:
            # automatic: completions apart while no other worker holds a lease
            completer = asyncio.create_task(self._complete_apart())
            helpers = [asyncio.create_task(self._watch_peers()), completer]
        try:
            await asyncio.gather(*lanes)
            if completer is not None:  # stopping: its batch in flight is recorded, not cut off
                await completer
        finally:  # one lane failed (or the worker is cancelled): the others end too
            for task in [*lanes, *helpers]:
                task.cancel()
            await asyncio.gather(*lanes, *helpers, return_exceptions=True)

    @property
    def lanes_active(self) -> int:
        """How many sessions the claim loop uses now: 2 with two claim lanes or with the
        completions recorded apart, else 1."""
        return 2 if self._second.is_set() else 1

    def _use_second(self, on: bool) -> None:
        """Use the second session from now on (automatic: completions apart), or not."""
        if on:
            self._second.set()
        else:
            self._second.clear()

    async def _complete_apart(self) -> None:
        """Automatic lanes, while the second session is in use: record the completions
        on it, apart from the claims (which then carry none), as soon as they come,
        whatever finished while a batch was in flight in the next one. Until the worker
        stops (a batch in flight is sent to the end) or the task is cancelled;
        completions taken and not recorded go back to the queue (the outcomes' flusher
        takes over once the claim loop has stopped)."""
        state, outcomes = self._state, self._outcomes
        batch: list[Completion] = []
        try:
            while not state.stopping.is_set():
                if not self._second.is_set():
                    await wait_any(self._second, state.stopping, timeout=self._peer_interval)
                    continue
                outcomes.take(batch)
                if not batch:  # wait for one, or for the stop
                    item = asyncio.ensure_future(outcomes.queue.get())
                    stop = asyncio.ensure_future(state.stopping.wait())
                    await asyncio.wait([item, stop], return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    if not item.done():
                        item.cancel()
                        continue
                    batch.append(item.result())
                    outcomes.take(batch)
                batch = await outcomes.record(batch, lane=COMPLETE_APART)
                if batch:  # fenced and idempotent: sent again after a pause
                    await wait_any(state.stopping, timeout=self._poll_interval)
        finally:
            outcomes.give_back(batch)

    async def _watch_peers(self) -> None:
        """Automatic lanes: count the other workers holding a lease now, when a worker
        registers or stops (`peers_changed`), and every `peer_interval`; completions
        apart while there is none. Until cancelled."""
        db, state = self._engine.adb, self._state
        peers: int | None = None
        while True:
            self.peers_changed.clear()
            try:
                counted = await db.run(_queries.peer_workers(state.id))
            except (psycopg.Error, SkiplockError):
                log.warning("could not count the other workers; lanes unchanged", exc_info=True)
            else:
                if counted != peers and (peers is None or (counted == 0) != (peers == 0)):
                    log.info(
                        "%s",
                        "recording completions apart from claims (no other worker)"
                        if counted == 0
                        else f"claims carry completions ({plural(counted, 'other worker')})",
                    )
                peers = counted
                self._use_second(counted == 0)
            await wait_any(self.peers_changed, timeout=self._peer_interval)

    async def _lane(self, name: str) -> None:
        """One lane: record finished attempts and claim runs for up to its cap of the
        free slots, in one call; start what was claimed; until the worker stops.
        Completions taken and not recorded go back to the outcomes' flusher, however the
        lane ends."""
        done: list[Completion] = []  # taken from the queue, not recorded
        try:
            await self._claim_until_stopped(done, name)
        finally:
            self._outcomes.give_back(done)

    async def _claim_until_stopped(self, done: list[Completion], name: str) -> None:
        state, outcomes, claim_lock = self._state, self._outcomes, self._lease.claim_lock
        stopping, wake, running = state.stopping, state.wake, state.running
        db = self._engine.adb
        task_ids = list(self._engine.tasks)
        idle_wait = self._poll_interval  # poll-only: the wait before the next look
        # at most this many runs a call: two lanes take half the slots each
        cap = -(-self._concurrency // 2) if self._halves else self._concurrency
        while not stopping.is_set():
            free = self._concurrency - len(running) - self._reserved
            limit = max(min(free, cap), 0)
            traced = tracing_attempts()  # then claims bring what the attempts' spans need
            if not self._second.is_set() or self._halves:  # else _complete_apart has them
                outcomes.take(done)
            found = 0
            retry_in: float | None = None  # when a rate-limited run may start
            if free > 0 or done:
                wake.clear()
                self._reserved += limit
                try:
                    if done and (logs := run_logs.pending(self._engine)) is not None:
                        await logs.write_now()  # the attempts' logs go before their outcomes
                    query = _queries.complete_and_claim(
                        completions_json(done) if done else None,
                        state.id,
                        self._version,
                        task_ids,
                        self._queues,
                        limit,
                        traced,
                    )
                    async with claim_lock:
                        rows = await db.run(query, lane=name)
                        if rows and rows[-1]["run_id"] is None:  # no run: a rate's time
                            retry_in = rows.pop()["retry_in"]
                        if done:
                            checkpoint("completed")
                            outcomes.recorded(done)
                            done.clear()
                        found = len(rows)
                        if rows:
                            checkpoint("claimed")
                        self._start(rows, traced)
                except (psycopg.Error, SkiplockError) as exc:
                    # completions are fenced by attempt: sent again in the next round
                    log.exception("claim failed; retrying after the poll interval")
                    if done and refused(exc):
                        done[:] = await outcomes.record_each(done)
                    await wait_any(stopping, timeout=self._poll_interval)
                    continue
                finally:
                    # the slots held for this call: now counted in `running` by _start
                    # (nothing awaited in between), or not taken (it failed)
                    self._reserved -= limit
            if found < min(free, cap) or free <= 0:
                # nothing more to take: sleep until a NOTIFY, a freed slot, the time a
                # rate-limited run may start, or the poll
                timeout = self._poll_interval
                if self.poll_only:
                    # soon after finding work, more is likely: look again in 50 ms, then
                    # back off (doubling) to the poll interval while none comes
                    idle_wait = POLL_ONLY_MIN_INTERVAL if found else min(idle_wait * 2, timeout)
                    timeout = min(idle_wait, timeout)
                if retry_in is not None:
                    timeout = min(timeout, retry_in)
                await wait_any(wake, stopping, timeout=timeout)

    def _start(self, rows: list[dict[str, Any]], traced: bool = False) -> None:
        """Start an attempt for each claimed row, as a task on the loop."""
        state, tasks, execute = self._state, self._engine.tasks, self._executor.execute
        for row in rows:
            task = tasks[row["task_identifier"]]
            ctx = TaskContext(
                run_id=row["run_id"],
                attempt=row["attempt_number"],
                attempt_id=row["attempt_id"],
                task_id=task.id,
                worker_id=state.id,
                metadata=Metadata(None if row["metadata"] == "{}" else json.loads(row["metadata"])),
            )
            attempt = RunningAttempt(
                ctx,
                task,
                row["payload"],
                row["max_duration"],
                resumed=row["resumed"],
                log=row["log"],
            )
            if traced:
                attempt.queue, attempt.trace_context = row["queue"], row["trace_context"]
            state.running[ctx.attempt_id] = attempt
            state.by_run[ctx.run_id] = ctx.attempt_id
            attempt.future = start_task(execute(attempt), f"run {ctx.run_id}")
