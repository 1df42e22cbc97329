"""Connections: pools, the one path every query takes, error mapping, transient retries.

Operations are built sans-I/O as `Query` values (SQL, parameters, a row parser) in
`engine/db/queries.py`; `Database` and `AsyncDatabase` are the two thin shells that run
them, so each operation is written once for both the sync and the async API.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, LiteralString, NoReturn, TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row

from ..errors import SQLSTATE_ERRORS, InvalidArgumentError, SchemaNotMigratedError, SkiplockError
from .confined import Item, Session, run_batch, settle
from .dsn import DEFAULT_CONNECT_TIMEOUT, Address

# psycopg_pool and tenacity are imported when first needed: a worker never opens a pool
# (0.4 MB of RSS), and tenacity (0.4 MB) is for retries, after a first try failed
if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

T = TypeVar("T")
Rows = list[DictRow]


@dataclass(frozen=True)
class Query(Generic[T]):
    """One round trip: a statement, its parameters, and how to turn its rows into a value.

    `idempotent` queries may be re-sent after a connection error; the others are re-sent
    only after errors that guarantee nothing was committed (serialization, deadlock)."""

    sql: LiteralString
    params: Sequence[Any]
    parse: Callable[[Rows], T]
    idempotent: bool = True


def _rolled_back(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected)


def _retryable(query: Query[Any]) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if _rolled_back(exc):
            return True
        return (
            query.idempotent
            and isinstance(exc, psycopg.OperationalError)
            and not isinstance(exc, psycopg.errors.QueryCanceled)
        )

    return check


_RETRY_STOP_AFTER = 4  # tries in all: the first one outside tenacity, then the retries


def _retrying(query: Query[Any], kind: type[T]) -> T:
    """tenacity's `Retrying` or `AsyncRetrying` for the retries of `query`."""
    import tenacity

    return kind(  # type: ignore[call-arg]
        retry=tenacity.retry_if_exception(_retryable(query)),
        wait=tenacity.wait_exponential(multiplier=0.05, max=2.0),
        stop=tenacity.stop_after_attempt(_RETRY_STOP_AFTER - 1),
        reraise=True,
    )


# invalid_schema_name, undefined_function, undefined_table, undefined_object: on one of
# skiplock's own objects, the schema is missing or older than this code
_MISSING_OBJECT_STATES = frozenset({"3F000", "42883", "42P01", "42704"})
_MISSING_SKIPLOCK_OBJECT = re.compile(
    r'^(schema "skiplock"|function skiplock\.|relation "skiplock\.|type "skiplock\.)'
    r".* does not exist"
)


def raise_mapped(exc: psycopg.Error) -> NoReturn:
    """Re-raise a database error as skiplock's typed error when it is one of ours."""
    state = exc.sqlstate or ""
    message = exc.diag.message_primary or str(exc)
    mapped = SQLSTATE_ERRORS.get(state)
    if mapped is not None:
        raise mapped(message) from None
    if state in _MISSING_OBJECT_STATES and _MISSING_SKIPLOCK_OBJECT.match(message):
        raise SchemaNotMigratedError(message) from None
    # a bad cast, a range, a NUL byte (refused by the server in JSON, by psycopg in text
    # before sending: a DataError with no SQLSTATE); a CHECK constraint
    if isinstance(exc, psycopg.DataError) or state == "23514":
        raise InvalidArgumentError(message) from exc
    raise exc


def execute(conn: psycopg.Connection[Any], query: Query[T]) -> T:
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query.sql, query.params)
            rows = cur.fetchall() if cur.description is not None else []
    except psycopg.Error as exc:
        raise_mapped(exc)
    return query.parse(rows)


async def _execute_async(conn: psycopg.AsyncConnection[Any], query: Query[T]) -> T:
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query.sql, query.params)
            rows = await cur.fetchall() if cur.description is not None else []
    except psycopg.Error as exc:
        raise_mapped(exc)
    return query.parse(rows)


