"""The Engine: where tasks are defined and runs are triggered, with the API objects
(`runs`, `queues`, `waitpoints`, `workers`) that share its connections."""

from __future__ import annotations

import difflib
import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Unpack, overload

import psycopg

from .._durations import UNSET, Duration, Unset, default_retention
from ..db import migrate as migrations
from ..db import queries
from ..db.database import AsyncDatabase, Database, Query
from ..errors import InvalidArgumentError, UnknownTaskWarning
from ..values import Queue, Retry, RunHandle, RunStatus
from . import options as trigger_options
from . import tracing
from .alerts import Alerts
from .connections import Connections
from .hooks import Hook, Hooks
from .options import TriggerOptions
from .tasks import ANY_PAYLOAD, Task, encode_payload
from .twins import Plan, twin

if TYPE_CHECKING:
    # pydantic's models and the modules that declare them: imported on first use (a
    # worker of untyped tasks never does, see bench/worker_footprint.py)
    from .queues import Queues
    from .runs import Runs
    from .schedules import Schedules
    from .waitpoints import Waitpoints
    from .worker_status import TableHealth, Workers

H = TypeVar("H", bound=Hook)


class WorkerProcess(Protocol):
    """What `Engine.worker()` returns: an `engine.Worker` (typed here by what it does, so
    that the API layer does not import the worker runtime)."""

    shutdown_grace: float

    @property
    def id(self) -> str: ...

    def run(self) -> None: ...

    async def run_async(self, *, install_signals: bool = False) -> None: ...

    def stop(self, *, now: bool = False) -> None: ...


