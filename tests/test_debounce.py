"""Debounce: triggers with one key collapse into one run (trailing: the last payload, once
the key is quiet; leading: the first run, the rest dropped), bounded by max_delay."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers import TESTS, deploy, fetch

from engine import Debounce, Engine, RunStatus, TaskContext
from engine.errors import InvalidArgumentError

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)

BURST = """
import json, sys
from engine import Debounce, Engine
app = Engine(sys.argv[1])
ids = set()
for n in range(int(sys.argv[3])):
    handle = app.trigger("debounced", {"proc": sys.argv[2], "n": n},
                         debounce=Debounce(key="user-42", delay="1h"))
    ids.add(handle.id)
print(json.dumps(sorted(ids)))
"""


class Clock:
    """A session whose skiplock.now() is faked, triggering from SQL."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def at(self, offset: float) -> Clock:
        when = (T0 + timedelta(seconds=offset)).isoformat()
        self.conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (when,))
        return self

    def trigger(self, task: str, payload: Any, **debounce: Any) -> tuple[str, str, bool]:
        options = json.dumps({"debounce": debounce})
        row = self.conn.execute(
            "SELECT run_id, run_status::text, is_cached FROM skiplock.trigger(%s, %s, %s)",
            (task, json.dumps(payload), options),
        ).fetchone()
        assert row is not None
        return row[0], row[1], row[2]

    def tick(self) -> None:
        self.conn.execute("SELECT skiplock.tick()")


@pytest.fixture
def clock(dsn: str) -> Iterator[Clock]:
    c = Clock(dsn)
    yield c
    c.conn.close()


def run_row(dsn: str, run_id: str) -> tuple[Any, ...]:
    return fetch(
        dsn, "SELECT status::text, payload, delayed_until FROM skiplock.runs WHERE id = %s", run_id
    )[0]


def test_a_thousand_triggers_from_four_processes_make_one_run(app: Engine, dsn: str) -> None:
    @app.task("debounced")
    def debounced(payload: dict[str, Any], ctx: TaskContext) -> None: ...

    deploy(app)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BURST, dsn, str(i), "250"],
            cwd=TESTS,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    joined: set[str] = set()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        joined |= set(json.loads(out))
    last = debounced.trigger({"proc": "test", "n": 1000}, debounce=Debounce("user-42", "1h"))
    assert joined == {last.id} and last.is_cached
    runs = fetch(
        dsn,
        "SELECT id, status::text, payload FROM skiplock.runs WHERE task_identifier = 'debounced'",
    )
    assert [(r[0], r[1]) for r in runs] == [(last.id, "DELAYED")]
    assert runs[0][2] == {"proc": "test", "n": 1000}  # trailing: the last payload
    triggers = fetch(dsn, "SELECT triggers FROM skiplock.debounces WHERE run_id = %s", last.id)
    assert triggers == [(1001,)]


def test_trailing_waits_for_quiet_but_never_past_max_delay(
    app: Engine, dsn: str, clock: Clock
) -> None:
    @app.task("trailing")
    def trailing(payload: int, ctx: TaskContext) -> None: ...

    deploy(app)
    spec = {"key": "k", "delay": 5, "max_delay": 12}
    first, status, cached = clock.at(0).trigger("trailing", 0, **spec)
    assert (status, cached) == ("DELAYED", False)
    assert run_row(dsn, first)[2] == T0 + timedelta(seconds=5)
    for n, at in enumerate([4, 8], start=1):  # each within the delay: joins, restarts it
        assert clock.at(at).trigger("trailing", n, **spec) == (first, "DELAYED", True)
        assert run_row(dsn, first)[2] == T0 + timedelta(seconds=min(at + 5, 12))
    assert clock.at(11).trigger("trailing", 3, **spec)[0] == first
    assert run_row(dsn, first)[1:] == (3, T0 + timedelta(seconds=12))  # max_delay caps it
    clock.at(12.5).tick()
    assert run_row(dsn, first)[0] == "QUEUED"
    second, status, cached = clock.at(13).trigger("trailing", 4, **spec)  # a new burst
    assert second != first and (status, cached) == ("DELAYED", False)
    other, _, _ = clock.at(13).trigger("trailing", 5, **{**spec, "key": "other"})
    assert other not in (first, second)  # keys are independent


def test_leading_runs_the_first_and_drops_the_rest(app: Engine, dsn: str, clock: Clock) -> None:
    @app.task("leading")
    def leading(payload: int, ctx: TaskContext) -> None: ...

    deploy(app)
    spec = {"key": "k", "delay": 5, "mode": "leading"}
    first, status, cached = clock.at(0).trigger("leading", 0, **spec)
    assert (status, cached) == ("QUEUED", False)
    assert clock.at(3).trigger("leading", 1, **spec) == (first, "QUEUED", True)
    assert clock.at(7).trigger("leading", 2, **spec)[0] == first  # 4 s after the last
    assert run_row(dsn, first)[1] == 0  # the first payload; the others dropped
    later, status, cached = clock.at(13).trigger("leading", 3, **spec)  # quiet for 6 s
    assert later != first and (status, cached) == ("QUEUED", False)


def test_bad_debounce_input_writes_nothing(app: Engine, dsn: str) -> None:
    @app.task("debounce-bad")
    def bad(payload: int, ctx: TaskContext) -> None: ...

    with pytest.raises(InvalidArgumentError):
        Debounce("", "5s")
    with pytest.raises(InvalidArgumentError, match="mode"):
        Debounce("k", "5s", mode="middle")
    with pytest.raises(InvalidArgumentError, match="max_delay"):
        Debounce("k", "5s", max_delay="1s")
    with pytest.raises(InvalidArgumentError, match="combined"):
        bad.trigger(1, debounce=Debounce("k", "5s"), delay="1m")
    with pytest.raises(InvalidArgumentError, match="batch"):
        bad.batch_trigger([1, 2], debounce=Debounce("k", "5s"))
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(psycopg.Error) as raised:
        spec = json.dumps({"debounce": {"key": "k"}})  # no delay
        conn.execute("SELECT * FROM skiplock.trigger('debounce-bad', '1', %s)", (spec,))
    assert raised.value.sqlstate == "SL004"
    assert fetch(
        dsn, "SELECT count(*) FROM skiplock.runs WHERE task_identifier = 'debounce-bad'"
    ) == [(0,)]
    assert app.runs.retrieve(bad.trigger(1, debounce=Debounce("k", "5s"))).status in (
        RunStatus.DELAYED,
        RunStatus.PENDING_VERSION,
    )
