"""A worker's shutdown never costs a run: attempts it cannot finish are queued again and
continued by the next worker, without using the retry budget."""

from __future__ import annotations

import signal

from helpers import spawn_worker, wait_for

from engine import Engine, RunStatus


def active_workers(app: Engine) -> int:
    return sum(w.state == "active" for w in app.workers.list())


def test_sigterm_past_the_grace_period_requeues_a_max_attempts_1_run(dsn: str) -> None:
    app = Engine(dsn)
    first = spawn_worker(dsn, "--shutdown-grace", "1", capture=True)
    try:
        wait_for(lambda: active_workers(app) == 1, timeout=60)
        h = app.trigger("cli-once", 3.0)
        wait_for(lambda: app.runs.retrieve(h).status is RunStatus.EXECUTING, timeout=30)
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=60)
        assert first.returncode == 0, out
        assert f"interrupted cli-once run {h.id} attempt 1" in out  # the log names it
        run = app.runs.retrieve(h)
        assert run.status is RunStatus.QUEUED and run.attempt_count == 1
        assert app.runs.status_reason(h) is not None  # no worker: it says it waits for one
        second = spawn_worker(dsn)
        try:
            done = wait_for(lambda: (r := app.runs.retrieve(h)).is_completed and r, timeout=60)
            assert done.status is RunStatus.COMPLETED and done.output == "slept"
        finally:
            second.terminate()
            second.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        app.close()


def test_a_second_signal_stops_at_once_and_says_so(dsn: str) -> None:
    app = Engine(dsn)
    proc = spawn_worker(dsn, "--shutdown-grace", "120", capture=True)
    try:
        wait_for(lambda: active_workers(app) == 1, timeout=60)
        h = app.trigger("cli-slow", 90.0)  # a def task: its thread cannot be interrupted
        wait_for(lambda: app.runs.retrieve(h).status is RunStatus.EXECUTING, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        seen = []
        while not seen or "a second signal stops at once" not in seen[-1]:
            seen.append(proc.stdout.readline())  # the first signal taken: it says so
            assert seen[-1], "".join(seen)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)  # not the 120 s grace, nor the 90 s task
        assert "second signal: interrupting the running attempts now" in out
        run = app.runs.retrieve(h)
        assert run.status is RunStatus.QUEUED and run.attempts[0].status == "SUSPENDED"
    finally:
        if proc.poll() is None:
            proc.kill()
        app.close()
