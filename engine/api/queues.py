"""The queues API: inspect queues, pause and resume them, change their limits."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ..db import queries
from ..errors import InvalidArgumentError
from ..values import RateLimit
from .connections import Connections
from .twins import Plan, twin


class QueueInfo(BaseModel):
    """A queue as `skiplock.queue_stats` shows it. `rate_limit`: its rate limit, if any;
    `rate_keys_waiting`: how many of its rate keys are out of budget now, and
    `rate_next_allowed_at` the earliest time one of them may start a run again (per key:
    `app.queues.rate_stats`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    concurrency_limit: int | None
    paused: bool
    queued: int
    running: int
    oldest_queued_age: timedelta | None = None
    rate_limit: RateLimit | None = None
    rate_keys_waiting: int = 0
    rate_next_allowed_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _rate_from_columns(cls, data: Any) -> Any:
        """queue_stats has the rate as three columns (rate_limit, rate_period_s, rate_burst)."""
        if isinstance(data, dict) and "rate_period_s" in data:
            data = dict(data)
            period, burst = data.pop("rate_period_s"), data.pop("rate_burst")
            if data.get("rate_limit") is not None:
                data["rate_limit"] = RateLimit(data["rate_limit"], period, burst)
        return data


class RateKeyStats(BaseModel):
    """One rate key of a rate-limited queue (`skiplock.queue_rate_stats`): how many runs
    of cost 1 may start now (`budget_left`), and when the next may start (now while
    budget is left)."""

    model_config = ConfigDict(frozen=True)

    queue: str
    key: str
    budget_left: int
    next_allowed_at: datetime


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

    @twin
    def set_rate_limit(self, name: str, rate_limit: RateLimit | None) -> Plan[QueueInfo]:
        """Change the queue's rate limit (None: no rate limit); it applies to the next
        claim. Each rate key keeps the share of its budget it has used."""
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise InvalidArgumentError(
                f"rate_limit must be a RateLimit or None, got {rate_limit!r}"
            )
        args = (
            (None, None, None)
            if rate_limit is None
            else (rate_limit.limit, rate_limit.period_seconds, rate_limit.burst)
        )
        yield queries.queue_call("set_queue_rate_limit", _name(name), *args)
        return QueueInfo.model_validate((yield queries.queue_stat(name)))

    set_rate_limit_async = set_rate_limit.aio

    @twin
    def rate_stats(self, name: str) -> Plan[builtins.list[RateKeyStats]]:
        """The rate keys of queue `name` that started runs lately (up to 1,000, those out
        of budget first); a key not listed has its whole burst left."""
        rows = yield queries.queue_rate_stats(_name(name))
        return [RateKeyStats.model_validate(r) for r in rows]

    rate_stats_async = rate_stats.aio