def pooled_connect_kwargs(pooled: bool) -> dict[str, Any]:
    """Connection settings for a DSN behind a transaction-mode pooler: no server-side
    prepared statements (psycopg prepares a statement run 5 times on one connection; the
    pooler would send the next EXECUTE to another server session, where it does not exist:
    PgBouncer before 1.21)."""
    return {"prepare_threshold": None} if pooled else {}


def shares_sessions(address: Address) -> bool:
    """Whether `address` leads to a transaction-mode pooler: two client connections are
    served by one server session in turn (PgBouncer hands an idle pool's most recent
    session to the next client), or one client by two sessions. Directly, a connection is
    one backend for life, and two open connections are two backends. A pooler busy enough
    to hand out other sessions can pass for a server: this only ever errs that way. Two
    short connections; `DatabaseUnreachableError` when the first cannot be opened."""
    kwargs = {"autocommit": True, **address.connect_kwargs(), **pooled_connect_kwargs(True)}
    try:
        first = psycopg.Connection.connect(address.dsn, **kwargs)
    except psycopg.OperationalError as exc:
        raise address.unreachable(exc) from exc
    pid = "SELECT pg_backend_pid()"
    with first:
        before = first.execute(pid).fetchone()
        with psycopg.Connection.connect(address.dsn, **kwargs) as second:
            other = second.execute(pid).fetchone()
        after = first.execute(pid).fetchone()
    return before == other or before != after


class _Shell:
    """What both shells are given: the address (with where it came from, for errors, and
    its connect timeout) and how many connections they may open. `pooled`: the DSN leads
    to a transaction-mode pooler (see `pooled_connect_kwargs`)."""

    def __init__(
        self,
        dsn: str,
        *,
        max_size: int = 10,
        source: str = "from the dsn argument",
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
        pooled: bool | Callable[[], bool] = False,
    ) -> None:
        self.dsn = dsn
        self.address = Address(dsn, source, connect_timeout)
        # a callable is asked before the first connection (it may connect: a detection)
        self._pooled: bool | Callable[[], bool] = pooled
        self._max_size = max_size
        self._init_state()

    @property
    def pooled(self) -> bool:
        """Whether the DSN leads to a transaction-mode pooler (asked once, if need be)."""
        if not isinstance(self._pooled, bool):
            self._pooled = bool(self._pooled())
        return self._pooled

    @property
    def _connect_kwargs(self) -> dict[str, Any]:
        return {**self.address.connect_kwargs(), **pooled_connect_kwargs(self.pooled)}

    def _init_state(self) -> None:
        """The shell's own state, set up at construction."""


