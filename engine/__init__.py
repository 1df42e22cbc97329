"""skiplock: Trigger.dev's run model for Python on plain PostgreSQL."""

from typing import TYPE_CHECKING, Any

from . import wait
from .api.context import Metadata, TaskContext
from .api.engine import Engine
from .api.hooks import NoRetry, RetryAt, RetryNow
from .api.tasks import BatchItem, Task
from .errors import AbortTaskRunError, InvalidCronError, WaitFailedError
from .values import (
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
from .worker import Worker

if TYPE_CHECKING:
    from .api.alerts import Alert
    from .api.queues import QueueInfo
    from .api.runs import Page
    from .api.schedules import SchedulePage
    from .api.waitpoints import Waitpoint
    from .models import Attempt, LogRecord, Run, Schedule, ScheduledPayload

# pydantic's models and the API modules that declare them, imported on first access
# (PEP 562): a worker whose tasks are untyped never loads pydantic
_LAZY = {
    "Alert": ".api.alerts",
    "Attempt": ".models",
    "LogRecord": ".models",
    "Page": ".api.runs",
    "QueueInfo": ".api.queues",
    "Run": ".models",
    "Schedule": ".models",
    "SchedulePage": ".api.schedules",
    "ScheduledPayload": ".models",
    "Waitpoint": ".api.waitpoints",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
