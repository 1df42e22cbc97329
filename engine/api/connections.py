"""What the API objects hold of the engine: its DSNs and their database shells.

Every sub-API (`app.runs`, `app.queues`, tasks, ...) holds this narrow object instead of
the whole `Engine`, so the API layer has no cycle through the engine class.

Three addresses, of which only the first is needed:

* `dsn`: every query. It may lead to a transaction-mode pooler (PgBouncer, RDS Proxy,
  Supavisor): then `pooled`, and its connections prepare no statements.
* `listen_dsn`: a direct session for LISTEN (worker wake-ups and cancels, realtime
  subscriptions, which also read the rows they watch on it). Without one, LISTEN goes to
  `dsn` unless it is pooled; a pooled `dsn` and no `listen_dsn` is **poll-only** mode:
  workers poll for work, and subscriptions poll the rows they watch.
* `read_dsn`: a replica for reads that may lag: `runs.list`, `runs.retrieve` and
  `runs.children` (what the dashboard and `skiplock runs` show). Nothing a claim, a wait
  or `runs.poll` depends on reads there.

`pooled` is the argument, else $SKIPLOCK_POOLED, else true when a `listen_dsn` is given
(a direct DSN for LISTEN says the other one is not), else detected at first use (see
`shares_sessions`): never for the embedded cluster."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from ..db.database import AsyncDatabase, Database, shares_sessions
from ..db.dsn import DEFAULT_CONNECT_TIMEOUT, Address
from ..db.listener import Listener
from ..errors import InvalidArgumentError

ENV_DSN = "SKIPLOCK_DATABASE_URL"
ENV_CONNECT_TIMEOUT = "SKIPLOCK_CONNECT_TIMEOUT"
ENV_LISTEN = "SKIPLOCK_LISTEN_URL"
ENV_READ = "SKIPLOCK_READ_URL"
ENV_POOLED = "SKIPLOCK_POOLED"

SUBSCRIPTION_POLL_INTERVAL = 0.25
"""Seconds between reads of the watched rows by a poll-only process's subscriptions."""

