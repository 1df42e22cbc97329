"""The queues API: inspect queues, pause and resume them, change their limits."""

from __future__ import annotations

import builtins
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from ..db import queries as _queries
from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from .engine import Engine


class QueueInfo(BaseModel):
    """A queue as `skiplock.queue_stats` shows it."""

    model_config = ConfigDict(frozen=True)

    name: str
    concurrency_limit: int | None
    paused: bool
    queued: int
    running: int
    oldest_queued_age: timedelta | None = None


def _name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 256 or "\x00" in name:
        raise InvalidArgumentError(f"queue name must be 1 to 256 characters, got {name!r}")
    return name


def _limit(limit: int | None) -> int | None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidArgumentError(
            f"a concurrency limit must be an int of at least 1, got {limit!r}"
        )
    return limit


class Queues:
    """`app.queues`: every call has an `_async` twin with the same arguments."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def list(self) -> list[QueueInfo]:
        return [QueueInfo.model_validate(r) for r in self._engine.db.run(_queries.queue_stats())]

    async def list_async(self) -> builtins.list[QueueInfo]:
        rows = await self._engine.adb.run(_queries.queue_stats())
        return [QueueInfo.model_validate(r) for r in rows]

    def retrieve(self, name: str) -> QueueInfo:
        """Raises `UnknownQueueError` when no task declares the queue and no run names it."""
        return QueueInfo.model_validate(self._engine.db.run(_queries.queue_stat(_name(name))))

    async def retrieve_async(self, name: str) -> QueueInfo:
        row = await self._engine.adb.run(_queries.queue_stat(_name(name)))
        return QueueInfo.model_validate(row)

    def pause(self, name: str) -> QueueInfo:
        """A paused queue starts no run; its runs stay QUEUED. Running runs finish."""
        self._engine.db.run(_queries.queue_call("pause_queue", _name(name)))
        return self.retrieve(name)

    async def pause_async(self, name: str) -> QueueInfo:
        await self._engine.adb.run(_queries.queue_call("pause_queue", _name(name)))
        return await self.retrieve_async(name)

    def resume(self, name: str) -> QueueInfo:
        self._engine.db.run(_queries.queue_call("resume_queue", _name(name)))
        return self.retrieve(name)

    async def resume_async(self, name: str) -> QueueInfo:
        await self._engine.adb.run(_queries.queue_call("resume_queue", _name(name)))
        return await self.retrieve_async(name)

    def set_limit(self, name: str, limit: int | None) -> QueueInfo:
        """Change the concurrency limit (None: unlimited); it applies to the next admission."""
        self._engine.db.run(_queries.queue_call("set_queue_limit", _name(name), _limit(limit)))
        return self.retrieve(name)

    async def set_limit_async(self, name: str, limit: int | None) -> QueueInfo:
        await self._engine.adb.run(
            _queries.queue_call("set_queue_limit", _name(name), _limit(limit))
        )
        return await self.retrieve_async(name)
