"""skiplock: Trigger.dev's run model for Python on plain PostgreSQL."""

from . import wait
from .api.alerts import Alert
from .api.context import Metadata, TaskContext
from .api.engine import Engine
from .api.hooks import NoRetry, RetryAt, RetryNow
from .api.queues import QueueInfo
from .api.runs import Page
from .api.schedules import SchedulePage
from .api.tasks import BatchItem, Task
from .api.waitpoints import Waitpoint
from .errors import AbortTaskRunError, InvalidCronError, WaitFailedError
from .models import (
    Attempt,
    BatchHandle,
    Debounce,
    LogRecord,
    Queue,
    RateLimit,
    Result,
    Retry,
    Run,
    RunHandle,
    RunStatus,
    Schedule,
    ScheduledPayload,
    Token,
)
from .worker import Worker

__all__ = [
    "AbortTaskRunError",
    "Alert",
    "Attempt",
    "BatchHandle",
    "BatchItem",
    "Debounce",
    "Engine",
    "InvalidCronError",
    "LogRecord",
    "Metadata",
    "NoRetry",
    "Page",
    "Queue",
    "QueueInfo",
    "RateLimit",
    "Result",
    "Retry",
    "RetryAt",
    "RetryNow",
    "Run",
    "RunHandle",
    "RunStatus",
    "Schedule",
    "SchedulePage",
    "ScheduledPayload",
    "Task",
    "TaskContext",
    "Token",
    "WaitFailedError",
    "Waitpoint",
    "Worker",
    "wait",
]
