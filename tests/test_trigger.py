"""Triggering: statuses, options, validation, batches, transactions, idempotency."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers import count, deploy, fetch
from pydantic import BaseModel

from engine import BatchItem, Engine, Queue, RunStatus
from engine.errors import (
    BatchTooLargeError,
    InvalidArgumentError,
    InvalidDurationError,
    PayloadValidationError,
)


class Image(BaseModel):
    url: str
    width: int = 100


def define(app: Engine) -> Any:
    @app.task("resize", queue=Queue("images", concurrency_limit=4), max_duration=30, ttl="1h")
    async def resize(payload: Image, ctx: Any) -> dict[str, str]:
        return {"thumb": payload.url}

    @app.task("plain")
    def plain(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return payload

    return resize, plain


def test_trigger_before_any_deployment_is_pending_version(app: Engine) -> None:
    resize, _ = define(app)
    handle = resize.trigger(Image(url="a"))
    assert handle.status is RunStatus.PENDING_VERSION
    assert app.runs.retrieve(handle).status is RunStatus.PENDING_VERSION


def test_deployment_releases_pending_runs_and_new_triggers_are_queued(app: Engine) -> None:
    resize, _ = define(app)
    pending = resize.trigger(Image(url="a"))
    delayed_pending = resize.trigger(Image(url="b"), delay="1h")
    deploy(app)
    assert app.runs.retrieve(pending).status is RunStatus.QUEUED
    assert app.runs.retrieve(delayed_pending).status is RunStatus.DELAYED
    assert resize.trigger(Image(url="c")).status is RunStatus.QUEUED


def test_run_ids_are_prefixed_and_time_ordered(app: Engine) -> None:
    _, plain = define(app)
    ids = [plain.trigger({"i": i}).id for i in range(20)]
    assert all(i.startswith("run_") for i in ids)
    # one session's ids keep their order, within a millisecond too
    assert ids == sorted(ids)
    batch = [h.id for h in plain.batch_trigger([{"i": i} for i in range(500)]).runs]
    assert batch == sorted(batch) and batch[0] > ids[-1]


def test_every_option_is_stored(app: Engine) -> None:
    resize, _ = define(app)
    deploy(app)
    h = resize.trigger(
        {"url": "x"},
        delay=timedelta(minutes=5),
        ttl="10m",
        idempotency_key="k1",
        idempotency_key_ttl="1d",
        tags=["user:42", "big"],
        metadata={"source": "test"},
        queue="other-queue",
        concurrency_key="tenant-7",
        priority=10,
        max_attempts=5,
        max_duration=60,
        version="dev",
    )
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.DELAYED
    assert run.payload == {"url": "x", "width": 100}  # validated and defaults filled
    assert run.ttl == 600 and run.idempotency_key == "k1"
    assert run.tags == ["user:42", "big"] and run.metadata == {"source": "test"}
    assert run.queue == "other-queue" and run.concurrency_key == "tenant-7"
    assert run.priority == 10 and run.version == "dev"
    assert run.delayed_until is not None
    assert timedelta(minutes=4) < run.delayed_until - run.created_at <= timedelta(minutes=5)
    row = fetch(
        app.dsn,
        "SELECT max_attempts, max_duration, version_pinned, "
        "idempotency_key_expires_at - created_at FROM skiplock.runs WHERE id = %s",
        h.id,
    )
    assert row == [(5, 60.0, True, timedelta(days=1))]


def test_task_defaults_apply_queue_ttl_max_duration(app: Engine) -> None:
    resize, plain = define(app)
    deploy(app)
    run = app.runs.retrieve(resize.trigger({"url": "x"}))
    assert run.queue == "images" and run.ttl == 3600
    assert fetch(
        app.dsn, "SELECT max_duration, max_attempts FROM skiplock.runs WHERE id = %s", run.id
    ) == [(30.0, 3)]
    assert app.runs.retrieve(plain.trigger({})).queue == "plain"  # its own default queue


def test_delay_as_datetime(app: Engine) -> None:
    _, plain = define(app)
    deploy(app)
    when = datetime.now(UTC) + timedelta(hours=2)
    run = app.runs.retrieve(plain.trigger({}, delay=when))
    assert run.status is RunStatus.DELAYED
    assert run.delayed_until is not None and abs((run.delayed_until - when).total_seconds()) < 0.01


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"delay": -5}, InvalidDurationError),
        ({"delay": "soon"}, InvalidDurationError),
        ({"ttl": "10 parsecs"}, InvalidDurationError),
        ({"ttl": 0}, InvalidArgumentError),
        ({"delay": datetime(2030, 1, 1)}, InvalidDurationError),  # naive datetime
        ({"idempotency_key_ttl": "x"}, InvalidDurationError),
        ({"tags": ["ok", ""]}, InvalidArgumentError),
        ({"tags": [f"t{i}" for i in range(11)]}, InvalidArgumentError),
        ({"metadata": {"x": object()}}, InvalidArgumentError),
        ({"concurrency_key": "k" * 257}, InvalidArgumentError),
        ({"priority": "high"}, InvalidArgumentError),
        ({"max_attempts": 0}, InvalidArgumentError),
        ({"queue": "q\x00"}, InvalidArgumentError),
        ({"colour": "red"}, InvalidArgumentError),
    ],
)
def test_bad_options_raise_typed_errors_and_write_nothing(
    app: Engine, options: dict[str, Any], error: type[Exception]
) -> None:
    _, plain = define(app)
    before = count(app.dsn)
    with pytest.raises(error):
        plain.trigger({}, **options)
    assert count(app.dsn) == before


def test_payload_failing_validation_writes_nothing(app: Engine) -> None:
    resize, _ = define(app)
    before = count(app.dsn)
    with pytest.raises(PayloadValidationError, match="url"):
        resize.trigger({"width": 3})
    with pytest.raises(PayloadValidationError):
        resize.trigger({"url": "x", "width": "wide"})
    with pytest.raises(PayloadValidationError):
        app.trigger("by-id-only", {"x": object()})  # not JSON
    assert count(app.dsn) == before


def test_trigger_by_id_validates_local_tasks_and_accepts_unknown_ones(app: Engine) -> None:
    define(app)
    with pytest.raises(PayloadValidationError):
        app.trigger("resize", {"nope": 1})
    remote = app.trigger("defined-elsewhere", {"a": 1}, tags=["remote"])
    run = app.runs.retrieve(remote)
    assert run.task_identifier == "defined-elsewhere" and run.status is RunStatus.PENDING_VERSION
    assert run.queue == "defined-elsewhere"


def test_sql_level_bad_input_is_a_typed_error(app: Engine) -> None:
    from engine.db import queries as _queries

    before = count(app.dsn)
    with pytest.raises(InvalidArgumentError, match="delay"):
        app.db.run(_queries.trigger("t", "{}", {"delay_seconds": -1}))
    with pytest.raises(InvalidArgumentError):
        app.db.run(_queries.trigger("t", "{}", {"delay_until": "not a time"}))
    with pytest.raises(InvalidArgumentError):
        app.db.run(_queries.trigger("t", '"nul \\u0000 byte"', {}))
    assert count(app.dsn) == before


def test_caller_transaction_commit_and_rollback(app: Engine) -> None:
    _, plain = define(app)
    deploy(app)
    with psycopg.connect(app.dsn) as c:
        h = plain.trigger({"tx": 1}, conn=c)
        # not visible outside the transaction before commit
        assert count(app.dsn, "id = %s", h.id) == 0
        c.rollback()
    assert count(app.dsn, "id = %s", h.id) == 0
    with psycopg.connect(app.dsn) as c:
        h2 = plain.trigger({"tx": 2}, conn=c)
        c.commit()
    assert app.runs.retrieve(h2).payload == {"tx": 2}


def test_caller_async_transaction(app: Engine) -> None:
    _, plain = define(app)

    async def go() -> str:
        async with await psycopg.AsyncConnection.connect(app.dsn) as c:
            h = await plain.trigger_async({"tx": 3}, conn=c)
            await c.rollback()
        return h.id

    assert count(app.dsn, "id = %s", asyncio.run(go())) == 0


def test_async_twins(app: Engine) -> None:
    resize, _ = define(app)

    async def go() -> None:
        h = await resize.trigger_async(Image(url="async"))
        h2 = await app.trigger_async("resize", {"url": "by-id"})
        b = await resize.batch_trigger_async([{"url": "1"}, {"url": "2"}])
        run = await app.runs.retrieve_async(h)
        assert run.payload == {"url": "async", "width": 100}
        assert (await app.runs.retrieve_async(h2)).payload["url"] == "by-id"
        assert len(b.runs) == 2
        await app.close_async()

    asyncio.run(go())


def test_batch_trigger_makes_runs_in_order_under_one_batch(app: Engine) -> None:
    resize, _ = define(app)
    deploy(app)
    batch = resize.batch_trigger(
        [Image(url="a"), {"url": "b"}, BatchItem({"url": "c"}, {"tags": ["third"], "delay": "1h"})],
        tags=["batch"],
    )
    assert batch.id.startswith("batch_") and len(batch.runs) == 3
    runs = [app.runs.retrieve(h) for h in batch.runs]
    assert [r.payload["url"] for r in runs] == ["a", "b", "c"]
    assert all(r.batch_id == batch.id for r in runs)
    assert [r.tags for r in runs] == [["batch"], ["batch"], ["third"]]
    assert [r.status for r in runs] == [RunStatus.QUEUED, RunStatus.QUEUED, RunStatus.DELAYED]
    # items without options of their own are validated and encoded in one call
    plain_items = resize.batch_trigger([Image(url="d", width=7), {"url": "e"}])
    payloads = [app.runs.retrieve(h).payload for h in plain_items.runs]
    assert payloads == [{"url": "d", "width": 7}, {"url": "e", "width": 100}]


def test_batch_of_1000_in_one_round_trip_and_1001_rejected(app: Engine) -> None:
    _, plain = define(app)
    before = count(app.dsn)
    batch = plain.batch_trigger([{"i": i} for i in range(1000)])
    assert len(batch.runs) == 1000 and count(app.dsn, "batch_id = %s", batch.id) == 1000
    with pytest.raises(BatchTooLargeError):
        plain.batch_trigger([{"i": i} for i in range(1001)])
    with pytest.raises(InvalidArgumentError):
        plain.batch_trigger([])
    assert count(app.dsn) == before + 1000


def test_batch_with_one_bad_item_writes_nothing(app: Engine) -> None:
    resize, _ = define(app)
    before = count(app.dsn)
    batches = "SELECT count(*) FROM skiplock.batches"
    batches_before = fetch(app.dsn, batches)
    with pytest.raises(PayloadValidationError):
        resize.batch_trigger([{"url": "ok"}, {"bad": True}])
    with pytest.raises(InvalidArgumentError):  # caught by SQL: bad per-item option
        from engine.db import queries as _queries

        app.db.run(
            _queries.trigger_batch(
                "resize",
                '[{"payload": {}, "options": {}}, {"payload": {}, "options": {"ttl": -1}}]',
                {},
            )
        )
    assert count(app.dsn) == before
    assert fetch(app.dsn, batches) == batches_before


def test_idempotency_key_returns_the_existing_run(app: Engine) -> None:
    _, plain = define(app)
    first = plain.trigger({"n": 1}, idempotency_key="same")
    again = plain.trigger({"n": 2}, idempotency_key="same")
    assert not first.is_cached and again.is_cached and again.id == first.id
    other_task = app.trigger("other", {}, idempotency_key="same")
    assert other_task.id != first.id and not other_task.is_cached


@pytest.mark.parametrize("final", ["COMPLETED", "CANCELED"])
def test_idempotency_key_keeps_completed_and_canceled_runs(app: Engine, final: str) -> None:
    _, plain = define(app)
    h = plain.trigger({}, idempotency_key=f"k-{final}")
    fetch(app.dsn, "UPDATE skiplock.runs SET status = %s WHERE id = %s RETURNING id", final, h.id)
    assert plain.trigger({}, idempotency_key=f"k-{final}").id == h.id


@pytest.mark.parametrize("final", ["FAILED", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT", "EXPIRED"])
def test_idempotency_key_is_released_by_failed_final_status(app: Engine, final: str) -> None:
    _, plain = define(app)
    h = plain.trigger({}, idempotency_key=f"k-{final}")
    fetch(app.dsn, "UPDATE skiplock.runs SET status = %s WHERE id = %s RETURNING id", final, h.id)
    fresh = plain.trigger({}, idempotency_key=f"k-{final}")
    assert fresh.id != h.id and not fresh.is_cached


def test_idempotency_key_ttl_expiry_makes_a_new_run(app: Engine) -> None:
    _, plain = define(app)
    h = plain.trigger({}, idempotency_key="ttl-key", idempotency_key_ttl="1h")
    assert plain.trigger({}, idempotency_key="ttl-key").id == h.id
    with psycopg.connect(app.dsn, autocommit=True) as c:
        later = datetime.now(UTC) + timedelta(hours=2)
        c.execute("SELECT set_config('skiplock.fake_now', %s, false)", (later.isoformat(),))
        row = c.execute(
            "SELECT run_id, is_cached FROM skiplock.trigger('plain', '{}', "
            '\'{"idempotency_key": "ttl-key"}\')'
        ).fetchone()
    assert row is not None and row[0] != h.id and row[1] is False
    assert count(app.dsn, "idempotency_key = 'ttl-key'") == 2


def test_32_concurrent_triggers_with_one_key_make_one_run(app: Engine) -> None:
    define(app)
    barrier = threading.Barrier(32)
    results: list[Any] = []
    errors: list[BaseException] = []
    engines = [Engine(app.dsn, pool_size=1) for _ in range(32)]

    def go(engine: Engine) -> None:
        try:
            barrier.wait()
            results.append(engine.trigger("plain", {"n": 1}, idempotency_key="race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.close()
    assert not errors
    assert len({r.id for r in results}) == 1
    assert sum(not r.is_cached for r in results) == 1
    assert count(app.dsn, "idempotency_key = 'race'") == 1


def test_a_payload_over_10_mb_is_refused_and_writes_nothing(app: Engine) -> None:
    _, plain = define(app)
    before = count(app.dsn)
    with pytest.raises(PayloadValidationError, match="limit"):
        plain.trigger({"blob": "x" * (50 * 1024 * 1024)})
    with pytest.raises(PayloadValidationError, match="limit"):
        app.trigger("by-id-only", "y" * (11 * 1024 * 1024))
    assert count(app.dsn) == before
