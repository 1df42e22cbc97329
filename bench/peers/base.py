"""The interface each compared system implements."""

from __future__ import annotations

import contextlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from importlib import metadata

from bench.common import Conn

BATCH = 1000  # items per batch-enqueue call, for every system


class Client(ABC):
    """A producer: an open connection (pool) of one system, in the benchmark process.
    Everything it does happens outside the timed section except the calls themselves."""

    @abstractmethod
    def enqueue_single(self, items: list[int]) -> None:
        """One enqueue call (one transaction) per item, in a loop: no-op jobs."""

    @abstractmethod
    def enqueue_batch(self, items: list[int]) -> None:
        """The system's batch API, BATCH items per call: no-op jobs."""

    @abstractmethod
    def trigger_pickup(self, i: int) -> None:
        """Enqueue one job of the pickup task, which records its start as (i, clock_timestamp())
        in bench_started."""


class System(ABC):
    name: str
    package: str  # distribution whose version is reported
    settings: str  # one line: the worker settings used, for the report
    batch_api: str  # what the batch-enqueue row calls

    def version(self) -> str:
        return metadata.version(self.package)

    @abstractmethod
    def install(self, dsn: str) -> None:
        """Create the system's schema in the empty database `dsn` (and whatever must exist
        before jobs can be queued and run)."""

    @abstractmethod
    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]: ...

    @abstractmethod
    def bulk_fill(self, conn: Conn, n: int) -> None:
        """Queue n no-op jobs with plain SQL in one transaction (for big backlogs)."""

    @abstractmethod
    def worker_command(self) -> list[str]:
        """argv of one worker process serving the no-op and pickup tasks; its database is in
        $BENCH_DSN."""

    def worker_env(self, dsn: str) -> dict[str, str]:
        return {}

    @abstractmethod
    def completed(self, conn: Conn, n: int) -> int:
        """How many no-op jobs have finished successfully; polled while waiting for n of
        them, so it should cost little (it may count only the first n + a margin in FIFO
        order)."""

    @abstractmethod
    def nth_finish(self, conn: Conn, n: int) -> datetime | None:
        """When the n-th no-op job's success was recorded, by the system's own database
        timestamps; None when it has none (then the time the poll saw it is used)."""

    @abstractmethod
    def first_start(self, conn: Conn) -> datetime:
        """When the first no-op job started, by the system's own timestamps."""

    def own_pickup_ms(self, conn: Conn) -> list[float] | None:
        """Pickup latencies by the system's own database timestamps, if it has them."""
        return None

    @abstractmethod
    def verify(self, conn: Conn, total: int, drained: bool) -> None:
        """Raise BenchError unless exactly `total` no-op jobs exist and none ran more than
        once; with `drained`, every one of them ran (exactly once) and succeeded."""


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
