"""Batches the database may refuse: one item it cannot store must fail only itself.

A worker sends its writes in batches (step records, outcomes). When the database refuses
a batch's data (`refused`: a value it cannot store, say), the batch is sent again one
item at a time, so that each item gets its own result or error and the bad one holds up
no other. The two helpers here are that shape, for step_records.py and outcomes.py:
`each_alone` sends items one by one, `send_or_split` sends a batch whole and falls back
to `each_alone` on a refusal. Both yield as they go, so a caller handles an item's
result (a fallback write, say) before the next item is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ..db.database import refused

Item = TypeVar("Item")
Result = TypeVar("Result")


async def each_alone(
    items: list[Item],
    send: Callable[[list[Item]], Awaitable[Result]],
    catch: tuple[type[Exception], ...],
) -> AsyncIterator[tuple[Item, Result | Exception]]:
    """Send each of `items` on its own, in order; yield it with what its send returned,
    or the error (one of `catch`) it raised. Any other error propagates."""
    for item in items:
        outcome: Result | Exception
        try:
            outcome = await send([item])
        except catch as exc:
            outcome = exc
        yield item, outcome


async def send_or_split(
    batch: list[Item],
    send: Callable[[list[Item]], Awaitable[Result]],
    catch: tuple[type[Exception], ...],
) -> AsyncIterator[tuple[list[Item], Result | Exception]]:
    """Send `batch` whole and yield it with its result, or the error (one of `catch`) its
    send raised; but if the database refused the data of a batch of several items, send
    each alone instead (`each_alone`) and yield each, as a batch of one, with its own."""
    outcome: Result | Exception
    try:
        outcome = await send(batch)
    except catch as exc:
        outcome = exc
    if not (isinstance(outcome, Exception) and refused(outcome) and len(batch) > 1):
        yield batch, outcome
        return
    async for item, own in each_alone(batch, send, catch):
        yield [item], own
