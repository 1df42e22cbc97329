"""Durable calls are typed for how they are called: the plain names are awaited (mypy
catches a missing `await`), and `_sync` forms block, for `def` tasks."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from helpers import wait_for

from engine import Engine, Retry, TaskContext, wait

ROOT = Path(__file__).resolve().parent.parent


def finished(app: Engine, run_id: str, timeout: float = 30.0) -> Any:
    return wait_for(lambda: (r := app.runs.retrieve(run_id)).is_completed and r, timeout)


def test_def_tasks_use_the_sync_forms_of_every_durable_call(app: Engine, start_worker: Any) -> None:
    @app.task("sync-child")
    def child(p: int, ctx: TaskContext) -> int:
        return p * 3

    calls: list[str] = []

    @app.task("sync-parent")
    def parent(p: int, ctx: TaskContext) -> dict[str, Any]:
        stepped = ctx.step_sync("double", lambda x: calls.append("step") or x * 2, p)
        wait.for_sync(seconds=0.2)
        wait.until_sync(datetime.now(UTC) - timedelta(days=1))  # past: at once
        token = wait.create_token_sync(timeout="1h")
        ctx.metadata.set("token", token.id)
        approval = wait.for_token_sync(token)
        one = child.trigger_and_wait_sync(p)
        many = child.batch_trigger_and_wait_sync([1, 2])
        return {
            "step": stepped,
            "approval": approval.output,
            "child": one.unwrap(),
            "batch": [r.output for r in many],
        }

    start_worker(concurrency=8, tick_interval=0.1)
    h = parent.trigger(5)
    token_id = wait_for(lambda: app.runs.retrieve(h).metadata.get("token"))
    app.waitpoints.complete_token(token_id, "yes")
    run = finished(app, h.id)
    assert run.output == {"step": 10, "approval": "yes", "child": 15, "batch": [3, 6]}
    assert calls == ["step"]  # recorded once, replayed after each wait


def test_a_sync_form_in_an_async_task_fails_the_run_with_a_clear_error(
    app: Engine, start_worker: Any
) -> None:
    @app.task("blocks-the-loop", retry=Retry(max_attempts=1))
    async def blocks(p: None, ctx: TaskContext) -> None:
        wait.for_sync(seconds=1)

    start_worker()
    run = finished(app, blocks.trigger(None).id)
    assert run.status == "FAILED"
    assert run.error["type"] == "DurableCallError"
    assert "await wait.for_(...)" in run.error["message"]


def test_mypy_catches_a_missing_await_and_accepts_the_sync_forms(tmp_path: Path) -> None:
    example = tmp_path / "tasks_example.py"
    example.write_text(
        "from engine import Engine, TaskContext, wait\n"
        "app = Engine()\n"
        "@app.task('a')\n"
        "async def a(p: int, ctx: TaskContext) -> int:\n"
        "    wait.for_(seconds=1)\n"  # line 5: not awaited
        "    token = wait.create_token()\n"
        "    r = wait.for_token(token)\n"  # line 7: a coroutine's id is no token's
        "    return int(await ctx.step('s', lambda: 1)) + r.output\n"  # line 8: r not awaited
        "@app.task('b')\n"
        "def b(p: int, ctx: TaskContext) -> int:\n"
        "    wait.for_sync(seconds=1)\n"
        "    token = wait.create_token_sync()\n"
        "    r = wait.for_token_sync(token)\n"
        "    return ctx.step_sync('s', lambda: 1) + int(r.output)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(example)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    lines = sorted({int(e.split(":")[1]) for e in errors})
    assert lines == [5, 7, 8], done.stdout
    assert "Are you missing an await?" in done.stdout or "forgot to use" in done.stdout
