"""`app.waitpoints`: tokens from outside tasks (approvals, webhooks, other systems)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from .._durations import Duration
from ..db import queries as _queries
from ..errors import InvalidArgumentError
from ..models import Token
from ..wait import token_options
from .durable import to_json

if TYPE_CHECKING:
    from .engine import Engine


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
    """Every call has an `_async` twin with the same arguments."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_token(
        self,
        *,
        timeout: Duration | None = None,
        idempotency_key: str | None = None,
        idempotency_key_ttl: Duration | None = None,
        tags: str | Sequence[str] | None = None,
    ) -> Token:
        options = token_options(timeout, idempotency_key, idempotency_key_ttl, tags)
        row = self._engine.db.run(_queries.create_token(options))
        return Token(row["waitpoint_id"], row["is_cached"])

    async def create_token_async(
        self,
        *,
        timeout: Duration | None = None,
        idempotency_key: str | None = None,
        idempotency_key_ttl: Duration | None = None,
        tags: str | Sequence[str] | None = None,
    ) -> Token:
        options = token_options(timeout, idempotency_key, idempotency_key_ttl, tags)
        row = await self._engine.adb.run(_queries.create_token(options))
        return Token(row["waitpoint_id"], row["is_cached"])

    def complete_token(self, token: Token | str, output: Any = None) -> bool:
        """Complete the token; True if this call did (a second completion keeps the first
        output and returns False). Raises `TokenNotFoundError` for an unknown id."""
        return bool(self._engine.db.run(_queries.complete_token(_token_id(token), to_json(output))))

    async def complete_token_async(self, token: Token | str, output: Any = None) -> bool:
        query = _queries.complete_token(_token_id(token), to_json(output))
        done: bool = await self._engine.adb.run(query)
        return done

    def retrieve(self, token: Token | str) -> Waitpoint:
        return Waitpoint.model_validate(self._engine.db.run(_queries.waitpoint(_token_id(token))))

    async def retrieve_async(self, token: Token | str) -> Waitpoint:
        row = await self._engine.adb.run(_queries.waitpoint(_token_id(token)))
        return Waitpoint.model_validate(row)

    def for_run(self, run: str) -> list[Waitpoint]:
        """Every waitpoint the run has blocked on (durations, tokens, child runs, batches),
        in the order it did, with their state."""
        return [
            Waitpoint.model_validate(r) for r in self._engine.db.run(_queries.run_waitpoints(run))
        ]

    async def for_run_async(self, run: str) -> list[Waitpoint]:
        rows = await self._engine.adb.run(_queries.run_waitpoints(run))
        return [Waitpoint.model_validate(r) for r in rows]
