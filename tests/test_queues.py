"""Queues: concurrency limits (per queue, per key) across worker processes, pause,
priority, run-time limit changes, inspection, and bad input."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from helpers import SKIPLOCK, count, deploy, fetch, spawn_worker, wait_for

from engine import Engine, Queue, RunStatus, TaskContext
from engine.errors import InvalidArgumentError, UnknownQueueError


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end at t comes before a start at t)."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda e: (e[0], e[1])
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def attempt_intervals(dsn: str, where: str, *params: Any) -> list[tuple[Any, ...]]:
    return fetch(
        dsn,
        "SELECT a.started_at, a.finished_at, r.concurrency_key FROM skiplock.attempts a "
        f"JOIN skiplock.runs r ON r.id = a.run_id WHERE {where}",
        *params,
    )


@pytest.fixture
def worker_procs(dsn: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three real worker processes serving tests/cli_app.py, one slot each: a worker
    records a finished run and claims the next in one transaction, so with more slots one
    process could keep both of the limit-2 queue's slots, and nothing would be shown
    about limits across processes."""
    procs = [
        spawn_worker(
            dsn,
            "--concurrency",
            "1",
            "--version",
            "q1",
            "--queues",
            "limited,keyed",
            "--heartbeat-interval",
            "1",
        )
        for _ in range(3)
    ]
    wait_for(lambda: count_workers(dsn) == 3, timeout=30)
    yield procs
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)


def count_workers(dsn: str) -> int:
    return int(
        fetch(
            dsn, "SELECT count(*) FROM skiplock.workers WHERE version = 'q1' AND stopped_at IS NULL"
        )[0][0]
    )


def test_a_queue_limit_holds_across_worker_processes(app: Engine, worker_procs: list[Any]) -> None:
    batch = [app.trigger("limited-sleep", 0.15) for _ in range(16)]
    for h in batch:
        wait_for(lambda h=h: app.runs.retrieve(h).is_completed, timeout=60)
    assert all(app.runs.retrieve(h).status is RunStatus.COMPLETED for h in batch)
    intervals = [(s, e) for s, e, _ in attempt_intervals(app.dsn, "r.queue = 'limited'")]
    assert len(intervals) == 16
    assert max_overlap(intervals) == 2  # never above the limit, and it does reach it
    workers = fetch(
        app.dsn,
        "SELECT count(DISTINCT a.worker_id) FROM skiplock.attempts a "
        "JOIN skiplock.runs r ON r.id = a.run_id WHERE r.queue = 'limited'",
    )
    assert workers[0][0] >= 2  # the work really was spread over processes


def test_each_concurrency_key_gets_its_own_copy_of_the_limit(
    app: Engine, worker_procs: list[Any]
) -> None:
    handles = [
        app.trigger("keyed-sleep", 0.15, concurrency_key=f"tenant-{i % 3}") for i in range(12)
    ]
    for h in handles:
        wait_for(lambda h=h: app.runs.retrieve(h).is_completed, timeout=60)
    rows = attempt_intervals(app.dsn, "r.queue = 'keyed'")
    by_key: dict[str, list[tuple[Any, Any]]] = {}
    for s, e, key in rows:
        by_key.setdefault(key, []).append((s, e))
    assert sorted(by_key) == ["tenant-0", "tenant-1", "tenant-2"]
    assert all(max_overlap(iv) == 1 for iv in by_key.values())  # limit 1 per key
    assert max_overlap([iv for ivs in by_key.values() for iv in ivs]) >= 2  # keys in parallel


def test_a_paused_queue_starts_nothing_until_resumed(app: Engine, start_worker: Any) -> None:
    @app.task("pausable", queue="pausable")
    def pausable(p: int, ctx: TaskContext) -> int:
        return p

    start_worker()
    assert app.queues.pause("pausable").paused
    h = pausable.trigger(1)
    time.sleep(0.6)
    assert app.runs.retrieve(h).status is RunStatus.QUEUED
    info = app.queues.retrieve("pausable")
    assert info.paused and info.queued == 1 and info.running == 0
    assert not app.queues.resume("pausable").paused
    assert wait_for(lambda: app.runs.retrieve(h).status is RunStatus.COMPLETED)


