"""The mixed workload: which runs are triggered, at what pace, and waiting for them to
drain. Triggers carry an idempotency key, so one re-sent after a cut connection (was it
committed?) never makes a second run."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from engine import Engine

from .invariants import FINAL

PURGED_TASK = "fault-ephemeral"  # retention 1 s: purged by the workers' ticks meanwhile

# task id -> (weight, payload maker)
MIX: dict[str, tuple[int, Any]] = {
    "fault-plain": (4, lambda rng, n: {"n": n, "sleep": rng.uniform(0.01, 0.3)}),
    "fault-ephemeral": (2, lambda rng, n: {"n": n, "sleep": rng.uniform(0.01, 0.1)}),
    "fault-retry": (2, lambda rng, n: {"n": n, "sleep": rng.uniform(0.01, 0.1)}),
    "fault-wait": (2, lambda rng, n: {"n": n, "wait": rng.uniform(0.5, 1.5)}),
    "fault-limited": (2, lambda rng, n: {"n": n, "sleep": rng.uniform(0.05, 0.25)}),
    "fault-parent": (1, lambda rng, n: {"n": n}),
    "fault-db-touch": (2, lambda rng, n: {"n": n, "queries": 10, "sleep": 0.1}),
}


@dataclass
class Triggerer:
    """Triggers `runs` runs evenly over `seconds` on a thread; `acked` holds the ids the
    database acknowledged."""

    engine: Engine
    runs: int
    seconds: float
    rng: random.Random
    acked: list[str] = field(default_factory=list)
    purgeable: set[str] = field(default_factory=set)  # acked runs of fault-ephemeral
    retried: int = 0
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="fault-trigger", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"triggering did not finish within {timeout}s")
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            tasks = list(MIX)
            weights = [MIX[t][0] for t in tasks]
            began = time.monotonic()
            for n in range(self.runs):
                task = self.rng.choices(tasks, weights)[0]
                self.acked.append(self._trigger(task, MIX[task][1](self.rng, n), n))
                if task == PURGED_TASK:
                    self.purgeable.add(self.acked[-1])
                ahead = began + self.seconds * (n + 1) / self.runs - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:
            self.error = exc

    def _trigger(self, task: str, payload: Any, n: int) -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.engine.trigger(task, payload, idempotency_key=f"fault-{n}").id
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                self.retried += 1
                time.sleep(0.2)


def _progress(dsn: str) -> tuple[int, Any]:
    """How many runs are not final, and the last change to any of them."""
    try:
        with psycopg.connect(dsn, autocommit=True, application_name="fault-driver") as c:
            row = c.execute(
                "SELECT count(*), max(updated_at) FROM skiplock.runs "
                "WHERE status::text <> ALL (%s)",
                (list(FINAL),),
            ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)
    except psycopg.OperationalError:
        return -1, time.monotonic()  # the server is coming back: not drained, not stalled


def drain(dsn: str, timeout: float, stall: float) -> float:
    """Wait until every run is final; give up after `timeout`, or once no unfinished run
    has changed for `stall` seconds (longer than any lease, backoff or wait of the
    workload: such runs are stuck). Returns the seconds waited."""
    began = last_change = time.monotonic()
    seen: tuple[int, Any] | None = None
    while time.monotonic() - began < timeout:
        now = _progress(dsn)
        if now[0] == 0:
            break
        if now != seen:
            seen, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall:
            break
        time.sleep(0.25)
    return time.monotonic() - began
