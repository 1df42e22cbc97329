"""The subscriber processes of bench/realtime_scale.py (see its docstring).

    python -m bench.realtime_scale_procs holder IDS_FILE TAG...   # one process, many subscriptions
    python -m bench.realtime_scale_procs tagger TAG               # one of many small processes

Both take the DSN from $BENCH_DSN, iterate async subscriptions on one event loop, note
time.time() when each run is first seen COMPLETED, and print one line of JSON prefixed
with `STATS_PREFIX` when they end: the holder once every run it follows has completed,
a tagger on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine import Engine, RunStatus

READY_PREFIX = "READY "
STATS_PREFIX = "SCALE_STATS "


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class Seen:
    """What the subscriptions delivered: updates, and the first sight of each COMPLETED."""

    def __init__(self) -> None:
        self.updates = 0
        self.completed: dict[str, float] = {}  # run id -> time.time() at first sight

    def note(self, run: Any) -> None:
        self.updates += 1
        if run.status is RunStatus.COMPLETED and run.id not in self.completed:
            self.completed[run.id] = time.time()


async def holder(dsn: str, ids: list[str], tags: list[str], per_tag: int) -> dict[str, Any]:
    """Subscribe to every run of `ids` and to each of `tags` (each matching `per_tag` of the
    runs); say READY once every subscription has its first snapshot; end once every run
    completed in both views."""
    rss0 = rss_kib()
    app = Engine(dsn)
    by_run, by_tag = Seen(), Seen()
    first: set[str] = set()
    tag_first: dict[str, set[str]] = {t: set() for t in tags}
    everyone = asyncio.Event()

    def check_ready() -> None:
        if len(first) == len(ids) and all(len(s) >= per_tag for s in tag_first.values()):
            everyone.set()

    async def follow_run(run_id: str) -> None:
        async for run in app.runs.subscribe_to_run_async(run_id):
            if run_id not in first:
                first.add(run_id)
                check_ready()
            by_run.note(run)

    async def follow_tag(tag: str) -> None:
        done: set[str] = set()
        async for run in app.runs.subscribe_to_runs_with_tag_async(tag):
            tag_first[tag].add(run.id)
            check_ready()
            by_tag.note(run)
            if run.status is RunStatus.COMPLETED:
                done.add(run.id)
                if len(done) >= per_tag:
                    return

    started = time.perf_counter()
    tasks = [asyncio.create_task(follow_run(i)) for i in ids]
    tasks += [asyncio.create_task(follow_tag(t)) for t in tags]
    await everyone.wait()
    subscribed_s = time.perf_counter() - started
    rss1, cpu0, updates0 = rss_kib(), cpu_s(), by_run.updates + by_tag.updates
    print(READY_PREFIX + json.dumps({"rss0_kib": rss0, "rss1_kib": rss1}), flush=True)
    await asyncio.gather(*tasks)
    cpu = cpu_s() - cpu0
    app.close()
    return {
        "subscriptions": len(ids) + len(tags),
        "subscribe_s": subscribed_s,
        "rss0_kib": rss0,
        "rss1_kib": rss1,
        "rss_end_kib": rss_kib(),
        "cpu_s": cpu,
        "updates": by_run.updates + by_tag.updates - updates0,
        "run_completed": by_run.completed,
        "tag_completed": by_tag.completed,
    }


async def tagger(dsn: str, tag: str) -> dict[str, Any]:
    """Follow `tag` until SIGTERM."""
    app = Engine(dsn)
    seen = Seen()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def follow() -> None:
        async for run in app.runs.subscribe_to_runs_with_tag_async(tag):
            seen.note(run)

    task = asyncio.create_task(follow())
    print(READY_PREFIX + json.dumps({"rss0_kib": rss_kib()}), flush=True)
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    app.close()
    return {
        "updates": seen.updates,
        "cpu_s": cpu_s(),
        "rss_kib": rss_kib(),
        "completed": seen.completed,
    }


def main(argv: list[str]) -> int:
    dsn = os.environ["BENCH_DSN"]
    if argv[0] == "holder":
        ids = Path(argv[1]).read_text().split()
        tags = argv[3:]
        stats = asyncio.run(holder(dsn, ids, tags, int(argv[2])))
    elif argv[0] == "tagger":
        stats = asyncio.run(tagger(dsn, argv[1]))
    else:
        print(f"unknown role {argv[0]!r}", file=sys.stderr)
        return 2
    print(STATS_PREFIX + json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
