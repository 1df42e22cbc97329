"""The `skiplock` command, run as a real subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import pytest
from helpers import SKIPLOCK, TESTS, fetch, spawn_worker, wait_for

from engine import Engine, RunStatus


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKIPLOCK, "--dsn", dsn, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=TESTS,
    )


@pytest.fixture
def worker_proc(dsn: str) -> Iterator[subprocess.Popen[str]]:
    proc = spawn_worker(
        dsn, "--concurrency", "4", "--version", "cli-1", "--shutdown-grace", "10", capture=True
    )
    wait_for(
        lambda: fetch(
            dsn, "SELECT 1 FROM skiplock.workers WHERE version = 'cli-1' AND stopped_at IS NULL"
        ),
        timeout=30,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_migrate_command_is_idempotent(dsn: str) -> None:
    done = cli(dsn, "migrate")
    assert done.returncode == 0 and "schema is current" in done.stdout


def test_worker_subprocess_executes_runs_and_sigterm_drains(
    dsn: str, worker_proc: subprocess.Popen[str]
) -> None:
    app = Engine(dsn)
    h = app.trigger("cli-echo", {"x": 1})
    run = wait_for(lambda: (r := app.runs.retrieve(h)).is_completed and r)
    assert run.output == {"echo": {"x": 1}, "attempt": 1} and run.version == "cli-1"
    slow = app.trigger("cli-slow", 1.5)
    wait_for(lambda: app.runs.retrieve(slow).status is RunStatus.EXECUTING)
    worker_proc.send_signal(signal.SIGTERM)
    out, _ = worker_proc.communicate(timeout=30)
    assert worker_proc.returncode == 0, out
    # the running attempt was allowed to finish
    assert app.runs.retrieve(slow).status is RunStatus.COMPLETED
    assert fetch(
        dsn, "SELECT stopped_at IS NOT NULL FROM skiplock.workers WHERE version = 'cli-1'"
    ) == [(True,)]
    app.close()


def test_runs_commands(dsn: str) -> None:
    app = Engine(dsn)
    a = app.trigger("cli-echo", {"n": 1}, tags=["cli"])
    b = app.trigger("cli-echo", {"n": 2}, tags=["cli"], delay="1h")

    listed = cli(dsn, "runs", "list", "--tag", "cli", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["id"] for r in json.loads(listed.stdout)} == {a.id, b.id}
    table = cli(dsn, "runs", "list", "--task", "cli-echo")
    assert table.returncode == 0 and "STATUS" in table.stdout and b.id in table.stdout

    shown = cli(dsn, "runs", "show", a.id, "--json")
    assert json.loads(shown.stdout)["payload"] == {"n": 1}
    plain = cli(dsn, "runs", "show", a.id)
    assert "task_identifier" in plain.stdout and "cli-echo" in plain.stdout

    moved = cli(dsn, "runs", "reschedule", b.id, "--delay", "2h", "--json")
    assert moved.returncode == 0 and json.loads(moved.stdout)["status"] == "DELAYED"
    refused = cli(dsn, "runs", "reschedule", a.id, "--delay", "2h")
    assert refused.returncode == 2 and "only DELAYED" in refused.stderr

    canceled = cli(dsn, "runs", "cancel", a.id)
    assert canceled.returncode == 0 and canceled.stdout.strip() == "CANCELED"
    replayed = cli(dsn, "runs", "replay", a.id, "--json")
    new = json.loads(replayed.stdout)
    assert new["id"] != a.id and new["payload"] == {"n": 1}

    missing = cli(dsn, "runs", "show", "run_missing")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    unknown = cli(dsn, "runs", "list", "--task", "no-such-task")
    assert unknown.returncode == 2 and "unknown task" in unknown.stderr
    app.close()


def test_worker_with_a_bad_app_reference_fails_clearly(dsn: str) -> None:
    done = cli(dsn, "worker", "no_such_module:app")
    assert done.returncode == 2 and "cannot load" in done.stderr


def _watch(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SKIPLOCK, "--dsn", dsn, "runs", "watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )


def test_runs_watch_follows_a_run_to_its_end_and_a_tag_until_interrupted(dsn: str) -> None:
    app = Engine(dsn)
    run = app.trigger("cli-echo", {"n": 1}, delay="1h")
    first = app.runs.retrieve(run.id).status.value  # DELAYED, or PENDING_VERSION if undeployed
    follow = _watch(dsn, run.id)
    tagged = _watch(dsn, "--tag", "watched")
    assert follow.stdout is not None and tagged.stdout is not None
    assert follow.stdout.readline().split()[:3] == [run.id, "cli-echo", first]
    # both processes listen (registered) before the tagged run exists
    wait_for(lambda: fetch(dsn, "SELECT count(*) FROM skiplock.subscribers") == [(2,)])
    later = app.trigger("cli-echo", {"n": 2}, tags=["watched"], delay="1h")
    app.runs.cancel(run.id)
    out, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert out.splitlines()[-1].split()[:3] == [run.id, "cli-echo", "CANCELED"]

    app.runs.cancel(later.id)
    line_of = lambda status: f"{later.id}  cli-echo  {status}"  # noqa: E731
    seen: list[str] = []
    assert tagged.stdout is not None
    for line in tagged.stdout:
        seen.append(line)
        if line.startswith(line_of("CANCELED")):
            break
    assert any(s.startswith(line_of(first)) for s in seen)
    tagged.send_signal(signal.SIGINT)
    assert tagged.wait(timeout=30) == 0
    assert cli(dsn, "runs", "watch").returncode == 2  # neither a run nor a tag
    app.close()
