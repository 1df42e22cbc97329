"""Realtime subscriptions: iterators of `Run` snapshots fed by LISTEN/NOTIFY.

`app.runs.subscribe_to_run(id)` and friends are built on `subscribe` and
`subscribe_async` here; the machinery (one LISTEN connection per process, one query per
burst of changes) is in engine/_feed.py and engine/_listener.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

from ..models import Run
from .feed import Item, Kind, Mailbox, RunFeed

Parse = Callable[[dict[str, Any]], Run[Any, Any]]


def _snapshot(item: Item, kind: Kind, parse: Parse) -> tuple[Run[Any, Any], bool]:
    """The snapshot in a mailbox item, and whether it is the subscription's last (a
    single run's final status); an error the feed delivered is raised."""
    if isinstance(item, BaseException):
        raise item
    run = parse(item)
    return run, kind == "run" and run.is_completed


def subscribe(
    dsn: str,
    kind: Kind,
    key: str,
    parse: Parse,
    *,
    created_from: datetime | None = None,
) -> Iterator[Run[Any, Any]]:
    """Snapshots of the watched runs: the current state at once, then one per change. A
    subscription to one run ends after its final status; the others when the caller stops
    iterating (break, or close() on the iterator)."""
    feed = RunFeed.for_dsn(dsn)
    ready = threading.Event()
    sub = feed.subscribe(kind, key, Mailbox(ready.set), created_from)
    try:
        while True:
            ready.clear()
            item = sub.mailbox.take()
            if item is None:
                ready.wait()
                continue
            run, last = _snapshot(item, kind, parse)
            yield run
            if last:
                return
    finally:
        feed.unsubscribe(sub)


async def subscribe_async(
    dsn: str,
    kind: Kind,
    key: str,
    parse: Parse,
    *,
    created_from: datetime | None = None,
) -> AsyncIterator[Run[Any, Any]]:
    """`subscribe` for async code: the same snapshots, awaited on the running loop."""
    feed = RunFeed.for_dsn(dsn)
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:  # called on the listener thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
            loop.call_soon_threadsafe(ready.set)

    sub = feed.subscribe(kind, key, Mailbox(wake), created_from)
    try:
        while True:
            ready.clear()
            item = sub.mailbox.take()
            if item is None:
                await ready.wait()
                continue
            run, last = _snapshot(item, kind, parse)
            yield run
            if last:
                return
    finally:
        feed.unsubscribe(sub)
