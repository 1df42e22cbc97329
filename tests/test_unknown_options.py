"""Unknown option keys: a misspelt option (`{"delay": 10}` for `{"delay_seconds": 10}`)
is an error at every entry that takes an options object, from SQL as from Python: SL004
(InvalidArgumentError) naming the unknown key and listing the valid ones, and nothing
written. Before, the SQL functions ignored such keys and the run went ahead without the
option."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from helpers import deploy, fetch

from engine import BatchItem, Debounce, Engine, TaskContext
from engine.db import queries as _queries
from engine.errors import InvalidArgumentError

TABLES = ("runs", "batches", "debounces", "schedules", "waitpoints")
TASK = "unknown-opts"


def counts(dsn: str) -> dict[str, int]:
    return {t: fetch(dsn, f"SELECT count(*) FROM skiplock.{t}")[0][0] for t in TABLES}


@pytest.fixture
def task(app: Engine) -> Any:
    @app.task(TASK)
    def unknown_opts(p: Any, ctx: TaskContext) -> None:
        pass

    deploy(app)
    return unknown_opts


@pytest.fixture
def unchanged(app: Engine, task: Any) -> Iterator[Callable[[], None]]:
    before = counts(app.dsn)

    def check() -> None:
        assert counts(app.dsn) == before

    yield check
    check()


def sql_error(conn: psycopg.Connection[Any], query: str, *params: Any) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(query, params)
    return raised.value


def assert_unknown(error: psycopg.Error, what: str, unknown: list[str], valid: list[str]) -> None:
    """SL004, naming what the keys are, the unknown ones and (some of) the valid ones."""
    assert error.sqlstate == "SL004", error
    message = error.diag.message_primary or ""
    assert f"unknown {what}(s): {', '.join(unknown)}; valid: " in message, message
    for name in valid:
        assert name in message.split("; valid: ")[1], message


def test_sql_trigger_rejects_unknown_options(
    conn: psycopg.Connection[Any], unchanged: Callable[[], None]
) -> None:
    error = sql_error(
        conn, "SELECT * FROM skiplock.trigger(%s, '{}', %s)", TASK, '{"delay": 10, "colour": 1}'
    )
    assert_unknown(error, "trigger option", ["colour", "delay"], ["delay_seconds", "ttl"])
    # a known option beside it changes nothing: the unknown key is still the error
    error = sql_error(
        conn,
        "SELECT * FROM skiplock.trigger(%s, '{}', %s)",
        TASK,
        '{"idempotency_key": "k", "retries": 3}',
    )
    assert_unknown(error, "trigger option", ["retries"], ["max_attempts"])


def test_sql_trigger_batch_rejects_unknown_options_items_and_item_keys(
    conn: psycopg.Connection[Any], unchanged: Callable[[], None]
) -> None:
    batch = "SELECT * FROM skiplock.trigger_batch(%s, %s, %s)"
    # the batch's shared options, on the set-based path and on the per-item one
    for shared in ({"delay": 5}, {"delay": 5, "idempotency_key": "b"}):
        error = sql_error(conn, batch, TASK, '[{"payload": 1}]', json.dumps(shared))
        assert_unknown(error, "trigger option", ["delay"], ["delay_seconds"])
    # one item's own options, on both paths: the whole batch fails
    for own in ({"delay": 5}, {"delay": 5, "idempotency_key": "i"}):
        items = json.dumps([{"payload": 1}, {"payload": 2, "options": own}])
        error = sql_error(conn, batch, TASK, items, "{}")
        assert_unknown(error, "trigger option", ["delay"], ["delay_seconds"])
    # an item's key beside payload and options ("option" for "options")
    items = json.dumps([{"payload": 1}, {"payload": 2, "option": {"ttl": 5}}])
    error = sql_error(conn, batch, TASK, items, "{}")
    assert_unknown(error, "batch item key", ["option"], ["payload", "options"])


def test_sql_debounce_rejects_unknown_keys(
    conn: psycopg.Connection[Any], unchanged: Callable[[], None]
) -> None:
    options = {"debounce": {"key": "k", "delay": 1, "max_wait": 5}}
    error = sql_error(
        conn, "SELECT * FROM skiplock.trigger(%s, '{}', %s)", TASK, json.dumps(options)
    )
    assert_unknown(error, "debounce option", ["max_wait"], ["key", "delay", "mode", "max_delay"])


def test_sql_schedules_and_tokens_reject_unknown_options(
    app: Engine, conn: psycopg.Connection[Any], task: Any
) -> None:
    before = counts(app.dsn)
    error = sql_error(
        conn,
        "SELECT skiplock.create_schedule(%s, '0 * * * *', 'UTC', %s)",
        TASK,
        '{"catchup": "all"}',
    )
    assert_unknown(error, "schedule option", ["catchup"], ["catch_up", "deduplication_key"])
    error = sql_error(conn, "SELECT skiplock.create_token(%s)", '{"timeout_seconds": 5}')
    assert_unknown(error, "token option", ["timeout_seconds"], ["timeout", "tags"])
    error = sql_error(conn, "SELECT skiplock.create_token('[]')")
    assert error.sqlstate == "SL004"
    assert counts(app.dsn) == before

    schedule = app.schedules.create(TASK, "0 * * * *")
    error = sql_error(
        conn, "SELECT skiplock.update_schedule(%s, %s)", schedule.id, '{"crontab": "5 * * * *"}'
    )
    assert_unknown(error, "schedule change", ["crontab"], ["cron", "timezone"])
    assert app.schedules.retrieve(schedule.id).cron == "0 * * * *"


def test_python_rejects_unknown_options_before_sending(
    app: Engine, task: Any, unchanged: Callable[[], None]
) -> None:
    bad: dict[str, Any] = {"delay_seconds": 10}
    for call in (
        lambda: task.trigger({}, **bad),
        lambda: app.trigger(TASK, {}, **bad),
        lambda: task.batch_trigger([1], **bad),
        lambda: task.batch_trigger([BatchItem(1, bad)]),
    ):
        with pytest.raises(InvalidArgumentError, match="unknown trigger option") as raised:
            call()
        assert "delay_seconds; valid: " in str(raised.value) and "delay" in str(raised.value)


def test_python_maps_the_sql_error_to_invalid_argument(
    app: Engine, task: Any, unchanged: Callable[[], None]
) -> None:
    """Options that reach SQL unchecked (a driver's, or a future Python option the SQL
    does not know yet) get the typed error through the Python API's error mapping."""
    query = _queries.trigger(TASK, "{}", {"delay": 10})
    with pytest.raises(InvalidArgumentError, match=r"unknown trigger option\(s\): delay; valid"):
        app._conns.db.run(query)


