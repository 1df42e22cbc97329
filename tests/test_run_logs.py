"""Run logs: `ctx.logger` always, every `logging` record of a run with capture on (async
and def tasks, a library's logger), bounded per run with a marker, written before the
outcome, purged with the run; `app.runs.logs` and `follow_logs`, `skiplock runs logs
[--follow]`, the dashboard's live section."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from helpers import SKIPLOCK, TESTS, RunningWorker, deploy, fetch, free_port, wait_for

from engine import Engine, LogRecord, Retry, RunStatus, TaskContext
from engine.api.run_logs import LogFeed
from engine.db import queries
from engine.errors import InvalidArgumentError, RunNotFoundError

lib = logging.getLogger("somelib")  # a library's logger: WARNING passes the root's level


def execute(dsn: str, query: str, *params: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(query.encode(), params)


def final(app: Engine, run_id: str) -> Any:
    return wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout=30)


def lines(app: Engine, run_id: str) -> list[tuple[int, str, str, str]]:
    return [(r.attempt, r.level, r.logger, r.message) for r in app.runs.logs(run_id)]


def test_an_async_task_with_capture_stores_its_records_and_a_librarys(
    app: Engine, start_worker: Any
) -> None:
    @app.task(
        "logs-async",
        capture_logs=True,
        retry=Retry(max_attempts=2, min_timeout=0.05, factor=1, randomize=False),
    )
    async def logs_async(n: int, ctx: TaskContext) -> int:
        ctx.logger.info("attempt %d of run %s", ctx.attempt, "x")
        lib.warning("the library warns")
        lib.info("below the root's level: never made, never stored")
        logging.getLogger("skiplock.worker").warning("the worker's own: not the run's")
        if ctx.attempt == 1:
            try:
                raise ValueError("bad input")
            except ValueError:
                ctx.logger.exception("attempt 1 fails")
                raise
        await asyncio.sleep(0)
        lib.error("after an await")
        return n

    start_worker()
    run = final(app, logs_async.trigger(7).id)
    assert run.status is RunStatus.COMPLETED
    records = app.runs.logs(run.id)
    assert [(r.attempt, r.level, r.logger, r.message) for r in records] == [
        (1, "INFO", "skiplock.task.logs-async", "attempt 1 of run x"),
        (1, "WARNING", "somelib", "the library warns"),
        (1, "ERROR", "skiplock.task.logs-async", "attempt 1 fails"),
        (2, "INFO", "skiplock.task.logs-async", "attempt 2 of run x"),
        (2, "WARNING", "somelib", "the library warns"),
        (2, "ERROR", "somelib", "after an await"),
    ]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    failed = records[2]
    assert failed.exception is not None and "ValueError: bad input" in failed.exception
    assert all(r.run_id == run.id and r.dropped is None for r in records)
    # on the database's clock, within the run (a margin for the write's own latency)
    assert run.started_at is not None and run.finished_at is not None
    assert all(
        abs((r.at - run.started_at).total_seconds()) < 60 and r.at <= run.finished_at
        for r in records
    )
    assert [r.at for r in records] == sorted(r.at for r in records)


def test_a_def_task_with_capture_stores_its_threads_records(app: Engine, start_worker: Any) -> None:
    @app.task("logs-def", capture_logs=True)
    def logs_def(n: int, ctx: TaskContext) -> int:
        ctx.logger.info("in the task's thread")
        lib.warning("the library, in the task's thread")

        def own_thread() -> None:  # a thread of its own: not the attempt's context
            ctx.logger.info("ctx.logger, from a thread of its own")
            lib.warning("a library, from a thread of its own: not the run's")

        t = threading.Thread(target=own_thread)
        t.start()
        t.join()
        return n

    start_worker()
    run = final(app, logs_def.trigger(1).id)
    assert run.status is RunStatus.COMPLETED
    assert lines(app, run.id) == [
        (1, "INFO", "skiplock.task.logs-def", "in the task's thread"),
        (1, "WARNING", "somelib", "the library, in the task's thread"),
        (1, "INFO", "skiplock.task.logs-def", "ctx.logger, from a thread of its own"),
    ]


def test_without_capture_only_ctx_logger_and_hook_errors_are_stored(
    app: Engine, start_worker: Any
) -> None:
    def on_success(ctx: TaskContext, payload: Any, output: Any) -> None:
        raise RuntimeError("the hook fails")

    @app.task("logs-plain-async", on_success=on_success)
    async def plain_async(n: int, ctx: TaskContext) -> int:
        lib.warning("not stored")
        ctx.logger.warning("stored")
        return n

    @app.task("logs-plain-def")
    def plain_def(n: int, ctx: TaskContext) -> int:
        lib.warning("not stored either")
        ctx.logger.debug("below ctx.logger's INFO: not stored")
        ctx.logger.info("stored too")
        return n

    start_worker()
    a, d = plain_async.trigger(1), plain_def.trigger(2)
    assert final(app, d.id).status is RunStatus.COMPLETED
    assert lines(app, d.id) == [(1, "INFO", "skiplock.task.logs-plain-def", "stored too")]
    assert final(app, a.id).status is RunStatus.COMPLETED
    # the hook's error is logged after the outcome: written within the next 0.5 s
    wait_for(lambda: len(app.runs.logs(a.id)) == 2)
    first, hook = app.runs.logs(a.id)
    assert (first.logger, first.message) == ("skiplock.task.logs-plain-async", "stored")
    assert hook.logger == "skiplock.hooks" and "on_success hook" in hook.message
    assert hook.exception is not None and "RuntimeError: the hook fails" in hook.exception


def test_the_engines_capture_setting_applies_unless_the_task_says(dsn: str) -> None:
    app = Engine(dsn, capture_logs=True)

    @app.task("logs-engine-default")
    async def default(n: int, ctx: TaskContext) -> int:
        lib.warning("captured: the engine says so")
        return n

    @app.task("logs-engine-off", capture_logs=False)
    async def off(n: int, ctx: TaskContext) -> int:
        lib.warning("not captured: the task says no")
        ctx.logger.info("ctx.logger's, always")
        return n

    with RunningWorker(app.worker(poll_interval=0.2, heartbeat_interval=0.5)):
        a, b = default.trigger(1), off.trigger(2)
        final(app, a.id)
        final(app, b.id)
    assert lines(app, a.id) == [(1, "WARNING", "somelib", "captured: the engine says so")]
    assert lines(app, b.id) == [
        (1, "INFO", "skiplock.task.logs-engine-off", "ctx.logger's, always")
    ]
    app.close()


def test_a_runs_last_lines_are_stored_before_its_outcome(app: Engine, start_worker: Any) -> None:
    @app.task("logs-fails", retry=Retry(max_attempts=1))
    def fails(n: int, ctx: TaskContext) -> None:
        for i in range(n):
            ctx.logger.info("step %d", i)
        ctx.logger.error("giving up")
        raise RuntimeError("failed for good")

    @app.task("logs-succeeds")
    async def succeeds(n: int, ctx: TaskContext) -> int:
        ctx.logger.info("done: %d", n)
        return n

    start_worker()
    for task, status, expected in (
        (fails, RunStatus.FAILED, ["step 0", "step 1", "step 2", "giving up"]),
        (succeeds, RunStatus.COMPLETED, ["done: 3"]),
    ):
        h = task.trigger(3)
        # read the moment the run is seen final: its lines are in already
        run = wait_for(lambda h=h: (r := app.runs.retrieve(h)).is_completed and r, interval=0.005)
        assert run.status is status
        assert [m for *_, m in lines(app, h.id)] == expected


def test_a_run_keeps_its_last_records_and_a_marker(app: Engine, start_worker: Any) -> None:
    @app.task("logs-many")
    def many(n: int, ctx: TaskContext) -> None:
        for i in range(n):
            ctx.logger.info("line %d", i)

    @app.task("logs-big")
    async def big(n: int, ctx: TaskContext) -> None:
        for i in range(n):
            ctx.logger.info("%d %s", i, "x" * 5000)
            await asyncio.sleep(0)

    start_worker()
    a, b = many.trigger(1500), big.trigger(100)
    final(app, a.id)
    final(app, b.id)

    records = app.runs.logs(a.id, limit=10000)
    assert len(records) == 1000  # the marker included
    marker, *kept = records
    assert marker.logger == "skiplock" and marker.level == "WARNING" and marker.dropped == 501
    assert marker.message.startswith("501 earlier log records dropped")
    assert [r.message for r in kept] == [f"line {i}" for i in range(501, 1500)]
    assert [r.seq for r in records] == list(range(marker.seq, marker.seq + 1000))

    records = app.runs.logs(b.id, limit=10000)
    marker, *kept = records
    assert marker.dropped is not None and marker.dropped + len(kept) == 100
    assert all(r.dropped is None for r in kept) and kept[-1].message.startswith("99 ")
    size = sum(len(r.message.encode()) + len((r.exception or "").encode()) for r in records)
    assert size <= 256 * 1024 and len(kept) >= 45  # 5 KB a record: about 51 fit


def test_the_database_bounds_a_run_across_writes(app: Engine) -> None:
    @app.task("logs-sql")
    def sql_task(n: int, ctx: TaskContext) -> None:
        return None

    deploy(app)
    run = sql_task.trigger(1, delay="1h")

    def append(*items: dict[str, Any]) -> int:
        stored: int = app.db.run(queries.append_run_logs(json.dumps(list(items))))
        return stored

    def records(n: int, start: int, text: str = "m") -> list[list[Any]]:
        return [[1, 0.001, "INFO", "t", f"{text}{start + i}", None] for i in range(n)]

    assert append({"run_id": run.id, "records": records(600, 0)}) == 600
    # a run that does not exist stores nothing; the other's records do
    assert append({"run_id": "run_gone", "records": records(5, 0)}) == 0
    assert append({"run_id": run.id, "records": records(600, 600)}) == 600
    stored = app.runs.logs(run.id, limit=10000)
    assert len(stored) == 1000 and stored[0].dropped == 201
    assert stored[1].message == "m201" and stored[-1].message == "m1199"
    # the worker dropped 10 before sending (its buffer full): counted in the marker
    assert append({"run_id": run.id, "dropped": 10, "records": records(100, 1200)}) == 100
    stored = app.runs.logs(run.id, limit=10000)
    assert len(stored) == 1000 and stored[0].dropped == 201 + 100 + 10
    assert stored[0].message.startswith("311 earlier log records dropped")
    # bytes: 30 records of 10 KB keep what fits in 256 KB beside the marker
    big = [[1, 0, "ERROR", "t", "x" * 10_000, "tb"] for _ in range(30)]
    append({"run_id": run.id, "records": big})
    stored = app.runs.logs(run.id, limit=10000)
    assert sum(len(r.message) + len(r.exception or "") for r in stored) <= 256 * 1024
    assert stored[0].dropped == 1310 + 30 - (len(stored) - 1)  # 1,340 logged in all
    assert [r.seq for r in stored] == list(range(stored[0].seq, stored[0].seq + len(stored)))


def test_logs_go_with_their_run_when_purged(app: Engine, start_worker: Any) -> None:
    @app.task("logs-purged")
    def purged(n: int, ctx: TaskContext) -> int:
        ctx.logger.info("soon gone")
        return n

    start_worker()
    runs = [purged.trigger(i).id for i in range(3)]
    for run_id in runs:
        final(app, run_id)

    def stored(run_id: str) -> int:
        return int(
            fetch(app.dsn, "SELECT count(*) FROM skiplock.run_logs WHERE run_id = %s", run_id)[0][0]
        )

    assert [stored(r) for r in runs] == [1, 1, 1]
    # `runs purge` (skiplock.purge_runs), and the retention purge (skiplock.purge)
    earlier = "UPDATE skiplock.runs SET finished_at = finished_at - interval '1 day' WHERE id = %s"
    execute(app.dsn, earlier, runs[0])
    assert app.runs.purge(older_than="1h", task="logs-purged") == 1
    execute(app.dsn, earlier.replace("SET", "SET retention_s = 1,"), runs[1])
    assert fetch(app.dsn, "SELECT skiplock.purge()")[0][0] == 1
    assert [stored(r) for r in runs] == [0, 0, 1]
    with pytest.raises(RunNotFoundError):
        app.runs.logs(runs[0])
    assert [r.message for r in app.runs.logs(runs[2])] == ["soon gone"]


def test_runs_logs_reads_pages_and_follows(app: Engine, start_worker: Any) -> None:
    go = threading.Event()

    @app.task("logs-follow")
    def follow(n: int, ctx: TaskContext) -> None:
        for i in range(n):
            ctx.logger.info("before %d", i)
        go.wait(20)
        ctx.logger.warning("after")

    start_worker()
    h = follow.trigger(5)
    wait_for(lambda: len(app.runs.logs(h)) == 5)
    assert [r.message for r in app.runs.logs(h, after=2, limit=2)] == ["before 2", "before 3"]
    assert isinstance(app.runs.logs(h)[0], LogRecord)
    with pytest.raises(InvalidArgumentError):
        app.runs.logs(h, limit=0)
    with pytest.raises(RunNotFoundError):
        app.runs.logs("run_nope")

    seen: list[str] = []

    def consume() -> None:
        for record in app.runs.follow_logs(h, after=4, timeout=30):
            seen.append(record.message)

    reader = threading.Thread(target=consume)
    reader.start()
    wait_for(lambda: seen == ["before 4"])
    go.set()
    reader.join(30)
    assert not reader.is_alive() and seen == ["before 4", "after"]  # ended: the run is final

    async def follow_async() -> list[str]:
        return [r.message async for r in app.runs.follow_logs_async(h, after=5)]

    assert asyncio.run(follow_async()) == ["after"]
    with pytest.raises(RunNotFoundError):
        list(app.runs.follow_logs("run_nope", timeout=10))
    assert LogFeed.for_listener(app._conns.listener()).count() == 0


def test_follow_logs_in_poll_only_mode(app: Engine, start_worker: Any) -> None:
    go = threading.Event()

    @app.task("logs-polled")
    def polled(n: int, ctx: TaskContext) -> None:
        ctx.logger.info("one")
        go.wait(30)
        ctx.logger.info("two")

    start_worker()
    h = polled.trigger(1)
    with Engine(app.dsn, pooled=True) as polling:  # no listen DSN: nothing LISTENs
        assert polling.poll_only
        seen: list[str] = []

        def consume() -> None:
            seen.extend(r.message for r in polling.runs.follow_logs(h, timeout=30))

        reader = threading.Thread(target=consume)
        reader.start()
        wait_for(lambda: seen == ["one"])
        go.set()
        reader.join(30)
        assert not reader.is_alive() and seen == ["one", "two"]


def test_a_log_watch_ending_leaves_the_run_subscriptions_alone(app: Engine) -> None:
    @app.task("logs-watched")
    def watched(n: int, ctx: TaskContext) -> None:
        return None

    deploy(app)
    run = watched.trigger(1, delay="1h")
    other = watched.trigger(2, delay="1h")
    snapshots = app.runs.subscribe_to_run(run)
    assert next(snapshots).status is RunStatus.DELAYED
    feed = LogFeed.for_listener(app._conns.listener())
    woken = threading.Event()
    w = feed.watch(other.id, woken.set)
    assert woken.wait(10)  # once registered and settled
    feed.unwatch(w)  # the last log watch: skiplock_logs is no longer listened to
    app.runs.cancel(run)
    assert next(snapshots).status is RunStatus.CANCELED  # still announced
    snapshots.close()


def _cli(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SKIPLOCK, "--dsn", dsn, "runs", "logs", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )


def test_skiplock_runs_logs_prints_and_follows(app: Engine, start_worker: Any) -> None:
    go = threading.Event()

    @app.task("logs-cli")
    def cli_task(n: int, ctx: TaskContext) -> None:
        ctx.logger.info("first")
        go.wait(30)
        try:
            raise KeyError("k")
        except KeyError:
            ctx.logger.exception("second")

    start_worker()
    h = cli_task.trigger(1)
    wait_for(lambda: app.runs.logs(h))
    follow = _cli(app.dsn, h.id, "--follow")
    assert follow.stdout is not None
    assert follow.stdout.readline().rstrip().endswith("INFO     [1] skiplock.task.logs-cli: first")
    go.set()
    out, err = follow.communicate(timeout=60)  # ends by itself: the run is final
    assert follow.returncode == 0, err
    assert " ERROR    [1] skiplock.task.logs-cli: second" in out
    assert "    KeyError: 'k'" in out

    done = _cli(app.dsn, h.id, "--json")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert [(p["seq"], p["message"]) for p in printed] == [(1, "first"), (2, "second")]
    gone = _cli(app.dsn, "run_nope")
    _, err = gone.communicate(timeout=60)
    assert gone.returncode == 2 and "does not exist" in err


@pytest.fixture
def dashboard(app: Engine) -> Iterator[str]:
    import uvicorn

    from engine.dashboard import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(app), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_run_page_shows_the_logs_live(app: Engine, start_worker: Any, dashboard: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    go = threading.Event()

    @app.task("logs-dash")
    def dash(n: int, ctx: TaskContext) -> None:
        ctx.logger.info("<b>first</b>")  # escaped, not markup
        go.wait(30)
        ctx.logger.warning("second, live")

    start_worker()
    h = dash.trigger(1)
    wait_for(lambda: app.runs.logs(h))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto(f"{dashboard}/runs/{h.id}")
        page.evaluate("window.__sameDocument = true")
        rows = page.locator("#run-logs tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.nth(0)).to_contain_text("<b>first</b>")
        go.set()
        expect(rows).to_have_count(2, timeout=15_000)
        expect(rows.nth(1)).to_contain_text("second, live")
        expect(page.locator("#run-status")).to_have_text("COMPLETED", timeout=15_000)
        assert page.evaluate("window.__sameDocument") is True  # no reload
        browser.close()
