"""Time-based transitions: the maintenance tick, and sleeps that end at their time.

`skiplock.tick()` does all maintenance once a `tick_interval`. Waking a sleeping run on
the tick alone made a 2 s sleep last 2 to 3.2 s. So between ticks the worker calls
`skiplock.wake_due()` at the moment the next DATETIME waitpoint, token timeout or
delayed run is due: each call says when the next one is (`next_in`, on the database's
clock), and a run of this worker that goes to sleep tells the loop its own due time
(`due_in`), which may come before that answer. The loop never polls: with nothing due
before the next tick, it sleeps until the tick.

Due times of sleeps started by other workers are known at the next tick or `wake_due`
call, whichever comes first: on time, as a rule, once any worker has seen them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import psycopg

from ..db import queries as _queries
from ..errors import SkiplockError

if TYPE_CHECKING:
    from ..api.engine import Engine

log = logging.getLogger("skiplock.worker")


class Timers:
    """The worker's loop of tick() and wake_due() calls (see the module's docstring)."""

    def __init__(self, engine: Engine, tick_interval: float) -> None:
        self._engine, self._tick_interval = engine, tick_interval
        self._next = 0.0  # the loop time of the next call
        self._sooner: asyncio.Event | None = None  # set: a due time before `_next`

    def due_in(self, seconds: float) -> None:
        """A run of this worker sleeps until `seconds` from now: call wake_due then."""
        if self._sooner is None:
            return
        at = asyncio.get_running_loop().time() + max(seconds, 0.0)
        if at < self._next:
            self._next = at
            self._sooner.set()

    async def run(self) -> None:
        """Until cancelled: tick every `tick_interval`, wake_due between ticks when due."""
        loop = asyncio.get_running_loop()
        self._sooner = sooner = asyncio.Event()
        next_tick = loop.time()
        while True:
            next_in: float | None = None
            try:
                if loop.time() >= next_tick:
                    next_tick = loop.time() + self._tick_interval
                    answer = await self._engine.adb.run(_queries.tick())
                    next_in = answer.get("next_in") if answer else None
                else:
                    next_in = await self._engine.adb.run(_queries.wake_due(), lane="timers")
            except (psycopg.Error, SkiplockError):
                log.warning("tick failed", exc_info=True)
            self._next = next_tick
            if next_in is not None:
                self._next = min(next_tick, loop.time() + next_in)
            while (left := self._next - loop.time()) > 0:
                sooner.clear()
                try:  # a sleep due sooner (due_in) moves `_next` and wakes this wait
                    await asyncio.wait_for(sooner.wait(), timeout=left)
                except TimeoutError:
                    break
