"""Waits inside a task: `from engine import wait`.

In an `async def` task each call is awaited (`await wait.for_(seconds=30)`); in a plain
`def` task the same call blocks (`wait.for_(seconds=30)`). A wait is durable: the run
becomes WAITING, frees its concurrency slot and its worker, and resumes (running the task
function again from the top, recorded calls returning at once) when the wait is over.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._durations import Duration, parse_seconds
from .api import options as _options
from .api.durable import current
from .errors import InvalidArgumentError, InvalidDurationError
from .models import Token


def for_(seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0) -> Any:
    """Wait this long (by the database clock)."""
    total = seconds + 60 * minutes + 3600 * hours + 86400 * days
    if not total >= 0:
        raise InvalidDurationError(f"a wait must not be negative, got {total} s")
    execution = current()
    return execution.dispatch(lambda: execution.wait_seconds(total))


def until(when: datetime) -> Any:
    """Wait until `when` (timezone-aware); a time in the past returns at once."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise InvalidDurationError("wait.until needs a timezone-aware datetime")
    execution = current()
    return execution.dispatch(lambda: execution.wait_until(when))


def token_options(
    timeout: Duration | None,
    idempotency_key: str | None,
    idempotency_key_ttl: Duration | None,
    tags: str | Sequence[str] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if timeout is not None:
        out["timeout"] = parse_seconds(timeout, "timeout")
        if out["timeout"] <= 0:
            raise InvalidArgumentError("a token timeout must be positive")
    built = _options.build(
        {
            "idempotency_key": idempotency_key,
            "idempotency_key_ttl": idempotency_key_ttl,
            "tags": tags,
        }
    )
    return {**out, **built}


def create_token(
    *,
    timeout: Duration | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: Duration | None = None,
    tags: str | Sequence[str] | None = None,
) -> Any:
    """A wait token (`Token`) that anyone with its id can complete; durable, so a replay
    gets the same token. With `timeout`, waiting on it ends with an error result then."""
    options = token_options(timeout, idempotency_key, idempotency_key_ttl, tags)
    execution = current()

    async def make() -> Token:
        return Token(await execution.create_token(options))

    return execution.dispatch(make)


def for_token(token: Token | str) -> Any:
    """Wait until the token is completed (or times out); gives a `Result`."""
    token_id = token.id if isinstance(token, Token) else token
    if not isinstance(token_id, str) or not token_id.startswith("waitpoint_"):
        raise InvalidArgumentError(f"not a token: {token!r}")
    execution = current()
    return execution.dispatch(lambda: execution.wait_token(token_id))
