"""Markdown tables from results/*.summary.json + *.samples.csv (bench_retention.py).
python3 summarize.py [results_dir]  > results/tables.md
"""

import csv
import json
import sys
from pathlib import Path

d = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")


def load(v):
    s = json.loads((d / f"{v}.summary.json").read_text())
    with (d / f"{v}.samples.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in r:
            r[k] = float(r[k])
    return s, rows


def at(rows, t):
    return min(rows, key=lambda r: abs(r["t"] - t))


variants = sorted(p.name[:-13] for p in d.glob("*.summary.json"))
print(
    "| variant | runs pushed | median rate (runs/s, 10 s samples) | purge calls | p50 ms "
    "| p99 ms | max ms | calls >200 ms | us/run purged |"
)
print("|---|---|---|---|---|---|---|---|---|")
for v in variants:
    s, rows = load(v)
    print(
        f"| {v} | {s['completed']:,} | {s['rate_median_sample']:,.0f} "
        f"| {s['purge_calls_nonempty']} | {s['purge_ms_p50']} | {s['purge_ms_p99']} "
        f"| {s['purge_ms_max'] and round(s['purge_ms_max'], 1)} "
        f"| {s['purge_calls_over_200ms']} | {s['purge_us_per_run']} |"
    )
print()
print("Sizes (MB, heap+indexes) of runs and attempts; t=120 s is two retention periods (60 s).")
print()
print(
    "| variant | runs @60s | runs @120s | runs end | runs max | end/120s | attempts @120s "
    "| attempts end | runs dead max | runs live end | autovacuums runs |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|")
for v in variants:
    s, rows = load(v)

    def tot(r, rel):
        return r[f"{rel}_heap_mb"] + r[f"{rel}_idx_mb"]

    r60, r120, end = at(rows, 60), at(rows, 120), rows[-1]
    mx = max(tot(r, "runs") for r in rows)
    print(
        f"| {v} | {tot(r60, 'runs'):.0f} | {tot(r120, 'runs'):.0f} | {tot(end, 'runs'):.0f} "
        f"| {mx:.0f} | {tot(end, 'runs') / tot(r120, 'runs'):.2f} "
        f"| {tot(r120, 'attempts'):.0f} | {tot(end, 'attempts'):.0f} "
        f"| {max(r['runs_dead'] for r in rows):,.0f} | {end['runs_live']:,.0f} "
        f"| {end['runs_av']:.0f} |"
    )
