"""What a worker tells its user about runs: the stacks stored with their errors start at
the task's own frame (`user_stack`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
import traceback

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
