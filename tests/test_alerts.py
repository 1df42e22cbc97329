"""Alerts: `app.on_run_failed(callback)` and `app.on_run_failed(webhook=...)`, delivered
at least once from the database's outbox (skiplock.alerts) by any worker of an engine
with alerts, not by the attempt that failed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import SKIPLOCK, TESTS, RunningWorker, fetch, wait_for

from engine import Alert, Engine, Retry, Run, RunStatus, TaskContext, Worker
from engine.errors import InvalidArgumentError

Conn = psycopg.Connection[Any]


def outbox(dsn: str, *run_ids: str) -> list[dict[str, Any]]:
    """The alerts of these runs, oldest first."""
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        return c.execute(
            "SELECT id, run_id, status::text, state, attempts, claimed_by, delivered_to,"
            " last_error FROM skiplock.alerts WHERE run_id = ANY (%s) ORDER BY id",
            (list(run_ids),),
        ).fetchall()


def delivered(dsn: str, run_id: str) -> list[dict[str, Any]]:
    return [a for a in outbox(dsn, run_id) if a["state"] == "DELIVERED"]


def fail_for_good(app: Engine, task_id: str = "alerts-boom") -> None:
    @app.task(task_id, retry=Retry(max_attempts=1))
    def boom(payload: Any, ctx: TaskContext) -> None:
        raise ValueError(f"nope {payload}")


def fast(app: Engine) -> Engine:
    app.alerts.poll_interval = 0.2
    app.alerts.retry_delay = 0.1
    return app


# -- the API ---------------------------------------------------------------------------------


def test_on_run_failed_takes_a_callback_as_a_decorator_or_a_webhook_url() -> None:
    app = Engine("postgresql://nobody@localhost/none")

    @app.on_run_failed
    def page(run: Run[Any, Any]) -> None: ...

    assert app.on_run_failed(webhook="https://example.com/hook") is None
    assert app.alerts.callbacks == [page]
    assert [w.url for w in app.alerts.webhooks] == ["https://example.com/hook"]
    assert [k for k, _ in app.alerts.sinks()] == [
        "callback:test_alerts.test_on_run_failed_takes_a_callback_as_a_decorator_or_a_webhook_url"
        ".<locals>.page",
        "webhook:https://example.com/hook",
    ]
    with pytest.raises(InvalidArgumentError, match="callback or a webhook"):
        app.on_run_failed()  # type: ignore[call-overload]
    with pytest.raises(InvalidArgumentError, match="callback or a webhook"):
        app.on_run_failed(page, webhook="https://example.com/hook")  # type: ignore[call-overload]
    with pytest.raises(InvalidArgumentError, match="http"):
        app.on_run_failed(webhook="ftp://example.com/hook")
    with pytest.raises(InvalidArgumentError, match="callable"):
        app.on_run_failed(42)  # type: ignore[type-var]
    assert not Engine("postgresql://nobody@localhost/none").alerts.enabled


# -- the outbox, in SQL ----------------------------------------------------------------------


def _register(conn: Conn, worker: str, task: str) -> None:
    entry = {"id": task, "queue": task, "max_attempts": 3}
    conn.execute(
        "SELECT skiplock.register_worker(%s, 'v1', 'host', 1, NULL, 10, %s::jsonb)",
        (worker, json.dumps([entry])),
    )


def _trigger(conn: Conn, task: str, options: dict[str, Any] | None = None) -> str:
    row = conn.execute(
        "SELECT run_id FROM skiplock.trigger(%s, '{}', %s::jsonb)",
        (task, json.dumps(options or {})),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _start(conn: Conn, worker: str, task: str, count: int) -> list[str]:
    """Claim `count` runs of `task` for `worker`: their attempt ids, in queue order."""
    rows = conn.execute(
        "SELECT attempt_id FROM skiplock.claim(%s, 'v1', ARRAY[%s], NULL, %s)",
        (worker, task, count),
    ).fetchall()
    assert len(rows) == count
    return [r[0] for r in rows]


def _fake_now(conn: Conn, when: datetime | None) -> None:
    conn.execute(
        "SELECT set_config('skiplock.fake_now', %s, false)", (when.isoformat() if when else "",)
    )


def test_the_outbox_gets_a_row_for_each_final_failure_whatever_fails_the_run(conn: Conn) -> None:
    """FAILED (no retry left), TIMED_OUT and SYSTEM_FAILURE from fail_attempt, CRASHED from
    tick's crash of a lost worker: a row each, in the same transaction. A retry (QUEUED),
    a success, a cancel and an expiry: none."""
    _register(conn, "alerts-driver", "alerts-sql")
    _register(conn, "alerts-lost", "alerts-sql-lost")
    failed, retried, timed_out, system, ok = (_trigger(conn, "alerts-sql") for _ in range(5))
    canceled = _trigger(conn, "alerts-sql")
    crashed = _trigger(conn, "alerts-sql-lost")
    attempts = _start(conn, "alerts-driver", "alerts-sql", 5)
    a_failed, a_retried, a_timed_out, a_system, a_ok = attempts
    _start(conn, "alerts-lost", "alerts-sql-lost", 1)  # `crashed`, left running
    expired = _trigger(conn, "alerts-sql-lost", {"ttl": 5})
    error = json.dumps({"type": "Boom", "message": "boom"})

    def fail(attempt: str, status: str, delay: float | None = None) -> str:
        row = conn.execute(
            "SELECT skiplock.fail_attempt(%s, %s::jsonb, %s::skiplock.run_status, %s)",
            (attempt, error, status, delay),
        ).fetchone()
        assert row is not None
        return str(row[0])

    assert fail(a_failed, "FAILED") == "FAILED"
    assert fail(a_retried, "FAILED", 1.0) == "QUEUED"
    assert fail(a_timed_out, "TIMED_OUT") == "TIMED_OUT"
    assert fail(a_system, "SYSTEM_FAILURE") == "SYSTEM_FAILURE"
    conn.execute(
        "SELECT skiplock.complete_attempts(%s::jsonb)",
        (json.dumps([{"attempt_id": a_ok, "output": 1}]),),
    )
    conn.execute("SELECT skiplock.cancel_run(%s)", (canceled,))
    # both workers' leases lapse: tick crashes what the lost one was running, and
    # expires the run whose TTL passed before it started
    _fake_now(conn, datetime.now(UTC) + timedelta(seconds=60))
    conn.execute("SELECT skiplock.tick()")
    _fake_now(conn, None)

    ids = [failed, retried, timed_out, system, ok, canceled, expired, crashed]
    statuses = dict(
        conn.execute(
            "SELECT id, status::text FROM skiplock.runs WHERE id = ANY (%s)", (ids,)
        ).fetchall()
    )
    assert statuses == {
        failed: "FAILED",
        retried: "QUEUED",
        timed_out: "TIMED_OUT",
        system: "SYSTEM_FAILURE",
        ok: "COMPLETED",
        canceled: "CANCELED",
        expired: "EXPIRED",
        crashed: "CRASHED",
    }
    rows = outbox(conn.info.dsn, *statuses)
    assert {r["run_id"]: r["status"] for r in rows} == {
        failed: "FAILED",
        timed_out: "TIMED_OUT",
        system: "SYSTEM_FAILURE",
        crashed: "CRASHED",
    }
    assert {(r["state"], r["attempts"]) for r in rows} == {("PENDING", 0)}
    assert all(r["id"].startswith("alert_") for r in rows)

    # an alert goes with its run (retention, `skiplock runs purge`)
    conn.execute("SELECT skiplock.delete_runs(%s)", ([failed, timed_out, system, crashed],))
    assert outbox(conn.info.dsn, *statuses) == []


def test_a_claim_holds_an_alert_for_its_lease_then_another_takes_it_again(conn: Conn) -> None:
    """At least once, in SQL: a claimer that never records leaves the alert to the next
    claim after the lease, with the delivery counted up; a retry waits out its delay and
    keeps the sinks reached; a late record of the lost claimer does not push back the new
    claim; past max_age a pending alert is abandoned."""
    _register(conn, "alerts-claimer", "alerts-lease")
    run, old = _trigger(conn, "alerts-lease"), _trigger(conn, "alerts-lease")
    error = json.dumps({"type": "Boom", "message": "boom"})
    for attempt in _start(conn, "alerts-claimer", "alerts-lease", 2):
        conn.execute("SELECT skiplock.fail_attempt(%s, %s::jsonb)", (attempt, error))
    conn.execute(
        "UPDATE skiplock.alerts SET created_at = created_at - interval '2 days' WHERE run_id = %s",
        (old,),
    )
    t0 = datetime.now(UTC)

    def claim(worker: str, at: float) -> list[tuple[Any, ...]]:
        _fake_now(conn, t0 + timedelta(seconds=at))
        return conn.execute(
            "SELECT run_id, attempts, delivered_to FROM skiplock.claim_alerts(%s, 10, 30, 86400)"
            " WHERE run_id = ANY (%s)",
            (worker, [run, old]),
        ).fetchall()

    def record(alert: str, attempt: int, done: list[str], err: str | None, at: float) -> bool:
        _fake_now(conn, t0 + timedelta(seconds=at))
        row = conn.execute(
            "SELECT skiplock.record_alert(%s, %s, %s, %s, 10)", (alert, attempt, done, err)
        ).fetchone()
        return bool(row and row[0])

    try:
        assert claim("w1", 1) == [(run, 1, [])]  # the old one is abandoned, not delivered
        (alert_id,) = [r["id"] for r in outbox(conn.info.dsn, run)]
        assert claim("w2", 20) == []  # held by w1's lease
        assert claim("w2", 32) == [(run, 2, [])]  # w1 is lost: taken again
        # w1 comes back late with a failure: kept, but w2's lease stands
        assert record(alert_id, 1, ["callback:a"], "callback:b: boom", 33)
        assert claim("w3", 50) == []
        # w2's delivery reached b but not c: due again in 10 s, skipping a and b then
        assert record(alert_id, 2, ["callback:b"], "callback:c: down", 51)
        assert claim("w3", 55) == []
        assert claim("w3", 62) == [(run, 3, ["callback:a", "callback:b"])]
        assert record(alert_id, 3, ["callback:c"], None, 63)
        assert not record(alert_id, 3, [], None, 64)  # delivered: nothing more to say
        assert claim("w3", 500) == []
        (row,) = outbox(conn.info.dsn, run)
        assert (row["state"], row["attempts"], row["delivered_to"]) == (
            "DELIVERED",
            3,
            ["callback:a", "callback:b", "callback:c"],
        )
        assert row["last_error"] == "callback:c: down"
        (gone,) = outbox(conn.info.dsn, old)
        assert (gone["state"], gone["attempts"]) == ("ABANDONED", 0)
        assert "not delivered within 86400 s" in gone["last_error"]
    finally:
        _fake_now(conn, None)


# -- delivery by workers -----------------------------------------------------------------------


@pytest.fixture
def alerting(dsn: str) -> Iterator[tuple[Engine, Callable[[], Worker]]]:
    """Another engine, and how to start a worker of it that runs none of the tasks: it
    delivers the alerts this engine registers. Its workers stop before it closes."""
    engine = fast(Engine(dsn))
    running: list[RunningWorker] = []

    def start() -> Worker:
        rw = RunningWorker(
            engine.worker(
                queues=["alerts-nothing"],
                poll_interval=0.2,
                heartbeat_interval=0.5,
                tick_interval=0.2,
            )
        )
        running.append(rw)
        return rw.__enter__()

    yield engine, start
    for rw in running:
        rw.stop()
    engine.close()


def test_a_run_that_fails_for_good_is_delivered_once_by_a_worker_with_alerts(
    app: Engine,
    dsn: str,
    start_worker: Callable[..., Worker],
    alerting: tuple[Engine, Callable[[], Worker]],
) -> None:
    """The run fails on a worker whose engine has no alerts; a worker of another engine,
    which runs none of its tasks, delivers the alert to its callback: once, with the run
    and the alert. A run that succeeds is not alerted."""
    fail_for_good(app)

    @app.task("alerts-fine")
    def fine(payload: Any, ctx: TaskContext) -> int:
        return 1

    runner = start_worker()
    other, start_other = alerting
    got: list[tuple[Run[Any, Any], Alert]] = []

    @other.on_run_failed
    def page(run: Run[Any, Any], alert: Alert) -> None:
        got.append((run, alert))

    deliverer = start_other()
    failed = app.tasks["alerts-boom"].trigger(7)
    ok = app.tasks["alerts-fine"].trigger(1)
    wait_for(lambda: delivered(dsn, failed.id))
    wait_for(lambda: app.runs.retrieve(ok.id).status is RunStatus.COMPLETED)

    ours = [(run, alert) for run, alert in got if run.id == failed.id]
    assert len(ours) == 1
    run, alert = ours[0]
    assert run.status is RunStatus.FAILED and "nope 7" in json.dumps(run.error)
    assert run.attempts[0].worker_id == runner.id
    assert (alert.run_id, alert.task_identifier, alert.status, alert.delivery) == (
        failed.id,
        "alerts-boom",
        RunStatus.FAILED,
        1,
    )
    (row,) = outbox(dsn, failed.id, ok.id)  # none for the run that succeeded
    assert row["id"] == alert.id
    assert (row["state"], row["attempts"], row["claimed_by"]) == ("DELIVERED", 1, deliverer.id)


def test_a_callback_that_raises_is_retried_and_the_others_are_not_called_again(
    app: Engine, dsn: str, start_worker: Callable[..., Worker]
) -> None:
    fail_for_good(app, "alerts-flaky")
    fast(app)
    flaky_calls: list[tuple[str, int]] = []
    steady_calls: list[str] = []

    @app.on_run_failed
    async def flaky(run: Run[Any, Any], alert: Alert) -> None:
        flaky_calls.append((run.id, alert.delivery))
        if alert.delivery == 1:
            raise RuntimeError("pager down")

    @app.on_run_failed
    def steady(run: Run[Any, Any]) -> None:  # takes the run alone
        steady_calls.append(run.id)

    start_worker()
    failed = app.tasks["alerts-flaky"].trigger(1)
    wait_for(lambda: delivered(dsn, failed.id))

    assert [d for r, d in flaky_calls if r == failed.id] == [1, 2]
    assert [r for r in steady_calls if r == failed.id] == [failed.id]
    (row,) = outbox(dsn, failed.id)
    assert row["attempts"] == 2
    assert "RuntimeError: pager down" in row["last_error"]
    assert sorted(k.rsplit(".", 1)[-1] for k in row["delivered_to"]) == ["flaky", "steady"]


def test_a_webhook_gets_the_alert_as_json_and_is_retried_until_it_answers_2xx(
    app: Engine, dsn: str, start_worker: Callable[..., Worker]
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(503 if len(received) == 1 else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/skiplock"
    try:
        fail_for_good(app, "alerts-hooked")
        app.on_run_failed(webhook=url, headers={"Authorization": "Bearer t0ken"}, secret="s3cret")
        fast(app)
        start_worker()
        failed = app.tasks["alerts-hooked"].trigger(3)
        wait_for(lambda: delivered(dsn, failed.id))
    finally:
        server.shutdown()
        server.server_close()

    bodies = [json.loads(body) for _, body in received]
    ours = [i for i, b in enumerate(bodies) if b["run"]["id"] == failed.id]
    assert len(ours) == 2  # a 503, then a 204
    (row,) = outbox(dsn, failed.id)
    assert "HTTP 503" in row["last_error"]
    for i, delivery in zip(ours, (1, 2), strict=True):
        headers, raw = received[i]
        body = bodies[i]
        assert body["id"] == row["id"] == headers["Idempotency-Key"]
        assert (body["type"], body["delivery"]) == ("run.failed", delivery)
        assert headers["Authorization"] == "Bearer t0ken"
        expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        assert headers["X-Skiplock-Signature"] == f"sha256={expected}"
        run = body["run"]
        assert (run["task_identifier"], run["status"], run["attempt_count"]) == (
            "alerts-hooked",
            "FAILED",
            1,
        )
        assert "nope 3" in json.dumps(run["error"]) and run["finished_at"]
        assert "payload" not in run


# -- a worker killed mid-delivery ---------------------------------------------------------------


def _spawn(dsn: str, env: dict[str, str]) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        [SKIPLOCK, "worker", "alerts_app:app", "--concurrency", "2"],
        cwd=TESTS,
        env={**os.environ, "SKIPLOCK_DATABASE_URL": dsn, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


@pytest.mark.slow
def test_an_alert_whose_worker_is_killed_mid_delivery_is_delivered_by_another(
    dsn: str, tmp_path: Path
) -> None:
    """Worker 1 calls the callback (which records the call, then hangs) and is killed
    before it records the delivery; worker 2 delivers the same alert again once the lease
    runs out: at least once, the second delivery counted as such."""
    log = tmp_path / "alerts.log"
    env = {"ALERTS_LOG": str(log), "ALERTS_LEASE": "3"}
    first = _spawn(dsn, {**env, "ALERTS_HANG": "1"})
    second: subprocess.Popen[Any] | None = None
    try:
        deployed = "SELECT 1 FROM skiplock.deployment_tasks WHERE task_identifier = %s"
        wait_for(lambda: fetch(dsn, deployed, "alerts-app-boom"), timeout=60)
        with Engine(dsn) as app:
            run_id = app.trigger("alerts-app-boom", 1).id
        wait_for(lambda: _lines(log), timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        (called,) = outbox(dsn, run_id)
        assert (called["state"], called["attempts"]) == ("PENDING", 1)

        second = _spawn(dsn, env)
        wait_for(lambda: delivered(dsn, run_id), timeout=60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)

    calls = [c for c in _lines(log) if c["run"] == run_id]
    assert calls[0]["pid"] == first.pid and calls[0]["delivery"] == 1
    assert second is not None and calls[-1]["pid"] == second.pid
    assert calls[-1]["delivery"] >= 2
    assert {c["alert"] for c in calls} == {called["id"]}
    (row,) = outbox(dsn, run_id)
    assert row["state"] == "DELIVERED" and row["attempts"] == calls[-1]["delivery"]
