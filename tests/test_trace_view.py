"""The run page's trace: attempts, steps with their durations, waits with what they waited
on, child runs (linked) and log records on one time axis, live; and the step start times
the worker records for it."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import fetch
from playwright.sync_api import Browser, Page, expect, sync_playwright
from test_dashboard import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Server, shoot

from engine import Engine, Retry, RunStatus, TaskContext, wait
from engine.dashboard import trace
from engine.models import Attempt, Run

DURATION = re.compile(r"\d+(\.\d+)? (ms|s)\b")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def test_the_trace_of_a_run_with_two_attempts_a_step_a_wait_and_a_child(
    app: Engine, page: Page, start_worker: Any
) -> None:
    release = threading.Event()

    @app.task("trace-child")
    async def child(n: int, ctx: TaskContext) -> int:
        await asyncio.sleep(0.05)
        return n * 2

    def fetch_user(n: int) -> dict[str, int]:
        time.sleep(0.03)
        return {"id": n}

    @app.task("trace-parent", retry=Retry(max_attempts=2, min_timeout=0.2, randomize=False))
    async def parent(n: int, ctx: TaskContext) -> dict[str, Any]:
        user = await ctx.step("fetch-user", fetch_user, n)
        log = getattr(ctx, "logger", None)  # run logs: drawn as marks once the schema has them
        if log is not None:
            log.warning("attempt %s fetched user %s", ctx.attempt, user["id"])
        if ctx.attempt == 1:
            raise ConnectionError("the mail server did not answer")
        await wait.for_(seconds=1)
        doubled = (await child.trigger_and_wait(n)).unwrap()
        await ctx.step("save", lambda: "saved")
        await asyncio.to_thread(release.wait, 30)  # EXECUTING, with no change of the run
        return {"user": user, "doubled": doubled}

    with Server(app) as server:
        h = parent.trigger(21)
        page.goto(f"{server.url}/runs/{h.id}")
        page.evaluate("window.__sameDocument = true")
        start_worker()
        trace_box = page.locator("#trace")
        # attempt 1 fails after its step; attempt 2 replays the step, waits, runs a child
        attempts = trace_box.locator('.trace-row[data-kind="attempt"]')
        expect(attempts).to_have_count(2, timeout=20_000)
        wait_row = trace_box.locator('.trace-row[data-kind="wait"]', has_text="1s")
        expect(wait_row).to_be_visible(timeout=20_000)
        # the last step is recorded while the run stays EXECUTING (nothing announces it):
        # the trace re-reads itself and shows it
        save = trace_box.locator('.trace-row[data-kind="step"]', has_text="save")
        expect(save).to_be_visible(timeout=20_000)
        assert app.runs.retrieve(h.id).status is RunStatus.EXECUTING
        release.set()
        expect(page.locator("#run-status")).to_have_text("COMPLETED", timeout=20_000)
        assert page.evaluate("window.__sameDocument") is True  # all of it live, no reload

        run = app.runs.retrieve(h.id)
        child_id = app.runs.children(h.id)[0].id
        expect(attempts.nth(0)).to_contain_text("FAILED")
        expect(attempts.nth(1)).to_contain_text("COMPLETED")
        steps = trace_box.locator('.trace-row[data-kind="step"]')
        expect(steps).to_have_count(2)  # fetch-user ran once: attempt 2 replayed its result
        fetch_row = steps.filter(has_text="fetch-user")
        expect(fetch_row.locator(".trace-duration")).to_have_text(DURATION)
        expect(wait_row.locator(".trace-duration")).to_have_text(DURATION)
        run_wait = trace_box.locator('.trace-row[data-kind="wait"]', has_text=child_id)
        expect(run_wait).to_contain_text(f"run {child_id} (trace-child)")
        child_row = trace_box.locator('.trace-row[data-kind="child"]')
        expect(child_row.locator(f'a[href="/runs/{child_id}"]')).to_have_text("trace-child")
        expect(child_row).to_contain_text("COMPLETED")
        if fetch(app.dsn, "SELECT to_regclass('skiplock.run_logs')")[0][0] is not None:
            logs = trace_box.locator('.trace-row[data-kind="logs"]')
            expect(logs).to_have_count(2)  # one row under each attempt, a mark per record
            expect(logs.nth(0).locator(".trace-mark.l-warning")).to_have_count(1)
            # attempt 2 ran the function from the top three times: at first, after the
            # wait, after the child (the step's result replayed each time), and logged each
            marks = logs.nth(1).locator(".trace-mark")
            expect(marks).to_have_count(3)
            assert "attempt 2 fetched user 21" in (marks.first.get_attribute("title") or "")
        if SCREENSHOTS:
            page.set_viewport_size({"width": 1280, "height": 700})
            shoot(page, "dashboard-trace.png")
        page.click(f'#trace a[href="/runs/{child_id}"]')
        expect(page.locator("h1")).to_contain_text(child_id)

    # the step's times as recorded: its start dated back by what the worker measured
    rows = fetch(
        app.dsn,
        "SELECT name, started_at, created_at FROM skiplock.run_steps "
        "WHERE run_id = %s AND kind = 'step' ORDER BY position",
        h.id,
    )
    assert [r[0] for r in rows] == ["fetch-user", "save"]
    (_, started, ended), _ = rows
    assert started is not None and started <= ended
    assert 0.025 <= (ended - started).total_seconds() < 5  # it slept 30 ms
    first = min(run.attempts, key=lambda a: a.number)
    assert first.started_at <= started and first.finished_at and ended <= first.finished_at


def test_the_sql_side_record_step_without_a_duration_and_logs_when_absent(
    app: Engine, conn: Any
) -> None:
    """record_step's duration is optional (a worker of the previous version, or another
    language: the step then has no start of its own and is drawn where it ends), and the
    four-argument version is gone, so that such a call is not ambiguous. run_trace_logs
    answers with or without a run_logs table."""
    from engine.db import queries

    names = conn.execute(
        "SELECT p.proargnames FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'skiplock' AND p.proname = 'record_step'"
    ).fetchall()
    assert [r[0][-1] for r in names] == ["p_seconds"]
    fenced = conn.execute("SELECT skiplock.record_step('attempt_x', 0, 'x', 'null')").fetchone()
    assert fenced == (False,)  # no such attempt: fenced off, and no ambiguity error
    if conn.execute("SELECT to_regclass('skiplock.run_logs')").fetchone() == (None,):
        assert app.db.run(queries.run_trace_logs("run_x", 10)) == []
        conn.execute(  # a stand-in with the columns the run logs have
            "CREATE TABLE skiplock.run_logs (run_id text, attempt integer, seq bigint, "
            "at timestamptz, level text, logger text, message text)"
        )
        conn.execute(
            "INSERT INTO skiplock.run_logs SELECT 'run_x', 1, i, now() + i * interval '1 s', "
            "'INFO', 'app', 'line ' || i FROM generate_series(1, 5) i"
        )
        logs = app.db.run(queries.run_trace_logs("run_x", 3))
        assert [r["message"] for r in logs] == ["line 3", "line 4", "line 5"]  # newest 3
        conn.execute("DROP TABLE skiplock.run_logs")


# -- the trace's geometry, without a browser --------------------------------------------

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _run(status: str, finished: float | None, attempts: list[Attempt]) -> Run[Any, Any]:
    return Run.model_validate(
        {
            "id": "run_1",
            "task_identifier": "t",
            "status": status,
            "payload": None,
            "metadata": {},
            "tags": [],
            "queue": "t",
            "attempt_count": len(attempts),
            "attempts": attempts,
            "created_at": T0,
            "updated_at": _at(finished or 0),
            "started_at": attempts[0].started_at if attempts else None,
            "finished_at": _at(finished) if finished is not None else None,
        }
    )


def _attempt(n: int, status: str, start: float, end: float | None) -> Attempt:
    return Attempt(
        id=f"attempt_{n}",
        number=n,
        status=status,
        started_at=_at(start),
        finished_at=_at(end) if end is not None else None,
        worker_id="w",
    )


def _call(pos: int, kind: str, name: str, start: float, end: float | None, **wp: Any) -> Any:
    row = {
        "call_position": pos,
        "kind": kind,
        "name": name,
        "started_at": _at(start),
        "ended_at": _at(end) if end is not None else None,
        "waitpoint_id": None,
        "waitpoint_type": None,
        "waitpoint_status": None,
        "is_error": False,
        "completes_at": None,
        "timeout_at": None,
        "target_run_id": None,
        "target_batch_id": None,
    }
    return row | wp


def test_a_day_long_wait_keeps_five_millisecond_steps_readable() -> None:
    day = 86400.0
    run = _run("COMPLETED", day + 1, [_attempt(1, "COMPLETED", 0.1, day + 0.9)])
    calls = [
        _call(0, "step", "charge", 0.2, 0.205),
        _call(1, "wait", "1d", 0.21, day + 0.5, waitpoint_status="COMPLETED"),
        _call(2, "step", "notify", day + 0.6, day + 0.6004),
    ]
    logs = [{"attempt": 1, "seq": 1, "at": _at(0.3), "level": "20", "logger": "x", "message": "m"}]
    t = trace.build(run, calls, [], logs, now=_at(day + 5))
    by_label = {r.label: r for r in t.rows}
    assert by_label["charge"].duration == "5.0 ms"
    assert by_label["notify"].duration == "0.4 ms"
    (waited,) = [r for r in t.rows if r.kind == "wait"]
    assert waited.duration == "1 d" and waited.label == "1d"
    assert by_label["charge"].width < 0.001  # far below a pixel: CSS gives it a minimum
    assert by_label["notify"].text_style.startswith("right:")  # its label to its left
    assert t.now is None and t.refresh_ms is None  # final: no live re-reads
    assert [tick.label for tick in t.ticks][:3] == ["0", "+6 h", "+12 h"]
    attempt = next(r for r in t.rows if r.kind == "attempt")
    assert [s.kind for s in attempt.segments] == ["waiting"]
    (log_row,) = [r for r in t.rows if r.kind == "logs"]
    assert log_row.marks[0].level == "info" and "INFO x: m" in log_row.marks[0].title


def test_a_running_run_reaches_now_and_refreshes() -> None:
    run = _run("WAITING", None, [_attempt(1, "SUSPENDED", 1, None)])
    calls = [
        _call(
            0,
            "token",
            "waitpoint_abc",
            2,
            None,
            waitpoint_status="PENDING",
            waitpoint_type="TOKEN",
        )
    ]
    t = trace.build(run, calls, [], [], now=_at(10))
    token = next(r for r in t.rows if r.kind == "wait")
    assert token.label == "token waitpoint_abc" and token.open and token.status == "PENDING"
    assert token.left == pytest.approx(20.0) and token.left + token.width == pytest.approx(100.0)
    assert t.now == pytest.approx(100.0) and t.refresh_ms == 10000
    # a dashboard whose clock is behind the database's: the axis still covers every row
    t = trace.build(run, calls, [], [], now=_at(-60))
    assert all(0 <= r.left <= 100 and r.left + r.width <= 100.0001 for r in t.rows)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.00002, "20 µs"),
        (0.0003, "0.3 ms"),
        (0.0052, "5.2 ms"),
        (0.512, "512 ms"),
        (2.345, "2.35 s"),
        (42.0, "42.0 s"),
        (200, "3 min 20 s"),
        (3600, "1 h"),
        (93600, "1 d 2 h"),
    ],
)
def test_durations_in_words(seconds: float, words: str) -> None:
    assert trace.duration(seconds) == words
