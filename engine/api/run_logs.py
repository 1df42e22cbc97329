"""Run logs, read live: `app.runs.follow_logs` and the dashboard's live log section.

New records of a run are announced on channel skiplock_logs (ids only, one notification
per write of a worker, and only for runs some session watches: kind 'logs' in
skiplock.subscriptions). The log feed serves every follower of a process from its one
LISTEN connection (engine/db/listener.py): it registers the runs followed, and wakes
their followers on each notification, once the registration has settled (a write that
looked for watchers just before it announced nothing), and after a reconnect. In
poll-only mode (a pooled DSN, no listen DSN) it registers nothing and wakes them at every
round of the polling listener. Followers then read what came after the last record they
saw (`seq`).

A follower also follows its run's status (the run feed, realtime.py): a worker writes an
attempt's records before its outcome, so once the run is final, one more read gets the
last of them, and the follow ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg

from ..db import queries as _queries
from ..db.database import Query, execute
from ..db.listener import Listener, Registration
from ..models import LogRecord, Run
from . import realtime
from .connections import Connections

_CHANNEL = "skiplock_logs"
PAGE = 1000  # records a read


@dataclass(eq=False)
class Watch:
    run_id: str
    wake: Callable[[], None]  # called on the listener thread: must be quick


class LogFeed:
    """The process's log followers on one listener; get it with `LogFeed.for_listener`."""

    _feeds: ClassVar[dict[int, LogFeed]] = {}
    _feeds_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def for_listener(cls, listener: Listener) -> LogFeed:
        with cls._feeds_lock:
            feed = cls._feeds.get(id(listener))  # listeners live as long as the process
            if feed is None:
                feed = cls._feeds[id(listener)] = cls(listener)
            return feed

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._polling = listener.polling  # registers nothing: every round wakes everyone
        self._lock = threading.Lock()
        self._watches: dict[str, set[Watch]] = {}
        self._registration: Registration | None = None

    def watch(self, run_id: str, wake: Callable[[], None]) -> Watch:
        """Call `wake()` whenever records of `run_id` may be new (from the listener's
        thread); the caller reads what came since it last read."""
        w = Watch(run_id, wake)
        with self._lock:
            watches = self._watches.setdefault(run_id, set())
            first = not watches
            watches.add(w)
            if self._registration is None:
                self._registration = self._listener.add(
                    _CHANNEL, self._on_notes, on_connect=None if self._polling else self._watch_all
                )
        if first and not self._polling:
            self._listener.call(lambda conn: self._start(conn, run_id))
        return w

    def unwatch(self, w: Watch) -> None:
        with self._lock:
            watches = self._watches.get(w.run_id)
            if watches is not None:
                watches.discard(w)
                if not watches:
                    del self._watches[w.run_id]
                    if not self._polling:
                        self._listener.call(lambda conn: _unwatch(conn, w.run_id))
            if self._registration is not None and not self._watches:
                self._listener.remove(self._registration)
                self._registration = None

    def count(self) -> int:
        with self._lock:
            return sum(len(ws) for ws in self._watches.values())

    # -- on the listener thread ------------------------------------------------------------

    def _start(self, conn: psycopg.Connection[Any], run_id: str) -> None:
        with self._lock:
            if run_id not in self._watches:
                return
        _watch(conn, [run_id])
        self._listener.after_settled(lambda _conn: self._wake([run_id]))

    def _watch_all(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            run_ids = list(self._watches)
        if run_ids:
            _watch(conn, run_ids)

    def _on_notes(self, payloads: list[str] | None, _conn: psycopg.Connection[Any]) -> None:
        if payloads is None:  # (re)connected and settled: anything may be new
            with self._lock:
                run_ids = list(self._watches)
        else:
            run_ids = sorted({i for p in payloads for i in p.split(",") if i})
        self._wake(run_ids)

    def _wake(self, run_ids: list[str]) -> None:
        with self._lock:
            wakes = [w.wake for r in run_ids for w in self._watches.get(r, ())]
        for wake in wakes:
            wake()


def _watch(conn: psycopg.Connection[Any], run_ids: list[str]) -> None:
    execute(conn, _queries.watch(["logs"] * len(run_ids), run_ids))


def _unwatch(conn: psycopg.Connection[Any], run_id: str) -> None:
    execute(conn, _queries.unwatch(["logs"], [run_id]))


class _Follow:
    """One follow of a run's logs: its watch, its run's status, where it has read to. The
    blocking and the async iterator below differ only in how they read and wait."""

    def __init__(
        self, listener: Listener, run_id: str, after: int | None, wake: Callable[[], None]
    ) -> None:
        self.run_id, self.after = run_id, after
        self.final = False
        self.feed = LogFeed.for_listener(listener)
        self.watch = self.feed.watch(run_id, wake)
        try:
            self.status = realtime._Follow(
                listener, "run", run_id, Run.model_validate, wake, None, None, time.monotonic
            )
        except BaseException:
            self.feed.unwatch(self.watch)
            raise

    def ends_after_read(self) -> bool:
        """Whether the run is final (so the next read is the last one). Raises what the
        run feed delivered (`RunNotFoundError`)."""
        while (run := self.status.take()) is not None:
            self.final = self.final or run.is_completed
        return self.final

    def query(self) -> Query[list[dict[str, Any]]]:
        return _queries.run_logs_of(self.run_id, self.after, PAGE)

    def records(self, rows: list[dict[str, Any]]) -> list[LogRecord]:
        records = [LogRecord.model_validate(r) for r in rows]
        if records:
            self.after = records[-1].seq
        return records

    def close(self) -> None:
        self.status.close()
        self.feed.unwatch(self.watch)


def _timed_out(run_id: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"{run_id}: not final within {timeout:g}s")


def follow(
    conns: Connections, run_id: str, *, after: int | None, timeout: float | None
) -> Iterator[LogRecord]:
    """The run's records after seq `after` (None: all), then each new one as it is
    written, until the run is final and its last records are read. `TimeoutError` past
    `timeout` seconds from the start (None: no limit)."""
    ready = threading.Event()
    deadline = None if timeout is None else time.monotonic() + timeout
    f = _Follow(conns.listener(), run_id, after, ready.set)
    try:
        while True:
            ready.clear()
            last = f.ends_after_read()
            while True:
                records = f.records(conns.db.run(f.query()))
                yield from records
                if len(records) < PAGE:
                    break
            if last:
                return
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not ready.wait(left):
                raise _timed_out(run_id, timeout)
    finally:
        f.close()


async def follow_async(
    conns: Connections, run_id: str, *, after: int | None, timeout: float | None
) -> AsyncIterator[LogRecord]:
    """`follow` for async code."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    deadline = None if timeout is None else loop.time() + timeout

    def wake() -> None:  # on the listener thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
            loop.call_soon_threadsafe(ready.set)

    f = _Follow(conns.listener(), run_id, after, wake)
    try:
        while True:
            ready.clear()
            last = f.ends_after_read()
            while True:
                records = f.records(await conns.adb.run(f.query()))
                for record in records:
                    yield record
                if len(records) < PAGE:
                    break
            if last:
                return
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                await asyncio.wait_for(ready.wait(), left)
            except TimeoutError:
                raise _timed_out(run_id, timeout) from None
    finally:
        f.close()


async def changes_async(conns: Connections, run_id: str) -> AsyncIterator[None]:
    """Once per announcement of new records of the run (and after the watch settles or
    the connection comes back): for pages that re-read the logs themselves. Until the
    caller stops iterating."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(ready.set)

    feed = LogFeed.for_listener(conns.listener())
    w = feed.watch(run_id, wake)
    try:
        while True:
            await ready.wait()
            ready.clear()
            yield None
    finally:
        feed.unwatch(w)
