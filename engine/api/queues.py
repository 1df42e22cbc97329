"""The queues API: inspect queues, pause and resume them, change their limits."""

from __future__ import annotations

import builtins
from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from ..db import queries
from ..errors import InvalidArgumentError
from .connections import Connections
from .twins import Plan, twin


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

    def __init__(self, conns: Connections) -> None:
        self._conns = conns

    @twin
    def list(self) -> Plan[builtins.list[QueueInfo]]:
        return [QueueInfo.model_validate(r) for r in (yield queries.queue_stats())]

    list_async = list.aio

    @twin
    def retrieve(self, name: str) -> Plan[QueueInfo]:
        """Raises `UnknownQueueError` when no task declares the queue and no run names it."""
        return QueueInfo.model_validate((yield queries.queue_stat(_name(name))))

    retrieve_async = retrieve.aio

    @twin
    def pause(self, name: str) -> Plan[QueueInfo]:
        """A paused queue starts no run; its runs stay QUEUED. Running runs finish."""
        yield queries.queue_call("pause_queue", _name(name))
        return QueueInfo.model_validate((yield queries.queue_stat(name)))

    pause_async = pause.aio

    @twin
    def resume(self, name: str) -> Plan[QueueInfo]:
        yield queries.queue_call("resume_queue", _name(name))
        return QueueInfo.model_validate((yield queries.queue_stat(name)))

    resume_async = resume.aio

    @twin
    def set_limit(self, name: str, limit: int | None) -> Plan[QueueInfo]:
        """Change the concurrency limit (None: unlimited); it applies to the next admission."""
        yield queries.queue_call("set_queue_limit", _name(name), _limit(limit))
        return QueueInfo.model_validate((yield queries.queue_stat(name)))

    set_limit_async = set_limit.aio
