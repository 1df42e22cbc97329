"""`skiplock dev` stops the way a worker does: SIGTERM drains its runs."""

from __future__ import annotations

import signal

import pytest
from helpers import free_port, spawn_dev, wait_for

from engine import Engine, RunStatus


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_dev_drains_its_runs_on_a_signal(dsn: str, sig: signal.Signals) -> None:
    proc = spawn_dev(dsn, "cli_app:app", free_port())
    app = Engine(dsn)
    try:
        wait_for(lambda: any(w.state == "active" for w in app.workers.list()), timeout=60)
        h = app.trigger("cli-slow", 2.0)
        wait_for(lambda: app.runs.retrieve(h).status is RunStatus.EXECUTING, timeout=60)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "draining" in out
        # finished by this process before it exited, not left EXECUTING for maintenance
        run = app.runs.retrieve(h)
        assert run.status is RunStatus.COMPLETED, (run.status, out)
        assert run.output == "slept"
    finally:
        if proc.poll() is None:
            proc.kill()
        app.close()
