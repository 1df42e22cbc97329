"""Step records of a worker's attempts, group-committed.

`ctx.step` returns once its result is recorded: a step whose record committed never runs
again (a replay returns the record). The write is the step's only cost beyond the
function itself, and one commit per step is what capped a one-step workflow at a tenth
of a no-op run's rate. So the records of all the worker's attempts go through one
writer: the steps that finish while a batch is being written make the next batch, one
statement and one commit for all of them (`skiplock.record_steps`). A lone step still
takes one round trip; under load, many share it.

A batch the database refuses (a result it cannot store, say) is written again one step
at a time, so that one bad record fails only its own step. A transient error is retried
as any idempotent query is (a record is keyed by run and position: writing it twice is
harmless).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from ..db import queries as _queries
from .refusals import send_or_split

if TYPE_CHECKING:
    from ..api.engine import Engine

_Record = tuple[str, int, str, str, float, "asyncio.Future[bool]"]


class StepRecords:
    """One worker's step writer (see the module's docstring)."""

    def __init__(self, engine: Engine, lane: str = "complete") -> None:
        self._engine, self._lane = engine, lane
        self._pending: list[_Record] = []
        self._writing: asyncio.Task[None] | None = None

    async def record(
        self, attempt_id: str, position: int, name: str, output_json: str, seconds: float
    ) -> bool:
        """Record a step's result; False when the attempt is no longer current (fenced)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((attempt_id, position, name, output_json, seconds, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write(), name="skiplock-steps")
        return await done

    async def _write(self) -> None:
        """Write batches until none is pending: what arrives during a write is the next.
        A batch refused as a whole is written one record at a time (refusals.py)."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                async for records, fenced in send_or_split(batch, self._send, (Exception,)):
                    if isinstance(fenced, Exception):
                        _fail(records, fenced)
                        continue
                    for attempt_id, *_, done in records:
                        if not done.done():
                            done.set_result(attempt_id not in fenced)
        finally:
            self._writing = None
            if self._pending:  # cancelled with records waiting: they fail, never hang
                _fail(self._pending, asyncio.CancelledError())
                self._pending = []

    async def _send(self, batch: list[_Record]) -> set[str]:
        steps = ",".join(
            f'{{"attempt_id":{json.dumps(a)},"position":{p},"name":{json.dumps(n)},'
            f'"output":{out},"seconds":{s!r}}}'
            for a, p, n, out, s, _ in batch
        )
        query = _queries.record_steps(f"[{steps}]")
        fenced: list[str] = await self._engine.adb.run(query, lane=self._lane)
        return set(fenced)


def _fail(batch: list[_Record], exc: BaseException) -> None:
    for *_, done in batch:
        if not done.done():
            done.set_exception(exc)
