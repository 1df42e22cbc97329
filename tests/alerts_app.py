"""Served by `skiplock worker alerts_app:app` in tests/test_alerts.py: a task that fails
for good, and an `on_run_failed` callback that appends each delivery to the file
$ALERTS_LOG (a JSON line: alert id, run id, delivery, pid) and then, with
$ALERTS_HANG=1, hangs (the test kills the worker there: delivered, not yet recorded).
$ALERTS_LEASE sets the alerts' lease (seconds)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from engine import Alert, Engine, Retry, Run, TaskContext

app = Engine()
app.alerts.lease = float(os.environ.get("ALERTS_LEASE", "60"))
app.alerts.poll_interval = 0.2
app.alerts.retry_delay = 0.2


@app.task("alerts-app-boom", retry=Retry(max_attempts=1))
def boom(payload: Any, ctx: TaskContext) -> None:
    raise RuntimeError(f"boom {payload}")


@app.on_run_failed
def record(run: Run[Any, Any], alert: Alert) -> None:
    line = {"alert": alert.id, "run": run.id, "delivery": alert.delivery, "pid": os.getpid()}
    with open(os.environ["ALERTS_LOG"], "a") as log:
        log.write(json.dumps(line) + "\n")
    if os.environ.get("ALERTS_HANG") == "1":
        time.sleep(3600)