class Database(_Shell):
    """Blocking shell: a lazily opened pool of autocommit connections (each query is one
    function call, so autocommit saves the BEGIN/COMMIT round trips).

    Every connection attempt is bounded by `connect_timeout` seconds (unless the DSN sets
    its own). The first use opens one connection before the pool: when that fails, it
    raises `DatabaseUnreachableError` at once, saying where and why, instead of the pool
    retrying in the background; `source` says where the DSN came from, for that message."""

    def _init_state(self) -> None:
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._lock = threading.Lock()

    def route(self, loop: asyncio.AbstractEventLoop, adb: AsyncDatabase) -> None:
        """From now on, in the current context and those copied from it (the tasks it
        starts, and the threads they hand work to with their context: a worker's `def`
        tasks), run this shell's queries on `loop` with `adb`, the calling thread blocking
        until done: they share that loop's connections instead of opening a pool. Other
        threads (an application's own) are not routed. Called on the loop's own thread, a
        query still takes the pool: blocking the loop on itself would never return."""
        _ROUTE.set((self, loop, adb))

    def unroute(self) -> None:
        """Stop routing in the current context (see `route`)."""
        _ROUTE.set(None)

    def _routed(self) -> tuple[asyncio.AbstractEventLoop, AsyncDatabase] | None:
        route = _ROUTE.get()
        if route is None or route[0] is not self or route[1].is_closed():
            return None
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        return None if running is route[1] else (route[1], route[2])

    @property
    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = self._open_pool()
                    _OPEN.add(self)
        return self._pool

    def connect(self) -> psycopg.Connection[Any]:
        """A connection of its own (not the pool's), in autocommit mode, opened within the
        connect timeout; `DatabaseUnreachableError` if it cannot be."""
        try:
            return psycopg.Connection.connect(self.dsn, autocommit=True, **self._connect_kwargs)
        except psycopg.OperationalError as exc:
            raise self.address.unreachable(exc) from exc

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        # First contact on a connection of our own: the pool would retry a failing connect
        # in the background, with a warning each time, for 30 s (and the caller's retries
        # around it for minutes), and the reason would reach only the log. One more
        # connect per process is what this costs.
        from psycopg_pool import ConnectionPool, PoolTimeout

        self.connect().close()
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self._max_size,
            kwargs={"autocommit": True, **self._connect_kwargs},
            open=False,
            name="skiplock",
        )
        # Wait for the first connection: a request that came while it was still being
        # opened made the pool open a second one, and the pool hands its connections out
        # in turn, so even a caller that never overlaps itself switched sessions at every
        # call (trigger() in a loop: 534 us a call on one session, 580 on two in turn).
        try:
            pool.open(wait=True)
        except PoolTimeout as exc:  # gone since the first connection
            pool.close()
            raise self.address.unreachable(exc) from exc
        except BaseException:
            pool.close()
            raise
        return pool

    def run(self, query: Query[T], conn: psycopg.Connection[Any] | None = None) -> T:
        """Run `query`; with `conn`, inside the caller's transaction (never retried)."""
        if conn is not None:
            return execute(conn, query)
        if (routed := self._routed()) is not None:
            loop, adb = routed
            return asyncio.run_coroutine_threadsafe(adb.run(query), loop).result()
        try:  # the first try outside tenacity: its bookkeeping costs ~15 us per call
            with self.pool.connection() as pooled:
                return execute(pooled, query)
        except psycopg.Error as exc:
            if not _retryable(query)(exc):
                raise
        from tenacity import Retrying

        for attempt in _retrying(query, Retrying):
            with attempt, self.pool.connection() as pooled:
                return execute(pooled, query)
        raise AssertionError("unreachable: tenacity re-raises")

    def close(self) -> None:
        _OPEN.discard(self)
        if self._pool is not None:
            self._pool.close()
            self._pool = None


# where a context's blocking queries go instead of the pool (`Database.route`)
_ROUTE: contextvars.ContextVar[tuple[Database, asyncio.AbstractEventLoop, AsyncDatabase] | None] = (
    contextvars.ContextVar("skiplock_route", default=None)
)

# Databases whose pool is open, closed at exit: a pool left to the garbage collector at
# interpreter shutdown cannot stop its threads. On Python 3.13 every `skiplock queues` or
# `skiplock runs` command waited 5 s for each of them (20 s) before it exited.
_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


@atexit.register
def _close_open_pools() -> None:
    for db in list(_OPEN):
        db.close()


class _LoopConnections:
    """Connections of one event loop: the idle ones by lane, and a bound (`max_size`) on
    how many are open, idle or in use, over all lanes.

    A confined loop (`AsyncDatabase.confine`) maps every lane onto one of a few sessions,
    each a single connection that its callers take in turn (`turns`, confined.py): as many
    connections as sessions, whatever the number of callers, and never one closed to
    open another (each session keeps its connection)."""

    def __init__(self, max_size: int) -> None:
        self.idle: dict[str, list[psycopg.AsyncConnection[Any]]] = {}
        self.slots = asyncio.Semaphore(max_size)  # held while a connection is in use
        self.max_size = max_size
        self.open = 0
        self.sessions: dict[str, str] | None = None  # confined: lane -> its session
        self.default_session = ""
        self.turns: dict[str, Session] = {}  # confined: one holder per session

    def session(self, lane: str) -> str:
        if self.sessions is None:
            return lane
        return self.sessions.get(lane, self.default_session)

    def idle_elsewhere(self, lane: str) -> psycopg.AsyncConnection[Any] | None:
        """An idle connection of another lane (to close: each lane keeps its own sessions)."""
        for other, idle in self.idle.items():
            if other != lane and idle:
                return idle.pop(0)  # the longest idle
        return None


