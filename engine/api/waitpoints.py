"""`app.waitpoints`: tokens from outside tasks (approvals, webhooks, other systems)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._durations import Duration
from ..db import queries
from ..errors import InvalidArgumentError
from ..values import Token
from ..wait import token_options
from .connections import Connections
from .durable import to_json
from .twins import Plan, twin


class Waitpoint(BaseModel):
    """A waitpoint row: `status` PENDING or COMPLETED; `is_error` for a timeout."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    status: str
    output: Any = None
    is_error: bool = False
    tags: list[str] = []
    idempotency_key: str | None = None
    created_at: datetime
    completed_at: datetime | None = None
    timeout_at: datetime | None = None


def _token_id(token: Token | str) -> str:
    token_id = token.id if isinstance(token, Token) else token
    if not isinstance(token_id, str) or not token_id.startswith("waitpoint_"):
        raise InvalidArgumentError(f"not a token id: {token!r}")
    return token_id


class Waitpoints:
    """`app.waitpoints`: every call has an `_async` twin with the same arguments."""

    def __init__(self, conns: Connections) -> None:
        self._conns = conns

    @twin
    def create_token(
        self,
        *,
        timeout: Duration | None = None,
        idempotency_key: str | None = None,
        idempotency_key_ttl: Duration | None = None,
        tags: str | Sequence[str] | None = None,
    ) -> Plan[Token]:
        """A token that anyone with its id can complete; with `timeout`, waiting on it
        ends with an error result then. With `idempotency_key`, the same key gives the
        same token (`is_cached`) until the key's TTL."""
        options = token_options(timeout, idempotency_key, idempotency_key_ttl, tags)
        row = yield queries.create_token(options)
        return Token(row["waitpoint_id"], row["is_cached"])

    create_token_async = create_token.aio

    @twin
    def complete_token(self, token: Token | str, output: Any = None) -> Plan[bool]:
        """Complete the token; True if this call did (a second completion keeps the first
        output and returns False). Raises `TokenNotFoundError` for an unknown id."""
        return bool((yield queries.complete_token(_token_id(token), to_json(output))))

    complete_token_async = complete_token.aio

    @twin
    def retrieve(self, token: Token | str) -> Plan[Waitpoint]:
        return Waitpoint.model_validate((yield queries.waitpoint(_token_id(token))))

    retrieve_async = retrieve.aio

    @twin
    def for_run(self, run: str) -> Plan[list[Waitpoint]]:
        """Every waitpoint the run has blocked on (durations, tokens, child runs, batches),
        in the order it did, with their state."""
        return [Waitpoint.model_validate(r) for r in (yield queries.run_waitpoints(run))]

    for_run_async = for_run.aio
