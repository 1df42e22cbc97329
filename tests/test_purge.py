"""Purging finished runs (skiplock.purge_runs, app.runs.purge, skiplock runs purge): a
run goes with everything that hangs off it; what something still needs stays."""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import datetime
from typing import Any

import pytest
from helpers import SKIPLOCK, fetch, wait_for

from engine import Engine, RunStatus, TaskContext, wait
from engine.errors import InvalidArgumentError


def finished(app: Engine, run_id: str) -> Any:
    return wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout=30)


def db_now(app: Engine) -> datetime:
    return fetch(app.dsn, "SELECT now()")[0][0]  # type: ignore[no-any-return]


def rows(app: Engine, table: str, column: str, value: str) -> int:
    query = f"SELECT count(*) FROM skiplock.{table} WHERE {column} = %s"
    return int(fetch(app.dsn, query, value)[0][0])


def test_a_finished_run_goes_with_its_rows_and_what_is_needed_stays(
    app: Engine, start_worker: Any
) -> None:
    @app.task("purge-steps")
    async def steps(p: int, ctx: TaskContext) -> int:
        await ctx.step("double", lambda: p * 2)
        await wait.for_(seconds=0.05)
        return p

    @app.task("purge-child")
    async def child(token_id: str | None, ctx: TaskContext) -> str:
        if token_id:
            await wait.for_token(token_id)
        return "child"

    @app.task("purge-parent")
    async def parent(token_id: str, ctx: TaskContext) -> int:
        results = await child.batch_trigger_and_wait([None, token_id])
        return len(results)

    start_worker(concurrency=8, tick_interval=0.05)
    old = finished(app, steps.trigger(1).id)
    keyed = finished(app, steps.trigger(2, idempotency_key="k", idempotency_key_ttl="1h").id)
    keyed_forever = finished(app, steps.trigger(3, idempotency_key="k-no-ttl").id)
    token = app.waitpoints.create_token(timeout="1h")
    waiting_parent = parent.trigger(token.id)
    first_child = wait_for(
        lambda: next(
            (c for c in app.runs.children(waiting_parent) if c.status is RunStatus.COMPLETED),
            None,
        )
    )
    cutoff = db_now(app)
    recent = finished(app, steps.trigger(4).id)
    queued = steps.trigger(5, delay="1h")  # not finished: never purged
    assert rows(app, "attempts", "run_id", old.id) == 1
    assert rows(app, "run_steps", "run_id", old.id) == 2  # the step and the wait
    old_waits = [
        r[0]
        for r in fetch(
            app.dsn, "SELECT waitpoint_id FROM skiplock.run_waitpoints WHERE run_id = %s", old.id
        )
    ]
    assert old_waits

    assert app.runs.purge(older_than=cutoff, dry_run=True) == 2  # old, keyed_forever
    assert app.runs.retrieve(old).id == old.id  # a dry run deletes nothing
    assert app.runs.purge(older_than=cutoff) == 2
    for gone in (old, keyed_forever):
        assert rows(app, "runs", "id", gone.id) == 0
        assert rows(app, "attempts", "run_id", gone.id) == 0
        assert rows(app, "run_steps", "run_id", gone.id) == 0
        assert rows(app, "run_waitpoints", "run_id", gone.id) == 0
    assert all(rows(app, "waitpoints", "id", w) == 0 for w in old_waits)
    kept = {keyed.id, first_child.id, recent.id, queued.id, waiting_parent.id}
    assert all(rows(app, "runs", "id", k) == 1 for k in kept)  # live key, waited on, newer

    # once the parent has what it waited for, its children and it may go too
    app.waitpoints.complete_token(token, "go")
    done = finished(app, waiting_parent.id)
    batch_id = app.runs.retrieve(first_child).batch_id
    assert done.output == 2 and batch_id is not None
    assert app.runs.purge(task=["purge-child", "purge-parent"]) == 3
    assert rows(app, "batches", "id", batch_id) == 0  # all its runs gone
    assert rows(app, "runs", "id", keyed.id) == 1  # still within its key's TTL


def test_purge_filters_batches_and_bad_input(app: Engine) -> None:
    @app.task("purge-filtered")
    def noop(p: int, ctx: TaskContext) -> None: ...

    handles = noop.batch_trigger(list(range(7))).runs
    for h in handles[:5]:
        app.runs.cancel(h)
    assert app.runs.purge(status="FAILED", dry_run=True) == 0
    assert app.runs.purge(status=["CANCELED"], task="purge-filtered", batch_size=2) == 5
    assert [app.runs.retrieve(h).status for h in handles[5:]] == [RunStatus.PENDING_VERSION] * 2
    with pytest.raises(InvalidArgumentError, match="only finished runs"):
        app.runs.purge(status="QUEUED")
    with pytest.raises(InvalidArgumentError):
        app.runs.purge(older_than="-1d")
    with pytest.raises(InvalidArgumentError, match="limit"):
        app.runs.purge(batch_size=0)


def test_purge_on_the_cli(app: Engine, dsn: str) -> None:
    @app.task("purge-cli")
    def noop(p: int, ctx: TaskContext) -> None: ...

    for h in noop.batch_trigger([1, 2, 3]).runs:
        app.runs.cancel(h)
    env = {"SKIPLOCK_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"}

    def purge(*args: str) -> str:
        done = subprocess.run(
            [SKIPLOCK, "runs", "purge", "--task", "purge-cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert purge("--older-than", "90d", "--dry-run") == "would delete 0 finished runs"
    assert purge("--status", "canceled", "--dry-run") == "would delete 3 finished runs"
    assert json.loads(purge("--json")) == {"dry_run": False, "runs": 3}


def test_purge_alongside_busy_workers_loses_nothing(app: Engine, start_worker: Any) -> None:
    """Two workers run 600 runs with steps while another thread purges in batches of 25:
    no error (a deadlock would be one), no run lost or failed, no row left orphaned."""

    @app.task("purge-busy")
    async def busy(p: int, ctx: TaskContext) -> int:
        await ctx.step("s", lambda: p)
        return p

    def count(where: str) -> int:
        query = f"SELECT count(*) FROM skiplock.runs WHERE task_identifier = 'purge-busy' {where}"
        return int(fetch(app.dsn, query)[0][0])

    start_worker(concurrency=20)
    start_worker(concurrency=20)
    total, purged, errors = 600, [0], []
    stop = threading.Event()

    def purge_loop() -> None:
        while not stop.is_set():
            try:
                purged[0] += app.runs.purge(task="purge-busy", batch_size=25)
            except Exception as exc:
                errors.append(exc)
                return

    purger = threading.Thread(target=purge_loop)
    purger.start()
    for start in range(0, total, 100):
        busy.batch_trigger(list(range(start, start + 100)))
    wait_for(lambda: count("AND NOT skiplock.is_final(status)") == 0, timeout=90)
    stop.set()
    purger.join(timeout=60)
    assert not errors
    left = count("")
    assert count("AND status = 'COMPLETED'") == left  # none failed or crashed meanwhile
    assert purged[0] + left == total  # every run finished: purged, or still there
    assert app.runs.purge(task="purge-busy") == left
    orphans = (
        "SELECT count(*) FROM skiplock.attempts a "
        "WHERE NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.id = a.run_id)"
    )
    assert int(fetch(app.dsn, orphans)[0][0]) == 0
