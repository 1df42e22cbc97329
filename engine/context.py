"""What a running task sees: its run, its attempt, and whether it should stop."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .errors import TaskRunCanceledError


@dataclass
class TaskContext:
    """Passed to every task as its second argument.

    `def` tasks run in a thread that cannot be interrupted: long ones should call
    `check_canceled()` (or read `is_canceled`) now and then, so that a cancel or an
    exceeded `max_duration` stops them. Their late results are ignored either way."""

    run_id: str
    attempt: int
    attempt_id: str
    task_id: str
    worker_id: str
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    stop_reason: str | None = None

    @property
    def is_canceled(self) -> bool:
        return self._stop.is_set()

    def check_canceled(self) -> None:
        """Raise `TaskRunCanceledError` if the run was canceled or timed out."""
        if self._stop.is_set():
            raise TaskRunCanceledError(f"run {self.run_id} stopped: {self.stop_reason}")

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()
