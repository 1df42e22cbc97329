"""What the API objects hold of the engine: its DSN and its two database shells.

Every sub-API (`app.runs`, `app.queues`, tasks, ...) holds this narrow object instead of
the whole `Engine`, so the API layer has no cycle through the engine class."""

from __future__ import annotations

import os
import threading

from ..db.database import AsyncDatabase, Database


class Connections:
    """The DSN comes from the argument, else $SKIPLOCK_DATABASE_URL, else an embedded
    PostgreSQL cluster (started on first use). The shells open their connections lazily."""

    def __init__(self, dsn: str | None = None, *, pool_size: int = 10) -> None:
        self._dsn = dsn or os.environ.get("SKIPLOCK_DATABASE_URL") or None
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._adb: AsyncDatabase | None = None

    @property
    def dsn(self) -> str:
        """The database DSN; starts the embedded cluster when none was configured."""
        with self._lock:
            if self._dsn is None:
                from ..db.embedded import embedded_dsn

                self._dsn = embedded_dsn()
            return self._dsn

    @property
    def db(self) -> Database:
        """The blocking shell (a pool of autocommit connections)."""
        if self._db is None:
            dsn = self.dsn
            with self._lock:
                if self._db is None:
                    self._db = Database(dsn, max_size=self._pool_size)
        return self._db

    @property
    def adb(self) -> AsyncDatabase:
        """The async shell (connections per event loop)."""
        if self._adb is None:
            dsn = self.dsn
            with self._lock:
                if self._adb is None:
                    self._adb = AsyncDatabase(dsn, max_size=self._pool_size)
        return self._adb

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    async def close_async(self) -> None:
        if self._adb is not None:
            await self._adb.close()
        self.close()