class AsyncDatabase(_Shell):
    """Async shell with a small connection cache per event loop.

    Why not psycopg_pool.AsyncConnectionPool: its connections are opened by background
    tasks, and a loop that ends while one is connecting (``asyncio.run(...)`` around a
    single call, a common pattern) hangs in shutdown, because the connect swallows the
    cancellation. Here connections are opened inline by the calling task, so there is
    never a background task to outlive the loop.

    Connection attempts are bounded as in `Database`. Until one has succeeded, a failed
    connect raises `DatabaseUnreachableError` (first contact: a wrong address, a server
    not up yet), which is not retried here; afterwards it is the driver's
    `OperationalError`, retried as transient (a restart, a failover)."""

    def _init_state(self) -> None:
        self._loops: dict[asyncio.AbstractEventLoop, _LoopConnections] = {}
        self._connected = False  # once any connect succeeded

    def _for_loop(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        conns = self._loops.get(loop)
        if conns is None:
            for stale in [lp for lp in self._loops if lp.is_closed()]:
                del self._loops[stale]
            conns = self._loops[loop] = _LoopConnections(self._max_size)
        return conns

    async def _checkout(self, conns: _LoopConnections, lane: str) -> psycopg.AsyncConnection[Any]:
        idle = conns.idle.setdefault(lane, [])
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
            conns.open -= 1
        spare = conns.idle_elsewhere(lane) if conns.open >= conns.max_size else None
        conns.open += 1  # counted before any await, so that concurrent checkouts see it
        try:
            if not isinstance(self._pooled, bool):  # a detection connects: not on the loop
                self._pooled = bool(await asyncio.to_thread(self._pooled))
            if spare is not None:
                # the connections in use are fewer than the slots: one of another lane
                # is idle, and closing it makes room
                conns.open -= 1
                await spare.close()
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, **self._connect_kwargs
            )
        except psycopg.OperationalError as exc:
            conns.open -= 1
            if not self._connected:
                raise self.address.unreachable(exc) from exc
            raise
        except BaseException:
            conns.open -= 1
            raise
        self._connected = True
        return conn

    async def confine(self, sessions: dict[str, str], default: str) -> None:
        """From now on, the running loop's queries take one of a few sessions, a single
        connection each: lane `l` the session `sessions[l]`, every other lane `default`.
        Queries wait their turn for their session's connection: as many connections as
        sessions, however many callers (a single one for all if the shell's `max_size` is
        lower than the number of sessions). The loop's idle connections are closed. For a
        loop that must hold a fixed number of connections: the worker's."""
        conns = self._for_loop()
        names = {*sessions.values(), default}
        if len(names) > conns.max_size:  # not enough for one each: a single session
            sessions, names = {}, {default}
        stale = [conn for idle in conns.idle.values() for conn in idle]
        conns.idle = {}
        conns.open -= len(stale)
        conns.sessions, conns.default_session = dict(sessions), default
        conns.turns = {name: Session(batched=name == default) for name in names}
        for conn in stale:
            await conn.close()

    async def _run_once(self, conns: _LoopConnections, query: Query[T], lane: str) -> T:
        if conns.sessions is None:
            return await self._run_on(conns, query, lane)
        name = conns.session(lane)
        session = conns.turns[name]
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        own: Item = (query, future)
        session.pending.append(own)
        try:
            await session.turn.acquire()
        except BaseException:  # cancelled while waiting: the query is not to be sent
            future.cancel()
            if own in session.pending:
                session.pending.remove(own)
            raise
        try:
            if not future.done():  # else sent with an earlier caller's batch
                await _uncancellable(self._run_batch(conns, name, session.take(own)))
        finally:
            session.turn.release()
        return await future

    async def _run_batch(self, conns: _LoopConnections, lane: str, batch: list[Item]) -> None:
        """Send `batch` on the session's connection and settle its futures."""
        if len(batch) == 1:
            query, future = batch[0]
            try:
                settle(future, True, await self._run_on(conns, query, lane))
            except BaseException as exc:
                settle(future, False, exc)
            return
        try:
            # run_batch raises a typed error only when the connection broke: it is closed
            outcomes = await self._on_connection(
                conns, lane, lambda conn: run_batch(conn, batch, _execute_async), keeps=()
            )
        except BaseException as exc:  # every caller of the batch gets it (no connection...)
            for _, future in batch:
                settle(future, False, exc)
            return
        for future, ok, value in outcomes:
            settle(future, ok, value)

    async def _run_on(self, conns: _LoopConnections, query: Query[T], lane: str) -> T:
        # a typed error from SQL (one statement, autocommit): the connection is fine
        return await self._on_connection(
            conns, lane, lambda conn: _execute_async(conn, query), keeps=(SkiplockError,)
        )

    async def _on_connection(
        self,
        conns: _LoopConnections,
        lane: str,
        work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
        *,
        keeps: tuple[type[BaseException], ...],
    ) -> T:
        """`work` on a connection of `lane`, holding a slot: checked out, then back to the
        lane's idle ones. If `work` raises, the connection is closed (its state is unknown:
        never reused), unless the error is one of `keeps` (the caller knows the connection
        is fine then)."""
        async with conns.slots:
            conn = await self._checkout(conns, lane)
            try:
                result = await work(conn)
            except keeps:
                conns.idle[lane].append(conn)
                raise
            except BaseException:
                conns.open -= 1
                await conn.close()
                raise
            conns.idle[lane].append(conn)
            return result

    async def run(
        self,
        query: Query[T],
        conn: psycopg.AsyncConnection[Any] | None = None,
        *,
        lane: str = "",
    ) -> T:
        """Run `query`; with `conn`, inside the caller's transaction (never retried).

        A `lane` keeps its own idle connections: a statement sent often (a worker's
        claim) then meets a session that has its functions compiled and its plans
        cached, instead of whichever connection a periodic call used last (measured:
        a claim on a cold session took 12-16 ms instead of about 1)."""
        if conn is not None:
            return await _execute_async(conn, query)
        conns = self._for_loop()
        try:  # the first try outside tenacity, as in Database.run: a worker's claim spent
            # 6% of its Python time in tenacity's set-up (py-spy)
            return await self._run_once(conns, query, lane)
        except psycopg.Error as exc:
            if not _retryable(query)(exc):
                raise
        from tenacity import AsyncRetrying

        async for attempt in _retrying(query, AsyncRetrying):
            with attempt:
                return await self._run_once(conns, query, lane)
        raise AssertionError("unreachable: tenacity re-raises")

    async def close(self) -> None:
        conns = self._loops.pop(asyncio.get_running_loop(), None)
        for idle in conns.idle.values() if conns is not None else ():
            while idle:
                await idle.pop().close()


async def _uncancellable(work: Coroutine[Any, Any, None]) -> None:
    """Await `work` to its end even if the caller is cancelled meanwhile (then re-raise):
    it settles other callers' queries, on a connection no one else may take until then."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


def refused(exc: BaseException) -> bool:
    """The database refused the data sent (resending the same will not help). Any other
    error (a connection lost, a read-only server during a failover, a function missing
    mid-upgrade) may pass: outcomes are sent again until their lease runs out."""
    return isinstance(exc, (psycopg.DataError, InvalidArgumentError))
