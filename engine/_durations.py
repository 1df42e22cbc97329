"""Parsing of delays and durations: "90s", "10m", "1h", "1d", "2w", seconds, timedelta."""

from __future__ import annotations

import enum
import os
import re
from datetime import datetime, timedelta
from typing import Final

from .errors import InvalidDurationError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")

Duration = str | int | float | timedelta


class Unset(enum.Enum):
    """The type of `UNSET`: an argument not given, where None means something (forever)."""

    UNSET = "UNSET"


UNSET: Final = Unset.UNSET

DEFAULT_RETENTION = 30 * 86400.0  # seconds; as the SQL default (skiplock.run_retention)
_FOREVER_WORDS = frozenset({"none", "forever", "never", "keep"})


def parse_seconds(value: Duration, what: str) -> float:
    """Return `value` in seconds; raise `InvalidDurationError` naming `what` if it does not
    parse or is negative."""
    if isinstance(value, bool):
        raise InvalidDurationError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise InvalidDurationError(
                f"{what}: cannot parse {value!r}; use a number of seconds or e.g. '30s', '10m', "
                "'1h', '2d', '1w'"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise InvalidDurationError(f"{what}: expected a duration, got {type(value).__name__}")
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise InvalidDurationError(f"{what} must not be negative, got {value!r}")
    return seconds


def delay_options(delay: Duration | datetime | None) -> dict[str, object]:
    """The trigger options for `delay`: relative delays are resolved by the database clock."""
    if delay is None:
        return {}
    if isinstance(delay, datetime):
        if delay.tzinfo is None:
            raise InvalidDurationError("delay: a datetime must be timezone-aware")
        return {"delay_until": delay.isoformat()}
    return {"delay_seconds": parse_seconds(delay, "delay")}


def retention_seconds(value: Duration | None, what: str) -> float | None:
    """A retention in seconds, or None for "keep forever"; `InvalidDurationError` naming
    `what` unless positive."""
    if value is None:
        return None
    seconds = parse_seconds(value, what)
    if seconds <= 0:
        raise InvalidDurationError(f"{what} must be positive (None keeps forever), got {value!r}")
    return seconds


def default_retention(value: Duration | Unset | None) -> float | None:
    """The engine's default retention in seconds (None: forever): `value` if given, else
    $SKIPLOCK_RETENTION (a duration, or "none"/"forever"), else 30 days."""
    if value is not UNSET:
        return retention_seconds(value, "retention")
    env = os.environ.get("SKIPLOCK_RETENTION", "").strip()
    if not env:
        return DEFAULT_RETENTION
    if env.lower() in _FOREVER_WORDS:
        return None
    return retention_seconds(env, "$SKIPLOCK_RETENTION")
