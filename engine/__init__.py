"""skiplock: Trigger.dev's run model for Python on plain PostgreSQL."""

from .app import Engine
from .context import TaskContext
from .errors import AbortTaskRunError
from .models import Attempt, BatchHandle, Queue, Retry, Run, RunHandle, RunStatus
from .queues import QueueInfo
from .runs import Page
from .tasks import BatchItem, Task
from .worker import Worker

__all__ = [
    "AbortTaskRunError",
    "Attempt",
    "BatchHandle",
    "BatchItem",
    "Engine",
    "Page",
    "Queue",
    "QueueInfo",
    "Retry",
    "Run",
    "RunHandle",
    "RunStatus",
    "Task",
    "TaskContext",
    "Worker",
]
