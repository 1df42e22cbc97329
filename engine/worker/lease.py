"""The worker's lease: heartbeat, self-fencing, being declared lost.

The worker holds its runs under a lease of `lease_timeout` seconds, which registering
starts and every heartbeat renews. If it lapses (process killed, host lost, partition),
maintenance crashes the worker's started runs and requeues the rest. Guarantees:

* A claim and a heartbeat never overlap (`claim_lock`): a heartbeat lists every attempt
  held, so the database may release runs of this worker that it does not list.
* `renewed_at` never outlasts the database's idea of the lease: it is the loop time
  just before the heartbeat was sent.
* Self-fencing: once the lease may have lapsed, by the clock alone (a hung heartbeat
  reports nothing), the worker stops its running attempts itself.
* A worker declared lost (the database crashed its runs while it could not be reached)
  stops its runs and registers anew, under a new id.
* A heartbeat reports the attempts the database no longer considers current
  (canceled, crashed, timed out): they are stopped. In poll-only mode that is how a
  cancel arrives, so while attempts run the heartbeat comes every poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import psycopg

from ..db import queries as _queries
from .report import plural
from .state import LEASE_LOST, WorkerState, new_worker_id

if TYPE_CHECKING:
    from ..api.engine import Engine

log = logging.getLogger("skiplock.worker")


class ClaimGate:
    """Claims and heartbeats never overlap; claims may overlap each other (the claim
    lanes, engine/worker/claims.py). `async with gate:` for a claim, `async with
    gate.alone():` for a heartbeat, which waits for the claims in flight and holds back
    new ones until it is done."""

    def __init__(self) -> None:
        self._turn = asyncio.Lock()  # held by a heartbeat, and briefly by a claim entering
        self._claims = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> None:
        async with self._turn:
            self._claims += 1
            self._idle.clear()

    async def __aexit__(self, *exc: object) -> None:
        self._claims -= 1
        if self._claims == 0:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._turn:
            await self._idle.wait()
            yield


class Lease:
    """The worker's lease: `heartbeat` and `fence` run beside the claim loop."""

    def __init__(
        self,
        state: WorkerState,
        engine: Engine,
        *,
        heartbeat_interval: float,
        lease_timeout: float,
        register: Callable[[], Awaitable[None]],
    ) -> None:
        self._state, self._engine = state, engine
        self._heartbeat_interval, self.lease_timeout = heartbeat_interval, lease_timeout
        self._register = register  # the registration itself (the worker's row, its tasks)
        self.renewed_at = 0.0  # loop time of the last successful heartbeat
        # a claim and a heartbeat never overlap: a heartbeat lists every attempt held, so
        # the database may release runs of this worker it does not list (see heartbeat)
        self.claim_lock = ClaimGate()
        self._background: set[asyncio.Future[None]] = set()  # fire-and-forget checks
        # poll-only: seconds between heartbeats while attempts run (see heartbeat)
        self.cancel_poll: float | None = None

    def lapsed(self) -> bool:
        """The lease may have lapsed: maintenance owns this worker's runs."""
        return self._state.loop.time() - self.renewed_at > self.lease_timeout

    async def register(self) -> None:
        """Register the worker under its current id: that starts the lease."""
        await self._register()
        self.renewed_at = self._state.loop.time()

    async def check_current(self) -> None:
        """Renew the lease, and stop attempts the database no longer considers current."""
        state = self._state
        async with self.claim_lock.alone():
            held = [*state.running, *state.unrecorded]
            # the lease is renewed at some moment after this: counting from here, the
            # worker's idea of its lease never outlasts the database's
            sent_at = state.loop.time()
            stale = await self._engine.adb.run(_queries.heartbeat(state.id, held), lane="heartbeat")
        if stale is None:
            # declared lost while we could not reach the database: our runs were crashed
            log.error("worker %s was declared lost; stopping its runs, registering anew", state.id)
            state.stop_all(LEASE_LOST)
            state.id = new_worker_id()
            await self.register()
            return
        self.renewed_at = sent_at
        for attempt_id in stale:
            attempt = state.running.get(attempt_id)
            if attempt is not None:
                state.stop_run(attempt.ctx.run_id)

    def check_soon(self) -> None:
        """`check_current` in the background (after the LISTEN connection reconnected:
        anything may have been missed); a failure is logged."""
        task = asyncio.ensure_future(self._check_current_logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _check_current_logged(self) -> None:
        try:
            await self.check_current()
        except psycopg.Error:
            log.warning("could not renew the lease after reconnecting", exc_info=True)

    async def heartbeat(self) -> None:
        """Renew the lease every `heartbeat_interval`, until cancelled. With `cancel_poll`
        (poll-only mode: no LISTEN brings cancels), every `cancel_poll` seconds while
        attempts run: the reply names the attempts canceled meanwhile."""
        loop = self._state.loop
        last = loop.time()
        while True:
            if self.cancel_poll is None:
                await asyncio.sleep(self._heartbeat_interval)
            else:
                await asyncio.sleep(min(self.cancel_poll, self._heartbeat_interval))
                if not self._state.running and loop.time() - last < self._heartbeat_interval:
                    continue
            last = loop.time()
            try:
                # a partition can swallow the call without an error: give up on it (and
                # on the claim lock) rather than wait for TCP to notice, minutes later
                await asyncio.wait_for(self.check_current(), timeout=self.lease_timeout)
            except (psycopg.Error, TimeoutError):
                log.warning("heartbeat failed", exc_info=True)

    async def fence(self) -> None:
        """Self-fencing, on the clock alone (a hung heartbeat reports nothing): once the
        lease may have lapsed, maintenance will crash this worker's runs, so stop them."""
        state = self._state
        lapsed_since: float | None = None
        while True:
            await asyncio.sleep(min(self._heartbeat_interval, 0.5))
            if state.loop.time() - self.renewed_at <= self.lease_timeout:
                lapsed_since = None
            elif state.running and lapsed_since != self.renewed_at:
                lapsed_since = self.renewed_at  # once per lapse
                log.error(
                    "lease not renewed for %.0fs; stopping %s",
                    self.lease_timeout,
                    plural(len(state.running), "run"),
                )
                state.stop_all(LEASE_LOST)