log = logging.getLogger("skiplock.connections")

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def connect_timeout() -> int:
    """$SKIPLOCK_CONNECT_TIMEOUT (whole seconds, at least 1), else the default (5)."""
    text = os.environ.get(ENV_CONNECT_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidArgumentError(
            f"{ENV_CONNECT_TIMEOUT} must be a whole number of seconds, at least 1, got {text!r}"
        )
    return value


def pooled_setting() -> bool | None:
    """$SKIPLOCK_POOLED: 1/true/yes/on or 0/false/no/off; None when unset or empty."""
    text = os.environ.get(ENV_POOLED, "").strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidArgumentError(f"{ENV_POOLED} must be 1 or 0 (true/false), got {text!r}")


def _address(argument: str | None, name: str, env: str, timeout: int) -> Address | None:
    if argument:
        return Address.checked(argument, f"from the {name} argument", timeout)
    if os.environ.get(env):
        return Address.checked(os.environ[env], f"from ${env}", timeout)
    return None


class Connections:
    """The DSN comes from the argument, else $SKIPLOCK_DATABASE_URL, else an embedded
    PostgreSQL cluster (started on first use). The shells open their connections lazily.

    A given DSN is checked here, so that a malformed one is an `InvalidArgumentError` at
    construction; where it came from is passed down with it, for the one-line error a
    failed first connection raises (`DatabaseUnreachableError`). `listen_dsn`, `read_dsn`
    and `pooled` (else $SKIPLOCK_LISTEN_URL, $SKIPLOCK_READ_URL, $SKIPLOCK_POOLED): see the
    module's docstring."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool_size: int = 10,
        listen_dsn: str | None = None,
        read_dsn: str | None = None,
        pooled: bool | None = None,
    ) -> None:
        timeout = connect_timeout()
        self._address: Address | None = _address(dsn, "dsn", ENV_DSN, timeout)
        self._listen_address = _address(listen_dsn, "listen_dsn", ENV_LISTEN, timeout)
        self._read_address = _address(read_dsn, "read_dsn", ENV_READ, timeout)
        self._pooled_setting = pooled if pooled is not None else pooled_setting()
        self._setup(timeout, pool_size)

    def _setup(self, timeout: int, pool_size: int) -> None:
        self._connect_timeout = timeout
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._pooled_lock = threading.Lock()
        self._pooled: bool | None = None
        self._embedded = False
        self._db: Database | None = None
        self._adb: AsyncDatabase | None = None
        self._reader: Connections | None = None

    @property
    def address(self) -> Address:
        """The DSN and where it came from; starts the embedded cluster when none was
        configured."""
        with self._lock:
            if self._address is None:
                from ..db.embedded import default_data_dir, embedded_dsn

                self._address = Address(
                    embedded_dsn(),
                    f"the embedded PostgreSQL in {default_data_dir()}",
                    self._connect_timeout,
                )
                self._embedded = True
            return self._address

    @property
    def dsn(self) -> str:
        """The database DSN; starts the embedded cluster when none was configured."""
        return self.address.dsn

    @property
    def pooled(self) -> bool:
        """Whether `dsn` leads to a transaction-mode pooler. Detection (when neither the
        argument, $SKIPLOCK_POOLED nor a `listen_dsn` says) opens two short connections,
        once; a failure to connect raises `DatabaseUnreachableError` and is not kept."""
        if self._pooled is None:
            address = self.address
            with self._pooled_lock:
                if self._pooled is None:
                    self._pooled = self._resolve_pooled(address)
        return self._pooled

    def _pooled_now(self) -> bool | Callable[[], bool]:
        """`pooled` if known without connecting, else how to find out (the shells ask it
        before their first connection: the async one on a thread)."""
        if self._pooled is not None:
            return self._pooled
        if self._pooled_setting is not None or self._listen_address is not None or self._embedded:
            return self.pooled
        return lambda: self.pooled

    def _resolve_pooled(self, address: Address) -> bool:
        if self._pooled_setting is not None:
            return self._pooled_setting
        if self._listen_address is not None:
            return True
        if self._embedded:
            return False
        if shares_sessions(address):
            log.info(
                "%s leads to a connection pooler (server sessions are shared); %s. Set "
                "%s=0 (pooled=False) if it does not.",
                address.shown,
                "LISTEN goes to the listen DSN"
                if self._listen_address is not None
                else f"no {ENV_LISTEN}: workers and subscriptions poll",
                ENV_POOLED,
            )
            return True
        return False

    @property
    def listen_address(self) -> Address | None:
        """Where LISTEN goes: the listen DSN, else `dsn` unless it is pooled; None: nowhere
        (poll-only)."""
        if self._listen_address is not None:
            return self._listen_address
        return None if self.pooled else self.address

    @property
    def poll_only(self) -> bool:
        """No session to LISTEN on: workers poll for work and cancels (the heartbeat's
        reply), subscriptions poll the rows they watch."""
        return self.listen_address is None

    def listener(self) -> Listener:
        """The process's LISTEN connection for this engine, or in poll-only mode a
        listener that polls: its handlers are told to re-read every
        `SUBSCRIPTION_POLL_INTERVAL` seconds, on a connection of `dsn`'s."""
        listen = self.listen_address
        if listen is None:
            return Listener.for_dsn(self.dsn, poll_interval=SUBSCRIPTION_POLL_INTERVAL)
        return Listener.for_dsn(listen.dsn)

    @property
    def read_dsn(self) -> str | None:
        return self._read_address.dsn if self._read_address is not None else None

    @property
    def listen_dsn(self) -> str | None:
        """The DSN given for LISTEN (argument or $SKIPLOCK_LISTEN_URL), if any."""
        return self._listen_address.dsn if self._listen_address is not None else None

    @property
    def reader(self) -> Connections:
        """The shells for reads a replica may serve (`read_dsn`'s), else these. The
        replica counts as pooled when `pooled` was set, else it is detected on its own."""
        if self._read_address is None:
            return self
        with self._lock:
            if self._reader is None:
                reader = Connections.__new__(Connections)
                reader._address = self._read_address
                reader._listen_address = None
                reader._read_address = None
                reader._pooled_setting = self._pooled_setting
                reader._setup(self._connect_timeout, self._pool_size)
                self._reader = reader
            return self._reader

    @property
    def db(self) -> Database:
        """The blocking shell (a pool of autocommit connections)."""
        if self._db is None:
            address, pooled = self.address, self._pooled_now()
            with self._lock:
                if self._db is None:
                    self._db = Database(
                        address.dsn,
                        max_size=self._pool_size,
                        source=address.source,
                        connect_timeout=address.connect_timeout,
                        pooled=pooled,
                    )
        return self._db

    @property
    def adb(self) -> AsyncDatabase:
        """The async shell (connections per event loop)."""
        if self._adb is None:
            address, pooled = self.address, self._pooled_now()
            with self._lock:
                if self._adb is None:
                    self._adb = AsyncDatabase(
                        address.dsn,
                        max_size=self._pool_size,
                        source=address.source,
                        connect_timeout=address.connect_timeout,
                        pooled=pooled,
                    )
        return self._adb

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        if self._reader is not None:
            self._reader.close()

    async def close_async(self) -> None:
        if self._adb is not None:
            await self._adb.close()
        if self._reader is not None and self._reader._adb is not None:
            await self._reader._adb.close()
        self.close()
