"""The interface each workflow engine under comparison implements, and the benchmark
workflows every one of them defines (same names, same steps, same ledger lines).

Workflows, by kind (their ledger lines: workflow name, then its steps):

* steps:  `steps-<i>`: three steps s0, s1, s2, each doing nothing but its ledger line.
* one:    `one-<i>`: one step s0 (the drain).
* resume: `resume-<i>`: step `before`, then a wait on a token/event/message of its own
  that the benchmark completes from outside, then step `after` (its time: when the
  workflow saw the completion).
* sleep:  `sleep-<i>`: step `start` (its time: just before the sleep), a durable sleep of
  SLEEP_SECONDS, step `woke`.
* fanout: `parent-0` starts N children `child-<i>` (one step s0 each), waits for all of
  them, then step `done`.
* wait:   `wait-<i>`: step `before`, then a wait on an event nobody sends (the idle worker).
"""

from __future__ import annotations

import contextlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from importlib import metadata
from typing import ClassVar

CONCURRENCY = 50
SLEEP_SECONDS = 2.0
STEPS = ("s0", "s1", "s2")
KINDS = ("steps", "one", "resume", "sleep", "fanout", "wait")


def expected(kind: str, n: int) -> dict[str, tuple[str, ...]]:
    """The ledger lines a workload of `n` workflows of `kind` must leave, each once."""
    if kind == "steps":
        return {f"steps-{i}": STEPS for i in range(n)}
    if kind == "one":
        return {f"one-{i}": ("s0",) for i in range(n)}
    if kind == "resume":
        return {f"resume-{i}": ("before", "after") for i in range(n)}
    if kind == "sleep":
        return {f"sleep-{i}": ("start", "woke") for i in range(n)}
    if kind == "fanout":
        return {"parent-0": ("done",), **{f"child-{i}": ("s0",) for i in range(n)}}
    if kind == "wait":
        return {f"wait-{i}": ("before",) for i in range(n)}
    raise ValueError(kind)


class Client(ABC):
    """The benchmark's side of one system: starts workflows, completes waits, counts."""

    @abstractmethod
    def start(self, kind: str, items: list[int]) -> None:
        """Start workflows `<kind>-<i>` for i in items (fanout: items == [n children])."""

    @abstractmethod
    def complete(self, i: int) -> None:
        """Complete the wait of workflow resume-<i> (its token, event or message)."""

    @abstractmethod
    def finished(self, kind: str) -> int:
        """How many workflows of `kind` have finished successfully (fanout: the parent)."""

    @abstractmethod
    def failed(self) -> str | None:
        """A workflow (any kind) or attempt of one that failed, described with its error,
        or None: a benchmark workflow never fails, so one that does ends the measurement."""

    @abstractmethod
    def waiting(self, kind: str) -> int:
        """How many workflows of `kind` are suspended in their wait (or, where the system
        cannot tell, have at least reached it)."""


class Peer(ABC):
    """One system. `variants` names the worker settings tried (variant -> extra worker
    argv); `fastest` says which the benchmark uses for each workflow kind (measured with
    `--only name:variant,...`, see bench/RESULTS.md). Peer(variant) pins one variant for
    every kind; its results are then labelled `name:variant`."""

    name: str
    package: str  # distribution whose version is reported
    settings: str  # one line for the report: worker settings and where they are documented
    variants: ClassVar[dict[str, list[str]]] = {}
    fastest: ClassVar[dict[str, str]] = {}  # kind -> variant (kinds not listed: no extra argv)
    stop_grace = 60.0  # seconds from SIGTERM to SIGKILL when the workers are stopped

    def __init__(self, variant: str | None = None) -> None:
        if variant is not None and variant not in self.variants:
            raise ValueError(f"{self.name} has no variant {variant!r}: {sorted(self.variants)}")
        self.variant = variant

    @property
    def label(self) -> str:
        return self.name if self.variant is None else f"{self.name}:{self.variant}"

    def variant_for(self, kind: str) -> str | None:
        return self.variant or self.fastest.get(kind)

    def variant_args(self, kind: str) -> list[str]:
        v = self.variant_for(kind)
        return list(self.variants[v]) if v is not None else []

    def version(self) -> str:
        return metadata.version(self.package)

    def describe(self) -> str:
        """settings, then the variant each kind ran with and that variant's worker argv."""
        chosen = {k: v for k in KINDS if (v := self.variant_for(k)) is not None}
        if not chosen:
            return self.settings
        workload = {"one": "one (drain)", "wait": "wait (idle)"}
        used = ", ".join(f"{workload.get(k, k)}: {v}" for k, v in chosen.items())
        argv = "; ".join(
            f"{v} = `{' '.join(self.variants[v]) or '(defaults)'}`"
            for v in dict.fromkeys(chosen.values())
        )
        return f"{self.settings}. Variant by workflow kind: {used} ({argv})"

    @abstractmethod
    def install(self, dsn: str) -> None:
        """Create the system's schema in the empty database `dsn`."""

    @abstractmethod
    def worker_command(self, kind: str) -> list[str]:
        """argv of one worker process for workloads of `kind`; $BENCH_DSN holds the
        database and $BENCH_LEDGER_DIR the ledger directory."""

    def worker_env(self, dsn: str) -> dict[str, str]:
        return {}

    @abstractmethod
    @contextlib.contextmanager
    def client(self, dsn: str) -> Iterator[Client]: ...


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
