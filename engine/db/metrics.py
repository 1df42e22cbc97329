"""The database-wide figures as Prometheus metrics: queues, parked runs, workers.

A `DatabaseCollector` reads them at each scrape in one query, `skiplock.metrics`
(sql/views/metrics.sql), whose every count reads a partial index holding only the runs it
counts: its cost grows with the runs in progress, never with the finished runs that are
the bulk of the runs table. Measured on PostgreSQL 18 (README, "Metrics"): 2 ms of server
time with a million finished runs and 20,000 in progress, 10 ms with the visibility map
behind (heap fetches for the runs changed since the last vacuum); a backlog of 200,000
queued runs, 0.1 s (0.5 s before a vacuum): about half a microsecond per run in progress.
The dashboard serves them at `/metrics`; a worker's metrics server does with
`metrics_database=True`.

    skiplock_queue_depth{queue}                QUEUED runs
    skiplock_queue_oldest_age_seconds{queue}   how long the first run in queue order has
                                               waited (0: none queued)
    skiplock_queue_running{queue}              runs holding a slot (DEQUEUED, EXECUTING)
    skiplock_runs_waiting                      WAITING runs (and _delayed, _pending_version)
    skiplock_workers{state}                    active, lapsed, lost, stopped
    skiplock_database_up                       1 if the query answered at this scrape

Runs by final status are not among them: counted in the database that is a scan of the
whole runs table (0.4-0.5 s per million runs, measured, and growing with it), or a counter
row that every commit that finishes a run would update, one hot row that concurrent
workers' completion batches queue on. Workers count
the outcomes they record instead (engine/worker/metrics.py), a counter per process as
Prometheus expects: `sum by (task, status) (rate(skiplock_runs_finished_total[5m]))`.

This module needs prometheus_client (`pip install 'skiplock[metrics]'`), and is the one
that imports it: importing it without raises a `SkiplockError` that says so. Nothing
imports it unless metrics are asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import SkiplockError

# the one place prometheus_client is imported: the worker's metrics take its names from here
try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import choose_encoder, start_http_server
    from prometheus_client.registry import Collector
except ImportError as exc:  # the optional extra is not installed
    raise SkiplockError(
        "metrics need the prometheus_client package: pip install 'skiplock[metrics]'"
    ) from exc

__all__ = [
    "Collector",
    "CollectorRegistry",
    "CounterMetricFamily",
    "DatabaseCollector",
    "GaugeMetricFamily",
    "HistogramMetricFamily",
    "Metric",
    "exposition",
    "families",
    "start_http_server",
]

log = logging.getLogger("skiplock.metrics")

Rows = list[dict[str, Any]]

# the view's metric -> (help, the name of its label or None)
_FAMILIES: dict[str, tuple[str, str | None]] = {
    "queue_depth": ("Runs QUEUED in the queue.", "queue"),
    "queue_oldest_age_seconds": (
        "Seconds the queue's first run in queue order has waited (0 when none is queued).",
        "queue",
    ),
    "queue_running": ("Runs of the queue holding a slot (DEQUEUED or EXECUTING).", "queue"),
    "runs_waiting": ("Runs WAITING on a waitpoint (a duration, a token, child runs).", None),
    "runs_delayed": ("Runs DELAYED until a later time.", None),
    "runs_pending_version": ("Runs PENDING_VERSION: no deployment has their task.", None),
    "workers": ("Workers registered in the database, by state.", "state"),
}


def families(rows: Rows) -> list[Metric]:
    """The metric families of `skiplock.metrics`' rows (a metric it has and this version
    does not know is left out)."""
    by_name: dict[str, GaugeMetricFamily] = {}
    for row in rows:
        known = _FAMILIES.get(row["metric"])
        if known is None:
            continue
        family = by_name.get(row["metric"])
        if family is None:
            help_text, label = known
            family = by_name[row["metric"]] = GaugeMetricFamily(
                "skiplock_" + row["metric"], help_text, labels=[label] if label else None
            )
        family.add_metric([row["label"]] if row["label"] is not None else [], row["value"])
    return list(by_name.values())


class DatabaseCollector(Collector):
    """Reads the database-wide figures at each collection through `read` (which returns
    the rows of `queries.metrics()`). When it raises, the scrape still answers, with
    `skiplock_database_up 0` and none of the figures."""

    def __init__(self, read: Callable[[], Rows]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return ()  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        try:
            rows, up = self._read(), 1.0
        except Exception as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            rows, up = [], 0.0
        yield from families(rows)
        yield GaugeMetricFamily(
            "skiplock_database_up", "1 if the database answered this scrape's query.", value=up
        )


def exposition(collector: Collector, accept: str | None) -> tuple[bytes, str]:
    """`collector`'s metrics as the body and content type a scraper asked for (`accept`:
    its Accept header; Prometheus' text format unless it asks for OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