def test_every_option_python_sends_is_known_to_sql(app: Engine, task: Any) -> None:
    """Every option Python builds passes the SQL check (a run is made)."""
    handle = task.trigger(
        {},
        delay="1h",
        ttl="2h",
        idempotency_key="every-option",
        idempotency_key_ttl="1d",
        tags=["a"],
        metadata={"m": 1},
        queue="every-option-q",
        concurrency_key="c",
        priority=1,
        max_attempts=2,
        max_duration=30,
        version="v-any",
        rate_limit_key="r",
        rate_cost=1,
    )
    assert not handle.is_cached
    debounced = task.trigger({}, debounce=Debounce(key="d", delay="5s", max_delay="1m"))
    assert not debounced.is_cached
    assert len(task.batch_trigger([BatchItem(1, {"ttl": 60}), 2], tags=["b"]).runs) == 2
    token = app.waitpoints.create_token(
        timeout="1h", idempotency_key="tok", idempotency_key_ttl="1h", tags=["t"]
    )
    assert token.id.startswith("waitpoint_")
    schedule = app.schedules.create(
        TASK,
        "0 * * * *",
        external_id="e",
        deduplication_key="dk",
        payload={"p": 1},
        catch_up="none",
        active=False,
    )
    app.schedules.update(
        schedule,
        cron="5 * * * *",
        timezone="UTC",
        task=TASK,
        external_id="e2",
        payload={"p": 2},
        catch_up="all",
    )
