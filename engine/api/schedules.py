"""The schedules API: cron schedules made at run time (imperative), with the declarative
ones (a task's `cron=`) listed beside them."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal

from ..db import queries
from ..errors import InvalidArgumentError, ScheduleNotFoundError
from ..models import Schedule
from .connections import Connections
from .twins import Plan, twin

CatchUp = Literal["latest", "all", "none"]
ScheduleRef = str | Schedule


def schedule_id(ref: ScheduleRef) -> str:
    if isinstance(ref, Schedule):
        return ref.id
    if not isinstance(ref, str) or not ref:
        raise InvalidArgumentError(f"expected a schedule id or Schedule, got {ref!r}")
    return ref


def _text(name: str, value: object, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _catch_up(value: object) -> str:
    if value not in ("latest", "all", "none"):
        raise InvalidArgumentError(f"catch_up must be 'latest', 'all' or 'none', got {value!r}")
    return str(value)


class SchedulePage:
    """One page of schedules, oldest first. Iterating a page walks every following page."""

    def __init__(
        self, schedules: Schedules, filters: dict[str, Any], rows: builtins.list[dict[str, Any]]
    ) -> None:
        self._schedules, self._filters = schedules, filters
        limit = filters["limit"]
        self.data = [Schedule.model_validate(r) for r in rows[:limit]]
        self._more: bool = len(rows) > int(limit)

    def has_next_page(self) -> bool:
        return self._more

    @property
    def next_cursor(self) -> str | None:
        return self.data[-1].id if self._more and self.data else None

    def get_next_page(self) -> SchedulePage:
        if self.next_cursor is None:
            raise InvalidArgumentError("this is the last page")
        return self._schedules.list(**self._filters, after=self.next_cursor)

    async def get_next_page_async(self) -> SchedulePage:
        if self.next_cursor is None:
            raise InvalidArgumentError("this is the last page")
        return await self._schedules.list_async(**self._filters, after=self.next_cursor)

    def __iter__(self) -> Iterator[Schedule]:
        page: SchedulePage | None = self
        while page is not None:
            yield from page.data
            page = page.get_next_page() if page.has_next_page() else None

    async def __aiter__(self) -> AsyncIterator[Schedule]:
        page: SchedulePage | None = self
        while page is not None:
            for schedule in page.data:
                yield schedule
            page = await page.get_next_page_async() if page.has_next_page() else None


class Schedules:
    """`app.schedules`: every call has an `_async` twin with the same arguments."""

    def __init__(self, conns: Connections) -> None:
        self._conns = conns

    def _read(self, sid: str) -> Plan[Schedule]:
        row = yield queries.retrieve_schedule(sid)
        if row is None:
            raise ScheduleNotFoundError(f"schedule {sid} does not exist")
        return Schedule.model_validate(row)

    @twin
    def create(
        self,
        task: str,
        cron: str,
        *,
        timezone: str = "UTC",
        external_id: str | None = None,
        deduplication_key: str | None = None,
        payload: Any = None,
        catch_up: CatchUp = "latest",
        active: bool = True,
    ) -> Plan[Schedule]:
        """A schedule triggering `task` at every slot of the 5-field `cron` expression
        (names, ranges, steps, lists; @daily and the like) in IANA zone `timezone`. With a
        `deduplication_key` it is an upsert: the schedule holding that key is updated,
        so a request handler may call it every time. Raises `InvalidCronError` or
        `InvalidArgumentError` (unknown zone, bad option) with nothing written."""
        options: dict[str, Any] = {"catch_up": _catch_up(catch_up), "active": bool(active)}
        if external_id is not None:
            options["external_id"] = _text("external_id", external_id)
        if deduplication_key is not None:
            options["deduplication_key"] = _text("deduplication_key", deduplication_key)
        if payload is not None:
            options["payload"] = payload
        sid = yield queries.create_schedule(
            _text("task", task), _text("cron", cron), _text("timezone", timezone), options
        )
        return (yield from self._read(sid))

    create_async = create.aio

    @twin
    def retrieve(self, schedule: ScheduleRef) -> Plan[Schedule]:
        """Raises `ScheduleNotFoundError` for an unknown id."""
        return (yield from self._read(schedule_id(schedule)))

    retrieve_async = retrieve.aio

    @twin
    def list(
        self,
        *,
        task: str | Sequence[str] | None = None,
        active: bool | None = None,
        type: Literal["DECLARATIVE", "IMPERATIVE"] | None = None,
        external_id: str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> Plan[SchedulePage]:
        """Schedules oldest first, filtered (filters AND together); `after` is a page's
        `next_cursor`. Iterating the page walks every following page."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidArgumentError(f"limit must be 1 to 1000, got {limit!r}")
        tasks = None if task is None else ([task] if isinstance(task, str) else [*task])
        filters: dict[str, Any] = {
            "task": task,
            "active": active,
            "type": type,
            "external_id": external_id,
            "limit": limit,
        }
        rows = yield queries.list_schedules(
            tasks=tasks,
            active=active,
            type=type,
            external_id=external_id,
            after=after,
            limit=limit + 1,
        )
        return SchedulePage(self, filters, rows)

    list_async = list.aio

    @twin
    def update(
        self,
        schedule: ScheduleRef,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        task: str | None = None,
        external_id: str | None = None,
        payload: Any = None,
        catch_up: CatchUp | None = None,
    ) -> Plan[Schedule]:
        """Change what is given (None: unchanged); a changed cron or zone counts its next
        slot from now. Declarative schedules change in code only (`InvalidArgumentError`)."""
        changes: dict[str, Any] = {}
        if cron is not None:
            changes["cron"] = _text("cron", cron)
        if timezone is not None:
            changes["timezone"] = _text("timezone", timezone)
        if task is not None:
            changes["task"] = _text("task", task)
        if external_id is not None:
            changes["external_id"] = _text("external_id", external_id)
        if payload is not None:
            changes["payload"] = payload
        if catch_up is not None:
            changes["catch_up"] = _catch_up(catch_up)
        sid = yield queries.update_schedule(schedule_id(schedule), changes)
        return (yield from self._read(sid))

    update_async = update.aio

    @twin
    def activate(self, schedule: ScheduleRef) -> Plan[Schedule]:
        """Fire again, from the next slot after now (slots missed meanwhile are not)."""
        sid = yield queries.set_schedule_active(schedule_id(schedule), True)
        return (yield from self._read(sid))

    activate_async = activate.aio

    @twin
    def deactivate(self, schedule: ScheduleRef) -> Plan[Schedule]:
        sid = yield queries.set_schedule_active(schedule_id(schedule), False)
        return (yield from self._read(sid))

    deactivate_async = deactivate.aio

    @twin
    def delete(self, schedule: ScheduleRef) -> Plan[None]:
        """Delete an imperative schedule (its runs stay). Raises `ScheduleNotFoundError`."""
        yield queries.delete_schedule(schedule_id(schedule))

    delete_async = delete.aio
