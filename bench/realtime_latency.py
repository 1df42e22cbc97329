"""The latency workload of bench/realtime.py: how soon a subscription in the benchmark
process sees a run created, and completed (see its docstring)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import common
from bench.common import BenchError
from bench.drain import spawn_workers, stop_workers, verify_exactly_once, wait_completed
from bench.noop_app import define
from bench.realtime_subscriber import REGISTER_TIMEOUT, subscribers, wait_unsubscribed
from engine import Engine, RunStatus

LATENCY_TAG = "lat"
LATENCY_GAP = 0.02  # seconds between the latency runs' triggers
PERCENTILES = (50, 95, 99)


class Watcher:
    """Iterates a tag subscription on a thread, noting when each run is first seen and
    first seen COMPLETED: (perf_counter, time.time()) each."""

    def __init__(self, app: Engine, tag: str) -> None:
        self.first: dict[str, tuple[float, float]] = {}
        self.completed: dict[str, tuple[float, float]] = {}
        self.error: BaseException | None = None
        self._stop = False
        self._it = app.runs.subscribe_to_runs_with_tag(tag)
        self._thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for run in self._it:
                seen = (time.perf_counter(), time.time())
                if self._stop:
                    break
                self.first.setdefault(run.id, seen)
                if run.status is RunStatus.COMPLETED:
                    self.completed.setdefault(run.id, seen)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            self._it.close()

    def stop(self, wake: Callable[[], None]) -> None:
        """End the subscription: `wake` must cause a change the subscription sees."""
        self._stop = True
        wake()
        self._thread.join(30)
        if self._thread.is_alive():
            raise BenchError("the latency subscription did not stop")
        if self.error is not None:
            raise BenchError(f"the latency subscription failed: {self.error!r}")


def _wait(
    done: Callable[[], bool], timeout: float, what: str, workers: list[common.Worker]
) -> None:
    common.wait_until(done, workers, timeout, what, interval=0.02)


@dataclass(frozen=True)
class LatencySample:
    """Milliseconds, one list per figure (see LATENCY_ROWS)."""

    values: dict[str, list[float]]


LATENCY_ROWS = (
    "created: trigger() returned -> seen",
    "created: created_at (db clock) -> seen",
    "completed: finished_at (db clock) -> seen",
)


def latency(dsn: str, n: int, log_dir: Path) -> LatencySample:
    workers: list[common.Worker] = []
    try:
        with Engine(dsn) as app, common.connect(dsn) as conn:
            task = define(app)
            with app.db.pool.connection() as c:
                c.execute("SELECT 1")

            def trigger_spaced() -> dict[str, float]:
                """n runs with the tag, LATENCY_GAP apart: id -> perf_counter once
                trigger() returned (committed)."""
                committed = {}
                for i in range(n):
                    handle = task.trigger({"i": i}, tags=[LATENCY_TAG])
                    committed[handle.id] = time.perf_counter()
                    time.sleep(LATENCY_GAP)
                return committed

            watcher = Watcher(app, LATENCY_TAG)
            try:
                _wait(lambda: subscribers(conn) > 0, REGISTER_TIMEOUT, "the subscription", [])
                # created, no worker
                created = trigger_spaced()
                _wait(lambda: all(i in watcher.first for i in created), 60, "runs seen", [])
                by_perf = [(watcher.first[i][0] - t) * 1000 for i, t in created.items()]
                rows = conn.execute(
                    "SELECT id, created_at FROM skiplock.runs WHERE id = ANY (%s)",
                    (list(created),),
                ).fetchall()
                by_db = [(watcher.first[i][1] - at.timestamp()) * 1000 for i, at in rows]

                # completed, one worker (warmed up by the runs above)
                workers.extend(spawn_workers(dsn, 1, log_dir))
                _wait(lambda: all(i in watcher.completed for i in created), 120, "warm-up", workers)
                finished = trigger_spaced()
                _wait(lambda: all(i in watcher.completed for i in finished), 120, "done", workers)
                rows = conn.execute(
                    "SELECT run_id, finished_at FROM skiplock.attempts "
                    "WHERE run_id = ANY (%s) AND status = 'COMPLETED'",
                    (list(finished),),
                ).fetchall()
                if len(rows) != n:
                    raise BenchError(f"latency: {len(rows)} of {n} runs have a completed attempt")
                by_finish = [(watcher.completed[i][1] - at.timestamp()) * 1000 for i, at in rows]
            finally:
                watcher.stop(lambda: task.trigger({"i": -1}, tags=[LATENCY_TAG]))
            # the stopping run too: every run must complete, exactly once
            wait_completed(conn, 2 * n + 1, workers, 120)
            stop_workers(workers)
            verify_exactly_once(conn, 2 * n + 1)
            wait_unsubscribed(conn)
    finally:
        common.stop(workers)
    return LatencySample(dict(zip(LATENCY_ROWS, (by_perf, by_db, by_finish), strict=True)))


def percentiles(values: list[float]) -> dict[int, float]:
    return {p: common.percentile(values, p) for p in PERCENTILES}