def test_priority_is_a_head_start_within_a_queue(app: Engine, start_worker: Any) -> None:
    order: list[str] = []

    @app.task("prioritised", queue=Queue("prioritised", concurrency_limit=1))
    def prioritised(p: str, ctx: TaskContext) -> None:
        order.append(p)

    deploy(app)
    app.queues.pause("prioritised")
    prioritised.trigger("none")
    prioritised.trigger("ten", priority=10)
    prioritised.trigger("five", priority=5)
    prioritised.trigger("hundred", priority=100)
    start_worker()
    app.queues.resume("prioritised")
    wait_for(lambda: len(order) == 4)
    assert order == ["hundred", "ten", "five", "none"]


def test_a_saturated_queue_does_not_block_other_queues(app: Engine, start_worker: Any) -> None:
    import threading

    release = threading.Event()

    @app.task("hog", queue=Queue("hog", concurrency_limit=1))
    def hog(p: int, ctx: TaskContext) -> None:
        release.wait(10)

    @app.task("free-runner")
    def free_runner(p: int, ctx: TaskContext) -> int:
        return p

    start_worker(concurrency=4)
    hogs = [hog.trigger(i) for i in range(20)]  # one runs, nineteen wait at the front
    wait_for(lambda: app.queues.retrieve("hog").running == 1)
    frees = [free_runner.trigger(i) for i in range(5)]
    for h in frees:
        assert wait_for(lambda h=h: app.runs.retrieve(h).status is RunStatus.COMPLETED)
    assert app.queues.retrieve("hog").running == 1
    release.set()
    app.runs.cancel(hogs[-1])


def test_raising_a_limit_at_run_time_admits_more(app: Engine, start_worker: Any) -> None:
    import threading

    running = {"now": 0, "peak": 0}
    lock = threading.Lock()

    @app.task("adjustable", queue=Queue("adjustable", concurrency_limit=1))
    async def adjustable(p: int, ctx: TaskContext) -> None:
        with lock:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.3)
        with lock:
            running["now"] -= 1

    start_worker(concurrency=8)
    first = [adjustable.trigger(i) for i in range(3)]
    for h in first:
        wait_for(lambda h=h: app.runs.retrieve(h).is_completed)
    assert running["peak"] == 1
    assert app.queues.set_limit("adjustable", 3).concurrency_limit == 3
    second = [adjustable.trigger(i) for i in range(6)]
    for h in second:
        wait_for(lambda h=h: app.runs.retrieve(h).is_completed)
    assert running["peak"] == 3


def test_queue_bad_input_is_typed_and_writes_nothing(app: Engine) -> None:
    @app.task("bad-input-queue", queue=Queue("bad-input-queue", concurrency_limit=2))
    def task(p: int, ctx: TaskContext) -> None: ...

    deploy(app)
    with pytest.raises(InvalidArgumentError):
        Queue("q", concurrency_limit=0)
    with pytest.raises(InvalidArgumentError):
        app.queues.set_limit("bad-input-queue", 0)
    with pytest.raises(UnknownQueueError):
        app.queues.pause("no-such-queue")
    with pytest.raises(UnknownQueueError):
        app.queues.retrieve("no-such-queue")
    before = count(app.dsn)
    with pytest.raises(InvalidArgumentError):
        task.trigger(1, concurrency_key="k" * 257)
    assert count(app.dsn) == before
    info = app.queues.retrieve("bad-input-queue")
    assert info.concurrency_limit == 2 and not info.paused
    assert fetch(app.dsn, "SELECT count(*) FROM skiplock.queues WHERE name = 'no-such-queue'") == [
        (0,)
    ]


