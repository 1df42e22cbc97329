"""Realtime: run subscriptions over one LISTEN connection per process."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from helpers import fetch, wait_for

from engine import Engine, Run, RunStatus, TaskContext
from engine.api.realtime import Mailbox, RunFeed, Subscription, _announced
from engine.db.listener import Listener
from engine.errors import InvalidArgumentError, RunNotFoundError

LISTENER = f"skiplock-listener:{os.getpid()}"


class Collector:
    """Iterates a subscription on a thread, keeping every snapshot."""

    def __init__(
        self, it: Iterator[Run[Any, Any]], until: Callable[[Collector], bool] | None = None
    ) -> None:
        self.runs: list[Run[Any, Any]] = []
        self._until = until
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._it = it
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for run in self._it:
                self.runs.append(run)
                if self._until is not None and self._until(self):
                    break  # closes the subscription
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()  # what dropping the last reference to the generator does
        self.ended.set()

    def of(self, run_id: str) -> list[Run[Any, Any]]:
        return [r for r in self.runs if r.id == run_id]

    def completed(self, run_id: str) -> bool:
        return any(r.status is RunStatus.COMPLETED for r in self.of(run_id))


def listener_connections(dsn: str) -> int:
    return int(
        fetch(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", LISTENER)[
            0
        ][0]
    )


def test_a_subscription_sees_execution_each_progress_update_and_the_end(
    app: Engine, start_worker: Any
) -> None:
    gate = threading.Event()

    @app.task("progress")
    def progress(steps: int, ctx: TaskContext) -> str:
        gate.wait(10)
        for i in range(1, steps + 1):
            ctx.metadata.set("progress", i)
            time.sleep(0.4)  # longer than the 0.25 s metadata flush
        return "done"

    start_worker()
    h = progress.trigger(3)
    seen = Collector(app.runs.subscribe_to_run(h.id))
    wait_for(lambda: seen.runs)
    gate.set()
    assert seen.ended.wait(20), "the subscription did not end"
    assert seen.error is None
    statuses = [r.status for r in seen.runs]
    assert RunStatus.EXECUTING in statuses
    assert statuses[-1] is RunStatus.COMPLETED and seen.runs[-1].output == "done"
    progress_seen = [r.metadata.get("progress") for r in seen.runs if r.metadata.get("progress")]
    assert sorted(set(progress_seen)) == [1, 2, 3] and progress_seen == sorted(progress_seen)
    assert RunFeed.for_dsn(app.dsn).count() == 0  # unsubscribed at the end


def test_async_subscription_ends_at_the_final_status(app: Engine, start_worker: Any) -> None:
    @app.task("quick")
    async def quick(x: int, ctx: TaskContext) -> int:
        await asyncio.sleep(0.2)
        return x * 2

    async def follow(run_id: str) -> list[Run[Any, Any]]:
        return [r async for r in app.runs.subscribe_to_run_async(run_id)]

    h = quick.trigger(21)
    start_worker()
    runs = asyncio.run(asyncio.wait_for(follow(h.id), 20))
    assert runs[-1].status is RunStatus.COMPLETED, runs[-1].error
    assert runs[-1].output == 42
    assert all(not r.is_completed for r in runs[:-1])


def test_a_tag_subscription_sees_runs_created_after_it_started(
    app: Engine, start_worker: Any
) -> None:
    @app.task("tagged")
    def tagged(x: int, ctx: TaskContext) -> int:
        return x

    before = tagged.trigger(0, tags=["rt-tag"])
    later: list[str] = []
    seen = Collector(
        app.runs.subscribe_to_runs_with_tag("rt-tag"),
        until=lambda c: len(later) == 3 and all(c.completed(i) for i in [before.id, *later]),
    )
    wait_for(lambda: seen.of(before.id))  # the existing run comes first
    other = tagged.trigger(9, tags=["other"]).id
    later.extend(tagged.trigger(i, tags=["rt-tag", f"n{i}"]).id for i in range(1, 4))
    start_worker()
    assert seen.ended.wait(20), "not every tagged run was seen completed"
    assert not seen.of(other) and seen.error is None
    assert RunFeed.for_dsn(app.dsn).count() == 0


def test_a_batch_subscription_sees_every_run_of_the_batch(app: Engine, start_worker: Any) -> None:
    @app.task("batched")
    def batched(x: int, ctx: TaskContext) -> int:
        return x

    batch = batched.batch_trigger([1, 2, 3])
    seen = Collector(
        app.runs.subscribe_to_batch(batch.id),
        until=lambda c: all(c.completed(h.id) for h in batch.runs),
    )
    start_worker()
    assert seen.ended.wait(20), "not every run of the batch was seen completed"
    assert {r.batch_id for r in seen.runs} == {batch.id}


def test_a_subscription_survives_its_listen_connection_being_terminated(app: Engine) -> None:
    token = app.waitpoints.create_token()

    @app.task("waits-for-token")
    def waits(_: None, ctx: TaskContext) -> None:
        pass

    h = waits.trigger(None, delay="1h")
    seen = Collector(app.runs.subscribe_to_run(h.id))
    wait_for(lambda: seen.runs)
    listener = Listener.for_dsn(app.dsn)
    connects = listener.connects
    wait_for(lambda: listener_connections(app.dsn) == 1)
    # kill the LISTEN backend and change the run in the same transaction: the
    # notification has nobody to reach, so only the catch-up after reconnecting sees it
    with psycopg.connect(app.dsn) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (LISTENER,),
        )
        conn.execute("SELECT skiplock.cancel_run(%s)", (h.id,))
    assert seen.ended.wait(20), "the final status was missed"
    assert seen.runs[-1].status is RunStatus.CANCELED
    assert listener.connects > connects
    del token


def test_a_thousand_subscriptions_share_one_connection(app: Engine) -> None:
    @app.task("many")
    def many(x: int, ctx: TaskContext) -> int:
        return x

    ids = [h.id for h in many.batch_trigger(list(range(1000))).runs]

    async def follow_all() -> list[list[Run[Any, Any]]]:
        async def follow(run_id: str) -> list[Run[Any, Any]]:
            return [r async for r in app.runs.subscribe_to_run_async(run_id)]

        tasks = [asyncio.create_task(follow(i)) for i in ids]
        await asyncio.to_thread(wait_for, lambda: RunFeed.for_dsn(app.dsn).count() == 1000)
        assert listener_connections(app.dsn) == 1
        await asyncio.to_thread(
            fetch, app.dsn, "SELECT count(skiplock.cancel_run(id)) FROM skiplock.runs"
        )
        return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    results = asyncio.run(follow_all())
    assert all(r[-1].status is RunStatus.CANCELED for r in results)
    assert RunFeed.for_dsn(app.dsn).count() == 0


def test_worker_and_subscriptions_share_the_listen_connection(
    app: Engine, start_worker: Any
) -> None:
    @app.task("shared")
    def shared(x: int, ctx: TaskContext) -> int:
        return x

    start_worker()
    h = shared.trigger(1, delay="1h")
    seen = Collector(app.runs.subscribe_to_run(h.id))
    wait_for(lambda: seen.runs)
    assert listener_connections(app.dsn) == 1
    app.runs.reschedule(h.id, delay="0s")
    assert seen.ended.wait(20) and seen.runs[-1].status is RunStatus.COMPLETED


def test_only_watched_runs_are_announced(app: Engine, dsn: str) -> None:
    @app.task("announced")
    def announced_task(x: int, ctx: TaskContext) -> int:
        return x

    watched, other = announced_task.trigger(1).id, announced_task.trigger(2).id
    tagged = announced_task.trigger(3, tags=["loud"]).id
    with psycopg.connect(dsn, autocommit=True) as listen, psycopg.connect(dsn) as writer:
        listen.execute("LISTEN skiplock_runs")

        def announced(ids: list[str]) -> list[str]:
            writer.execute("SELECT skiplock.notify_runs(%s)", (ids,))
            writer.commit()
            return [n.payload for n in listen.notifies(timeout=0.3)]

        assert announced([watched]) == []  # nobody registered
        listen.execute("SELECT skiplock.subscribe()")
        assert announced([watched]) == []  # registered, watching nothing
        listen.execute("SELECT skiplock.watch(%s, %s)", (["run", "tag"], [watched, "loud"]))
        [payload] = announced([watched, other, tagged])
        assert json.loads(payload) == {"run": [watched], "tag": {"loud": [tagged]}}
        listen.execute("SELECT skiplock.watch('{all}', '{*}')")
        many = [f"run_{i:032d}" for i in range(450)]
        payloads = [json.loads(p) for p in announced(many)]
        assert [len(p["ids"]) for p in payloads] == [200, 200, 50]
        assert [i for p in payloads for i in p["ids"]] == many
        listen.execute("SELECT skiplock.unwatch('{all}', '{*}')")
        assert announced([other]) == []
        listen.execute("SELECT skiplock.unsubscribe()")
        assert announced([watched]) == []
        assert fetch(dsn, "SELECT count(*) FROM skiplock.subscriptions") == [(0,)]


def test_announcements_are_grouped_by_key_and_cut_below_8000_bytes(app: Engine, dsn: str) -> None:
    @app.task("grouped")
    def grouped_task(x: int, ctx: TaskContext) -> int:
        return x

    # the longest tags, escaped in JSON: 40 groups over several notifications
    tags = [f"{k:03d}" + '"' * 125 for k in range(40)]
    ids = [grouped_task.trigger(k, tags=[tags[k % 40]]).id for k in range(400)]
    batch = grouped_task.batch_trigger([1, 2])
    batch_ids = [r.id for r in batch.runs]
    with psycopg.connect(dsn, autocommit=True) as listen, psycopg.connect(dsn) as writer:
        listen.execute("LISTEN skiplock_runs")
        listen.execute("SELECT skiplock.subscribe()")
        keys = [("tag", t) for t in tags] + [("run", ids[0]), ("batch", batch.id)]
        listen.execute(
            "SELECT skiplock.watch(%s, %s)", ([k for k, _ in keys], [v for _, v in keys])
        )
        writer.execute("SELECT skiplock.notify_runs(%s)", ([*ids, *batch_ids],))
        writer.commit()
        payloads = [n.payload for n in listen.notifies(timeout=0.5)]
        listen.execute("SELECT skiplock.unsubscribe()")
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    groups = [json.loads(p) for p in payloads]
    by_tag: dict[str, set[str]] = {}
    for g in groups:
        for tag, tag_ids in g.get("tag", {}).items():
            by_tag.setdefault(tag, set()).update(tag_ids)
    assert by_tag == {t: set(ids[k::40]) for k, t in enumerate(tags)}
    assert all("ids" not in g for g in groups)  # nobody watches all runs
    assert [i for g in groups for i in g.get("run", ())] == [ids[0]]
    assert [g["batch"] for g in groups if "batch" in g] == [{batch.id: sorted(batch_ids)}]


def test_a_feed_skips_notifications_of_keys_it_does_not_watch(app: Engine, dsn: str) -> None:
    @app.task("skipped")
    def skipped_task(x: int, ctx: TaskContext) -> int:
        return x

    mine, theirs = skipped_task.trigger(1, tags=["mine"]), skipped_task.trigger(2, tags=["theirs"])
    with psycopg.connect(dsn, autocommit=True) as listen, psycopg.connect(dsn) as writer:
        listen.execute("LISTEN skiplock_runs")
        listen.execute("SELECT skiplock.subscribe()")
        listen.execute("SELECT skiplock.watch('{tag,tag}', '{mine,theirs}')")
        writer.execute("SELECT skiplock.notify_runs(%s)", ([theirs.id],))
        writer.commit()
        [payload] = [n.payload for n in listen.notifies(timeout=0.5)]
        listen.execute("SELECT skiplock.unsubscribe()")
    mailbox = Mailbox(lambda: None)
    sub = Subscription("tag", "mine", mailbox, None)
    watching_mine: dict[Any, dict[str, set[Subscription]]] = {
        "run": {},
        "tag": {"mine": {sub}},
        "batch": {},
        "all": {},
    }
    assert _announced([payload], watching_mine) == set()  # the feed makes no query
    watching_theirs = {**watching_mine, "tag": {"theirs": {sub}}}
    assert _announced([payload], watching_theirs) == {theirs.id}
    watching_all = {**watching_mine, "all": {"*": {sub}}}
    assert _announced([payload], watching_all) == {theirs.id}
    assert _announced([f"{mine.id},{theirs.id}"], watching_mine) == {mine.id, theirs.id}


def test_bad_subscriptions_raise_typed_errors(app: Engine) -> None:
    with pytest.raises(RunNotFoundError):
        next(app.runs.subscribe_to_run("run_missing"))
    with pytest.raises(InvalidArgumentError):
        app.runs.subscribe_to_runs_with_tag("")
    with pytest.raises(InvalidArgumentError):
        app.runs.subscribe_to_batch(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        app.runs.subscribe_to_run(42)  # type: ignore[arg-type]


def test_a_change_that_missed_the_registration_is_caught_up(app: Engine) -> None:
    """A transaction that looked for subscribers before the first one registered sends no
    NOTIFY; the subscription re-reads once every such transaction has ended."""

    @app.task("missed")
    def missed(_: None, ctx: TaskContext) -> None:
        pass

    h = missed.trigger(None, delay="1h")
    assert fetch(app.dsn, "SELECT count(*) FROM skiplock.subscribers") == [(0,)]
    with psycopg.connect(app.dsn) as writer:
        writer.execute(
            "UPDATE skiplock.runs SET metadata = '{\"late\": true}' WHERE id = %s", (h.id,)
        )
        writer.execute("SELECT skiplock.notify_runs(ARRAY[%s])", (h.id,))  # nobody registered
        seen = Collector(
            app.runs.subscribe_to_run(h.id), until=lambda c: c.runs[-1].metadata == {"late": True}
        )
        wait_for(lambda: seen.runs)
        wait_for(lambda: fetch(app.dsn, "SELECT count(*) FROM skiplock.subscribers") == [(1,)])
        assert seen.runs[0].metadata == {}
        time.sleep(0.3)
        assert not seen.ended.is_set()  # the writer has not committed yet
    # committed now, with no notification ever sent for it
    assert seen.ended.wait(10), "the change was never seen"


def test_a_mailbox_wakes_its_reader_when_it_turns_non_empty() -> None:
    """The reader takes until empty before it waits: one wake per empty -> non-empty."""
    wakes: list[int] = []
    box = Mailbox(lambda: wakes.append(1))
    box.put("a", {"id": "a"})
    box.put("b", {"id": "b"})
    box.put("a", {"id": "a", "v": 2})  # a waiting run keeps its place, latest state
    assert len(wakes) == 1
    assert box.take() == {"id": "a", "v": 2}
    assert box.take() == {"id": "b"}
    assert box.take() is None
    box.put("c", {"id": "c"})
    assert len(wakes) == 2


def test_ended_subscriptions_are_unwatched_together(app: Engine, dsn: str) -> None:
    """Keys whose last subscription ended are unwatched in one statement; a key subscribed
    to again before that runs stays watched, and its subscription is served."""

    @app.task("unwatched")
    def unwatched(x: int, ctx: TaskContext) -> int:
        return x

    handles = [unwatched.trigger(i, delay="1h") for i in range(50)]
    its = [app.runs.subscribe_to_run(h.id) for h in handles]
    for it in its:
        next(it)  # subscribed: its first snapshot
    wait_for(lambda: fetch(dsn, "SELECT count(*) FROM skiplock.subscriptions") == [(50,)])
    held, release = threading.Event(), threading.Event()

    def hold(_conn: Any) -> None:
        held.set()
        release.wait(20)

    Listener.for_dsn(dsn).call(hold)  # nothing else runs on the listener thread meanwhile
    assert held.wait(10)
    for it in its[:-1]:
        it.close()
    again = Collector(app.runs.subscribe_to_run(handles[0].id))
    release.set()
    wait_for(
        lambda: (
            fetch(dsn, "SELECT kind, key FROM skiplock.subscriptions ORDER BY key")
            == sorted([("run", handles[0].id), ("run", handles[-1].id)], key=lambda r: r[1])
        )
    )
    app.runs.cancel(handles[0].id)
    assert again.ended.wait(20) and again.runs[-1].status is RunStatus.CANCELED
    its[-1].close()
    wait_for(lambda: fetch(dsn, "SELECT count(*) FROM skiplock.subscriptions") == [(0,)])


def test_a_large_group_is_cut_without_repeating_a_key_in_a_payload(app: Engine, dsn: str) -> None:
    @app.task("crowd")
    def crowd_task(x: int, ctx: TaskContext) -> int:
        return x

    ids = [h.id for h in crowd_task.batch_trigger([1] * 450, tags=["many"]).runs]

    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"a key twice in one object: {keys}"
        return dict(pairs)

    with psycopg.connect(dsn, autocommit=True) as listen, psycopg.connect(dsn) as writer:
        listen.execute("LISTEN skiplock_runs")
        listen.execute("SELECT skiplock.subscribe()")
        listen.execute("SELECT skiplock.watch(%s, %s)", (["tag"] + ["run"] * 450, ["many", *ids]))
        writer.execute("SELECT skiplock.notify_runs(%s)", ([*ids, *ids[:10]],))
        writer.commit()
        payloads = [n.payload for n in listen.notifies(timeout=0.5)]
        listen.execute("SELECT skiplock.unsubscribe()")
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    groups = [json.loads(p, object_pairs_hook=no_repeats) for p in payloads]
    runs = [i for g in groups for i in g.get("run", ())]
    tagged = [i for g in groups for i in g.get("tag", {}).get("many", ())]
    assert sorted(runs) == sorted(tagged) == sorted(ids)  # each once, duplicates folded
