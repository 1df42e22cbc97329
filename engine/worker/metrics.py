"""A worker's Prometheus metrics, on an HTTP server of its own (`skiplock worker
--metrics-port N`, `Worker(metrics_port=N)`).

Counted by this worker process, for the attempts it ran:

    skiplock_attempt_duration_seconds{task, outcome}   histogram; outcome: success,
        failure (it raised, a timeout included), waiting (suspended on a wait), stopped
        (canceled, its lease lost, interrupted at shutdown)
    skiplock_runs_finished_total{task, status}         runs this worker's recorded outcome
        finished: COMPLETED, FAILED, TIMED_OUT, SYSTEM_FAILURE
    skiplock_worker_attempts_running                   its attempts running now

With `metrics_database=True` it serves the database-wide figures too (engine/db/metrics.py:
queues, parked runs, workers), read at each scrape on the worker's loop. They are the same
whichever worker serves them, so one worker (or the dashboard's /metrics) is enough.

Why runs by final status are counted here, per process, not in the database: a count over
the runs table is a scan of all of it (0.4-0.5 s per million runs, measured), and a
counter table kept by the transactions that finish runs puts one hot row in every
completion batch of every worker, and needs every path that finishes a run to keep it (a
dozen SQL functions). A worker knows the status the database gave each outcome it
recorded (that is how its outcome lines are written): counting them costs a dictionary
look-up and an addition, and a Prometheus counter is per process anyway. Sum across
workers in PromQL: `sum by (task, status) (increase(skiplock_runs_finished_total[1h]))`.
What no worker records is not counted there: cancels (by the API or the dashboard), and
what maintenance decides (EXPIRED, CRASHED runs of lost workers). A success counts once
its batch is recorded, as its outcome line is written.

Nothing of this runs unless metrics are enabled: the observer that times attempts is
registered when the worker starts serving them, and removed when it stops.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from ..db import metrics as db_metrics  # a SkiplockError that says so without the extra
from ..db import queries as _queries
from ..db.metrics import (
    Collector,
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    start_http_server,
)
from ..errors import SkiplockError
from .lifecycle import OBSERVERS
from .replay import Suspended

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ..api.engine import Engine
    from .state import RunningAttempt, WorkerState

# attempts last from microseconds (a no-op) to hours (max_duration is unbounded)
BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
_LE = [*(repr(b) for b in BUCKETS), "+Inf"]  # "0.005", "1.0": as prometheus_client writes them
FINAL = frozenset(
    {"COMPLETED", "FAILED", "TIMED_OUT", "SYSTEM_FAILURE", "CANCELED", "CRASHED", "EXPIRED"}
)
_READ_TIMEOUT = 10.0  # seconds a scrape waits for the database-wide figures


class WorkerMetrics(Collector):
    """The metrics of one worker, and the server that serves them.

    Counted on the worker's loop in plain numbers, and read by the server's thread at a
    scrape: prometheus_client's own Histogram takes locks at each observation, 4-5 us an
    attempt on this machine (the rest of a no-op run takes some 35); this takes about 1.
    A scrape may see an attempt in a bucket and not yet in the sum: the next one has it."""

    def __init__(
        self,
        state: WorkerState,
        engine: Engine,
        *,
        port: int,
        host: str = "0.0.0.0",
        database: bool = False,
    ) -> None:
        self._state, self._engine = state, engine
        self.port, self.host, self.database = port, host, database
        # (task, outcome) -> [count per bucket (the last: +Inf)..., sum of seconds]
        self._durations: dict[tuple[str, str], list[float]] = {}
        self._finished: dict[tuple[str, str], int] = {}  # (task, status) -> runs
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._server: WSGIServer | None = None

    # -- serving ---------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Listen on the port (a `SkiplockError` if it cannot), and start timing attempts."""
        if self.database:
            self.registry.register(db_metrics.DatabaseCollector(lambda: self._read(loop)))
        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise SkiplockError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        OBSERVERS.append(self.observe)

    def stop(self) -> None:
        if self.observe in OBSERVERS:
            OBSERVERS.remove(self.observe)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _read(self, loop: asyncio.AbstractEventLoop) -> db_metrics.Rows:
        """The database-wide figures, read on the worker's loop (from the server's thread),
        on a connection lane of their own."""
        if loop.is_closed():
            raise RuntimeError("the worker has stopped")
        query = self._engine.adb.run(_queries.metrics(), lane="metrics")
        future = asyncio.run_coroutine_threadsafe(query, loop)
        try:
            return future.result(_READ_TIMEOUT)
        except BaseException:
            future.cancel()
            raise

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """The figures as they are now (called in the server's thread: `list()` copies each
        dict in one step, as the loop's thread may add to it meanwhile)."""
        durations = HistogramMetricFamily(
            "skiplock_attempt_duration_seconds",
            "Duration of this worker's attempts (each part of one that waited), by outcome.",
            labels=["task", "outcome"],
        )
        for (task_id, outcome), counts in sorted(list(self._durations.items())):
            counts = list(counts)
            cumulative, buckets = 0.0, []
            for le, n in zip(_LE, counts, strict=False):
                cumulative += n
                buckets.append((le, cumulative))
            durations.add_metric([task_id, outcome], buckets, sum_value=counts[-1])
        yield durations
        finished = CounterMetricFamily(
            "skiplock_runs_finished",
            "Runs finished by an outcome this worker recorded, by final status.",
            labels=["task", "status"],
        )
        for (task_id, status), n in sorted(list(self._finished.items())):
            finished.add_metric([task_id, status], n)
        yield finished
        yield GaugeMetricFamily(
            "skiplock_worker_attempts_running",
            "Attempts this worker is running now.",
            value=len(self._state.running),
        )

    # -- counting (on the worker's loop) ---------------------------------------------------

    def finished(self, task_id: str, status: str) -> None:
        """The database recorded this worker's outcome of a run of `task_id`: the run is
        now `status` (counted if final)."""
        if status in FINAL:
            key = (task_id, status)
            self._finished[key] = self._finished.get(key, 0) + 1

    def observe(self, attempt: RunningAttempt) -> AbstractAsyncContextManager[None]:
        """The observer (worker/lifecycle.py) that times an attempt of this worker."""
        if self._state.running.get(attempt.ctx.attempt_id) is not attempt:
            return _NOTHING  # another worker's, in the same process
        return _Timed(self, attempt.task.id)

    def timed(self, task_id: str, outcome: str, seconds: float) -> None:
        counts = self._durations.get((task_id, outcome))
        if counts is None:
            counts = self._durations[task_id, outcome] = [0.0] * (len(BUCKETS) + 2)
        counts[bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound >= seconds
        counts[-1] += seconds


class _Timed:
    """Times one attempt; how it ends says its outcome."""

    __slots__ = ("_metrics", "_started", "_task_id")

    def __init__(self, metrics: WorkerMetrics, task_id: str) -> None:
        self._metrics, self._task_id = metrics, task_id
        self._started = 0.0

    async def __aenter__(self) -> None:
        self._started = time.perf_counter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._started
        self._metrics.timed(self._task_id, _outcome(exc), seconds)


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "success"
    if isinstance(exc, Suspended):
        return "waiting" if exc.args == ("WAITING",) else "stopped"
    if isinstance(exc, asyncio.CancelledError):
        return "stopped"
    return "failure"


class _Nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NOTHING = _Nothing()