def test_queues_and_workers_are_visible_in_sql_and_the_cli(app: Engine, dsn: str) -> None:
    @app.task("visible", queue=Queue("visible", concurrency_limit=5))
    def visible(p: int, ctx: TaskContext) -> None: ...

    deploy(app)
    visible.trigger(1)
    visible.trigger(2)
    row = fetch(
        dsn,
        "SELECT concurrency_limit, paused, queued, running, oldest_queued_age IS NOT NULL "
        "FROM skiplock.queue_stats WHERE name = 'visible'",
    )
    assert row == [(5, False, 2, 0, True)]
    states = fetch(dsn, "SELECT DISTINCT state FROM skiplock.worker_status")
    assert states and all(s[0] in {"active", "stopped", "lost", "lapsed"} for s in states)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SKIPLOCK, "--dsn", dsn, "queues", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    table = cli()
    assert table.returncode == 0 and "visible" in table.stdout and "LIMIT" in table.stdout
    paused = cli("--json", "pause", "visible")
    assert json.loads(paused.stdout)[0]["paused"] is True
    limited = cli("--json", "limit", "visible", "7")
    assert json.loads(limited.stdout)[0]["concurrency_limit"] == 7
    unlimited = cli("--json", "limit", "visible", "none")
    assert json.loads(unlimited.stdout)[0]["concurrency_limit"] is None
    resumed = cli("--json", "resume", "visible")
    assert json.loads(resumed.stdout)[0]["paused"] is False
    missing = cli("pause", "nowhere")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_a_queue_named_by_a_trigger_exists_from_then_on(app: Engine) -> None:
    @app.task("adhoc-task")
    def adhoc(p: int, ctx: TaskContext) -> None: ...

    deploy(app)
    adhoc.trigger(1, queue="adhoc-queue")
    info = app.queues.retrieve("adhoc-queue")
    assert info.queued == 1 and info.concurrency_limit is None
    assert "adhoc-queue" in {q.name for q in app.queues.list()}


def test_pause_and_priority_hold_with_worker_processes(
    app: Engine, worker_procs: list[Any]
) -> None:
    app.queues.pause("keyed")
    priorities = [0, 10, 5, 100]
    handles = {
        app.trigger("keyed-sleep", 0.05, concurrency_key="solo", priority=p).id: p
        for p in priorities
    }
    time.sleep(1.0)  # three processes polling and listening: none may start a paused run
    assert {app.runs.retrieve(h).status for h in handles} == {RunStatus.QUEUED}
    app.queues.resume("keyed")
    for h in handles:
        wait_for(lambda h=h: app.runs.retrieve(h).is_completed, timeout=60)
    started = sorted((app.runs.retrieve(h).attempts[0].started_at, p) for h, p in handles.items())
    assert [p for _, p in started] == [100, 10, 5, 0]  # limit 1 for the key: one at a time


def test_ttl_and_pending_version_with_worker_processes(
    app: Engine, dsn: str, worker_procs: list[Any]
) -> None:
    started = app.trigger("keyed-sleep", 1.5, concurrency_key="ttl", ttl=0.5)
    app.queues.pause("limited")
    never = app.trigger("limited-sleep", 0.01, ttl=0.5)
    pinned = app.trigger("keyed-sleep", 0.01, concurrency_key="pv", version="q2")
    assert app.runs.retrieve(pinned).status is RunStatus.PENDING_VERSION
    # a run that started before its TTL ran out is never expired
    run = wait_for(lambda: (r := app.runs.retrieve(started)).is_completed and r, timeout=30)
    assert run.status is RunStatus.COMPLETED and run.expired_at is None
    # one that never started is, by a worker's tick
    expired = wait_for(lambda: (r := app.runs.retrieve(never)).is_completed and r, timeout=30)
    assert expired.status is RunStatus.EXPIRED and expired.attempt_count == 0
    app.queues.resume("limited")
    # a worker process of version q2 registers it: the pinned run is released and runs there
    q2 = spawn_worker(dsn, "--concurrency", "2", "--version", "q2", "--queues", "keyed")
    try:
        done = wait_for(lambda: (r := app.runs.retrieve(pinned)).is_completed and r, timeout=30)
        assert done.status is RunStatus.COMPLETED and done.version == "q2"
    finally:
        q2.terminate()
        q2.wait(timeout=30)
