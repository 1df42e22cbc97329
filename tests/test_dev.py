"""`skiplock dev` stops the way a worker does: SIGTERM drains its runs."""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest
from helpers import SKIPLOCK, TESTS, wait_for

from engine import Engine, RunStatus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_dev_drains_its_runs_on_a_signal(dsn: str, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [SKIPLOCK, "--dsn", dsn, "dev", "cli_app:app", "--port", str(free_port())],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
