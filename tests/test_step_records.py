"""Step records: group-committed across a worker's attempts, and read back only when a
run can have any (engine/worker/step_records.py, Execution's `fresh`)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import fetch, wait_for

import engine.db.queries as queries
from engine import Engine, Retry, TaskContext


def _all_final(app: Engine, ids: list[str]) -> list[Any]:
    def check() -> list[Any] | None:
        runs = [app.runs.retrieve(i) for i in ids]
        return runs if all(r.is_completed for r in runs) else None

    return wait_for(check, 60)


def test_steps_of_concurrent_runs_share_commits(app: Engine, start_worker: Any) -> None:
    calls: list[int] = []

    @app.task("one-step")
    async def one_step(p: int, ctx: TaskContext) -> int:
        value: int = await ctx.step("double", lambda: calls.append(p) or p * 2)
        return value + 1

    start_worker(concurrency=40)
    ids = [h.id for h in one_step.batch_trigger(list(range(40))).runs]
    runs = _all_final(app, ids)
    assert [r.output for r in runs] == [p * 2 + 1 for p in range(40)]
    assert sorted(calls) == list(range(40))  # each step ran once
    rows = fetch(
        app.dsn,
        "SELECT run_id, position, output, created_at FROM skiplock.run_steps"
        " WHERE run_id = ANY (%s) ORDER BY run_id",
        ids,
    )
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
        (run.id, 0, p * 2) for run, p in zip(runs, range(40), strict=True)
    )
    # a record's created_at is its transaction's start: records written in one commit
    # share it, and 40 steps finishing together must not take 40 commits
    assert len({r[3] for r in rows}) < 40


def test_a_first_attempt_reads_no_log_a_retry_reads_it_once(
    app: Engine, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real = queries.run_log

    def counted(run_id: str) -> Any:
        reads.append(run_id)
        return real(run_id)

    monkeypatch.setattr(queries, "run_log", counted)
    charges: list[int] = []

    @app.task("charge-then-fail", retry=Retry(max_attempts=2, min_timeout=0.05, randomize=False))
    async def charge_then_fail(p: int, ctx: TaskContext) -> dict[str, Any]:
        first = await ctx.step("charge", lambda: charges.append(p) or f"receipt-{p}")
        second = await ctx.step("note", lambda: ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("after the steps, once")
        return {"first": first, "second": second}

    start_worker()
    h = charge_then_fail.trigger(3)
    (run,) = _all_final(app, [h.id])
    assert run.output == {"first": "receipt-3", "second": 1}  # replayed, not run again
    assert charges == [3]
    assert reads == [h.id]  # by the retry, once; the first attempt read nothing


def test_a_step_result_the_database_refuses_fails_only_its_run(
    app: Engine, start_worker: Any
) -> None:
    @app.task("maybe-nul", retry=Retry(max_attempts=1))
    async def maybe_nul(p: int, ctx: TaskContext) -> str:
        out: str = await ctx.step("text", lambda: "a\x00b" if p == 3 else f"ok-{p}")
        return out

    start_worker(concurrency=10)
    ids = [h.id for h in maybe_nul.batch_trigger(list(range(10))).runs]
    runs = _all_final(app, ids)
    assert [r.status.value for r in runs] == [
        "FAILED" if p == 3 else "COMPLETED" for p in range(10)
    ]
    assert [r.output for r in runs if r.is_success] == [f"ok-{p}" for p in range(10) if p != 3]
    assert fetch(
        app.dsn, "SELECT count(*) FROM skiplock.run_steps WHERE run_id = ANY (%s)", ids
    ) == [(9,)]
