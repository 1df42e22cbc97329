"""Why a run waits, in one line (skiplock.run_status_reason, `runs.status_reason`, the run
page, `skiplock runs show`)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from helpers import SKIPLOCK, deploy, wait_for

from engine import Engine, Queue, Retry, RunStatus, TaskContext, wait
from engine.db import queries
from engine.errors import RunNotFoundError, UnknownTaskWarning


def test_pending_version_names_the_missing_task_or_version(app: Engine) -> None:
    with pytest.warns(UnknownTaskWarning):
        h = app.trigger("nobody-deploys-this", None)
    assert app.runs.status_reason(h) == (
        "no deployment has task nobody-deploys-this: start a worker that defines it"
    )

    @app.task("only-v1")
    def only(p: None, ctx: TaskContext) -> None: ...

    deploy(app, "v1", [only])
    pinned = only.trigger(None, version="v2")
    assert pinned.status is RunStatus.PENDING_VERSION
    assert app.runs.status_reason(pinned) == "no deployment has task only-v1 at version v2"


def test_delayed_and_waiting_runs_say_until_when_and_on_what(
    app: Engine, start_worker: Any
) -> None:
    @app.task("reason-later")
    def later(p: None, ctx: TaskContext) -> None: ...

    deploy(app, "dev", [later])
    h = later.trigger(None, delay="1h")
    assert app.runs.status_reason(h).startswith("delayed until 20")
    assert app.runs.status_reason(h).endswith(" UTC")

    @app.task("reason-token")
    async def on_token(p: None, ctx: TaskContext) -> None:
        await wait.for_token(await wait.create_token(timeout="1h"))

    start_worker()
    waiting = on_token.trigger(None)
    wait_for(lambda: app.runs.retrieve(waiting).status is RunStatus.WAITING)
    assert app.runs.status_reason(waiting) == "waiting on 1 pending waitpoint"


def test_queued_runs_say_what_holds_them(app: Engine) -> None:
    @app.task("reason-queued", queue=Queue("reason-q", concurrency_limit=1))
    def queued(p: None, ctx: TaskContext) -> None: ...

    worker = deploy(app, "v1", [queued])
    first, second = queued.trigger(None), queued.trigger(None)
    assert app.runs.status_reason(second) is None  # a live worker, a free slot: nothing

    app.queues.pause("reason-q")
    assert app.runs.status_reason(second) == "queue reason-q is paused"
    app.queues.resume("reason-q")

    (row,) = app.db.run(queries.dequeue(worker, "v1", ["reason-queued"], None, 1))
    app.db.run(queries.start_attempts(worker, [row["run_id"]]))
    assert app.runs.status_reason(second) == (
        "queue reason-q is at its concurrency limit (1 running)"
    )
    assert app.runs.status_reason(row["run_id"]) is None  # executing under a live lease

    app.db.run(queries.stop_worker(worker))  # its started run is failed or requeued
    assert app.runs.status_reason(second) == "waiting for a worker with task reason-queued"
    # a run locked to a version (a retry, a resume) waits for a worker of that version
    with app.db.pool.connection() as c:
        c.execute("UPDATE skiplock.runs SET version = 'v7' WHERE id = %s", (second.id,))
    deploy(app, "v8", [queued])
    assert app.runs.status_reason(second) == "waiting for a worker of version v7"
    assert first.id != second.id


def test_a_retry_in_backoff_says_when_the_next_attempt_is(app: Engine, start_worker: Any) -> None:
    @app.task(
        "reason-retry",
        retry=Retry(max_attempts=3, min_timeout=3600, max_timeout=3600, randomize=False),
    )
    def fails(p: None, ctx: TaskContext) -> None:
        raise ValueError("not yet")

    start_worker()
    h = fails.trigger(None)
    wait_for(lambda: app.runs.retrieve(h).attempt_count == 1)
    wait_for(lambda: app.runs.retrieve(h).status is RunStatus.QUEUED)
    reason = app.runs.status_reason(h)
    assert reason is not None and reason.startswith("attempt 2 at 20") and reason.endswith("UTC")


def test_a_run_of_a_lapsed_worker_says_maintenance_will_crash_it(app: Engine) -> None:
    @app.task("reason-lapsed")
    def lapsed(p: None, ctx: TaskContext) -> None: ...

    worker = deploy(app, "v1", [lapsed], lease=1.0)
    h = lapsed.trigger(None)
    app.db.run(queries.dequeue(worker, "v1", ["reason-lapsed"], None, 1))
    app.db.run(queries.start_attempts(worker, [h.id]))
    with app.db.pool.connection() as c:
        c.execute(
            "SELECT set_config('skiplock.fake_now', (now() + interval '1 hour')::text, false)"
        )
        (reason,) = c.execute("SELECT skiplock.run_status_reason(%s)", (h.id,)).fetchone()
        c.execute("SELECT set_config('skiplock.fake_now', '', false)")
    assert reason.startswith(f"worker {worker} lapsed at 20")
    assert reason.endswith("will mark the run CRASHED")


def test_unknown_runs_and_the_cli_and_the_json(app: Engine, dsn: str) -> None:
    with pytest.raises(RunNotFoundError):
        app.runs.status_reason("run_nope")
    with pytest.warns(UnknownTaskWarning):
        h = app.trigger("cli-reason-missing", None)
    env = {"SKIPLOCK_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(
        [SKIPLOCK, "runs", "show", h.id], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[1].split() == ["status", "PENDING_VERSION"]
    assert lines[2].split(None, 1) == [
        "why",
        "no deployment has task cli-reason-missing: start a worker that defines it",
    ]
    as_json = subprocess.run(
        [SKIPLOCK, "runs", "show", h.id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(as_json.stdout)["status_reason"].startswith("no deployment has task")


def test_the_run_page_shows_the_reason(app: Engine) -> None:
    from starlette.testclient import TestClient

    from engine.dashboard import create_app

    @app.task("reason-page")
    def paged(p: None, ctx: TaskContext) -> None: ...

    h = paged.trigger(None)  # defined here, deployed nowhere: no warning, PENDING_VERSION
    client = TestClient(create_app(app), base_url="http://127.0.0.1:8080")
    page = client.get(f"/runs/{h.id}").text
    assert '<p class="reason" id="run-reason">no deployment has task reason-page' in page
