"""What an operator watches: `app.workers` (the worker processes, as
`skiplock.worker_status` shows them) and `app.table_health()` (`skiplock.table_health`)."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from ..db import queries
from .connections import Connections
from .twins import Plan, twin


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


class TableHealth(BaseModel):
    """A skiplock table as `skiplock.table_health` shows it: sizes in bytes, tuple counts
    (the statistics collector's estimates), and when vacuum and analyze last ran."""

    model_config = ConfigDict(frozen=True)

    table_name: str
    total_bytes: int
    table_bytes: int
    index_bytes: int
    live_tuples: int | None
    dead_tuples: int | None
    dead_ratio: float | None
    changed_since_analyze: int | None
    last_vacuum: datetime | None
    last_analyze: datetime | None
    vacuums: int | None
    analyzes: int | None


class Workers:
    """`app.workers`: every call has an `_async` twin."""

    def __init__(self, conns: Connections) -> None:
        self._conns = conns

    @twin
    def list(self) -> Plan[builtins.list[WorkerInfo]]:
        """Active workers first, then the most recently started (at most 200)."""
        return [WorkerInfo.model_validate(r) for r in (yield queries.workers())]

    list_async = list.aio
