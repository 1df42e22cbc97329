"""What a worker tells its user about runs: a line per attempt outcome, and the stacks
stored with errors.

Lines go to the `skiplock.runs` logger at INFO, one per attempt, as `trigger dev` prints
them: task, run id, attempt, how it ended, its duration and the first line of its error
(the record's time is when the outcome was recorded):

    resize run_0a1b attempt 1 COMPLETED (0.4ms)
    resize run_0a1b attempt 1 failed (12ms), retrying at 20:15:28: ValueError: no size
    resize run_0a1b attempt 3/3 FAILED (11ms): ValueError: no size
    resize run_0a1b attempt 1 TIMED_OUT (2.00s): TimeoutError: exceeded max_duration of 2s ...
    resize run_0a1b attempt 1 CANCELED (1.02s)

An upper-case status is the run's, as the database recorded it: whether a failure is
retried is its call (`fail_attempt` returns the run's new status). The worker does not
know a run's max_attempts (a trigger may override the task's), so `n/n` appears only
where the database said it: a retryable failure it did not retry.

Callers ask `enabled()` once per batch of completions, and build nothing when it says
no. A line costs the worker about 16 us of CPU, nearly all of it in the logging module
(the record, its formatting, a write), against some 35-40 us for the rest of a no-op
run: `--quiet` is for workers whose throughput matters more (bench/RESULTS.md, "A line
per run").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
import time
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api.context import TaskContext

log = logging.getLogger("skiplock.runs")
_INFO = logging.INFO


def enabled() -> bool:
    """Whether outcome lines are wanted (`skiplock worker --quiet` says no)."""
    return log.isEnabledFor(_INFO)


def completed(ctx: TaskContext, seconds: float) -> None:
    """The attempt's output was recorded: the run is COMPLETED."""
    _emit(f"{ctx.task_id} {ctx.run_id} attempt {ctx.attempt} COMPLETED ({duration(seconds)})")


def failed(
    ctx: TaskContext,
    new_status: str | None,
    exc: BaseException,
    retry_delay: float | None,
    seconds: float | None,
) -> None:
    """The attempt failed and the database made the run `new_status` (None: it did not
    record the failure, the attempt being no longer current)."""
    took = "" if seconds is None else f" ({duration(seconds)})"
    head = f"{ctx.task_id} {ctx.run_id} attempt {ctx.attempt}"
    if new_status == "QUEUED":
        if retry_delay is None or retry_delay <= 0:
            when = "at once"
        else:
            when = "at " + time.strftime("%H:%M:%S", time.localtime(time.time() + retry_delay))
        text = f"{head} failed{took}, retrying {when}"
    elif new_status is None:
        text = f"{head} failed{took}, not recorded: the attempt is no longer current"
    elif new_status == "FAILED" and retry_delay is not None:
        # a retryable failure that the database did not retry: its last attempt
        text = f"{head}/{ctx.attempt} FAILED{took}"
    else:
        text = f"{head} {new_status}{took}"
    _emit(f"{text}: {error_line(exc)}")


def ended(ctx: TaskContext, outcome: str, seconds: float) -> None:
    """The attempt ended without an outcome of the worker's to record: `outcome` says
    how (WAITING, CANCELED, ...)."""
    _emit(f"{ctx.task_id} {ctx.run_id} attempt {ctx.attempt} {outcome} ({duration(seconds)})")


def _emit(text: str) -> None:
    # makeRecord + handle: what log.info does, less its search for the caller's frame
    # (always this module anyway): 8-12 us a line against 14 (bench/RESULTS.md)
    log.handle(log.makeRecord(log.name, _INFO, __file__, 0, text, (), None))


def duration(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f}m{rest:02.0f}s"


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message` (just `Type` for an empty message)."""
    message = str(exc).strip().partition("\n")[0]
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def plural(n: int, word: str) -> str:
    """`1 attempt`, `2 attempts`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- stacks stored with errors ------------------------------------------------------------

_ENGINE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_INTERNAL_DIRS = (
    _ENGINE,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
    os.path.dirname(os.path.abspath(concurrent.futures.__file__)) + os.sep,
)
_INTERNAL_FILES = (os.path.abspath(threading.__file__),)


@functools.lru_cache(maxsize=256)
def _internal(filename: str) -> bool:
    """A frame of skiplock's or of the machinery that runs tasks (asyncio, threads)."""
    path = os.path.abspath(filename)
    return path.startswith(_INTERNAL_DIRS) or path in _INTERNAL_FILES


def user_stack(exc: BaseException) -> str:
    """The traceback of `exc` as a user wants it stored: from the task's own frame down
    (the worker's and asyncio's frames above it left out), and with the exceptions it
    was chained to only where the user's code (or a library it called) raised it: one
    that skiplock or asyncio raised in place of another (a timeout for a cancel) drops
    the chain."""
    te = traceback.TracebackException.from_exception(exc)
    _trim(te, set())
    return "".join(te.format())


def _trim(te: traceback.TracebackException, seen: set[int]) -> None:
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = list(te.stack)
    if frames and _internal(frames[-1].filename):  # raised by us or asyncio
        te.__cause__ = te.__context__ = None
    start = 0
    while start < len(frames) and _internal(frames[start].filename):
        start += 1
    if start:
        te.stack = traceback.StackSummary.from_list(frames[start:])
    for other in (te.__cause__, te.__context__, *(te.exceptions or ())):
        if other is not None:
            _trim(other, seen)
