"""Giving memory back: the C allocator keeps the pages it freed (the import machinery's
scratch at start-up, a burst of attempts' objects) unless told to return them.

`trim()` asks glibc's malloc_trim for it: 0.9 MB after the imports of `skiplock worker`,
more after a burst. `trim_when_idle` does so each time the worker's attempts have all
ended, at most every `every` seconds. Elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys
from collections.abc import Callable

from .state import WorkerState


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return fn


_TRIM = _malloc_trim()


def trim() -> None:
    """Return the allocator's free pages to the OS, where it can (glibc)."""
    if _TRIM is not None:
        _TRIM(0)


async def trim_when_idle(state: WorkerState, every: float = 2.0) -> None:
    """Trim whenever no attempt is running, at most every `every` seconds, once per idle
    spell (a worker that stays idle is not trimmed again)."""
    trimmed = False
    while True:
        await asyncio.sleep(every)
        if state.running:
            trimmed = False
        elif not trimmed:
            trim()
            trimmed = True
