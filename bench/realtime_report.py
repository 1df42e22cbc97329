"""The results of bench/realtime.py: the lines printed per repetition, the throughput and
latency tables, and its "## Realtime" section of bench/RESULTS.md."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.drain import WORKER_CONCURRENCY
from bench.realtime_latency import (
    LATENCY_GAP,
    LATENCY_ROWS,
    PERCENTILES,
    LatencySample,
    percentiles,
)
from bench.realtime_throughput import DRAIN_WORKERS, Sample

SECTION = "## Realtime"


@dataclass
class Results:
    throughput: dict[str, dict[bool, list[Sample]]] = field(default_factory=dict)
    latency: list[LatencySample] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # every repetition, as printed

    def note(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


def describe(sample: Sample) -> str:
    text = f"{sample.rate:7.0f} runs/s ({sample.seconds:.2f}s)"
    if sample.busy_rate is not None:
        text += f", busy {sample.busy_rate:.0f} runs/s"
    if sample.subscriber_cpu is not None:
        text += f"; subscriber CPU {sample.subscriber_cpu:.2f}s"
    if sample.listener_cpu is not None:
        text += f"; workers' LISTEN backends CPU {sample.listener_cpu:.2f}s"
    if sample.subscriber_stats:
        s = sample.subscriber_stats
        text += (
            f"; feed: {s['bursts']:.0f} bursts, {s['notifications']:.0f} notifications, "
            f"{s['ids']:.0f} ids, {s['handler_s']:.2f}s in handler"
        )
    if sample.function_ms:
        text += "; ms/call: " + ", ".join(
            f"{k} {ms:.3f} ({calls})" for k, (calls, ms) in sorted(sample.function_ms.items())
        )
    return text


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    med = format(statistics.median(values), fmt)
    return med if len(values) == 1 else f"{med} ({min(values):{fmt}}-{max(values):{fmt}})"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    sep = (
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def throughput_table(res: Results) -> str:
    header = [
        "workload (runs/s)",
        "without realtime",
        "with realtime",
        "ratio with/without",
        "per-repetition ratios",
        "subscriber CPU s",
    ]
    rows = []
    for name, by in res.throughput.items():
        pairs = list(zip(by[False], by[True], strict=True))
        figures: list[tuple[str, Callable[[Sample], float | None]]] = [
            ("wall", lambda s: s.rate),
            ("busy", lambda s: s.busy_rate),
        ]
        for label, get in figures:
            without = [v for s in by[False] if (v := get(s)) is not None]
            with_ = [v for s in by[True] if (v := get(s)) is not None]
            if not without or not with_:
                continue
            paired = [b / a for s0, s1 in pairs if (a := get(s0)) is not None and (b := get(s1))]
            cpu = [c for s in by[True] if (c := s.subscriber_cpu) is not None]
            rows.append(
                [
                    name if label == "wall" else f"{name}, busy",
                    _cell(without, ".0f"),
                    _cell(with_, ".0f"),
                    f"{statistics.median(with_) / statistics.median(without):.3f}",
                    _cell(paired, ".3f"),
                    _cell(cpu, ".2f") if label == "wall" else "",
                ]
            )
    return _markdown_table(header, rows)


def latency_table(res: Results) -> str:
    header = ["latency (ms)", *(f"p{p}" for p in PERCENTILES)]
    rows = []
    for row in LATENCY_ROWS:
        per_rep = [percentiles(lat.values[row]) for lat in res.latency]
        rows.append([row, *(_cell([f[p] for f in per_rep], ".1f") for p in PERCENTILES)])
    return _markdown_table(header, rows)


def facts_lines(args: argparse.Namespace, pg: dict[str, str], machine: dict[str, str]) -> list[str]:
    return [
        f"Machine: {machine['cpus']} cores ({machine['cpu']}), {machine['memory']} RAM, "
        f"{machine['os']}; Python {machine['python']}; load average at the end "
        f"(1, 5, 15 min): {machine['load']}",
        f"PostgreSQL {pg['server_version']}: "
        + ", ".join(f"{k}={v}" for k, v in pg.items() if k != "server_version"),
        f"Sizes: enqueue {args.runs} runs, drain {args.drain_runs} runs "
        f"({DRAIN_WORKERS} workers x{WORKER_CONCURRENCY}), latency {args.latency_runs} + "
        f"{args.latency_runs} runs {LATENCY_GAP * 1000:.0f} ms apart; {args.repeat} repetitions "
        "(median, min-max)",
    ]


def section(
    res: Results,
    args: argparse.Namespace,
    pg: dict[str, str],
    machine: dict[str, str],
    command: str,
    started: str,
    commit: str,
) -> str:
    ended = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"{SECTION} (bench/realtime.py)",
            "",
            f"Generated by `{command}` at git {commit}, from {started} to {ended}; one "
            "throwaway cluster (unless --dsn), a fresh database per measurement. "
            '"With realtime": one subscriber process holding a tag subscription that '
            "matches no benchmark run: every run change pays the lookup of who watches it, "
            'but nothing is announced; "without": no subscription anywhere (notify_runs '
            "returns at its first check). Rows without "
            '"alternating": a fresh database each, one after the other, the order '
            'alternating between repetitions; "alternating" rows: two databases side by '
            "side, the workload in chunks alternately in each (ABBA), so that both share "
            'conditions within a second. "busy": first attempt start to last finish '
            "(database timestamps); the row above it includes worker start-up. "
            "Subscriber CPU: the subscriber process plus its backend during the timed "
            "window. See the module docstring for exactly what is timed.",
            "",
            *(f"- {line}" for line in facts_lines(args, pg, machine)),
            "",
            throughput_table(res),
            "",
            "Latency from a change to the subscriber seeing it (a subscription in the "
            "benchmark process, on its own thread). The second row uses the run's "
            "created_at, stamped at the start of the trigger transaction, so it exceeds the "
            "first by the transaction's own duration (its commit's WAL flush included); "
            "the third is the same kind of figure for completion (attempts.finished_at, "
            "stamped at the start of the completing transaction): an upper bound.",
            "",
            latency_table(res),
            "",
            "<details><summary>Every repetition</summary>",
            "",
            "```",
            *res.lines,
            "```",
            "",
            "</details>",
            "",
        ]
    )
