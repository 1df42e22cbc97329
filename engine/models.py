"""The data model: runs, attempts, results, log records and schedules (pydantic models),
and the plain values (statuses, handles, retry policies, queues: engine.values).

Models do no I/O: they are built from rows with `model_validate`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from .values import (
    EXECUTING_STATUSES,
    FAILED_STATUSES,
    FINAL_STATUSES,
    QUEUED_STATUSES,
    BatchHandle,
    Debounce,
    Queue,
    RateLimit,
    Result,
    Retry,
    RunHandle,
    RunStatus,
    Token,
)

__all__ = [
    "EXECUTING_STATUSES",
    "FAILED_STATUSES",
    "FINAL_STATUSES",
    "QUEUED_STATUSES",
    "Attempt",
    "BatchHandle",
    "Debounce",
    "LogRecord",
    "Queue",
    "RateLimit",
    "Result",
    "Retry",
    "Run",
    "RunHandle",
    "RunStatus",
    "Schedule",
    "ScheduledPayload",
    "Token",
]

P = TypeVar("P")
O = TypeVar("O")  # noqa: E741


class Attempt(BaseModel):
    """One execution of a run by a worker."""

    model_config = ConfigDict(frozen=True)

    id: str
    number: int
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    output: Any = None
    error: Any = None
    worker_id: str


class LogRecord(BaseModel):
    """One `logging` record a run emitted (`app.runs.logs`), in its order (`seq`) within
    the run. `at` is on the database's clock. A run keeps its last 1,000 records and
    256 KB; past that, one marker record (logger "skiplock", `dropped` set) stands before
    the oldest kept and says how many older ones were dropped."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    attempt: int
    seq: int
    at: datetime
    level: str  # logging's level name: "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"
    logger: str
    message: str
    exception: str | None = None  # the traceback (and stack) the record carried
    dropped: int | None = None  # the marker: how many older records were dropped


class Run(BaseModel, Generic[P, O]):
    """A snapshot of a run. `Run[In, Out]` (from `runs.retrieve(..., task=t)`) has its
    payload and output parsed to the task's types."""

    model_config = ConfigDict(frozen=True)

    id: str
    task_identifier: str
    status: RunStatus
    payload: P
    output: O | None = None
    error: Any = None
    metadata: dict[str, Any]
    tags: list[str]
    idempotency_key: str | None = None
    batch_id: str | None = None
    schedule_id: str | None = None  # the schedule that triggered it
    parent_id: str | None = None
    root_id: str | None = None
    depth: int = 0
    queue: str
    concurrency_key: str | None = None
    priority: int = 0
    version: str | None = None
    attempt_count: int = 0
    attempts: list[Attempt] = []
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    delayed_until: datetime | None = None
    ttl: float | None = None
    expired_at: datetime | None = None

    @property
    def is_queued(self) -> bool:
        return self.status in QUEUED_STATUSES

    @property
    def is_executing(self) -> bool:
        return self.status in EXECUTING_STATUSES

    @property
    def is_waiting(self) -> bool:
        return self.status is RunStatus.WAITING

    @property
    def is_success(self) -> bool:
        return self.status is RunStatus.COMPLETED

    @property
    def is_failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def is_canceled(self) -> bool:
        return self.status is RunStatus.CANCELED

    @property
    def is_completed(self) -> bool:
        """True for any final status: the run will never change again."""
        return self.status in FINAL_STATUSES


class ScheduledPayload(BaseModel):
    """What a scheduled run receives as its payload (annotate the task's payload with it):
    the slot it was triggered for (`timestamp`), the previous slot fired, the schedule's
    zone and ids, the next 5 slots, and the schedule's own `payload` if it has one."""

    model_config = ConfigDict(frozen=True)

    timestamp: datetime
    last_timestamp: datetime | None = None
    timezone: str = "UTC"
    schedule_id: str
    external_id: str | None = None
    upcoming: list[datetime] = []
    payload: Any = None


class Schedule(BaseModel):
    """A schedule: its task is triggered at every slot of `cron` in `timezone`.
    DECLARATIVE ones are declared on a task in code; IMPERATIVE ones made by the API."""

    model_config = ConfigDict(frozen=True)

    id: str
    task_identifier: str
    cron: str
    timezone: str
    type: str
    active: bool
    external_id: str | None = None
    deduplication_key: str | None = None
    payload: Any = None
    catch_up: str = "latest"
    next_slot: datetime | None = None  # the next slot it fires (kept while inactive)
    last_slot: datetime | None = None
    last_run_id: str | None = None
    last_error: str | None = None
    upcoming: list[datetime] = []  # the next 5 slots from now
    created_at: datetime
    updated_at: datetime

    @property
    def task(self) -> str:
        return self.task_identifier
