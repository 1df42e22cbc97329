"""The runs API: retrieve, list and pages, cancel (with cascade), replay, reschedule."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers import deploy, fetch
from pydantic import BaseModel

from engine import BatchItem, Engine, Run, RunStatus, TaskContext
from engine.errors import (
    InvalidArgumentError,
    RunNotDelayedError,
    RunNotFoundError,
    UnknownTaskError,
)


class Ticket(BaseModel):
    number: int


@pytest.fixture
def tasks(app: Engine) -> Any:
    @app.task("ticket")
    def ticket(p: Ticket, ctx: TaskContext) -> Ticket:
        return p

    @app.task("note")
    def note(p: str, ctx: TaskContext) -> str:
        return p

    deploy(app)
    return ticket, note


def test_retrieve_plain_and_typed(app: Engine, tasks: Any) -> None:
    ticket, _ = tasks
    h = ticket.trigger(Ticket(number=7), tags=["t"], metadata={"m": 1})
    run = app.runs.retrieve(h.id)
    assert isinstance(run, Run) and run.payload == {"number": 7}
    assert run.task_identifier == "ticket" and run.status is RunStatus.QUEUED
    assert run.tags == ["t"] and run.metadata == {"m": 1} and run.attempts == []
    assert run.is_queued and not run.is_completed and run.created_at <= run.updated_at
    typed = app.runs.retrieve(h, task=ticket)
    assert typed.payload == Ticket(number=7)
    assert asyncio.run(app.runs.retrieve_async(h, task=ticket)).payload == Ticket(number=7)


def test_retrieve_unknown_run_is_a_typed_error(app: Engine) -> None:
    with pytest.raises(RunNotFoundError, match="run_nope"):
        app.runs.retrieve("run_nope")
    with pytest.raises(RunNotFoundError):
        app.runs.cancel("run_nope")
    with pytest.raises(RunNotFoundError):
        app.runs.replay("run_nope")
    with pytest.raises(RunNotFoundError):
        app.runs.reschedule("run_nope", delay="1h")


def test_boolean_helpers_cover_every_status() -> None:
    base = {
        "id": "run_x",
        "task_identifier": "t",
        "payload": None,
        "metadata": {},
        "tags": [],
        "queue": "q",
        "created_at": datetime.now(UTC),
        "updated_at": datetime.now(UTC),
    }
    expect = {
        "is_queued": {"PENDING_VERSION", "DELAYED", "QUEUED"},
        "is_executing": {"DEQUEUED", "EXECUTING"},
        "is_waiting": {"WAITING"},
        "is_success": {"COMPLETED"},
        "is_failed": {"FAILED", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT", "EXPIRED"},
        "is_canceled": {"CANCELED"},
        "is_completed": {
            "COMPLETED",
            "CANCELED",
            "FAILED",
            "CRASHED",
            "SYSTEM_FAILURE",
            "TIMED_OUT",
            "EXPIRED",
        },
    }
    assert len(RunStatus) == 13
    for status in RunStatus:
        run = Run.model_validate({**base, "status": status.value})
        for helper, statuses in expect.items():
            assert getattr(run, helper) is (status.value in statuses), (helper, status)


def test_sql_enum_has_the_13_statuses_in_order(app: Engine) -> None:
    rows = fetch(app.dsn, "SELECT unnest(enum_range(NULL::skiplock.run_status))::text")
    assert [r[0] for r in rows] == [s.value for s in RunStatus]


def test_list_filters(app: Engine, tasks: Any) -> None:
    ticket, note = tasks
    t1 = ticket.trigger({"number": 1}, tags=["red"])
    t2 = ticket.trigger({"number": 2}, tags=["blue"], delay="1h")
    n1 = note.trigger("hi", tags=["red", "blue"])
    batch = note.batch_trigger(["a", "b"])
    ids = lambda page: [r.id for r in page.data]  # noqa: E731
    assert set(ids(app.runs.list(task="ticket", limit=100))) >= {t1.id, t2.id}
    assert n1.id not in ids(app.runs.list(task=["ticket"], limit=100))
    red = ids(app.runs.list(tag="red", limit=100))
    assert t1.id in red and n1.id in red and t2.id not in red
    assert t2.id in ids(app.runs.list(status="DELAYED", limit=100))
    assert t1.id not in ids(app.runs.list(status=["DELAYED", "EXECUTING"], limit=100))
    assert ids(app.runs.list(batch=batch.id)) == [h.id for h in reversed(batch.runs)]
    # item by item (a key of its own): a run the key finds is not the batch's
    keyed = note.batch_trigger([BatchItem("c", {"idempotency_key": "k1"}), "d"])
    cached = note.batch_trigger([BatchItem("e", {"idempotency_key": "k1"}), "f"])
    assert cached.runs[0].is_cached and cached.runs[0].id == keyed.runs[0].id
    assert ids(app.runs.list(batch=keyed.id)) == [h.id for h in reversed(keyed.runs)]
    assert ids(app.runs.list(batch=cached.id)) == [cached.runs[1].id]
    # SQL-level: a run triggered into an existing batch is listed under it
    with psycopg.connect(app.dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT run_id FROM skiplock.trigger('note', '\"g\"', %s::jsonb)",
            (json.dumps({"batch_id": batch.id}),),
        ).fetchone()
    assert row is not None
    assert ids(app.runs.list(batch=batch.id))[0] == row[0]
    combined = ids(app.runs.list(task="note", tag="blue", limit=100))
    assert n1.id in combined and t2.id not in combined
    created = app.runs.retrieve(t2).created_at
    window = ids(
        app.runs.list(
            created_from=created, created_to=created + timedelta(microseconds=1), limit=100
        )
    )
    assert t2.id in window and all(app.runs.retrieve(i).created_at == created for i in window)
    assert ids(app.runs.list(created_from=datetime.now(UTC) + timedelta(days=1))) == []


def test_list_pages_newest_first_and_iterates_every_page(app: Engine, tasks: Any) -> None:
    _, note = tasks
    batch = note.batch_trigger([str(i) for i in range(45)])
    page = app.runs.list(batch=batch.id, limit=20)
    assert len(page.data) == 20 and page.has_next_page()
    second = page.get_next_page()
    third = second.get_next_page()
    assert len(second.data) == 20 and len(third.data) == 5 and not third.has_next_page()
    seen = [r.id for r in page.data + second.data + third.data]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 45
    assert [r.id for r in app.runs.list(batch=batch.id, limit=7)] == seen
    with pytest.raises(InvalidArgumentError):
        third.get_next_page()

    async def walk() -> list[str]:
        first = await app.runs.list_async(batch=batch.id, limit=10)
        return [r.id async for r in first]

    assert asyncio.run(walk()) == seen
    # a cursor in an address (the dashboard's "next page" link) gives the same pages
    assert page.next_cursor == page.data[-1].id and third.next_cursor is None
    resumed = app.runs.list(batch=batch.id, limit=20, after=page.next_cursor)
    assert [r.id for r in resumed.data] == [r.id for r in second.data]


def test_children_waitpoints_and_workers_for_overviews(app: Engine, tasks: Any) -> None:
    from engine.db import queries as _queries

    _, note = tasks
    parent = note.trigger("parent", delay="1h")
    kids = [
        app.db.run(_queries.trigger("note", f'"kid {i}"', {"parent_id": parent.id})).id
        for i in range(3)
    ]
    note.trigger("unrelated")
    assert [r.id for r in app.runs.children(parent.id)] == kids
    assert [r.id for r in asyncio.run(app.runs.children_async(parent, limit=2))] == kids[:2]
    assert app.runs.children(kids[0]) == []
    assert app.waitpoints.for_run(parent.id) == []  # it never blocked
    assert {w.state for w in app.workers.list()} <= {"active", "lapsed", "lost", "stopped"}
    assert [w.id for w in app.workers.list()] == [
        w.id for w in asyncio.run(app.workers.list_async())
    ]
    with pytest.raises(InvalidArgumentError):
        app.runs.list(after="")


def test_list_bad_input(app: Engine, tasks: Any) -> None:
    with pytest.raises(UnknownTaskError, match="no-such-task"):
        app.runs.list(task=["ticket", "no-such-task"])
    with pytest.raises(InvalidArgumentError):
        app.runs.list(status="DONE")
    with pytest.raises(InvalidArgumentError):
        app.runs.list(limit=0)
    with pytest.raises(InvalidArgumentError):
        app.runs.list(limit=1001)


def test_cancel_cascades_to_descendants_and_spares_final_ones(app: Engine, tasks: Any) -> None:
    from engine.db import queries as _queries

    ticket, _ = tasks
    parent = ticket.trigger({"number": 1})

    def child_of(pid: str) -> str:
        return app.db.run(_queries.trigger("note", '"c"', {"parent_id": pid})).id

    child = child_of(parent.id)
    grandchild = child_of(child)
    done_child = child_of(parent.id)
    fetch(
        app.dsn,
        "UPDATE skiplock.runs SET status = 'COMPLETED' WHERE id = %s RETURNING 1",
        done_child,
    )
    rel = app.runs.retrieve(grandchild)
    assert (rel.parent_id, rel.root_id, rel.depth) == (child, parent.id, 2)
    assert app.runs.cancel(parent) is RunStatus.CANCELED
    assert app.runs.retrieve(child).status is RunStatus.CANCELED
    assert app.runs.retrieve(grandchild).status is RunStatus.CANCELED
    assert app.runs.retrieve(done_child).status is RunStatus.COMPLETED
    # canceling again, or a final run, changes nothing
    assert app.runs.cancel(parent) is RunStatus.CANCELED
    assert app.runs.cancel(done_child) is RunStatus.COMPLETED
    assert asyncio.run(app.runs.cancel_async(grandchild)) is RunStatus.CANCELED


def test_replay_makes_a_new_run_with_the_same_input(app: Engine, tasks: Any) -> None:
    ticket, _ = tasks
    original = ticket.trigger({"number": 9}, tags=["again"], metadata={"k": "v"}, version="dev")
    app.runs.cancel(original)
    new = app.runs.replay(original)
    assert new.id != original.id and new.status is RunStatus.QUEUED
    assert new.payload == {"number": 9} and new.tags == ["again"] and new.metadata == {"k": "v"}
    assert new.version is None  # not pinned: it takes the latest version when dequeued
    assert asyncio.run(app.runs.replay_async(original.id)).payload == {"number": 9}


def test_reschedule_moves_a_delayed_run_only(app: Engine, tasks: Any) -> None:
    ticket, _ = tasks
    delayed = ticket.trigger({"number": 3}, delay="1h")
    before = app.runs.retrieve(delayed).delayed_until
    moved = app.runs.reschedule(delayed, delay="3h")
    assert moved.status is RunStatus.DELAYED
    assert before is not None and moved.delayed_until is not None
    assert (
        timedelta(hours=1, minutes=59)
        < moved.delayed_until - before
        < timedelta(hours=2, minutes=1)
    )
    when = datetime.now(UTC) + timedelta(days=1)
    moved = asyncio.run(app.runs.reschedule_async(delayed, delay=when))
    assert moved.delayed_until == when.replace(microsecond=when.microsecond)
    queued = ticket.trigger({"number": 4})
    with pytest.raises(RunNotDelayedError, match="QUEUED"):
        app.runs.reschedule(queued, delay="1h")
    with pytest.raises(InvalidArgumentError):
        app.runs.reschedule(delayed, delay="-1h")
    assert app.runs.retrieve(queued).delayed_until is None


def test_deleting_runs_deletes_their_attempts(app: Engine, tasks: Any) -> None:
    """Retention by hand (DELETE FROM skiplock.runs ...) takes the runs' attempts along."""
    ticket, _ = tasks
    worker_id = deploy(app, version="v1")
    kept, gone = ticket.trigger(Ticket(number=1)), ticket.trigger(Ticket(number=2))
    started = fetch(
        app.dsn,
        "SELECT run_id FROM skiplock.begin_attempts(%s, 'v1', %s, 'QUEUED')",
        worker_id,
        [kept.id, gone.id],
    )
    assert sorted(r[0] for r in started) == sorted([kept.id, gone.id])

    fetch(app.dsn, "DELETE FROM skiplock.runs WHERE id = %s RETURNING id", gone.id)
    attempts = fetch(
        app.dsn, "SELECT run_id FROM skiplock.attempts WHERE run_id = ANY (%s)", [kept.id, gone.id]
    )
    assert attempts == [(kept.id,)]
    assert app.runs.retrieve(kept.id).attempts[0].status == "EXECUTING"
