"""Hold-open-transaction analysis: drain rate and purge call time before / during / after
the held snapshot (bench_retention.py --hold-at/--hold-for).  python3 phases.py VARIANT..."""

import csv
import json
import statistics
import sys
from pathlib import Path

d = Path(__file__).parent / "results"


def read_csv(path: Path) -> list[list[str]]:
    with path.open() as f:
        return list(csv.reader(f))


def samples(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(x) for k, x in r.items()} for r in csv.DictReader(f)]


def row(v: str) -> str:
    """The table's row of variant `v`."""
    s = json.loads((d / f"{v}.summary.json").read_text())
    h0, h1 = s["marks"]["hold_start"], s["marks"]["hold_end"]
    rows = samples(d / f"{v}.samples.csv")

    def med(f):
        xs = [r["rate"] for r in rows if f(r["t"])]
        return statistics.median(xs) if xs else float("nan")

    before = med(lambda t: 20 <= t <= h0 + 1)
    during = med(lambda t: h0 + 20 <= t <= h1 + 1)
    after = med(lambda t: t > h1 + 15)
    pl = [(float(a), int(b), float(c)) for a, b, c in read_csv(d / f"{v}.purge.csv")[1:]]
    t0 = pl[0][0] if pl else 0

    # purge.csv ts are absolute; the run started about when the first purge call was made
    def pst(f):
        xs = [ms for ts, n, ms in pl if n > 0 and f(ts - t0)]
        return f"{statistics.median(xs):.0f} / {max(xs):.0f}" if xs else "-"

    def size(t):
        r = min(rows, key=lambda r: abs(r["t"] - t))
        return round(
            r["runs_heap_mb"] + r["runs_idx_mb"] + r["attempts_heap_mb"] + r["attempts_idx_mb"]
        )

    return (
        f"| {v} | {before:,.0f} | {during:,.0f} | {during / before:.2f} | {after:,.0f} | "
        f"{pst(lambda t: t < h0)} | {pst(lambda t: h0 <= t < h1)} | {pst(lambda t: t >= h1)} | "
        f"{size(h0)} -> {size(h1)} -> {size(rows[-1]['t'])} |"
    )


print(
    "| variant | rate before (median, runs/s) | rate during hold | during/before "
    "| rate after release | purge ms p50 / max before | during | after "
    "| runs+attempts MB at hold start -> hold end -> end |"
)
print("|---|---|---|---|---|---|---|---|---|")
for v in sys.argv[1:]:
    print(row(v))
