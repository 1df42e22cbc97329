"""The runs API: retrieve, list with cursor pages, cancel, replay, reschedule, subscribe,
logs."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._durations import Duration, delay_options, parse_seconds
from ..db import queries
from ..db.database import Query
from ..errors import InvalidArgumentError
from ..models import LogRecord, Run
from ..values import FINAL_STATUSES, RunHandle, RunStatus
from . import realtime, run_logs
from .connections import Connections
from .twins import Plan, replica_twin, twin

if TYPE_CHECKING:
    from .tasks import Task

RunRef = str | RunHandle | Run[Any, Any]  # a run's id, a trigger's handle, or a Run read before
_FINAL = sorted(s.value for s in FINAL_STATUSES)


def run_id(ref: RunRef) -> str:
    if isinstance(ref, RunHandle | Run):
        return ref.id
    if not isinstance(ref, str) or not ref:
        raise InvalidArgumentError(f"expected a run id or handle, got {ref!r}")
    return ref


def _strings(name: str, value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) for v in values):
        raise InvalidArgumentError(f"{name} filter must be strings")
    return values


@dataclass(frozen=True)
class ListFilter:
    status: list[str] | None
    tasks: list[str] | None
    tags: list[str] | None
    batch: str | None
    created_from: datetime | None
    created_to: datetime | None
    limit: int
    schedule: str | None = None

    def query(self, after: str | None) -> Query[list[dict[str, Any]]]:
        # one extra row tells whether a next page exists
        return queries.list_runs(
            status=self.status,
            tasks=self.tasks,
            tags=self.tags,
            batch=self.batch,
            created_from=self.created_from,
            created_to=self.created_to,
            after=after,
            limit=self.limit + 1,
            schedule=self.schedule,
        )


class Page:
    """One page of runs, newest first. Iterating a page walks every following page."""

    def __init__(self, conns: Connections, flt: ListFilter, rows: list[dict[str, Any]]) -> None:
        self._conns, self._filter = conns, flt
        self.data: list[Run[Any, Any]] = [Run.model_validate(r) for r in rows[: flt.limit]]
        self._more = len(rows) > flt.limit

    def has_next_page(self) -> bool:
        return self._more

    @property
    def next_cursor(self) -> str | None:
        """Pass as `after=` to `runs.list` for the next page; None on the last page."""
        return self.data[-1].id if self._more else None

    def _cursor(self) -> str:
        if not self._more:
            raise InvalidArgumentError("this is the last page")
        return self.data[-1].id

    @replica_twin
    def get_next_page(self) -> Plan[Page]:
        return Page(self._conns, self._filter, (yield self._filter.query(self._cursor())))

    get_next_page_async = get_next_page.aio

    def __iter__(self) -> Iterator[Run[Any, Any]]:
        page: Page | None = self
        while page is not None:
            yield from page.data
            page = page.get_next_page() if page.has_next_page() else None

    async def __aiter__(self) -> AsyncIterator[Run[Any, Any]]:
        page: Page | None = self
        while page is not None:
            for run in page.data:
                yield run
            page = await page.get_next_page_async() if page.has_next_page() else None


def _model(task: Task[Any, Any] | None) -> Callable[[dict[str, Any]], Run[Any, Any]]:
    if task is None:
        return Run.model_validate
    # parametrised at run time with the task's annotated types
    typed = Run.__class_getitem__((task.payload_type, task.output_type))
    return typed.model_validate  # type: ignore[union-attr,return-value]


def _filter(
    status: str | Sequence[str] | None,
    task: str | Sequence[str] | None,
    tag: str | Sequence[str] | None,
    batch: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
    schedule: str | None = None,
) -> ListFilter:
    statuses = _strings("status", status)
    for s in statuses or []:
        if s not in RunStatus.__members__:
            raise InvalidArgumentError(f"unknown status {s!r}")
    return ListFilter(
        statuses,
        _strings("task", task),
        _strings("tag", tag),
        batch,
        created_from,
        created_to,
        _limit(limit),
        schedule,
    )


class Runs:
    """`app.runs`: every call has an `_async` twin with the same arguments."""

    def __init__(self, conns: Connections) -> None:
        self._conns = conns

    @replica_twin
    def retrieve(self, run: RunRef, *, task: Task[Any, Any] | None = None) -> Plan[Run[Any, Any]]:
        """The run's current state with its attempts; with `task`, payload and output are
        parsed to the task's types. Raises `RunNotFoundError` for an unknown id. With a
        `read_dsn`, read from that replica: a run just triggered may not be there yet."""
        return _model(task)((yield queries.retrieve(run_id(run))))

    retrieve_async = retrieve.aio

    @twin
    def _current(self, run: RunRef, *, task: Task[Any, Any] | None = None) -> Plan[Run[Any, Any]]:
        """`retrieve` from the primary, whatever `read_dsn` says (for `poll`)."""
        return _model(task)((yield queries.retrieve(run_id(run))))

    _current_async = _current.aio

    @replica_twin
    def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        task: str | Sequence[str] | None = None,
        tag: str | Sequence[str] | None = None,
        batch: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 20,
        after: str | None = None,
        schedule: str | None = None,
    ) -> Plan[Page]:
        """Runs newest first, filtered (filters AND together; a list matches any of its
        values; `schedule`: the runs a schedule triggered). `after` is a page's
        `next_cursor`: the page that follows it. Raises `UnknownTaskError` for a task
        filter no deployment or run knows. With a `read_dsn`, read from that replica."""
        flt = _filter(status, task, tag, batch, created_from, created_to, limit, schedule)
        return Page(self._conns, flt, (yield flt.query(_cursor(after))))

    list_async = list.aio

    @replica_twin
    def children(self, run: RunRef, *, limit: int = 100) -> Plan[builtins.list[Run[Any, Any]]]:
        """The runs this run triggered, oldest first (at most `limit`). With a `read_dsn`,
        read from that replica."""
        rows = yield queries.children(run_id(run), _limit(limit))
        return [Run.model_validate(r) for r in rows]

    children_async = children.aio

    @twin
    def cancel(self, run: RunRef) -> Plan[RunStatus]:
        """Cancel the run and its non-final descendants; a running attempt is stopped and
        its late result ignored. Returns the run's status after the call (a run already
        final keeps its status)."""
        status: RunStatus = yield queries.cancel(run_id(run))
        return status

    cancel_async = cancel.aio

    @twin
    def replay(self, run: RunRef) -> Plan[Run[Any, Any]]:
        """A new run with the same task, payload, tags and metadata, on the latest version."""
        new_id = yield queries.replay(run_id(run))
        return Run.model_validate((yield queries.retrieve(new_id)))

    replay_async = replay.aio

    @twin
    def reschedule(self, run: RunRef, *, delay: Duration | datetime) -> Plan[Run[Any, Any]]:
        """Move a DELAYED run's start; raises `RunNotDelayedError` for any other status."""
        rid = run_id(run)
        yield queries.reschedule(rid, delay_options(delay))
        return Run.model_validate((yield queries.retrieve(rid)))

    reschedule_async = reschedule.aio

    @twin
    def status_reason(self, run: RunRef) -> Plan[str | None]:
        """Why the run has not moved on, in one line for people, or None when nothing
        holds it up: "no deployment has task X", "attempt 3 at 2026-12-06 14:03:07 UTC",
        "waiting for a worker of version V", "queue q is paused", a lapsed worker, ..."""
        reason: str | None = yield queries.status_reason(run_id(run))
        return reason

    status_reason_async = status_reason.aio

    @twin
    def purge(
        self,
        *,
        older_than: Duration | datetime | None = None,
        status: str | Sequence[str] | None = None,
        task: str | Sequence[str] | None = None,
        dry_run: bool = False,
        batch_size: int = 1000,
    ) -> Plan[int]:
        """Delete finished runs for good, with their attempts, steps and the waitpoints
        and batches nothing else needs: those finished more than `older_than` ago (a
        duration, or a datetime: before it; None: any finished run), of the final
        `status`es and `task`s given. Runs an unfinished run still waits on, and runs
        whose idempotency key has a TTL still running, are kept. Deletes `batch_size`
        runs per transaction (each call of skiplock.purge_runs is short and locks only
        what it deletes) until none is left. With `dry_run`, counts and deletes nothing.
        Returns how many runs were deleted (or would be)."""
        before, seconds = None, None
        if isinstance(older_than, datetime):
            before = older_than
        elif older_than is not None:
            seconds = parse_seconds(older_than, "older_than")
            if seconds < 0:
                raise InvalidArgumentError(f"older_than must not be negative, got {older_than!r}")
        statuses = _strings("status", status)
        for s in statuses or []:
            if s not in _FINAL:
                raise InvalidArgumentError(
                    f"only finished runs are purged: status must be one of {', '.join(_FINAL)}, "
                    f"got {s!r}"
                )
        flt = (before, seconds, statuses, _strings("task", task), _limit(batch_size, 100000))
        if dry_run:
            count: int = yield queries.purge_runs(*flt, dry_run=True)
            return count
        total = 0
        while True:
            done: int = yield queries.purge_runs(*flt, dry_run=False)
            total += done
            if done < batch_size:
                return total

    purge_async = purge.aio

    # logs --------------------------------------------------------------------------------

    @twin
    def logs(
        self, run: RunRef, *, after: int | None = None, limit: int = 1000
    ) -> Plan[builtins.list[LogRecord]]:
        """The run's log records, oldest first: what `ctx.logger` logged, and with
        `capture_logs` every `logging` record of the run. Those after `seq` `after` (None:
        from the first), at most `limit` (1 to 10,000). A run keeps its last 1,000
        records and 256 KB (a marker record counts the older ones dropped). Raises
        `RunNotFoundError` for an unknown (or purged) run."""
        rows = yield queries.run_logs_of(run_id(run), _seq(after), _limit(limit, 10000))
        return [LogRecord.model_validate(r) for r in rows]

    logs_async = logs.aio

    def follow_logs(
        self, run: RunRef, *, after: int | None = None, timeout: float | None = None
    ) -> Iterator[LogRecord]:
        """The run's log records after `seq` `after` (None: all), then each new one as the
        worker writes it (every 0.5 s, and at each attempt's end), until the run is final
        and its last records are read. Built on the realtime feed (one LISTEN connection
        per process). `TimeoutError` past `timeout` seconds from the start (None: no
        limit); `RunNotFoundError` for an unknown run."""
        return run_logs.follow(
            self._conns, run_id(run), after=_seq(after), timeout=_timeout(timeout)
        )

    def follow_logs_async(
        self, run: RunRef, *, after: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[LogRecord]:
        return run_logs.follow_async(
            self._conns, run_id(run), after=_seq(after), timeout=_timeout(timeout)
        )

    def log_changes_async(self, run: RunRef) -> AsyncIterator[None]:
        """None each time new records of the run may have been written (a worker's write,
        the watch settling, a reconnect), until the caller stops iterating: for live
        views that re-read the logs themselves, such as the dashboard's run page."""
        return run_logs.changes_async(self._conns, run_id(run))

    # waiting for a result ----------------------------------------------------------------

    def poll(
        self, run: RunRef, *, timeout: float | None = 60.0, task: Task[Any, Any] | None = None
    ) -> Run[Any, Any]:
        """Block until the run reaches a final status and return it (with `task`, typed as
        `retrieve` does). Built on the realtime feed: no sleep loop, one LISTEN connection
        per process. Raises `TimeoutError` past `timeout` seconds (None: no limit) and
        `RunNotFoundError` for an unknown id. The first read goes through the connection
        pool, so an unreachable database fails fast and a finished run costs one query."""
        limit = _timeout(timeout)
        now = self._current(run, task=task)
        if now.is_completed:
            return now
        for snapshot in realtime.subscribe(
            self._conns.listener(), "run", run_id(run), _model(task), timeout=limit
        ):
            if snapshot.is_completed:
                return snapshot
        raise AssertionError("unreachable: a run's subscription ends on its final status")

    async def poll_async(
        self, run: RunRef, *, timeout: float | None = 60.0, task: Task[Any, Any] | None = None
    ) -> Run[Any, Any]:
        limit = _timeout(timeout)
        now = await self._current_async(run, task=task)
        if now.is_completed:
            return now
        async for snapshot in realtime.subscribe_async(
            self._conns.listener(), "run", run_id(run), _model(task), timeout=limit
        ):
            if snapshot.is_completed:
                return snapshot
        raise AssertionError("unreachable: a run's subscription ends on its final status")

    # realtime ----------------------------------------------------------------------------

    def subscribe_to_run(
        self, run: RunRef, *, task: Task[Any, Any] | None = None
    ) -> Iterator[Run[Any, Any]]:
        """Snapshots of the run: its current state at once, then one per change (status,
        metadata, output); ends after a final status. A reader slower than the changes
        gets the latest state, skipping intermediate ones. Raises `RunNotFoundError` for
        an unknown id. All subscriptions of a process share one LISTEN connection."""
        return realtime.subscribe(self._conns.listener(), "run", run_id(run), _model(task))

    def subscribe_to_run_async(
        self, run: RunRef, *, task: Task[Any, Any] | None = None
    ) -> AsyncIterator[Run[Any, Any]]:
        return realtime.subscribe_async(self._conns.listener(), "run", run_id(run), _model(task))

    def subscribe_to_runs_with_tag(
        self, tag: str, *, created_from: datetime | None = None
    ) -> Iterator[Run[Any, Any]]:
        """Snapshots of every run with `tag`: first the existing ones (the newest 1,000,
        created since `created_from` if given), then each change of any run with the tag,
        including runs created later. Ends when the caller stops iterating."""
        return realtime.subscribe(
            self._conns.listener(),
            "tag",
            _key("tag", tag),
            Run.model_validate,
            created_from=created_from,
        )

    def subscribe_to_runs_with_tag_async(
        self, tag: str, *, created_from: datetime | None = None
    ) -> AsyncIterator[Run[Any, Any]]:
        return realtime.subscribe_async(
            self._conns.listener(),
            "tag",
            _key("tag", tag),
            Run.model_validate,
            created_from=created_from,
        )

    def subscribe_to_changes_async(self) -> AsyncIterator[Run[Any, Any]]:
        """Every run as it changes, from now on (no first snapshot; nothing is re-read
        after a reconnect). For live overviews such as the dashboard's runs list."""
        return realtime.subscribe_async(self._conns.listener(), "all", "*", Run.model_validate)

    def subscribe_to_batch(self, batch_id: str) -> Iterator[Run[Any, Any]]:
        """Snapshots of every run of the batch, then each change. Ends when the caller
        stops iterating."""
        return realtime.subscribe(
            self._conns.listener(), "batch", _key("batch id", batch_id), Run.model_validate
        )

    def subscribe_to_batch_async(self, batch_id: str) -> AsyncIterator[Run[Any, Any]]:
        return realtime.subscribe_async(
            self._conns.listener(), "batch", _key("batch id", batch_id), Run.model_validate
        )


def _limit(limit: int, most: int = 1000) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= most:
        raise InvalidArgumentError(f"limit must be 1 to {most}, got {limit!r}")
    return limit


def _seq(after: int | None) -> int | None:
    if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
        raise InvalidArgumentError(f"after must be a log record's seq, got {after!r}")
    return after


def _cursor(after: str | None) -> str | None:
    if after is not None and (not isinstance(after, str) or not after or "\0" in after):
        raise InvalidArgumentError(
            f"after must be a run id from a page's next_cursor, got {after!r}"
        )
    return after


def _key(name: str, value: str) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _timeout(timeout: float | None) -> float | None:
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0
    ):
        raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return timeout
