"""The data model's plain values: statuses, handles, results of waits, retry policies,
queues, rate limits and debounces. Dataclasses and enums only: a worker imports them
without pydantic, whose models (runs, attempts, schedules) are in engine.models.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ._durations import UNSET, Duration, Unset, parse_seconds, retention_seconds
from .errors import InvalidArgumentError, InvalidDurationError, WaitFailedError


class RunStatus(StrEnum):
    PENDING_VERSION = "PENDING_VERSION"
    DELAYED = "DELAYED"
    QUEUED = "QUEUED"
    DEQUEUED = "DEQUEUED"
    EXECUTING = "EXECUTING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CRASHED = "CRASHED"
    SYSTEM_FAILURE = "SYSTEM_FAILURE"
    EXPIRED = "EXPIRED"


QUEUED_STATUSES = frozenset({RunStatus.PENDING_VERSION, RunStatus.DELAYED, RunStatus.QUEUED})
EXECUTING_STATUSES = frozenset({RunStatus.DEQUEUED, RunStatus.EXECUTING})
FAILED_STATUSES = frozenset(
    {
        RunStatus.FAILED,
        RunStatus.CRASHED,
        RunStatus.SYSTEM_FAILURE,
        RunStatus.TIMED_OUT,
        RunStatus.EXPIRED,
    }
)
FINAL_STATUSES = FAILED_STATUSES | {RunStatus.COMPLETED, RunStatus.CANCELED}


@dataclass(frozen=True)
class RunHandle:
    """What a trigger returns. `is_cached` is True when an idempotency key matched an
    existing run, whose handle this is."""

    id: str
    task_identifier: str
    status: RunStatus
    is_cached: bool = False


@dataclass(frozen=True)
class Token:
    """A wait token (a TOKEN waitpoint): complete it with `app.waitpoints.complete_token`."""

    id: str
    is_cached: bool = False


@dataclass(frozen=True)
class BatchHandle:
    id: str
    runs: list[RunHandle] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Result:
    """The outcome of a wait on a token or a child run: `ok` with `output`, or an `error`.

    A plain frozen dataclass, not a pydantic model: a worker resuming from a wait builds
    one, and importing pydantic then (80-110 ms, once per process) showed as the p99 of
    wait-resume latency (bench/workflows.py)."""

    ok: bool
    output: Any = None
    error: Any = None
    run_id: str | None = None

    def unwrap(self) -> Any:
        """The output, or `WaitFailedError` carrying the error."""
        if not self.ok:
            raise WaitFailedError(self.error, self.run_id)
        return self.output

    def model_dump(self) -> dict[str, Any]:
        """Its fields as a dict, as when it was a pydantic model."""
        return {"ok": self.ok, "output": self.output, "error": self.error, "run_id": self.run_id}


@dataclass(frozen=True)
class Retry:
    """Retry policy. The delay before attempt n+1 is
    min(max_timeout, min_timeout * factor**(n-1) * (1 + rand if randomize))."""

    max_attempts: int = 3
    factor: float = 2.0
    min_timeout: float = 1.0
    max_timeout: float = 60.0
    randomize: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgumentError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.factor < 1 or self.min_timeout < 0 or self.max_timeout < self.min_timeout:
            raise InvalidArgumentError(
                "retry needs factor >= 1 and 0 <= min_timeout <= max_timeout"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        jitter = 1.0 + random.random() if self.randomize else 1.0
        return float(
            min(self.max_timeout, self.min_timeout * self.factor ** (attempt - 1) * jitter)
        )


def _count(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 2**31 - 1:
        raise InvalidArgumentError(f"{what} must be a whole number of at least 1, got {value!r}")
    return value


_RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` runs of a queue start per `period` ("1s", "1m", seconds, timedelta)
    for each rate key (a run's `rate_limit_key`, else its concurrency key), and at most
    `burst` at once after a quiet spell; a run triggered with `rate_cost=n` counts n.
    Enforced in the claim, across every worker: in any window of one period, at most
    limit + burst runs of a key start."""

    limit: int
    period: Duration
    burst: int = 1

    def __post_init__(self) -> None:
        _count("a rate limit", self.limit)
        _count("a burst", self.burst)
        if not 0 < parse_seconds(self.period, "a rate period") < float("inf"):
            raise InvalidDurationError(f"a rate period must be positive, got {self.period!r}")

    @property
    def period_seconds(self) -> float:
        return parse_seconds(self.period, "a rate period")

    @property
    def interval(self) -> float:
        """Seconds between two runs of one key at the full rate (period / limit)."""
        return self.period_seconds / self.limit

    @classmethod
    def parse(cls, text: str, burst: int = 1) -> RateLimit:
        """`LIMIT/PERIOD` as people type it: "10/1s", "100/m" (one unit), "5/30" (seconds)."""
        match = _RATE_PATTERN.match(text)
        if match is None:
            raise InvalidArgumentError(
                f"a rate is LIMIT/PERIOD, e.g. 10/1s or 100/1m, got {text!r}"
            )
        written = match.group(2)
        period: Duration = written
        if written in ("ms", "s", "m", "h", "d", "w"):
            period = "1" + written
        elif re.fullmatch(r"\d+(\.\d+)?", written):
            period = float(written)
        return cls(int(match.group(1)), period, burst)

    @property
    def text(self) -> str:
        """LIMIT/PERIOD as `parse` takes it, e.g. "100/1m"."""
        seconds = self.period_seconds
        for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if seconds >= size and (seconds / size).is_integer():
                return f"{self.limit}/{seconds / size:g}{unit}"
        if seconds < 1 and (seconds * 1000).is_integer():
            return f"{self.limit}/{seconds * 1000:g}ms"
        return f"{self.limit}/{seconds:g}s"

    def __str__(self) -> str:
        return self.text if self.burst == 1 else f"{self.text} burst {self.burst}"

    def as_json(self) -> dict[str, Any]:
        """As skiplock.register_worker takes it: period in seconds."""
        return {"limit": self.limit, "period": self.period_seconds, "burst": self.burst}


