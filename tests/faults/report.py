"""The printed table: runs, faults injected by kind, and each invariant's count."""

from __future__ import annotations

from .faults import KINDS, POOLER_FAULTS, Injector
from .invariants import Findings

_SHOWN = 5  # offending rows shown per failed invariant


def table(
    name: str,
    seed: int,
    f: Findings,
    injector: Injector,
    timings: dict[str, float],
    trigger_retries: int,
    worker_exits: list[str],
) -> str:
    counts = injector.counts()
    rows: list[tuple[str, str, str]] = [
        ("runs (incl. children)", str(f.runs), ""),
        *((f"  {s}", str(n), "") for s, n in sorted(f.statuses.items())),
        ("trigger calls re-sent", str(trigger_retries), ""),
        *((f"fault: {k}", str(counts.get(k, 0)), "") for k in (*KINDS, *POOLER_FAULTS)),
        (f"peak attempts in the limited queue (limit {2})", str(f.queue_peak), ""),
    ]
    for c in f.checks:
        verdict = ("OK" if c.ok else "FAIL") if c.must_be_zero else "allowed"
        rows.append((c.name, str(c.count), verdict))
    width = max(len(r[0]) for r in rows)
    lines = [f"== fault scenario {name!r} (seed {seed}) =="]
    lines += [f"{a.ljust(width)}  {b.rjust(6)}  {c}".rstrip() for a, b, c in rows]
    lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    lines += [f"  {x.at:6.1f}s  {x.kind:<26} {x.detail}" for x in injector.log]
    if worker_exits:
        lines.append("worker exits: " + "; ".join(worker_exits))
    for c in f.failed():
        lines.append(f"-- {c.name}: first {min(_SHOWN, c.count)} of {c.count}")
        lines += [f"   {row}" for row in c.rows[:_SHOWN]]
    return "\n".join(lines)
