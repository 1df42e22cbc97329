"""Waits inside a task: `from engine import wait`.

In an `async def` task each call is awaited (`await wait.for_(seconds=30)`). In a plain
`def` task the same call blocks (`wait.for_(seconds=30)`); typed code there calls the
`_sync` form (`wait.for_sync(seconds=30)`), whose type says it blocks, as the plain names'
types say they are awaited (so mypy catches a missing `await`). A wait is durable: the
run becomes WAITING, frees its concurrency slot and its worker, and resumes (running the
task function again from the top, recorded calls returning at once) when the wait is over.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._durations import Duration, parse_seconds
from .api import options as _options
from .api.durable import DurableExecution, Work, call_async, call_sync
from .errors import InvalidArgumentError, InvalidDurationError
from .values import Token

if TYPE_CHECKING:
    from .values import Result


def _for(seconds: float, minutes: float, hours: float, days: float) -> Work[None]:
    total = seconds + 60 * minutes + 3600 * hours + 86400 * days
    if not total >= 0:
        raise InvalidDurationError(f"a wait must not be negative, got {total} s")
    return lambda execution: execution.wait_seconds(total)


def for_(
    seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0
) -> Coroutine[Any, Any, None]:
    """Wait this long (by the database clock)."""
    return call_async(_for(seconds, minutes, hours, days))


def for_sync(seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0) -> None:
    """`for_` in a `def` task."""
    call_sync("wait.for_", _for(seconds, minutes, hours, days))


def _until(when: datetime) -> Work[None]:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise InvalidDurationError("wait.until needs a timezone-aware datetime")
    return lambda execution: execution.wait_until(when)


def until(when: datetime) -> Coroutine[Any, Any, None]:
    """Wait until `when` (timezone-aware); a time in the past returns at once."""
    return call_async(_until(when))


def until_sync(when: datetime) -> None:
    """`until` in a `def` task."""
    call_sync("wait.until", _until(when))


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


def _create_token(
    timeout: Duration | None,
    idempotency_key: str | None,
    idempotency_key_ttl: Duration | None,
    tags: str | Sequence[str] | None,
) -> Work[Token]:
    options = token_options(timeout, idempotency_key, idempotency_key_ttl, tags)

    async def make(execution: DurableExecution) -> Token:
        return Token(await execution.create_token(options))

    return make


def create_token(
    *,
    timeout: Duration | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: Duration | None = None,
    tags: str | Sequence[str] | None = None,
) -> Coroutine[Any, Any, Token]:
    """A wait token (`Token`) that anyone with its id can complete; durable, so a replay
    gets the same token. With `timeout`, waiting on it ends with an error result then."""
    return call_async(_create_token(timeout, idempotency_key, idempotency_key_ttl, tags))


def create_token_sync(
    *,
    timeout: Duration | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: Duration | None = None,
    tags: str | Sequence[str] | None = None,
) -> Token:
    """`create_token` in a `def` task."""
    work = _create_token(timeout, idempotency_key, idempotency_key_ttl, tags)
    return call_sync("wait.create_token", work)


def _for_token(token: Token | str) -> Work[Result]:
    token_id = token.id if isinstance(token, Token) else token
    if not isinstance(token_id, str) or not token_id.startswith("waitpoint_"):
        raise InvalidArgumentError(f"not a token: {token!r}")
    return lambda execution: execution.wait_token(token_id)


def for_token(token: Token | str) -> Coroutine[Any, Any, Result]:
    """Wait until the token is completed (or times out); gives a `Result`."""
    return call_async(_for_token(token))


def for_token_sync(token: Token | str) -> Result:
    """`for_token` in a `def` task."""
    return call_sync("wait.for_token", _for_token(token))
