"""A fixed pool of daemon threads for `def` tasks.

Why not ThreadPoolExecutor: its threads are joined at interpreter exit, so one task
stuck in a blocking call would hang a worker's shutdown forever. Daemon threads let
the process exit once the grace period is over. The worker never submits more work
than it has slots, and a slot stays taken until its thread returns (even after a
timeout), so `size` threads always suffice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]]


class DaemonThreadPool:
    def __init__(self, size: int, name: str = "skiplock-task") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._size, self._name = size, name
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run fn(*args) in a pool thread (with the caller's contextvars); the future
        resolves on the caller's loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        ctx = contextvars.copy_context()
        if len(self._threads) < self._size:
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._jobs.put((loop, future, lambda: ctx.run(fn, *args)))
        return future

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, call = job
            try:
                result, error = call(), None
            except BaseException as exc:  # delivered to the awaiting coroutine
                result, error = None, exc
            # RuntimeError: the loop closed (worker gone) and nobody waits for this result
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, error)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
