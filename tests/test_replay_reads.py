"""A resume reads the run's log once: replayed child calls, batches and tokens make no
query of their own, return what their first pass returned, and need no child row."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import fetch, wait_for

from engine import Engine, Retry, RunStatus, Task, TaskContext, wait
from engine.api.durable import current_execution
from engine.db.database import AsyncDatabase, Query

# what a replayed call read before the log carried it: the child run, the batch's runs,
# the token's waitpoint
PER_CALL_READS = ("run_details", "FROM skiplock.runs WHERE batch_id", "FROM skiplock.waitpoints")


@pytest.fixture
def sent_by(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[object, list[str]]]:
    """The statements each execution of a task function sends (a resumed attempt runs its
    function again: a new execution), counted on their way to the real database."""
    sent: dict[object, list[str]] = defaultdict(list)
    original = AsyncDatabase.run

    async def run(self: AsyncDatabase, query: Query[Any], *args: Any, **kwargs: Any) -> Any:
        execution = current_execution.get()
        if execution is not None:
            sent[execution].append(query.sql)
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(AsyncDatabase, "run", run)
    yield sent


class Passes:
    """What the parent's calls returned in each execution of it, in call order; the last
    execution (the one that returned)."""

    def __init__(self) -> None:
        self.results: list[tuple[object, int, dict[str, Any]]] = []
        self.last: object = None

    def first(self) -> list[dict[str, Any]]:
        """What each call returned the first time it returned."""
        firsts: dict[int, dict[str, Any]] = {}
        for _, i, result in self.results:
            firsts.setdefault(i, result)
        return [firsts[i] for i in sorted(firsts)]

    def replayed(self) -> list[dict[str, Any]]:
        return [result for e, _, result in self.results if e is self.last]


def _parent(app: Engine, passes: Passes) -> Task[Any, Any]:
    """A parent whose log holds two child calls (one failing), a batch (one item failing),
    a completed token and a timed-out one, then a wait on a last token."""

    @app.task("replay-child")
    async def child(p: int, ctx: TaskContext) -> dict[str, int]:
        if p < 0:
            raise ValueError(f"{p} is negative")
        return {"p": p, "twice": 2 * p}

    @app.task("replay-parent", retry=Retry(max_attempts=1))
    async def parent(p: dict[str, str], ctx: TaskContext) -> int:
        execution = current_execution.get()
        results = [
            await child.trigger_and_wait(1, max_attempts=1),
            await child.trigger_and_wait(-1, max_attempts=1),
            *await child.batch_trigger_and_wait([3, -2, 2], max_attempts=1),
            await wait.for_token(p["done"]),
            await wait.for_token(p["late"]),
        ]
        passes.results += [(execution, i, r.model_dump()) for i, r in enumerate(results)]
        last = await wait.for_token(p["last"])
        passes.last = execution
        return len(results) + int(last.ok)

    return parent


def _run_to_the_last_wait(app: Engine, parent: Task[Any, Any]) -> tuple[str, str]:
    """Trigger the parent and let it record every call; return its id and the last token."""
    done, late, last = (app.waitpoints.create_token(timeout=t) for t in ("1h", "0.3s", "1h"))
    app.waitpoints.complete_token(done, {"answer": 42})
    h = parent.trigger({"done": done.id, "late": late.id, "last": last.id})
    wait_for(
        lambda: fetch(
            app.dsn,
            "SELECT 1 FROM skiplock.runs r JOIN skiplock.run_waitpoints e ON e.run_id = r.id "
            "WHERE r.id = %s AND r.status = 'WAITING' AND e.waitpoint_id = %s",
            h.id,
            last.id,
        ),
        timeout=30,
    )
    return h.id, last.id


def _finish(app: Engine, run_id: str, last_token: str) -> None:
    app.waitpoints.complete_token(last_token, None)
    run = wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout=30)
    assert run.status is RunStatus.COMPLETED and run.output == 8, run


def test_a_resume_replays_from_the_log_its_claim_brought_without_a_query(
    app: Engine, start_worker: Any, sent_by: dict[object, list[str]]
) -> None:
    passes = Passes()
    parent = _parent(app, passes)
    start_worker(concurrency=4, tick_interval=0.1)
    _finish(app, *_run_to_the_last_wait(app, parent))

    sent = sent_by[passes.last]
    assert not [q for q in sent if "skiplock.run_log" in q], sent  # the claim brought it
    assert not [q for q in sent if any(read in q for read in PER_CALL_READS)], sent
    # the first passes read the children, the batch's runs and the tokens; a replay,
    # only the log (which the resumed attempt's claim carries): it returns the same
    first = passes.first()
    assert passes.replayed() == first
    assert [r["ok"] for r in first] == [True, False, True, False, True, True, False]
    assert first[0]["output"] == {"p": 1, "twice": 2} and first[0]["run_id"].startswith("run_")
    assert first[1]["error"]["message"] == "-1 is negative"
    assert [r["output"] for r in first[2:5:2]] == [{"p": 3, "twice": 6}, {"p": 2, "twice": 4}]
    assert first[5] == {"ok": True, "output": {"answer": 42}, "error": None, "run_id": None}
    assert first[6]["error"]["type"] == "WaitpointTimeout"


def test_a_replay_needs_no_child_row(app: Engine, start_worker: Any) -> None:
    passes = Passes()
    parent = _parent(app, passes)
    start_worker(concurrency=4, tick_interval=0.1)
    run_id, last_token = _run_to_the_last_wait(app, parent)
    # the children go (as a purge deletes runs) while the parent still waits
    gone = fetch(
        app.dsn,
        "SELECT skiplock.delete_runs(ARRAY(SELECT id FROM skiplock.runs WHERE parent_id = %s))",
        run_id,
    )
    assert gone == [(5,)]
    left = "SELECT count(*) FROM skiplock.runs WHERE parent_id = %s"
    assert fetch(app.dsn, left, run_id) == [(0,)]
    _finish(app, run_id, last_token)
    assert passes.replayed() == passes.first()
