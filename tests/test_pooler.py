"""Behind a connection pooler: PgBouncer 1.18 in transaction mode in front of the test
server (tests/faults/pooler.py), and the core, queue, waitpoint, realtime and cancel paths run
in the three connection modes:

* direct: `Engine(dsn)`, no pooler (LISTEN on the same DSN);
* listen: `Engine(pooled_dsn, listen_dsn=dsn)`: every query through PgBouncer, LISTEN on
  a direct session;
* poll: `Engine(pooled_dsn, pooled=True)`: poll-only, nothing LISTENs.

Workers run with the suite's quick settings (poll 0.2 s, heartbeat 0.5 s): the latency
bounds below follow from those."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from faults.pooler import PgBouncer
from helpers import fetch, wait_for

from engine import Engine, Queue, Retry, RunStatus, TaskContext, Worker, wait
from engine.api.realtime import RunFeed
from engine.errors import RunNotFoundError, UnknownTaskWarning

MODES = ["direct", "listen", "poll"]


@pytest.fixture(scope="module")
def pgbouncer(server_dsn: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(server_dsn).start()
    yield bouncer
    bouncer.close()


def _engine(mode: str, dsn: str, bouncer: PgBouncer) -> Engine:
    if mode == "direct":
        return Engine(dsn)
    if mode == "listen":
        return Engine(bouncer.dsn_for(dsn), listen_dsn=dsn)
    return Engine(bouncer.dsn_for(dsn), pooled=True)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def papp(mode: str, dsn: str, pgbouncer: PgBouncer) -> Iterator[Engine]:
    engine = _engine(mode, dsn, pgbouncer)
    yield engine
    engine.close()


@pytest.fixture
def run_worker(papp: Engine) -> Iterator[Callable[..., Worker]]:
    from helpers import RunningWorker

    running: list[RunningWorker] = []

    def start(**settings: Any) -> Worker:
        settings.setdefault("poll_interval", 0.2)
        settings.setdefault("heartbeat_interval", 0.5)
        settings.setdefault("tick_interval", 0.2)
        rw = RunningWorker(papp.worker(**settings))
        running.append(rw)
        worker = rw.__enter__()
        wait_for(lambda: fetch(papp.listen_dsn or papp.dsn, _REGISTERED, worker.id))
        return worker

    yield start
    for rw in running:
        rw.stop()


_REGISTERED = "SELECT 1 FROM skiplock.workers WHERE id = %s AND stopped_at IS NULL"


def test_the_modes_are_what_they_say(papp: Engine, mode: str, dsn: str) -> None:
    assert papp.pooled is (mode != "direct")
    assert papp.poll_only is (mode == "poll")
    assert papp.listen_dsn == (None if mode == "poll" else dsn)
    if papp.pooled:  # nothing is prepared on a pooled DSN's connections
        with papp.db.pool.connection() as conn:
            assert conn.prepare_threshold is None


def test_trigger_claim_complete(papp: Engine, mode: str, run_worker: Any) -> None:
    @papp.task(f"double-{mode}")
    async def double(x: int, ctx: TaskContext) -> int:
        return x * 2

    run_worker(concurrency=5)
    handles = [double.trigger(i) for i in range(30)]
    outputs = [papp.runs.poll(h, timeout=30).output for h in handles]
    assert outputs == [i * 2 for i in range(30)]
    assert {r.status for r in papp.runs.list(task=f"double-{mode}", limit=100)} == {
        RunStatus.COMPLETED
    }


def test_a_limited_queue_holds_its_limit(papp: Engine, mode: str, run_worker: Any) -> None:
    lock, now, peak = threading.Lock(), [0], [0]

    @papp.task(f"limited-{mode}", queue=Queue(f"two-{mode}", concurrency_limit=2))
    def limited(x: int, ctx: TaskContext) -> int:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.1)
        with lock:
            now[0] -= 1
        return x

    run_worker(concurrency=6)
    run_worker(concurrency=6)
    handles = [limited.trigger(i) for i in range(12)]
    assert [papp.runs.poll(h, timeout=30).output for h in handles] == list(range(12))
    assert peak[0] == 2


def test_waits_tokens_and_a_child_run(papp: Engine, mode: str, run_worker: Any) -> None:
    @papp.task(f"child-{mode}")
    async def child(n: int, ctx: TaskContext) -> int:
        return n * 2

    @papp.task(f"parent-{mode}")
    async def parent(n: int, ctx: TaskContext) -> dict[str, Any]:
        await wait.for_(seconds=0.3)
        token = await wait.create_token(timeout="1m")
        ctx.metadata.set("token", token.id)
        approval = await wait.for_token(token)
        doubled = await child.trigger_and_wait(n)
        return {"approval": approval.output, "child": doubled.unwrap()}

    run_worker()
    h = parent.trigger(21)
    token = wait_for(lambda: papp.runs.retrieve(h).metadata.get("token"), timeout=20)
    wait_for(lambda: papp.runs.retrieve(h).status is RunStatus.WAITING)
    papp.waitpoints.complete_token(token, {"ok": True})
    run = papp.runs.poll(h, timeout=30)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {"approval": {"ok": True}, "child": 42}


def test_subscriptions_follow_runs_to_the_end(papp: Engine, mode: str, run_worker: Any) -> None:
    gate = threading.Event()

    @papp.task(f"progress-{mode}")
    def progress(steps: int, ctx: TaskContext) -> str:
        gate.wait(10)
        for i in range(1, steps + 1):
            ctx.metadata.set("progress", i)
            time.sleep(0.4)  # longer than the metadata flush and the subscription poll
        return "done"

    run_worker()
    tag = f"pool-{mode}-{time.monotonic_ns()}"
    h = progress.trigger(2, tags=[tag])
    by_run: list[Any] = []
    by_tag: list[Any] = []

    def follow(it: Iterator[Any], into: list[Any], until: Callable[[], bool]) -> None:
        for run in it:
            into.append(run)
            if until():
                break

    threads = [
        threading.Thread(
            target=follow, args=(papp.runs.subscribe_to_run(h), by_run, lambda: False)
        ),
        threading.Thread(
            target=follow,
            args=(
                papp.runs.subscribe_to_runs_with_tag(tag),
                by_tag,
                lambda: any(r.is_completed for r in by_tag),
            ),
        ),
    ]
    for t in threads:
        t.start()
    wait_for(lambda: by_run and by_tag)
    gate.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a subscription did not end"
    statuses = [r.status for r in by_run]
    assert RunStatus.EXECUTING in statuses
    assert statuses[-1] is RunStatus.COMPLETED and by_run[-1].output == "done"
    assert [r.metadata.get("progress") for r in by_run if r.metadata.get("progress")][-1] == 2
    assert by_tag[-1].id == h.id and by_tag[-1].status is RunStatus.COMPLETED
    assert RunFeed.for_listener(papp._conns.listener()).count() == 0
    if mode == "poll":  # nothing registered: the rows are keyed by server session
        assert fetch(papp.dsn, "SELECT count(*) FROM skiplock.subscriptions")[0][0] == 0


def test_cancel_stops_a_running_attempt(papp: Engine, mode: str, run_worker: Any) -> None:
    started, stopped = threading.Event(), threading.Event()

    @papp.task(f"forever-{mode}")
    async def forever(x: int, ctx: TaskContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise

    run_worker(heartbeat_interval=5.0)
    h = forever.trigger(1)
    assert started.wait(20)
    asked = time.monotonic()
    assert papp.runs.cancel(h) is RunStatus.CANCELED
    assert stopped.wait(10), "the attempt was not stopped"
    took = time.monotonic() - asked
    # LISTEN: at once; poll-only: at the next heartbeat, every poll interval (0.2 s here)
    # while attempts run
    assert took < (0.8 if mode == "poll" else 0.5), took
    assert papp.runs.retrieve(h).status is RunStatus.CANCELED


def test_pickup_latency(papp: Engine, mode: str, run_worker: Any) -> None:
    """An idle worker (poll interval 0.5 s) picks up a run: at once on a NOTIFY; in
    poll-only mode within the poll interval."""
    started: dict[str, float] = {}

    @papp.task(f"ping-{mode}")
    async def ping(x: int, ctx: TaskContext) -> None:
        started[ctx.run_id] = time.monotonic()

    run_worker(poll_interval=0.5)
    waits = []
    for i in range(5):
        time.sleep(0.6)  # idle long enough to back off to the poll interval
        at = time.monotonic()
        h = ping.trigger(i)
        wait_for(lambda h=h: h.id in started, timeout=10, interval=0.01)
        waits.append(started[h.id] - at)
    print(f"{mode}: pickup {statistics.median(waits) * 1000:.0f} ms median, max {max(waits):.2f}s")
    assert max(waits) < (0.5 + 0.3 if mode == "poll" else 0.3), waits


# -- detection, settings, prepared statements -------------------------------------------


def test_a_pooler_is_detected_and_the_setting_wins(
    dsn: str, pgbouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled = pgbouncer.dsn_for(dsn)
    with Engine(dsn) as direct:
        assert not direct.pooled and direct.listen_dsn == dsn
    with Engine(pooled) as detected:  # an idle PgBouncer hands one session to two clients
        assert detected.pooled and detected.poll_only
    with Engine(pooled, pooled=False) as told:
        assert not told.pooled and told.listen_dsn == pooled
    monkeypatch.setenv("SKIPLOCK_POOLED", "1")
    monkeypatch.setenv("SKIPLOCK_LISTEN_URL", dsn)
    with Engine(pooled) as from_env:
        assert from_env.pooled and not from_env.poll_only and from_env.listen_dsn == dsn
    monkeypatch.setenv("SKIPLOCK_POOLED", "maybe")
    with pytest.raises(Exception, match="SKIPLOCK_POOLED must be 1 or 0"):
        Engine(pooled)


def test_no_prepared_statement_trips_over_another_session(dsn: str, pgbouncer: PgBouncer) -> None:
    """psycopg prepares a statement run five times on a connection; through PgBouncer 1.18
    the next run lands on another server session, where it does not exist. A second
    client holding a transaction open in between makes the sessions alternate."""

    def retrieve_often(app: Engine) -> None:
        with pytest.warns(UnknownTaskWarning):
            h = app.trigger("anything", {}, tags=["prep"])
        with psycopg.connect(pgbouncer.dsn_for(dsn), autocommit=True) as other:
            for _ in range(12):
                with other.transaction():
                    other.execute("SELECT 1")
                    app.runs.retrieve(h)
                app.runs.retrieve(h)

    with Engine(pgbouncer.dsn_for(dsn), pooled=True) as pooled:
        retrieve_often(pooled)
    # what it guards against
    with (
        Engine(pgbouncer.dsn_for(dsn), pooled=False) as unaware,
        pytest.raises(psycopg.Error, match="prepared statement"),
    ):
        retrieve_often(unaware)


def test_a_read_dsn_serves_list_retrieve_and_children_only(
    dsn: str, server_dsn: str, template_db: str
) -> None:
    """The "replica" is another database, empty: what is read there finds nothing."""
    name = f"replica_{time.monotonic_ns()}"
    with psycopg.connect(server_dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'.encode())
    replica = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    with Engine(dsn, read_dsn=replica) as app:
        assert app.read_dsn == replica
        with pytest.warns(UnknownTaskWarning):
            h = app.trigger("elsewhere", {"n": 1})
        with pytest.raises(RunNotFoundError):
            app.runs.retrieve(h)  # on the replica
        assert app.runs.list(task=None).data == []
        assert app.runs.children(h) == []
        assert app.runs.cancel(h) is RunStatus.CANCELED  # on the primary
        assert app.runs.poll(h, timeout=5).status is RunStatus.CANCELED  # never the replica


def test_only_listening_workers_are_sent_wake_ups(
    papp: Engine, mode: str, dsn: str, run_worker: Any
) -> None:
    """A NOTIFY costs every committing sender a cluster-wide lock: with only polling
    workers (poll-only), a trigger sends none."""

    @papp.task(f"quiet-{mode}")
    async def quiet(x: int, ctx: TaskContext) -> None:
        return None

    run_worker()
    with psycopg.connect(dsn, autocommit=True) as listening:
        listening.execute("LISTEN skiplock_wake")
        h = quiet.trigger(1)
        papp.runs.poll(h, timeout=20)
        heard = list(listening.notifies(timeout=0.3, stop_after=1))
    assert bool(heard) is (mode != "poll")


def test_the_changes_feed_sees_new_runs_to_the_end(
    papp: Engine, mode: str, run_worker: Any
) -> None:
    """`subscribe_to_changes_async` (the dashboard's live list): in poll-only mode, the
    newest runs and those seen unfinished, re-read every 0.25 s."""

    @papp.task(f"listed-{mode}")
    async def listed(x: int, ctx: TaskContext) -> int:
        await asyncio.sleep(0.3)
        return x

    async def follow() -> dict[str, RunStatus]:
        seen: dict[str, RunStatus] = {}
        feed = papp.runs.subscribe_to_changes_async()

        async def make() -> list[Any]:
            await asyncio.sleep(0.5)  # the feed is listening (or polling) by then
            return await asyncio.to_thread(lambda: [listed.trigger(i) for i in range(3)])

        maker = asyncio.create_task(make())
        try:
            async with asyncio.timeout(30):
                async for run in feed:
                    seen[run.id] = run.status
                    handles = maker.result() if maker.done() else []
                    if handles and all(seen.get(h.id) is RunStatus.COMPLETED for h in handles):
                        return {h.id: seen[h.id] for h in handles}
        finally:
            await feed.aclose()  # type: ignore[attr-defined]
        raise AssertionError("the feed ended")

    run_worker()
    ends = asyncio.run(follow())
    assert set(ends.values()) == {RunStatus.COMPLETED}


def test_an_alert_is_delivered(papp: Engine, mode: str, run_worker: Any) -> None:
    """Alert delivery is woken by NOTIFY where the worker LISTENs; poll-only, by its poll
    interval (0.2 s here)."""
    got: list[Any] = []
    papp.alerts.poll_interval = 0.2

    @papp.on_run_failed
    def page(run: Any, alert: Any) -> None:
        got.append((run.id, run.status))

    @papp.task(f"fails-{mode}", retry=Retry(max_attempts=1))
    async def fails(x: int, ctx: TaskContext) -> None:
        raise RuntimeError("on purpose")

    run_worker()
    h = fails.trigger(1)
    wait_for(lambda: got, timeout=20)
    assert got == [(h.id, RunStatus.FAILED)]
