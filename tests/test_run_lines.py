"""What a worker says about runs: a line per attempt outcome on `skiplock.runs` (none
with --quiet), the error stored for a timed-out run, and stored stacks that start at
the task's own frame. Workers are real `skiplock worker report_app:app` processes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from helpers import SKIPLOCK, TESTS, fetch, free_port, spawn_dev, wait_for

from engine import Engine, Retry, RunStatus, TaskContext, Worker
from engine.worker import report

# asctime, level, logger: as `skiplock worker` configures logging
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO skiplock\.runs: "
    r"(?P<task>\S+) (?P<run>run_\w+) attempt (?P<attempt>\d+(/\d+)?) (?P<rest>.*)$"
)
DURATION = r"\((\d+us|\d+(\.\d)?ms|\d+\.\d\ds|\d+m\d\ds)\)"


def spawn(dsn: str, *args: str) -> subprocess.Popen[str]:
    """A `skiplock worker report_app:app ARGS...` process; stdout and stderr captured."""
    return subprocess.Popen(
        [SKIPLOCK, "worker", "report_app:app", *args],
        cwd=TESTS,
        env={**os.environ, "SKIPLOCK_DATABASE_URL": dsn},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def finished(app: Engine, run_id: str) -> Any:
    return wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout=30)


def started(dsn: str, version: str) -> Any:
    return wait_for(
        lambda: fetch(
            dsn, "SELECT 1 FROM skiplock.workers WHERE version = %s AND stopped_at IS NULL", version
        ),
        timeout=30,
    )


@pytest.fixture(scope="module")
def outcomes(dsn: str) -> tuple[str, dict[str, Any]]:
    """One worker's output after a run failed three times, one timed out, one was
    canceled and one completed; and those runs, by task."""
    app = Engine(dsn)
    proc = spawn(dsn, "--version", "lines", "--shutdown-grace", "5")
    try:
        started(dsn, "lines")
        tasks = ["report-fails", "report-overruns", "report-sleeps", "report-works"]
        handles = {t: app.trigger(t, None) for t in tasks}
        canceled = handles["report-sleeps"]
        wait_for(lambda: app.runs.retrieve(canceled).status is RunStatus.EXECUTING)
        app.runs.cancel(canceled)
        runs = {t: finished(app, h.id) for t, h in handles.items()}
    finally:
        out = stop(proc) if proc.poll() is None else proc.communicate()[0]
        app.close()
    return out, runs


def lines_of(out: str, run_id: str) -> list[re.Match[str]]:
    found = [m for m in map(LINE.match, out.splitlines()) if m and m["run"] == run_id]
    return found


def test_a_worker_prints_a_line_per_attempt_outcome(
    outcomes: tuple[str, dict[str, Any]],
) -> None:
    out, runs = outcomes
    assert [r.status for r in runs.values()] == [
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELED,
        RunStatus.COMPLETED,
    ], out

    failed = lines_of(out, runs["report-fails"].id)
    assert [m["attempt"] for m in failed] == ["1", "2", "3/3"], out
    for m in failed:
        assert m["task"] == "report-fails"
    # attempts 1 and 2: the database queued the run again; 3: it failed for good
    for n, m in enumerate(failed[:2], 1):
        assert re.fullmatch(
            rf"failed {DURATION}, retrying at \d\d:\d\d:\d\d: ValueError: boom {n}", m["rest"]
        ), m[0]
    assert re.fullmatch(rf"FAILED {DURATION}: ValueError: boom 3", failed[2]["rest"]), failed[2][0]
    assert "second line" not in out  # the error's first line only

    (timed_out,) = lines_of(out, runs["report-overruns"].id)
    assert re.fullmatch(
        rf"TIMED_OUT {DURATION}: TimeoutError: exceeded max_duration of 1s \(attempt 1\)",
        timed_out["rest"],
    ), timed_out[0]
    (canceled,) = lines_of(out, runs["report-sleeps"].id)
    assert canceled["attempt"] == "1" and re.fullmatch(rf"CANCELED {DURATION}", canceled["rest"])
    (completed,) = lines_of(out, runs["report-works"].id)
    assert completed["task"] == "report-works"
    assert re.fullmatch(rf"COMPLETED {DURATION}", completed["rest"]), completed[0]


def test_a_timed_out_run_stores_what_was_exceeded_and_where_the_task_was(
    outcomes: tuple[str, dict[str, Any]],
) -> None:
    run = outcomes[1]["report-overruns"]
    assert run.error["type"] == "TimeoutError"
    assert run.error["message"] == "exceeded max_duration of 1s (attempt 1)"
    stack = run.error["stack"]
    assert "CancelledError" not in stack and "During handling" not in stack
    assert "engine/worker" not in stack
    # where it was when time ran out: its own frame first, then what it awaited
    first_frame = stack.splitlines()[1]
    assert "report_app.py" in first_frame and "overruns_its_max_duration" in first_frame
    assert stack.endswith("TimeoutError: exceeded max_duration of 1s (attempt 1)\n")


def test_a_failed_runs_stack_starts_at_the_tasks_frame_and_keeps_its_own_chain(
    outcomes: tuple[str, dict[str, Any]],
) -> None:
    run = outcomes[1]["report-fails"]
    stack = run.error["stack"]
    assert "engine/worker" not in stack and "threading.py" not in stack, stack
    assert "fails_every_time" in stack
    # the task's `raise ... from`: both tracebacks, each starting at the task's frame
    cause, _, effect = stack.partition(
        "\nThe above exception was the direct cause of the following exception:\n"
    )
    assert effect, stack
    for part in (cause, effect):
        frames = [line for line in part.splitlines() if line.startswith("  File ")]
        assert frames and all("report_app.py" in f for f in frames), part
        assert "fails_every_time" in frames[0]
    assert cause.rstrip().endswith("KeyError: 'missing'")
    assert effect.rstrip().endswith("ValueError: boom 3\nsecond line of the message")


def test_quiet_prints_no_outcome_lines_and_counts_in_words(dsn: str) -> None:
    app = Engine(dsn)
    proc = spawn(dsn, "--quiet", "--version", "quiet", "--shutdown-grace", "1")
    try:
        started(dsn, "quiet")
        done = [app.trigger(t, None) for t in ("report-fails", "report-works")]
        for h in done:
            finished(app, h.id)
        running = app.trigger("report-sleeps", None)
        wait_for(lambda: app.runs.retrieve(running).status is RunStatus.EXECUTING)
    finally:
        out = stop(proc) if proc.poll() is None else proc.communicate()[0]
        app.close()
    assert "skiplock.runs" not in out, out
    assert "version quiet, 4 tasks" in out  # the worker's own lines stay
    assert re.search(r"waiting up to 1s for 1 running attempt$", out, re.MULTILINE), out


def test_log_level_warning_silences_info(dsn: str) -> None:
    app = Engine(dsn)
    proc = spawn(dsn, "--log-level", "warning", "--version", "warn")
    try:
        started(dsn, "warn")
        finished(app, app.trigger("report-works", None).id)
    finally:
        out = stop(proc) if proc.poll() is None else proc.communicate()[0]
        app.close()
    assert " INFO " not in out, out


def listening(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/workers") as r:
            return int(r.status) == 200
    except OSError:
        return False


@pytest.mark.parametrize("quiet", [False, True], ids=["lines", "quiet"])
def test_skiplock_dev_prints_a_line_per_attempt_outcome_unless_quiet(dsn: str, quiet: bool) -> None:
    port = free_port()
    proc = spawn_dev(dsn, "report_app:app", port, *(["--quiet"] if quiet else []))
    app = Engine(dsn)
    try:
        started(dsn, "dev")
        run = finished(app, app.trigger("report-works", {"n": 1}).id)
        # SIGINT stops `skiplock dev` cleanly once the dashboard's server handles it
        wait_for(lambda: listening(port), timeout=60)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        app.close()
    assert proc.returncode == 0, out
    assert "worker_" in out and " started: version dev, 4 tasks" in out  # INFO by default
    if quiet:
        assert "skiplock.runs" not in out, out
    else:
        (line,) = lines_of(out, run.id)
        assert re.fullmatch(rf"COMPLETED {DURATION}", line["rest"]), out


def test_an_async_tasks_stack_leaves_out_the_worker_and_asyncio(
    app: Engine, start_worker: Callable[..., Worker]
) -> None:
    async def inner() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("deep down")

    @app.task("stack-async", retry=Retry(max_attempts=1))
    async def raises_deep_down(payload: Any, ctx: TaskContext) -> None:
        await inner()

    start_worker()
    run = finished(app, raises_deep_down.trigger(None).id)
    stack = run.error["stack"]
    frames = [line for line in stack.splitlines() if line.startswith("  File ")]
    assert "raises_deep_down" in frames[0] and "inner" in frames[1], stack
    assert len(frames) == 2 and "asyncio" not in stack, stack


def test_a_def_task_past_its_max_duration_stores_what_was_exceeded(
    app: Engine, start_worker: Callable[..., Worker]
) -> None:
    @app.task("overruns-def", max_duration=0.3)
    def overruns(payload: Any, ctx: TaskContext) -> None:
        while not ctx.is_canceled:
            time.sleep(0.01)

    start_worker()
    run = finished(app, overruns.trigger(None).id)
    assert run.status is RunStatus.TIMED_OUT
    message = "exceeded max_duration of 0.3s (attempt 1)"
    assert run.error["message"] == message
    # the thread cannot say where it was: no frames, and none of the worker's
    assert run.error["stack"] == f"TimeoutError: {message}\n"


def test_user_stack_keeps_no_chain_that_asyncio_made() -> None:
    async def times_out() -> None:
        await asyncio.wait_for(asyncio.sleep(1), timeout=0.001)

    try:
        asyncio.run(times_out())
    except TimeoutError as exc:
        error = exc
    assert error.__cause__ is not None or error.__context__ is not None
    stack = report.user_stack(error)
    assert "CancelledError" not in stack and stack.rstrip().endswith("TimeoutError")


def test_counts_are_said_in_words() -> None:
    assert report.plural(1, "running attempt") == "1 running attempt"
    assert report.plural(0, "task") == "0 tasks" and report.plural(2, "task") == "2 tasks"
