"""Realtime subscriptions: iterators of `Run` snapshots, fed by LISTEN/NOTIFY.

`app.runs.subscribe_to_run(id)` and friends are `subscribe` and `subscribe_async` at the
bottom of this file. Underneath, the run feed serves every run subscription of a process
from its one LISTEN connection (engine/db/listener.py).

Changed runs are announced on skiplock_runs with ids only, grouped by the key they matched
(a run id, tag or batch: see skiplock.notify_runs). Every LISTENing session receives every
notification: the feed keeps the ids of the groups whose key it watches, and makes no
query when there are none; else one query for those ids, and puts each row into the
mailboxes of the subscriptions that watch it. Reads run on the listener's
own connection, so a thousand subscriptions in a process still use one connection.

Each subscription's key (a run id, tag, batch, or '*' for all runs) is registered with
skiplock.watch() on that connection, so that only watched runs are announced. After a
registration commits, the subscription's first snapshot is read, and read again once
every transaction older than the registration has ended (one that looked for watchers
just before it announced nothing). After a reconnect (None from the listener) every key
is registered anew and every subscription read again. A snapshot equal to the last one
delivered to a subscription is not delivered twice.

Poll-only (a pooled DSN and no direct one to LISTEN on): the feed's listener polls (see
engine/db/listener.py), nothing is registered with skiplock.watch() (its rows are keyed by
session, and behind a pooler the session is not the client's), and every poll re-reads
what the subscriptions watch, as after a reconnect: the runs by id; a tag's or batch's
runs created since it started, and those of them seen before in a non-final status; for
all runs, the newest `_POLL_ALL_LIMIT` created since it started and those seen running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import psycopg

from ..db import queries as _queries
from ..db.database import Query, execute
from ..db.listener import Listener, Registration
from ..errors import RunNotFoundError
from ..models import Run
from ..values import FINAL_STATUSES

Kind = Literal["run", "tag", "batch", "all"]
Item = dict[str, Any] | BaseException

_CHANNEL = "skiplock_runs"
_SNAPSHOT_LIMIT = 1000  # newest runs of a tag in a tag subscription's first snapshot
# a tag subscription re-reads, after a reconnect, the tag's runs created since it started
# (less this margin, for transactions that were open when it started)
_CATCH_UP_MARGIN = timedelta(minutes=1)
# an all-runs subscription that polls: the newest runs it reads each time
_POLL_ALL_LIMIT = 200


class Mailbox:
    """The latest snapshot of each run not yet taken, oldest change first. A reader slower
    than the changes skips intermediate states of a run, never a run.

    The reader is woken only when the mailbox turns non-empty: it takes until the mailbox
    is empty before it waits again, so a wake for each later item would be one more
    cross-thread call (an event loop's self-pipe write, 28 us) for nothing."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Item] = OrderedDict()
        self._wake = wake

    def put(self, key: str, item: Item) -> None:
        with self._lock:
            was_empty = not self._items
            self._items[key] = item  # a run already waiting keeps its place
        if was_empty:
            self._wake()

    def take(self) -> Item | None:
        with self._lock:
            return self._items.popitem(last=False)[1] if self._items else None


@dataclass(eq=False)
class Subscription:
    kind: Kind
    key: str
    mailbox: Mailbox
    created_from: datetime | None
    started: datetime = field(default_factory=lambda: datetime.now().astimezone())
    seen: dict[str, int] = field(default_factory=dict)  # run id -> last snapshot delivered
    live: set[str] = field(default_factory=set)  # runs seen in a non-final status


class RunFeed:
    """The process's run subscriptions on one listener (a LISTEN connection, or a polling
    one); get it with `RunFeed.for_listener`."""

    _feeds: ClassVar[dict[int, RunFeed]] = {}
    _feeds_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def for_listener(cls, listener: Listener) -> RunFeed:
        with cls._feeds_lock:
            feed = cls._feeds.get(id(listener))  # listeners live as long as the process
            if feed is None:
                feed = cls._feeds[id(listener)] = cls(listener)
            return feed

    @classmethod
    def for_dsn(cls, dsn: str) -> RunFeed:
        """The feed on the process's LISTEN connection for `dsn`."""
        return cls.for_listener(Listener.for_dsn(dsn))

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._polling = listener.polling
        self._lock = threading.Lock()
        self._subs: dict[Kind, dict[str, set[Subscription]]] = {
            "run": {},
            "tag": {},
            "batch": {},
            "all": {},
        }
        self._registration: Registration | None = None
        self._new: list[Subscription] = []  # subscribed, not yet registered and read
        self._gone: list[tuple[Kind, str]] = []  # keys nobody watches now, to unwatch

    def subscribe(
        self, kind: Kind, key: str, mailbox: Mailbox, created_from: datetime | None = None
    ) -> Subscription:
        sub = Subscription(kind, key, mailbox, created_from)
        with self._lock:
            self._subs[kind].setdefault(key, set()).add(sub)
            if self._registration is None:
                self._registration = self._listener.add(
                    _CHANNEL, self._on_notes, on_connect=None if self._polling else self._watch_all
                )
            self._new.append(sub)
            first_new = len(self._new) == 1
        if first_new:  # one call starts every subscription made until it runs
            self._listener.call(self._start_new)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        first_gone = False
        with self._lock:
            subs = self._subs[sub.kind].get(sub.key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.kind][sub.key]
                    if not self._polling:
                        self._gone.append((sub.kind, sub.key))
                        first_gone = len(self._gone) == 1
            if self._registration is not None and not any(self._subs.values()):
                self._listener.remove(self._registration)  # unwatches everything
                self._registration = None
        if first_gone:  # one call unwatches every key gone until it runs
            self._listener.call(self._unwatch_gone)

    def count(self) -> int:
        with self._lock:
            return sum(len(s) for by_key in self._subs.values() for s in by_key.values())

    # -- on the listener thread ------------------------------------------------------------

    def _start_new(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            new, self._new = self._new, []
            new = [s for s in new if s in self._subs[s.kind].get(s.key, ())]
        if not new:
            return
        if not self._polling:
            _watch(conn, [(s.kind, s.key) for s in new])
        self._read_all(conn, new, first=True)
        self._listener.after_settled(lambda c: self._read_all(c, new, first=False))

    def _unwatch_gone(self, conn: psycopg.Connection[Any]) -> None:
        """Unwatch, in one statement, the keys whose last subscription ended (a key
        subscribed to again meanwhile stays watched)."""
        with self._lock:
            gone, self._gone = self._gone, []
            keys = sorted({(k, v) for k, v in gone if v not in self._subs[k]})
        if keys:
            _unwatch(conn, keys)

    def _watch_all(self, conn: psycopg.Connection[Any]) -> None:
        """On a new connection: register every key again (the session is a new one)."""
        with self._lock:
            keys = [(kind, key) for kind, by_key in self._subs.items() for key in by_key]
        if keys:
            _watch(conn, keys)

    def _on_notes(self, payloads: list[str] | None, conn: psycopg.Connection[Any]) -> None:
        if payloads is None:  # (re)connected: anything may have changed meanwhile
            with self._lock:
                subs = [s for by_key in self._subs.values() for ss in by_key.values() for s in ss]
            self._read_all(conn, subs, first=False)
            return
        with self._lock:
            watched = self._subs
            ids = sorted(_announced(payloads, watched))
            if not ids:  # only others' keys: nothing to read
                return
            run_ids = ids if watched["all"] else [i for i in ids if i in watched["run"]]
            tags, batches = list(watched["tag"]), list(watched["batch"])
        if not (run_ids or tags or batches):
            return
        rows = execute(conn, _queries.changed_runs(ids, run_ids, tags, batches))
        for row in rows:
            with self._lock:
                targets = set(watched["run"].get(row["id"], ()))
                targets |= watched["all"].get("*", set())
                for tag in row["tags"] or ():
                    targets |= watched["tag"].get(tag, set())
                if row["batch_id"] is not None:
                    targets |= watched["batch"].get(row["batch_id"], set())
            fingerprint = _fingerprint(row)  # once, for every subscription it goes to
            for sub in targets:
                _deliver(sub, row, fingerprint=fingerprint)

    def _read_all(
        self, conn: psycopg.Connection[Any], subs: list[Subscription], *, first: bool
    ) -> None:
        by_id = [s for s in subs if s.kind == "run"]
        if by_id:
            rows = {r["id"]: r for r in execute(conn, _queries.runs_by_id([s.key for s in by_id]))}
            for sub in by_id:
                row = rows.get(sub.key)
                if row is not None:
                    _deliver(sub, row)
                elif first:
                    sub.mailbox.put(sub.key, RunNotFoundError(f"run {sub.key} does not exist"))
        for sub in subs:
            if sub.kind == "all" and self._polling and not first:
                _poll_all(conn, sub)
            if sub.kind in ("tag", "batch"):
                snapshot = execute(conn, _snapshot_query(sub, first=first))
                for row in reversed(snapshot):
                    _deliver(sub, row)  # oldest first
                if sub.live and not first:
                    for row in execute(conn, _queries.runs_by_id(sorted(sub.live))):
                        _deliver(sub, row)


def _announced(payloads: list[str], watched: dict[Kind, dict[str, set[Subscription]]]) -> set[str]:
    """The ids of skiplock_runs notifications that may concern what this process watches:
    of each payload (see skiplock.notify_runs), the ids of the groups whose key it
    watches, and those every session checks itself ("ids"); every id if it watches all
    runs. A payload of plain comma-separated ids (from a schema before the groups) is
    taken whole."""
    ids: set[str] = set()
    everything = bool(watched["all"])
    for payload in payloads:
        if not payload.startswith("{"):
            ids.update(i for i in payload.split(",") if i)
            continue
        groups = json.loads(payload)
        ids.update(groups.get("ids", ()))
        run_ids = groups.get("run", ())
        ids.update(run_ids if everything else (i for i in run_ids if i in watched["run"]))
        for kind in ("tag", "batch"):
            for key, key_ids in groups.get(kind, {}).items():
                if everything or key in watched[kind]:
                    ids.update(key_ids)
    return ids


def _watch(conn: psycopg.Connection[Any], keys: list[tuple[Kind, str]]) -> None:
    execute(conn, _queries.watch([kind for kind, _ in keys], [key for _, key in keys]))


def _unwatch(conn: psycopg.Connection[Any], keys: list[tuple[Kind, str]]) -> None:
    execute(conn, _queries.unwatch([kind for kind, _ in keys], [key for _, key in keys]))


def _snapshot_query(sub: Subscription, *, first: bool) -> Query[list[dict[str, Any]]]:
    created_from = sub.created_from
    if not first:
        since = sub.started - _CATCH_UP_MARGIN
        created_from = since if created_from is None else max(created_from, since)
    return _queries.list_runs(
        status=None,
        tasks=None,
        tags=[sub.key] if sub.kind == "tag" else None,
        batch=sub.key if sub.kind == "batch" else None,
        created_from=created_from,
        created_to=None,
        after=None,
        limit=_SNAPSHOT_LIMIT,
    )


def _poll_all(conn: psycopg.Connection[Any], sub: Subscription) -> None:
    """A poll of an all-runs subscription: the newest runs created since it started (less
    the margin) and the runs it saw in a non-final status, each delivered when it changed
    since last delivered. What it remembers is bounded by the two."""
    newest = execute(
        conn,
        _queries.list_runs(
            status=None,
            tasks=None,
            tags=None,
            batch=None,
            created_from=sub.started - _CATCH_UP_MARGIN,
            created_to=None,
            after=None,
            limit=_POLL_ALL_LIMIT,
        ),
    )
    live = execute(conn, _queries.runs_by_id(sorted(sub.live))) if sub.live else []
    for row in [*reversed(newest), *live]:  # oldest first
        _deliver(sub, row, remember=True)
    keep = {r["id"] for r in newest} | sub.live
    sub.seen = {k: v for k, v in sub.seen.items() if k in keep}


def _fingerprint(row: dict[str, Any]) -> int:
    return hash(repr(row))


def _deliver(
    sub: Subscription,
    row: dict[str, Any],
    *,
    remember: bool = False,
    fingerprint: int | None = None,
) -> None:
    if sub.kind == "all" and not remember:
        # it sees every run: remembering them would grow without end
        sub.mailbox.put(row["id"], row)
        return
    if fingerprint is None:
        fingerprint = _fingerprint(row)
    if sub.seen.get(row["id"]) == fingerprint:
        return
    sub.seen[row["id"]] = fingerprint
    if row["status"] in FINAL_STATUSES:
        sub.live.discard(row["id"])
    else:
        sub.live.add(row["id"])
    sub.mailbox.put(row["id"], row)


# -- subscriptions: what the runs API hands out ---------------------------------------

Parse = Callable[[dict[str, Any]], Run[Any, Any]]


class _Follow:
    """One subscription as its iterator walks it: the next snapshot from the mailbox, when
    it ends (a single run's final status), and its deadline. The blocking and the async
    iterator below differ only in how they wait for the mailbox."""

    def __init__(
        self,
        listener: Listener,
        kind: Kind,
        key: str,
        parse: Parse,
        wake: Callable[[], None],
        created_from: datetime | None,
        timeout: float | None,
        clock: Callable[[], float],
    ) -> None:
        self.kind, self.key, self.parse, self.timeout, self.clock = kind, key, parse, timeout, clock
        self.deadline = None if timeout is None else clock() + timeout
        self.ended = False
        self.last: Run[Any, Any] | None = None
        self.feed = RunFeed.for_listener(listener)
        self.sub = self.feed.subscribe(kind, key, Mailbox(wake), created_from)

    def take(self) -> Run[Any, Any] | None:
        """The next snapshot, or None: wait for the mailbox. An error the feed delivered
        is raised."""
        item = self.sub.mailbox.take()
        if item is None:
            return None
        if isinstance(item, BaseException):
            raise item
        self.last = self.parse(item)
        self.ended = self.kind == "run" and self.last.is_completed
        return self.last

    def left(self) -> float | None:
        """Seconds to wait for the mailbox (None: no deadline)."""
        return None if self.deadline is None else max(self.deadline - self.clock(), 0.0)

    def timed_out(self) -> TimeoutError:
        now = f" (still {self.last.status.value})" if self.last is not None else ""
        return TimeoutError(f"{self.key}: no final status within {self.timeout:g}s{now}")

    def close(self) -> None:
        self.feed.unsubscribe(self.sub)


def subscribe(
    listener: Listener,
    kind: Kind,
    key: str,
    parse: Parse,
    *,
    created_from: datetime | None = None,
    timeout: float | None = None,
) -> Iterator[Run[Any, Any]]:
    """Snapshots of the watched runs: the current state at once, then one per change. A
    subscription to one run ends after its final status; the others when the caller stops
    iterating (break, or close() on the iterator). `listener`: the engine's (see
    `Connections.listener`): LISTEN, or polling. With `timeout`, waiting for a change
    past that many seconds from the start raises `TimeoutError`."""
    ready = threading.Event()
    follow = _Follow(listener, kind, key, parse, ready.set, created_from, timeout, time.monotonic)
    try:
        while not follow.ended:
            ready.clear()
            run = follow.take()
            if run is not None:
                yield run
            elif not ready.wait(follow.left()):
                raise follow.timed_out()
    finally:
        follow.close()


async def subscribe_async(
    listener: Listener,
    kind: Kind,
    key: str,
    parse: Parse,
    *,
    created_from: datetime | None = None,
    timeout: float | None = None,
) -> AsyncIterator[Run[Any, Any]]:
    """`subscribe` for async code: the same snapshots, awaited on the running loop."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:  # called on the listener thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
            loop.call_soon_threadsafe(ready.set)

    follow = _Follow(listener, kind, key, parse, wake, created_from, timeout, loop.time)
    try:
        while not follow.ended:
            ready.clear()
            run = follow.take()
            if run is not None:
                yield run
                continue
            try:
                await asyncio.wait_for(ready.wait(), follow.left())
            except TimeoutError:
                raise follow.timed_out() from None
    finally:
        follow.close()