@dataclass(frozen=True)
class Queue:
    """A named queue; tasks sharing one share its concurrency limit (None: unlimited).
    `retention` keeps its finished runs that long (None: forever) unless their task says
    otherwise; not given, the engine's default applies. `rate_limit` bounds how many of
    its runs start per period (see `RateLimit`); None declares none. Declared limits are
    applied when a worker of the task registers; `rate_limit` not given keeps whatever
    was set at run time (`app.queues.set_rate_limit`)."""

    name: str
    concurrency_limit: int | None = None
    retention: Duration | Unset | None = UNSET
    rate_limit: RateLimit | Unset | None = UNSET

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= 256:
            raise InvalidArgumentError("queue name must be 1 to 256 characters")
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise InvalidArgumentError(
                f"concurrency_limit must be at least 1, got {self.concurrency_limit}"
            )
        if self.retention is not UNSET:
            retention_seconds(self.retention, f"queue {self.name!r} retention")
        if not (self.rate_limit is UNSET or self.rate_limit is None) and not isinstance(
            self.rate_limit, RateLimit
        ):
            raise InvalidArgumentError(
                f"rate_limit must be a RateLimit or None, got {self.rate_limit!r}"
            )


@dataclass(frozen=True)
class Debounce:
    """Collapse a burst of triggers with one `key` into one run (a trigger option).

    trailing (default): the run starts once the key has been quiet for `delay`, with the
    last trigger's payload, and never later than `max_delay` after the first trigger.
    leading: the first trigger's run starts at once; triggers within `delay` of the one
    before (and within `max_delay` of the first) join it, their payloads dropped. Each
    trigger returns the handle of the run it joined."""

    key: str
    delay: Duration
    mode: str = "trailing"
    max_delay: Duration | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not 1 <= len(self.key) <= 256:
            raise InvalidArgumentError("debounce key must be 1 to 256 characters")
        if self.mode not in ("trailing", "leading"):
            raise InvalidArgumentError(
                f"debounce mode must be 'trailing' or 'leading', got {self.mode!r}"
            )
        delay = parse_seconds(self.delay, "debounce delay")
        if delay <= 0:
            raise InvalidArgumentError(f"debounce delay must be positive, got {self.delay!r}")
        if self.max_delay is not None and parse_seconds(self.max_delay, "max_delay") < delay:
            raise InvalidArgumentError("debounce max_delay must be at least its delay")

    def option(self) -> dict[str, Any]:
        """The trigger option skiplock.trigger() takes."""
        return {
            "key": self.key,
            "delay": parse_seconds(self.delay, "debounce delay"),
            "mode": self.mode,
            "max_delay": None
            if self.max_delay is None
            else parse_seconds(self.max_delay, "max_delay"),
        }
