"""`app.workers`: the worker processes, as `skiplock.worker_status` shows them."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from ..db import queries as _queries

if TYPE_CHECKING:
    from .engine import Engine


class WorkerInfo(BaseModel):
    """A worker: `state` is active, lapsed (lease not renewed in time), lost (its runs
    crashed by maintenance) or stopped."""

    model_config = ConfigDict(frozen=True)

    id: str
    version: str
    hostname: str
    pid: int
    queues: list[str] | None
    concurrency: int
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age: timedelta
    lease_expires_at: datetime | None
    state: str
    runs_in_hand: int


class Workers:
    """Every call has an `_async` twin."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def list(self) -> builtins.list[WorkerInfo]:
        """Active workers first, then the most recently started (at most 200)."""
        return [WorkerInfo.model_validate(r) for r in self._engine.db.run(_queries.workers())]

    async def list_async(self) -> builtins.list[WorkerInfo]:
        rows = await self._engine.adb.run(_queries.workers())
        return [WorkerInfo.model_validate(r) for r in rows]
