"""An attempt interrupted by its own worker's shutdown is continued, not retried: it does
not count against max_attempts (skiplock.interrupt_attempt)."""

from __future__ import annotations

from helpers import deploy

from engine import Engine, Retry, RunStatus, TaskContext
from engine.db import queries

SHUTDOWN = {"type": "WorkerShutdown", "message": "worker shut down"}


def claim(app: Engine, worker: str, run_id: str) -> dict[str, object]:
    app.db.run(queries.dequeue(worker, "v1", ["once"], None, 1))
    (started,) = app.db.run(queries.start_attempts(worker, [run_id]))
    return started


def test_an_interrupted_attempt_is_continued_without_using_the_retry_budget(app: Engine) -> None:
    @app.task("once", retry=Retry(max_attempts=1))
    def once(p: None, ctx: TaskContext) -> None: ...

    worker = deploy(app, "v1", [once])
    h = once.trigger(None)
    first = claim(app, worker, h.id)
    assert app.db.run(queries.interrupt_attempt(str(first["attempt_id"]), SHUTDOWN)) == (
        RunStatus.QUEUED
    )
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.QUEUED and run.attempt_count == 1
    assert run.attempts[0].status == "SUSPENDED"
    assert run.attempts[0].error == SHUTDOWN
    again = claim(app, worker, h.id)  # max_attempts=1, and yet it runs again
    assert (again["attempt_id"], again["attempt_number"]) == (first["attempt_id"], 1)
    # late or repeated calls for an attempt no longer current change nothing
    app.db.run(queries.complete_attempts(f'[{{"attempt_id":"{again["attempt_id"]}","output":1}}]'))
    assert app.db.run(queries.interrupt_attempt(str(first["attempt_id"]), SHUTDOWN)) is None
    assert app.runs.retrieve(h).status is RunStatus.COMPLETED


def test_a_run_interrupted_ten_times_ends_failed_and_says_why(app: Engine) -> None:
    @app.task("once", retry=Retry(max_attempts=3))
    def once(p: None, ctx: TaskContext) -> None: ...

    worker = deploy(app, "v1", [once])
    h = once.trigger(None)
    statuses = []
    for _ in range(10):
        attempt = claim(app, worker, h.id)
        statuses.append(app.db.run(queries.interrupt_attempt(str(attempt["attempt_id"]), SHUTDOWN)))
    assert statuses == [RunStatus.QUEUED] * 9 + [RunStatus.FAILED]
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.FAILED and run.is_completed
    assert run.error["message"].startswith("interrupted by a worker shutdown 10 times")
