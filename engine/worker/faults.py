"""Fault injection for tests/faults: named points at which a worker can be made to die.

SKIPLOCK_CRASH_AT="point:n,..." (read once, at import) makes the worker SIGKILL itself
the n-th time it passes `point` (n defaults to 1):

* "claimed": a claim has committed, its runs not started;
* "executing": a task function is about to run;
* "completed": a batch of completions has committed, not yet acknowledged in the worker.

Unset (every worker outside the fault suite), `checkpoint` has no effect: it looks a
name up in an empty dict, the whole cost on the per-run path.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("skiplock.worker")


def _parse_crash_points(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, n = item.partition(":")
        points[name] = int(n or "1")
    return points


_CRASH_AT = _parse_crash_points(os.environ.get("SKIPLOCK_CRASH_AT", ""))


def checkpoint(name: str) -> None:
    """Pass the crash point `name`: SIGKILL this process if SKIPLOCK_CRASH_AT says so."""
    if name in _CRASH_AT:
        _CRASH_AT[name] -= 1
        if _CRASH_AT[name] <= 0:
            log.warning("SKIPLOCK_CRASH_AT: killing this worker at %r", name)
            os.kill(os.getpid(), signal.SIGKILL)
