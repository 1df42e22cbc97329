"""The Engine: where tasks are defined, runs are triggered, and workers come from."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg

from .._durations import Duration
from ..db import migrate as _migrate
from ..db import queries as _queries
from ..db.database import AsyncDatabase, Database, Query
from ..errors import InvalidArgumentError
from ..models import Queue, Retry, RunHandle
from . import options as _options
from .queues import Queues
from .runs import Runs
from .tasks import ANY_PAYLOAD, Task, encode_payload
from .waitpoints import Waitpoints
from .worker_status import Workers

if TYPE_CHECKING:
    from ..worker.runtime import Worker


class Engine:
    """A handle on one skiplock database.

    The DSN comes from the argument, else $SKIPLOCK_DATABASE_URL, else an embedded
    PostgreSQL cluster in a per-user data directory (started on first use, and kept
    running for later processes)."""

    def __init__(self, dsn: str | None = None, *, pool_size: int = 10) -> None:
        self._dsn = dsn or os.environ.get("SKIPLOCK_DATABASE_URL") or None
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._adb: AsyncDatabase | None = None
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.runs = Runs(self)
        self.queues = Queues(self)
        self.waitpoints = Waitpoints(self)
        self.workers = Workers(self)

    # -- connection ----------------------------------------------------------------------

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
        if self._db is None:
            dsn = self.dsn
            with self._lock:
                if self._db is None:
                    self._db = Database(dsn, max_size=self._pool_size)
        return self._db

    @property
    def adb(self) -> AsyncDatabase:
        if self._adb is None:
            dsn = self.dsn
            with self._lock:
                if self._adb is None:
                    self._adb = AsyncDatabase(dsn, max_size=self._pool_size)
        return self._adb

    def migrate(self) -> list[str]:
        """Apply sql/ migrations and function files. Idempotent; concurrent callers
        serialise on an advisory lock. Returns the files applied."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return _migrate.migrate(conn)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    async def close_async(self) -> None:
        if self._adb is not None:
            await self._adb.close()
        self.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close_async()

    # -- tasks ---------------------------------------------------------------------------

    def task(
        self,
        id: str,
        *,
        queue: Queue | str | None = None,
        retry: Retry | None = None,
        max_duration: float | timedelta | None = None,
        ttl: Duration | None = None,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Declare a task. The function takes (payload, ctx); its annotations give the
        payload and output types. `def` tasks run in a thread, `async def` on the loop."""

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            if id in self.tasks:
                raise InvalidArgumentError(f"task {id!r} is already defined")
            task: Task[Any, Any] = Task(
                self, id, fn, queue=queue, retry=retry, max_duration=max_duration, ttl=ttl
            )
            self.tasks[id] = task
            return task

        return register

    # -- triggering by id ------------------------------------------------------------------

    def _trigger_query(
        self, task_id: str, payload: Any, options: dict[str, Any]
    ) -> Query[RunHandle]:
        task = self.tasks.get(task_id)
        if task is not None:
            return task._trigger_query(payload, options)
        payload_json = encode_payload(ANY_PAYLOAD, payload, task_id)
        return _queries.trigger(task_id, payload_json, _options.build(options))

    def trigger(
        self,
        task_id: str,
        payload: Any,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> RunHandle:
        """Trigger a task by id; its code need not be importable here. A task defined on
        this engine has its payload validated as `Task.trigger` does."""
        return self.db.run(self._trigger_query(task_id, payload, options), conn)

    async def trigger_async(
        self,
        task_id: str,
        payload: Any,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Any,
    ) -> RunHandle:
        return await self.adb.run(self._trigger_query(task_id, payload, options), conn)

    # -- workers ---------------------------------------------------------------------------

    def worker(
        self,
        queues: list[str] | None = None,
        concurrency: int = 10,
        version: str | None = None,
        **settings: Any,
    ) -> Worker:
        """A worker for this engine's tasks; `.run()` blocks until SIGTERM/SIGINT."""
        from ..worker.runtime import Worker

        return Worker(self, queues=queues, concurrency=concurrency, version=version, **settings)
