"""Sessions of a confined loop (`AsyncDatabase.confine`): one connection each, and the
queries that wait for it sent together.

A confined session has one connection, so its callers queue. Whoever takes the session
next takes every query queued by then: one alone is sent as usual (autocommit, its own
commit); several are sent in one transaction, committed once. PostgreSQL flushes its WAL
once a commit: on one connection, commits one after another cost a flush each (the
steps of 50 running attempts, one commit each, drained at a quarter of the rate they
had on ten connections); together, one flush for all.

What the callers see is what separate calls would show: each query's result or its own
error, given once the commit is done. A query that fails rolls the transaction back,
and the batch is sent again one query at a time, each its own commit (errors are rare:
a savepoint for each query would cost two more round trips each). A commit or
connection that fails fails them all, none of them committed. The transaction
is longer than one call, so its queries share `now()` (the moment the batch began, after
all of them were called) and its row locks are held until the one commit (a few
milliseconds); a deadlock with another transaction rolls the batch back, sent again one
query at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from ..errors import SkiplockError

# a query (database.Query: not imported, database.py imports this) and its caller's future
Item = tuple[Any, "asyncio.Future[Any]"]


class Session:
    """One confined session: the queries waiting for it, and whose turn it is."""

    def __init__(self, batched: bool) -> None:
        self.batched = batched
        self.pending: list[Item] = []
        self.turn = asyncio.Lock()  # held while the session's connection is in use

    def take(self, own: Item) -> list[Item]:
        """The queries to send now, oldest first: all those waiting if batched, else the
        caller's own. Either way the caller's own is among them: whoever holds the turn
        leaves no query of its own behind (a query left waiting is its caller's, still
        waiting for its turn)."""
        if not self.batched:
            self.pending.remove(own)
            return [own]
        taken = [item for item in self.pending if not item[1].done()]
        self.pending = []
        return taken


async def run_batch(
    conn: psycopg.AsyncConnection[Any],
    batch: list[Item],
    execute: Callable[[psycopg.AsyncConnection[Any], Any], Awaitable[Any]],
) -> list[tuple[asyncio.Future[Any], bool, Any]]:
    """Send `batch` in one transaction on `conn`; return (future, ok, result or error)
    for each, once committed. When one query fails, the transaction is rolled back
    (nothing of it committed) and each query is sent again on its own, its own commit:
    so each gets its own result or error. Raises what broke the connection or the
    commit (then nothing of the batch committed)."""
    try:
        results = []
        async with conn.transaction():
            for query, _ in batch:
                results.append(await execute(conn, query))
        return [(future, True, result) for (_, future), result in zip(batch, results, strict=True)]
    except (SkiplockError, psycopg.Error):
        if conn.broken or conn.closed:
            raise
    outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
    for query, future in batch:  # rare (a typed error, a deadlock): one at a time
        try:
            outcomes.append((future, True, await execute(conn, query)))
        except (SkiplockError, psycopg.Error) as exc:
            if conn.broken or conn.closed:
                raise
            outcomes.append((future, False, exc))
    return outcomes


def settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, asyncio.CancelledError):  # the batch was cancelled (loop ending)
        future.cancel()
    else:
        future.set_exception(value)
