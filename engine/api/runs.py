"""The runs API: retrieve, list with cursor pages, cancel, replay, reschedule."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .._durations import Duration, delay_options
from ..db import queries as _queries
from ..db.database import Query
from ..errors import InvalidArgumentError
from ..models import Run, RunHandle, RunStatus
from . import realtime

if TYPE_CHECKING:
    from .engine import Engine
    from .tasks import Task

P = TypeVar("P")
O = TypeVar("O")  # noqa: E741

RunRef = str | RunHandle


def run_id(ref: RunRef) -> str:
    if isinstance(ref, RunHandle):
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

    def query(self, after: str | None) -> Query[list[dict[str, Any]]]:
        # one extra row tells whether a next page exists
        return _queries.list_runs(
            status=self.status,
            tasks=self.tasks,
            tags=self.tags,
            batch=self.batch,
            created_from=self.created_from,
            created_to=self.created_to,
            after=after,
            limit=self.limit + 1,
        )


class Page:
    """One page of runs, newest first. Iterating a page walks every following page."""

    def __init__(self, runs: Runs, flt: ListFilter, rows: list[dict[str, Any]]) -> None:
        self._runs, self._filter = runs, flt
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

    def get_next_page(self) -> Page:
        return Page(
            self._runs, self._filter, self._runs._engine.db.run(self._filter.query(self._cursor()))
        )

    async def get_next_page_async(self) -> Page:
        rows = await self._runs._engine.adb.run(self._filter.query(self._cursor()))
        return Page(self._runs, self._filter, rows)

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


class Runs:
    """`app.runs`: every call has an `_async` twin with the same arguments."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # retrieve ----------------------------------------------------------------------------

    @staticmethod
    def _model(task: Task[P, O] | None) -> Callable[[dict[str, Any]], Run[Any, Any]]:
        if task is None:
            return Run.model_validate
        # parametrised at run time with the task's annotated types
        typed = Run.__class_getitem__((task.payload_type, task.output_type))
        return typed.model_validate  # type: ignore[union-attr,return-value]

    def retrieve(self, run: RunRef, *, task: Task[P, O] | None = None) -> Run[Any, Any]:
        """The run's current state with its attempts; with `task`, payload and output are
        parsed to the task's types. Raises `RunNotFoundError` for an unknown id."""
        return self._model(task)(self._engine.db.run(_queries.retrieve(run_id(run))))

    async def retrieve_async(self, run: RunRef, *, task: Task[P, O] | None = None) -> Run[Any, Any]:
        return self._model(task)(await self._engine.adb.run(_queries.retrieve(run_id(run))))

    # list --------------------------------------------------------------------------------

    @staticmethod
    def _filter(
        status: str | Sequence[str] | None,
        task: str | Sequence[str] | None,
        tag: str | Sequence[str] | None,
        batch: str | None,
        created_from: datetime | None,
        created_to: datetime | None,
        limit: int,
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
        )

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
    ) -> Page:
        """Runs newest first, filtered (filters AND together; a list matches any of its
        values). `after` is a page's `next_cursor`: the page that follows it. Raises
        `UnknownTaskError` for a task filter no deployment or run knows."""
        flt = self._filter(status, task, tag, batch, created_from, created_to, limit)
        return Page(self, flt, self._engine.db.run(flt.query(_cursor(after))))

    async def list_async(
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
    ) -> Page:
        flt = self._filter(status, task, tag, batch, created_from, created_to, limit)
        return Page(self, flt, await self._engine.adb.run(flt.query(_cursor(after))))

    def children(self, run: RunRef, *, limit: int = 100) -> builtins.list[Run[Any, Any]]:
        """The runs this run triggered, oldest first (at most `limit`)."""
        rows = self._engine.db.run(_queries.children(run_id(run), _limit(limit)))
        return [Run.model_validate(r) for r in rows]

    async def children_async(
        self, run: RunRef, *, limit: int = 100
    ) -> builtins.list[Run[Any, Any]]:
        rows = await self._engine.adb.run(_queries.children(run_id(run), _limit(limit)))
        return [Run.model_validate(r) for r in rows]

    # cancel / replay / reschedule -------------------------------------------------------

    def cancel(self, run: RunRef) -> RunStatus:
        """Cancel the run and its non-final descendants; a running attempt is stopped and
        its late result ignored. Returns the run's status after the call (a run already
        final keeps its status)."""
        return self._engine.db.run(_queries.cancel(run_id(run)))

    async def cancel_async(self, run: RunRef) -> RunStatus:
        return await self._engine.adb.run(_queries.cancel(run_id(run)))

    def replay(self, run: RunRef) -> Run[Any, Any]:
        """A new run with the same task, payload, tags and metadata, on the latest version."""
        return self.retrieve(self._engine.db.run(_queries.replay(run_id(run))))

    async def replay_async(self, run: RunRef) -> Run[Any, Any]:
        new_id: str = await self._engine.adb.run(_queries.replay(run_id(run)))
        return await self.retrieve_async(new_id)

    def reschedule(self, run: RunRef, *, delay: Duration | datetime) -> Run[Any, Any]:
        """Move a DELAYED run's start; raises `RunNotDelayedError` for any other status."""
        self._engine.db.run(_queries.reschedule(run_id(run), delay_options(delay)))
        return self.retrieve(run)

    async def reschedule_async(self, run: RunRef, *, delay: Duration | datetime) -> Run[Any, Any]:
        await self._engine.adb.run(_queries.reschedule(run_id(run), delay_options(delay)))
        return await self.retrieve_async(run)

    # realtime ----------------------------------------------------------------------------

    def subscribe_to_run(
        self, run: RunRef, *, task: Task[P, O] | None = None
    ) -> Iterator[Run[Any, Any]]:
        """Snapshots of the run: its current state at once, then one per change (status,
        metadata, output); ends after a final status. A reader slower than the changes
        gets the latest state, skipping intermediate ones. Raises `RunNotFoundError` for
        an unknown id. All subscriptions of a process share one LISTEN connection."""
        return realtime.subscribe(self._engine.dsn, "run", run_id(run), self._model(task))

    def subscribe_to_run_async(
        self, run: RunRef, *, task: Task[P, O] | None = None
    ) -> AsyncIterator[Run[Any, Any]]:
        return realtime.subscribe_async(self._engine.dsn, "run", run_id(run), self._model(task))

    def subscribe_to_runs_with_tag(
        self, tag: str, *, created_from: datetime | None = None
    ) -> Iterator[Run[Any, Any]]:
        """Snapshots of every run with `tag`: first the existing ones (the newest 1,000,
        created since `created_from` if given), then each change of any run with the tag,
        including runs created later. Ends when the caller stops iterating."""
        return realtime.subscribe(
            self._engine.dsn,
            "tag",
            _key("tag", tag),
            Run.model_validate,
            created_from=created_from,
        )

    def subscribe_to_runs_with_tag_async(
        self, tag: str, *, created_from: datetime | None = None
    ) -> AsyncIterator[Run[Any, Any]]:
        return realtime.subscribe_async(
            self._engine.dsn,
            "tag",
            _key("tag", tag),
            Run.model_validate,
            created_from=created_from,
        )

    def subscribe_to_changes_async(self) -> AsyncIterator[Run[Any, Any]]:
        """Every run as it changes, from now on (no first snapshot; nothing is re-read
        after a reconnect). For live overviews such as the dashboard's runs list."""
        return realtime.subscribe_async(self._engine.dsn, "all", "*", Run.model_validate)

    def subscribe_to_batch(self, batch_id: str) -> Iterator[Run[Any, Any]]:
        """Snapshots of every run of the batch, then each change. Ends when the caller
        stops iterating."""
        return realtime.subscribe(
            self._engine.dsn, "batch", _key("batch id", batch_id), Run.model_validate
        )

    def subscribe_to_batch_async(self, batch_id: str) -> AsyncIterator[Run[Any, Any]]:
        return realtime.subscribe_async(
            self._engine.dsn, "batch", _key("batch id", batch_id), Run.model_validate
        )


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise InvalidArgumentError(f"limit must be 1 to 1000, got {limit!r}")
    return limit


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