class Engine:
    """A handle on one skiplock database.

    The DSN comes from the argument, else $SKIPLOCK_DATABASE_URL, else an embedded
    PostgreSQL cluster in a per-user data directory (started on first use, and kept
    running for later processes). A malformed DSN raises `InvalidArgumentError` here.
    Nothing connects until the first call; a first connection that fails raises
    `DatabaseUnreachableError` within the connect timeout ($SKIPLOCK_CONNECT_TIMEOUT,
    default 5 s), and a database never migrated raises `SchemaNotMigratedError`.

    Behind a transaction-mode pooler (PgBouncer, RDS Proxy, Supavisor): `dsn` is the
    pooled address, `listen_dsn` (else $SKIPLOCK_LISTEN_URL) a direct one for LISTEN, and
    `pooled=True` (else $SKIPLOCK_POOLED=1, else implied by a `listen_dsn`, else detected)
    says so. Pooled with no `listen_dsn`: poll-only (see `poll_only`). `read_dsn` (else
    $SKIPLOCK_READ_URL): a replica that `runs.list`, `runs.retrieve` and `runs.children`
    read from. `pool_size`: the most connections the blocking API's pool, and each event
    loop's async calls, may open; a worker's loop holds two whatever its concurrency (one
    if `pool_size` is 1), besides the LISTEN connection (engine/worker/sessions.py)."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        listen_dsn: str | None = None,
        read_dsn: str | None = None,
        pooled: bool | None = None,
        pool_size: int = 10,
        retention: Duration | Unset | None = UNSET,
        capture_logs: bool = False,
    ) -> None:
        #: how long finished runs are kept, in seconds (None: forever), unless their task
        #: or queue says otherwise: `retention`, else $SKIPLOCK_RETENTION, else 30 days
        self.retention: float | None = default_retention(retention)
        #: capture the `logging` records of every task's runs (a task's own setting wins)
        self.capture_logs = capture_logs
        #: the engine's hooks: they run before each task's own (register with on_start...)
        self.hooks = Hooks()
        #: callbacks and webhooks told of runs that fail for good (see on_run_failed)
        self.alerts = Alerts()
        self._conns = Connections(
            dsn, pool_size=pool_size, listen_dsn=listen_dsn, read_dsn=read_dsn, pooled=pooled
        )
        self.tasks: dict[str, Task[Any, Any]] = {}

    # -- the API objects, made on first use ----------------------------------------------

    @functools.cached_property
    def runs(self) -> Runs:
        from .runs import Runs

        return Runs(self._conns)

    @functools.cached_property
    def queues(self) -> Queues:
        from .queues import Queues

        return Queues(self._conns)

    @functools.cached_property
    def waitpoints(self) -> Waitpoints:
        from .waitpoints import Waitpoints

        return Waitpoints(self._conns)

    @functools.cached_property
    def workers(self) -> Workers:
        from .worker_status import Workers

        return Workers(self._conns)

    @functools.cached_property
    def schedules(self) -> Schedules:
        from .schedules import Schedules

        return Schedules(self._conns)

    # -- connection ----------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The database DSN; starts the embedded cluster when none was configured."""
        return self._conns.dsn

    @property
    def pooled(self) -> bool:
        """Whether `dsn` leads to a transaction-mode pooler (given, or detected once: two
        short connections)."""
        return self._conns.pooled

    @property
    def listen_dsn(self) -> str | None:
        """Where this engine's LISTEN goes: the listen DSN, else `dsn` unless it is
        pooled; None in poll-only mode."""
        listen = self._conns.listen_address
        return listen.dsn if listen is not None else None

    @property
    def read_dsn(self) -> str | None:
        """The replica `runs.list`, `runs.retrieve` and `runs.children` read from, if any."""
        return self._conns.read_dsn

    @property
    def poll_only(self) -> bool:
        """A pooled `dsn` and no `listen_dsn`: workers poll for work (50 ms after finding
        some, backing off to their `poll_interval` when idle) and, while running attempts,
        for cancels every `poll_interval` (a heartbeat, whose reply names them);
        subscriptions re-read the rows they watch every 0.25 s."""
        return self._conns.poll_only

    @property
    def db(self) -> Database:
        return self._conns.db

    @property
    def adb(self) -> AsyncDatabase:
        return self._conns.adb

    @twin
    def table_health(self) -> Plan[list[TableHealth]]:
        """Each skiplock table's size, dead tuples and last vacuum and analyze (the view
        `skiplock.table_health`), largest first: are the tables staying small?"""
        from .worker_status import TableHealth

        return [TableHealth.model_validate(r) for r in (yield queries.table_health())]

    table_health_async = table_health.aio

    def migrate(self) -> list[str]:
        """Apply sql/: the migrations, then the function, view and trigger files that
        changed. Idempotent; concurrent callers serialise on an advisory lock. Returns the
        files applied."""
        with self.db.connect() as conn:
            return migrations.migrate(conn)

    @twin
    def check(self) -> Plan[None]:
        """Connect, and check that every migration of this version is applied; writes
        nothing. Raises `DatabaseUnreachableError` or `SchemaNotMigratedError`, each one
        line saying what to do. For start-up checks (`skiplock dashboard` makes one)."""
        migrations.check_applied((yield queries.migrations_applied()))

    check_async = check.aio

    def close(self) -> None:
        self._conns.close()

    async def close_async(self) -> None:
        await self._conns.close_async()

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
        retention: Duration | Unset | None = UNSET,
        cron: str | None = None,
        timezone: str = "UTC",
        capture_logs: bool | None = None,
        on_start: Hook | None = None,
        on_success: Hook | None = None,
        on_failure: Hook | None = None,
        on_complete: Hook | None = None,
        on_wait: Hook | None = None,
        on_resume: Hook | None = None,
        catch_error: Hook | None = None,
        middleware: Sequence[Hook] | None = None,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Declare a task. The function takes (payload, ctx); its annotations give the
        payload and output types. `def` tasks run in a thread, `async def` on the loop.
        `retention` keeps its finished runs that long (None: forever) instead of its
        queue's or the engine's retention. `cron` (5 fields, in IANA zone `timezone`)
        declares its schedule: created or updated when a worker of the task registers,
        removed when a deployment of the task no longer declares it; each run gets a
        `ScheduledPayload`. `capture_logs` stores the `logging` records emitted while a run
        executes with the run (None: the engine's setting). The hooks and `middleware` run
        around each attempt, after the engine's (see `Engine.on_start` and the like)."""
        hooks = Hooks.of(
            middleware,
            on_start=on_start,
            on_success=on_success,
            on_failure=on_failure,
            on_complete=on_complete,
            on_wait=on_wait,
            on_resume=on_resume,
            catch_error=catch_error,
        )

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            if id in self.tasks:
                raise InvalidArgumentError(f"task {id!r} is already defined")
            task: Task[Any, Any] = Task(
                self._conns,
                id,
                fn,
                queue=queue,
                retry=retry,
                max_duration=max_duration,
                ttl=ttl,
                retention=retention,
                default_retention=self.retention,
                cron=cron,
                timezone=timezone,
                hooks=hooks,
                capture_logs=capture_logs,
            )
            self.tasks[id] = task
            return task

        return register

    # -- engine-wide hooks: each runs for every task's attempts, before the task's own -----

    def on_start(self, fn: Hook) -> Hook:
        """Call `fn(ctx, payload)` when a run starts executing (its first attempt; a
        retry starts again, a resume after a wait does not). Usable as a decorator."""
        return self.hooks.add("on_start", fn)

    def on_success(self, fn: Hook) -> Hook:
        """Call `fn(ctx, payload, output)` when an attempt returns."""
        return self.hooks.add("on_success", fn)

    def on_failure(self, fn: Hook) -> Hook:
        """Call `fn(ctx, payload, error)` when a run fails for good (no retry left)."""
        return self.hooks.add("on_failure", fn)

    def on_complete(self, fn: Hook) -> Hook:
        """Call `fn(ctx, payload, result)` after on_success or on_failure (a `Result`)."""
        return self.hooks.add("on_complete", fn)

    def on_wait(self, fn: Hook) -> Hook:
        """Call `fn(ctx, payload, wait)` when a run suspends on a wait (what it waits on)."""
        return self.hooks.add("on_wait", fn)

    def on_resume(self, fn: Hook) -> Hook:
        """Call `fn(ctx, payload, wait)` when a run resumes after a wait."""
        return self.hooks.add("on_resume", fn)

    def catch_error(self, fn: Hook) -> Hook:
        """`fn(ctx, error)` decides a failed attempt's fate when the task's own did not:
        `RetryNow()`, `RetryAt(datetime)`, `NoRetry()`, or None (the retry policy)."""
        return self.hooks.add("catch_error", fn)

    def middleware(self, fn: Hook) -> Hook:
        """`fn(ctx)` returns a context manager (or an async one) entered around every
        attempt of every task, outside the tasks' own middleware."""
        return self.hooks.add("middleware", fn)

    @overload
    def on_run_failed(self, callback: H) -> H: ...

    @overload
    def on_run_failed(
        self,
        callback: None = None,
        *,
        webhook: str,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        timeout: float = 10.0,
    ) -> None: ...

    def on_run_failed(
        self,
        callback: Hook | None = None,
        *,
        webhook: str | None = None,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        timeout: float = 10.0,
    ) -> Hook | None:
        """Alert when a run of any task fails for good (FAILED, CRASHED, SYSTEM_FAILURE,
        TIMED_OUT; not CANCELED or EXPIRED): call `callback(run)` or `callback(run,
        alert)` (async or not; usable as a decorator), or POST JSON to `webhook` (with
        `headers`; `secret` signs the body in X-Skiplock-Signature: sha256=HMAC; a 2xx
        answer within `timeout` seconds delivers it).

        The failure is written to the database with the run, and delivered from there by
        a worker of this engine, any one, not necessarily the one whose run failed (a run
        whose worker crashed is alerted too), at least once: dedupe by `alert.id` (the
        webhook's Idempotency-Key). A callback that raises, or a webhook that does not
        answer 2xx, is tried again later with backoff (`app.alerts` tunes it); the others
        of the same alert are not called again. Unlike `on_failure`, which runs in the
        attempt's own worker, this runs after the failure is committed."""
        if (callback is None) == (webhook is None):
            raise InvalidArgumentError("on_run_failed takes a callback or a webhook=URL")
        if webhook is not None:
            self.alerts.add_webhook(webhook, headers=headers, secret=secret, timeout=timeout)
            return None
        assert callback is not None
        return self.alerts.add_callback(callback)

    def schedule(
        self, id: str, *, cron: str, timezone: str = "UTC", **task_options: Any
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Declare a scheduled task: `@app.task(id, cron=..., timezone=..., ...)`."""
        return self.task(id, cron=cron, timezone=timezone, **task_options)

    # -- triggering by id ------------------------------------------------------------------

    def _trigger_query(
        self, task_id: str, payload: Any, options: TriggerOptions, span: tracing.TriggerSpan
    ) -> Query[RunHandle]:
        task = self.tasks.get(task_id)
        if task is not None:
            return task._trigger_query(payload, options, span)
        payload_json = encode_payload(ANY_PAYLOAD, payload, task_id)
        built = trigger_options.build(options)
        built["default_retention"] = self.retention
        return queries.trigger(task_id, payload_json, span.options(built))

    def trigger(
        self,
        task_id: str,
        payload: Any,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Unpack[TriggerOptions],
    ) -> RunHandle:
        """Trigger a task by id; its code need not be importable here. A task defined on
        this engine has its payload validated as `Task.trigger` does. Triggering a task no
        deployment has yet is allowed (the run waits in PENDING_VERSION); when neither this
        engine nor any deployment knows the id, an `UnknownTaskWarning` names the closest
        known ids."""
        with tracing.trigger_span(task_id) as span:
            handle = self.db.run(self._trigger_query(task_id, payload, options, span), conn)
            span.run(handle.id, handle.is_cached)
        if self._maybe_unknown(handle):
            _warn_unknown(task_id, [*self.tasks, *self.db.run(queries.deployed_task_ids(), conn)])
        return handle

    async def trigger_async(
        self,
        task_id: str,
        payload: Any,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Unpack[TriggerOptions],
    ) -> RunHandle:
        with tracing.trigger_span(task_id) as span:
            query = self._trigger_query(task_id, payload, options, span)
            handle = await self.adb.run(query, conn)
            span.run(handle.id, handle.is_cached)
        if self._maybe_unknown(handle):
            deployed = await self.adb.run(queries.deployed_task_ids(), conn)
            _warn_unknown(task_id, [*self.tasks, *deployed])
        return handle

    def _maybe_unknown(self, handle: RunHandle) -> bool:
        """PENDING_VERSION for a task this engine does not define: no deployment has the
        task, or none has the pinned version (the warning tells the two apart)."""
        return (
            handle.status is RunStatus.PENDING_VERSION and handle.task_identifier not in self.tasks
        )

    # -- workers ---------------------------------------------------------------------------

    def worker(
        self,
        queues: list[str] | None = None,
        concurrency: int = 10,
        version: str | None = None,
        **settings: Any,
    ) -> WorkerProcess:
        """A worker for this engine's tasks (an `engine.Worker`); `.run()` blocks until
        SIGTERM/SIGINT."""
        from ..worker import Worker

        return Worker(self, queues=queues, concurrency=concurrency, version=version, **settings)


def _warn_unknown(task_id: str, known: list[str]) -> None:
    if task_id in known:
        return  # deployed, at another version than the one pinned
    close = difflib.get_close_matches(task_id, sorted(set(known)), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    warnings.warn(
        f"no task {task_id!r} is defined on this engine or deployed by any worker: the run "
        f"waits in PENDING_VERSION until a worker with that task registers{hint}",
        UnknownTaskWarning,
        stacklevel=3,
    )
