"""skiplock: Trigger.dev's run model for Python on plain PostgreSQL."""

from . import wait
from .app import Engine
from .context import Metadata, TaskContext
from .errors import AbortTaskRunError, WaitFailedError
from .models import Attempt, BatchHandle, Queue, Result, Retry, Run, RunHandle, RunStatus, Token
from .queues import QueueInfo
from .runs import Page
from .tasks import BatchItem, Task
from .waitpoints import Waitpoint
from .worker import Worker

__all__ = [
    "AbortTaskRunError",
    "Attempt",
    "BatchHandle",
    "BatchItem",
    "Engine",
    "Metadata",
    "Page",
    "Queue",
    "QueueInfo",
    "Result",
    "Retry",
    "Run",
    "RunHandle",
    "RunStatus",
    "Task",
    "TaskContext",
    "Token",
    "WaitFailedError",
    "Waitpoint",
    "Worker",
    "wait",
]
