"""Tasks served by `skiplock worker cli_app:app` in the CLI tests."""

from __future__ import annotations

import time
from typing import Any

from engine import Engine, Queue, TaskContext

app = Engine()


@app.task("cli-echo")
def echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"echo": payload, "attempt": ctx.attempt}


@app.task("cli-slow", queue=Queue("slow"))
def slow(seconds: float, ctx: TaskContext) -> str:
    time.sleep(seconds)
    return "slept"
