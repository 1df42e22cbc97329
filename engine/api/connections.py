"""What the API objects hold of the engine: its DSN and its two database shells.

Every sub-API (`app.runs`, `app.queues`, tasks, ...) holds this narrow object instead of
the whole `Engine`, so the API layer has no cycle through the engine class."""

from __future__ import annotations

import os
import threading

from ..db.database import AsyncDatabase, Database
from ..db.dsn import DEFAULT_CONNECT_TIMEOUT, Address
from ..errors import InvalidArgumentError

ENV_DSN = "SKIPLOCK_DATABASE_URL"
ENV_CONNECT_TIMEOUT = "SKIPLOCK_CONNECT_TIMEOUT"


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


class Connections:
    """The DSN comes from the argument, else $SKIPLOCK_DATABASE_URL, else an embedded
    PostgreSQL cluster (started on first use). The shells open their connections lazily.

    A given DSN is checked here, so that a malformed one is an `InvalidArgumentError` at
    construction; where it came from is passed down with it, for the one-line error a
    failed first connection raises (`DatabaseUnreachableError`)."""

    def __init__(self, dsn: str | None = None, *, pool_size: int = 10) -> None:
        timeout = connect_timeout()
        self._address: Address | None = None
        if dsn:
            self._address = Address.checked(dsn, "from the dsn argument", timeout)
        elif os.environ.get(ENV_DSN):
            self._address = Address.checked(os.environ[ENV_DSN], f"from ${ENV_DSN}", timeout)
        self._connect_timeout = timeout
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._adb: AsyncDatabase | None = None

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
            return self._address

    @property
    def dsn(self) -> str:
        """The database DSN; starts the embedded cluster when none was configured."""
        return self.address.dsn

    @property
    def db(self) -> Database:
        """The blocking shell (a pool of autocommit connections)."""
        if self._db is None:
            address = self.address
            with self._lock:
                if self._db is None:
                    self._db = Database(
                        address.dsn,
                        max_size=self._pool_size,
                        source=address.source,
                        connect_timeout=address.connect_timeout,
                    )
        return self._db

    @property
    def adb(self) -> AsyncDatabase:
        """The async shell (connections per event loop)."""
        if self._adb is None:
            address = self.address
            with self._lock:
                if self._adb is None:
                    self._adb = AsyncDatabase(
                        address.dsn,
                        max_size=self._pool_size,
                        source=address.source,
                        connect_timeout=address.connect_timeout,
                    )
        return self._adb

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    async def close_async(self) -> None:
        if self._adb is not None:
            await self._adb.close()
        self.close()
