"""`skiplock schedules`, run as a real subprocess on $SKIPLOCK_DATABASE_URL."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime

from helpers import SKIPLOCK, TESTS, deploy, fetch

from engine import Engine, ScheduledPayload, TaskContext


def schedules(
    dsn: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKIPLOCK, "schedules", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=TESTS,
        env={**os.environ, "SKIPLOCK_DATABASE_URL": dsn, **(env or {})},
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0 and not done.stderr, (done.returncode, done.stderr)
    return done.stdout


def count(dsn: str) -> int:
    return int(fetch(dsn, "SELECT count(*) FROM skiplock.schedules")[0][0])


def fields(text: str) -> dict[str, str]:
    """`show`'s text output: one 'key  value' line per field."""
    return dict(line.split(None, 1) for line in text.splitlines())


def test_create_list_show_deactivate_activate_delete(dsn: str) -> None:
    create = ["create", "cli-report", "--cron", "0 9 * * 1-5", "--timezone", "Europe/Paris"]
    first = json.loads(ok(schedules(dsn, *create, "--dedup-key", "cli-k", "--json")))
    again = json.loads(ok(schedules(dsn, *create, "--dedup-key", "cli-k", "--json")))
    assert again["id"] == first["id"] and count(dsn) == 1  # an upsert by its key
    assert (first["cron"], first["timezone"], first["type"], first["active"]) == (
        "0 9 * * 1-5",
        "Europe/Paris",
        "IMPERATIVE",
        True,
    )
    sid = first["id"]
    next_slot = datetime.fromisoformat(first["next_slot"]).astimezone(UTC)
    assert next_slot.weekday() < 5 and next_slot.minute == 0

    table = ok(schedules(dsn, "list")).splitlines()
    assert table[0].split() == [
        *("ID", "TASK", "CRON", "TIMEZONE", "NEXT", "(UTC)", "ACTIVE", "TYPE", "EXTERNAL", "ID")
    ]
    (row,) = [line for line in table if line.startswith(sid)]
    assert "0 9 * * 1-5" in row and "Europe/Paris" in row and " yes " in row
    assert next_slot.strftime("%Y-%m-%d %H:%M:%S") in row
    assert ok(schedules(dsn)) == "\n".join(table) + "\n"  # list is the default action
    # the NEXT column is in UTC whatever the session's TimeZone
    assert ok(schedules(dsn, "list", env={"PGTZ": "America/New_York"})) == "\n".join(table) + "\n"

    listed = json.loads(ok(schedules(dsn, "list", "--json")))
    assert [s["id"] for s in listed] == [sid] and len(listed[0]["upcoming"]) == 5
    assert json.loads(ok(schedules(dsn, "--json", "list", "--task", "cli-report")))[0]["id"] == sid
    assert json.loads(ok(schedules(dsn, "list", "--inactive", "--json"))) == []

    shown = fields(ok(schedules(dsn, "show", sid)))
    assert shown["id"] == sid and shown["cron"] == "0 9 * * 1-5"
    assert shown["deduplication_key"] == "cli-k" and shown["active"] == "True"
    assert len(json.loads(shown["upcoming"])) == 5
    assert json.loads(ok(schedules(dsn, "show", sid, "--json")))["id"] == sid

    assert fields(ok(schedules(dsn, "deactivate", sid)))["active"] == "False"
    assert Engine(dsn).schedules.retrieve(sid).active is False
    assert [s["id"] for s in json.loads(ok(schedules(dsn, "list", "--inactive", "--json")))] == [
        sid
    ]
    assert " no " in next(line for line in ok(schedules(dsn)).splitlines() if sid in line)
    assert json.loads(ok(schedules(dsn, "activate", sid, "--json")))["active"] is True
    assert json.loads(ok(schedules(dsn, "list", "--active", "--json")))[0]["id"] == sid

    assert ok(schedules(dsn, "delete", sid)) == f"deleted {sid}\n"
    assert count(dsn) == 0
    gone = schedules(dsn, "show", sid)
    assert gone.returncode == 2 and gone.stderr == f"error: schedule {sid} does not exist\n"
    assert schedules(dsn, "delete", sid).returncode == 2


def test_bad_input_exits_non_zero_with_the_error_and_writes_nothing(dsn: str) -> None:
    before = count(dsn)
    cases = [
        (
            ["--cron", "61 * * * *"],
            'invalid cron expression "61 * * * *": minute 61 is out of range',
        ),
        (["--cron", "* * * *"], "expected 5 fields"),
        (["--cron", "0 9 * * *", "--timezone", "Mars/Olympus"], 'unknown time zone "Mars/Olympus"'),
        (["--cron", "0 9 * * *", "--payload", "{oops"], "--payload must be JSON"),
    ]
    for args, message in cases:
        done = schedules(dsn, "create", "cli-bad", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
    assert count(dsn) == before
    usage = schedules(dsn, "create", "cli-bad")  # --cron is required: argparse says so
    assert usage.returncode == 2 and "--cron" in usage.stderr and count(dsn) == before


def test_a_declared_schedule_is_listed_and_cannot_be_deleted_here(dsn: str) -> None:
    app = Engine(dsn)

    @app.task("cli-declared", cron="@daily", timezone="Asia/Tokyo")
    async def daily(payload: ScheduledPayload, ctx: TaskContext) -> None: ...

    deploy(app, version="v1")
    (s,) = app.schedules.list(task="cli-declared").data
    row = next(line for line in ok(schedules(dsn, "list")).splitlines() if s.id in line)
    assert "@daily" in row and "Asia/Tokyo" in row and "declarative" in row
    refused = schedules(dsn, "delete", s.id)
    assert refused.returncode == 2 and "declared in code" in refused.stderr
    assert fields(ok(schedules(dsn, "deactivate", s.id)))["active"] == "False"
    app.close()
