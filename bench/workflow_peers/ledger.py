"""The exactly-once ledger of bench/workflows.py: every step of every benchmark workflow,
in every system, appends one line `workflow<TAB>step<TAB>value` to a file of its worker
process (O_APPEND, one write(2) a line: atomic between threads and tasks, no fsync, so the
ledger costs every system the same few microseconds). The benchmark then reads all the
files and checks that each expected (workflow, step) appears exactly once.

The value is a wall-clock time (time.time()) where the workload needs one: when a step
ran, e.g. after a wait, so that latencies are taken on one clock (the machine's)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ENV = "BENCH_LEDGER_DIR"
_fd: int | None = None
_pid: int | None = None


def record(workflow: str, step: str) -> float:
    """Append (workflow, step, now) to this process's ledger file; return now."""
    global _fd, _pid
    if _fd is None or _pid != os.getpid():
        path = Path(os.environ[ENV]) / f"ledger-{os.getpid()}.tsv"
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _pid = os.getpid()
    now = time.time()
    os.write(_fd, f"{workflow}\t{step}\t{now!r}\n".encode())
    return now


@dataclass(frozen=True)
class Line:
    workflow: str
    step: str
    at: float


def read(directory: Path) -> list[Line]:
    """Every complete line of every ledger file in `directory`."""
    out = []
    for path in sorted(directory.glob("ledger-*.tsv")):
        for text in path.read_text().splitlines():
            parts = text.split("\t")
            if len(parts) == 3:
                out.append(Line(parts[0], parts[1], float(parts[2])))
    return out


def count(directory: Path, step: str) -> int:
    """How many lines of `step` there are so far (polled while waiting)."""
    return sum(1 for line in read(directory) if line.step == step)


class LedgerError(Exception):
    """A step ran twice, or never, or a step nobody expected ran."""


def check(lines: Iterable[Line], expected: Mapping[str, Iterable[str]]) -> int:
    """Raise LedgerError unless every (workflow, step) of `expected` appears exactly once
    and nothing else appears; return the number of lines checked."""
    seen = Counter((line.workflow, line.step) for line in lines)
    want = Counter((wf, step) for wf, steps in expected.items() for step in steps)
    twice = sorted(k for k, n in seen.items() if n > 1)
    missing = sorted(k for k in want if k not in seen)
    extra = sorted(k for k in seen if k not in want)
    if dup := [k for k, n in want.items() if n > 1]:
        raise LedgerError(f"expected steps listed twice: {dup[:5]}")
    if twice or missing or extra:
        raise LedgerError(
            f"ledger: {len(twice)} steps ran more than once (e.g. {twice[:3]}), "
            f"{len(missing)} never ran (e.g. {missing[:3]}), {len(extra)} unexpected "
            f"(e.g. {extra[:3]}); {sum(seen.values())} lines, {sum(want.values())} expected"
        )
    return sum(seen.values())


def times(lines: Iterable[Line], step: str) -> dict[str, float]:
    """workflow -> when its `step` ran."""
    return {line.workflow: line.at for line in lines if line.step == step}
