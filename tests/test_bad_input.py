"""Bad input at every public entry (the Python API, the CLI, the SQL functions): wrong
types, NUL bytes in text and JSON, a 50 MB payload, unknown ids, SQL injection attempts
in names, tags and keys. Each gets a typed error (or, for injection text that is valid
data, is stored literally), writes nothing, and affects nothing else."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from helpers import SKIPLOCK, TESTS, deploy, fetch

from engine import Engine, TaskContext
from engine.errors import (
    InvalidArgumentError,
    RunNotFoundError,
    SkiplockError,
    TokenNotFoundError,
    UnknownQueueError,
)

INJECTION = "x'); DROP TABLE skiplock.runs; --"
NUL = "a\x00b"
TABLES = ("runs", "attempts", "queues", "waitpoints", "batches", "run_steps", "workers")


def snapshot(dsn: str) -> dict[str, Any]:
    """Every table's row count and the runs' state: what 'nothing written' compares."""
    counts = {t: fetch(dsn, f"SELECT count(*) FROM skiplock.{t}")[0][0] for t in TABLES}
    runs = fetch(dsn, "SELECT id, status::text, metadata::text FROM skiplock.runs ORDER BY id")
    return {"counts": counts, "runs": runs}


@pytest.fixture
def task(app: Engine) -> Any:
    @app.task("bad-input")
    def bad_input(p: dict[str, Any], ctx: TaskContext) -> None:
        pass

    deploy(app)
    bad_input.trigger({"ok": True}, tags=["bystander"], delay="1h")  # something to affect
    return bad_input


@pytest.fixture
def unchanged(app: Engine, task: Any) -> Iterator[Callable[[], None]]:
    before = snapshot(app.dsn)

    def check() -> None:
        assert snapshot(app.dsn) == before

    yield check
    check()


BAD_TRIGGERS: list[tuple[str, Any, dict[str, Any]]] = [
    ("NUL in a payload string", {"s": NUL}, {}),
    ("NUL in a payload key", {NUL: 1}, {}),
    ("a 50 MB payload", {"blob": "x" * (50 * 1024 * 1024)}, {}),
    ("a payload that is not JSON", {"f": object()}, {}),
    ("tags not a list of strings", {}, {"tags": 5}),
    ("NUL in a tag", {}, {"tags": [NUL]}),
    ("eleven tags", {}, {"tags": [f"t{i}" for i in range(11)]}),
    ("an empty tag", {}, {"tags": [""]}),
    ("NUL in an idempotency key", {}, {"idempotency_key": NUL}),
    ("an idempotency key not a string", {}, {"idempotency_key": 7}),
    ("NUL in a queue name", {}, {"queue": NUL}),
    ("NUL in a concurrency key", {}, {"concurrency_key": NUL}),
    ("a delay that is no duration", {}, {"delay": "banana"}),
    ("a negative ttl", {}, {"ttl": -5}),
    ("priority not an int", {}, {"priority": "high"}),
    ("max_attempts below 1", {}, {"max_attempts": 0}),
    ("metadata not a dict", {}, {"metadata": [1, 2]}),
    ("NUL in metadata", {}, {"metadata": {"k": NUL}}),
    ("an unknown option", {}, {"colour": "red"}),
    ("NUL in a version", {}, {"version": NUL}),
]


@pytest.mark.parametrize(
    ("payload", "options"), [pytest.param(p, o, id=n) for n, p, o in BAD_TRIGGERS]
)
def test_bad_triggers_raise_typed_errors_and_write_nothing(
    app: Engine, task: Any, unchanged: Callable[[], None], payload: Any, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError):
        task.trigger(payload, **options)
    with pytest.raises(InvalidArgumentError):
        app.trigger("bad-input", payload, **options)
    with pytest.raises(InvalidArgumentError):
        task.batch_trigger([{"ok": 1}, payload] if not options else [payload], **options)


def test_bad_task_names_and_unknown_ids(
    app: Engine, task: Any, unchanged: Callable[[], None]
) -> None:
    for name in ("", NUL, "x" * 300):
        with pytest.raises(InvalidArgumentError):
            app.trigger(name, {})
    for bad in (NUL, "", 42, None):
        with pytest.raises(InvalidArgumentError):
            app.runs.retrieve(bad)
        with pytest.raises(InvalidArgumentError):
            app.runs.cancel(bad)
    for missing in ("run_missing", INJECTION):
        with pytest.raises(RunNotFoundError):
            app.runs.retrieve(missing)
        with pytest.raises(RunNotFoundError):
            app.runs.cancel(missing)
        with pytest.raises(RunNotFoundError):
            app.runs.replay(missing)
        with pytest.raises(RunNotFoundError):
            app.runs.reschedule(missing, delay="1h")
    with pytest.raises(TokenNotFoundError):
        app.waitpoints.complete_token("waitpoint_missing", {"x": 1})
    with pytest.raises(InvalidArgumentError):
        app.waitpoints.complete_token(INJECTION, {})
    with pytest.raises(InvalidArgumentError):
        app.waitpoints.complete_token("waitpoint_x", {"s": NUL})
    for queue in ("no-such-queue", INJECTION):
        with pytest.raises(UnknownQueueError):
            app.queues.pause(queue)
    for limit in (0, -1, "3", 2.5, True):
        with pytest.raises(InvalidArgumentError):
            app.queues.set_limit("bad-input", limit)
    with pytest.raises(InvalidArgumentError):
        app.queues.pause(NUL)
    with pytest.raises(InvalidArgumentError):
        app.runs.list(status=["QUEUED", NUL])
    with pytest.raises(InvalidArgumentError):
        app.runs.list(tag=NUL)
    with pytest.raises(InvalidArgumentError):
        app.runs.list(after=NUL)
    with pytest.raises(InvalidArgumentError):
        app.waitpoints.create_token(timeout="soon")


def test_injection_text_is_data(app: Engine, task: Any) -> None:
    """Valid strings that look like SQL are stored and matched literally."""
    h = task.trigger(
        {"q": INJECTION},
        tags=[INJECTION[:100]],
        idempotency_key=INJECTION,
        concurrency_key=INJECTION,
        queue=INJECTION[:50],
        metadata={INJECTION: INJECTION},
    )
    run = app.runs.retrieve(h.id)
    assert run.payload == {"q": INJECTION} and run.tags == [INJECTION[:100]]
    assert run.idempotency_key == INJECTION and run.concurrency_key == INJECTION
    assert [r.id for r in app.runs.list(tag=INJECTION[:100])] == [h.id]
    assert task.trigger({}, idempotency_key=INJECTION).id == h.id  # the key matched as text
    assert fetch(
        app.dsn, "SELECT count(*) FROM skiplock.runs WHERE idempotency_key = %s", INJECTION
    ) == [(1,)]
    assert app.queues.pause(INJECTION[:50]).paused


def _sql_error(conn: psycopg.Connection[Any], query: str, *params: Any) -> str:
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(query, params or None)
    conn.rollback()
    return raised.value.sqlstate or ""


def test_sql_functions_reject_bad_input_with_their_codes(
    app: Engine, task: Any, unchanged: Callable[[], None]
) -> None:
    with psycopg.connect(app.dsn) as conn:
        assert _sql_error(conn, "SELECT skiplock.trigger(NULL, '{}')") == "SL004"
        for options in (
            '{"tags": 5}',
            '{"tags": [1]}',
            '{"priority": "high"}',
            "[]",
            '{"metadata": 3}',
            '{"queue": {}}',
        ):
            assert _sql_error(conn, "SELECT skiplock.trigger('bad-input', '{}', %s)", options) == (
                "SL004"
            ), options
            items = f'[{{"payload": 1, "options": {options}}}]'
            assert _sql_error(conn, "SELECT skiplock.trigger_batch('bad-input', %s)", items) == (
                "SL004"
            ), options
            shared = "SELECT skiplock.trigger_batch('bad-input', '[{\"payload\": 1}]', %s)"
            assert _sql_error(conn, shared, options) == "SL004", options
        assert _sql_error(
            conn, "SELECT skiplock.trigger('bad-input', %s::jsonb)", '{"s": "a\\u0000b"}'
        ).startswith("22")
        assert _sql_error(conn, "SELECT skiplock.trigger_batch('bad-input', '[]')") == "SL004"
        assert _sql_error(conn, "SELECT skiplock.cancel_run('run_missing')") == "SL001"
        assert _sql_error(conn, "SELECT skiplock.cancel_run(%s)", INJECTION) == "SL001"
        assert _sql_error(conn, "SELECT skiplock.reschedule_run('run_missing', now())") == "SL001"
        assert _sql_error(conn, "SELECT skiplock.set_queue_limit('bad-input', -1)") in (
            "SL004",
            "23514",
        )
        assert _sql_error(conn, "SELECT skiplock.pause_queue(%s)", INJECTION + "2") == "SL006"
        assert _sql_error(conn, "SELECT skiplock.complete_token('waitpoint_missing')") == "SL007"
        with pytest.raises(psycopg.DataError):  # NUL never reaches the server as text
            conn.execute("SELECT skiplock.cancel_run(%s)", (NUL,))
        conn.rollback()


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "show", INJECTION],
        ["runs", "cancel", "run_missing"],
        ["runs", "list", "--status", "BOGUS"],
        ["runs", "list", "--limit", "0"],
        ["runs", "list", "--task", INJECTION],
        ["runs", "reschedule", "run_missing", "--delay", "banana"],
        ["queues", "limit", "bad-input", "-5"],
        ["queues", "pause", "no-such-queue'; DROP TABLE skiplock.queues; --"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_cli_bad_input_exits_2_with_a_message(
    app: Engine, task: Any, unchanged: Callable[[], None], args: list[str]
) -> None:
    done = subprocess.run(
        [SKIPLOCK, "--dsn", app.dsn, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=TESTS,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_every_typed_error_is_a_skiplock_error() -> None:
    for cls in (InvalidArgumentError, RunNotFoundError, TokenNotFoundError, UnknownQueueError):
        assert issubclass(cls, SkiplockError)
