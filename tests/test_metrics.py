"""Prometheus metrics: the dashboard's /metrics and a real worker's --metrics-port, parsed
with prometheus_client's own parser, and their numbers checked against the database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import SKIPLOCK, TESTS, deploy, fetch, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import engine.db
from engine import Engine, RunStatus, TaskContext, Worker, wait
from engine.dashboard import create_app
from engine.errors import SkiplockError

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples called `name`, by the value of their one label `label`."""
    return {dict(key)[label]: v for (n, key), v in samples.items() if n == name}


def database_figures(dsn: str) -> dict[str, Any]:
    """What /metrics should say, counted from the tables (not from skiplock.metrics), with
    the database's clock read just before."""
    now = fetch(dsn, "SELECT now()")[0][0]
    queued = fetch(
        dsn,
        "SELECT queue, count(*), min(order_at) FROM skiplock.runs WHERE status = 'QUEUED' "
        "GROUP BY queue",
    )
    statuses = dict(fetch(dsn, "SELECT status::text, count(*) FROM skiplock.runs GROUP BY 1"))
    running = fetch(
        dsn,
        "SELECT queue, count(*) FROM skiplock.runs WHERE status IN ('DEQUEUED', 'EXECUTING') "
        "GROUP BY queue",
    )
    return {
        "now": now,
        "depth": {q: n for q, n, _ in queued},
        "first": {q: first for q, _, first in queued},
        "running": dict(running),
        "statuses": statuses,
        "workers": dict(
            fetch(dsn, "SELECT state, count(*) FROM skiplock.worker_status GROUP BY 1")
        ),
        "queues": {q for (q,) in fetch(dsn, "SELECT name FROM skiplock.queues")},
    }


def check_database_figures(samples: Samples, before: dict[str, Any], after: datetime) -> None:
    """The database-wide figures of a scrape taken between `before` (the tables counted,
    the clock read) and the clock read `after` it; nothing changed the runs meanwhile."""
    assert value(samples, "skiplock_database_up") == 1
    depth = by_label(samples, "skiplock_queue_depth", "queue")
    assert {q: n for q, n in depth.items() if n} == before["depth"]
    assert set(depth) == before["queues"] | set(before["depth"])  # empty queues say 0
    assert {q: n for q, n in by_label(samples, "skiplock_queue_running", "queue").items() if n} == (
        before["running"]
    )
    ages = by_label(samples, "skiplock_queue_oldest_age_seconds", "queue")
    for queue, age in ages.items():
        first = before["first"].get(queue)
        if first is None:
            assert age == 0
        else:  # the scrape read its clock between the two reads of the test's
            assert (before["now"] - first).total_seconds() <= age <= (after - first).total_seconds()
    statuses = before["statuses"]
    assert value(samples, "skiplock_runs_waiting") == statuses.get("WAITING", 0)
    assert value(samples, "skiplock_runs_delayed") == statuses.get("DELAYED", 0)
    assert value(samples, "skiplock_runs_pending_version") == statuses.get("PENDING_VERSION", 0)
    workers = by_label(samples, "skiplock_workers", "state")
    assert workers == {
        state: before["workers"].get(state, 0) for state in ("active", "lapsed", "lost", "stopped")
    }


# -- the dashboard ---------------------------------------------------------------------------


@pytest.fixture
def dashboard(app: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(app), base_url="http://127.0.0.1") as client:
        yield client


def test_the_dashboards_metrics_match_the_database(
    app: Engine, dsn: str, dashboard: TestClient, start_worker: Callable[..., Worker]
) -> None:
    @app.task("d-waiter")
    async def waiter(token_id: str, ctx: TaskContext) -> Any:
        return (await wait.for_token(token_id)).output

    @app.task("d-work")
    async def work(n: int, ctx: TaskContext) -> int:
        return n

    @app.task("d-other")
    async def other(n: int, ctx: TaskContext) -> int:
        return n

    # a run WAITING on a token, left by a worker that then stopped
    worker = start_worker(queues=["d-waiter"])
    token = app.waitpoints.create_token()
    handle = waiter.trigger(token.id)
    wait_for(lambda: app.runs.retrieve(handle.id).status == RunStatus.WAITING)
    worker.stop()
    wait_for(
        lambda: fetch(dsn, "SELECT stopped_at FROM skiplock.workers WHERE id = %s", worker.id)[0][0]
    )
    # QUEUED runs in two queues (nobody takes them), DELAYED ones, a PENDING_VERSION one
    deploy(app, tasks=[work, other])  # an active worker that takes nothing
    for n in range(4):
        work.trigger(n)
    other.trigger(1)
    work.trigger(9, delay="1h")
    other.trigger(9, delay="2h")
    with pytest.warns(UserWarning):
        app.trigger("d-nobody-has", 1)

    before = database_figures(dsn)
    response = dashboard.get("/metrics")
    after = fetch(dsn, "SELECT now()")[0][0]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.text)
    check_database_figures(samples, before, after)
    # what was set up, in plain numbers
    assert value(samples, "skiplock_queue_depth", queue="d-work") == 4
    assert value(samples, "skiplock_queue_depth", queue="d-other") == 1
    assert value(samples, "skiplock_queue_depth", queue="d-waiter") == 0
    assert value(samples, "skiplock_runs_waiting") == 1
    assert value(samples, "skiplock_runs_delayed") == 2
    assert value(samples, "skiplock_runs_pending_version") == 1
    assert value(samples, "skiplock_workers", state="active") == 1
    assert value(samples, "skiplock_workers", state="stopped") == 1
    # the dashboard's own process is not in it: no worker-side or default-registry series
    assert not any(
        name.startswith(("python_", "process_", "skiplock_attempt")) for name, _ in samples
    )


def test_the_dashboards_metrics_speak_openmetrics_when_asked(dashboard: TestClient) -> None:
    response = dashboard.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_the_dashboards_metrics_need_its_token_as_its_pages_do(app: Engine) -> None:
    with TestClient(create_app(app, token="s3cret"), base_url="http://10.0.0.5") as client:
        assert client.get("/metrics").status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert value(parse(ok.text), "skiplock_database_up") == 1
    with TestClient(create_app(app), base_url="http://10.0.0.5") as client:
        assert client.get("/metrics").status_code == 403  # no token: loopback hosts only


def test_a_database_that_does_not_answer_is_a_figure_not_an_error() -> None:
    port = free_port()  # nobody listens there
    down = Engine(f"postgresql://skiplock@127.0.0.1:{port}/skiplock?connect_timeout=2")
    try:
        with TestClient(create_app(down), base_url="http://127.0.0.1") as client:
            response = client.get("/metrics")
    finally:
        down.close()
    assert response.status_code == 200
    samples = parse(response.text)
    assert value(samples, "skiplock_database_up") == 0
    assert [name for name, _ in samples] == ["skiplock_database_up"]


def test_without_the_extra_the_dashboard_says_what_to_install(
    app: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    monkeypatch.delitem(sys.modules, "engine.db.metrics")
    monkeypatch.delattr(engine.db, "metrics")  # imported anew, and failing
    with TestClient(create_app(app), base_url="http://127.0.0.1") as client:
        response = client.get("/metrics")
    assert response.status_code == 501
    assert "pip install 'skiplock[metrics]'" in response.text


# -- a worker ---------------------------------------------------------------------------------


def spawn(dsn: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A real `skiplock worker metrics_app:app ARGS...` (tests/metrics_app.py)."""
    return subprocess.Popen(
        [SKIPLOCK, "worker", "metrics_app:app", "--quiet", *args],
        cwd=TESTS,
        env={**os.environ, "SKIPLOCK_DATABASE_URL": dsn, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def statuses(dsn: str) -> dict[tuple[str, str], int]:
    rows = fetch(
        dsn, "SELECT task_identifier, status::text, count(*) FROM skiplock.runs GROUP BY 1, 2"
    )
    return {(task, status): n for task, status, n in rows}


def test_a_workers_metrics_count_what_it_ran_and_match_the_database(app: Engine, dsn: str) -> None:
    port = free_port()
    proc = spawn(dsn, "--metrics-port", str(port), "--metrics-database", "--concurrency", "4")
    try:
        worker_id = wait_for(
            lambda: fetch(dsn, "SELECT id FROM skiplock.workers WHERE pid = %s", proc.pid)
        )[0][0]
        app.queues.pause("held")  # its runs stay QUEUED: a queue depth to read
        for n in range(5):
            app.trigger("m-ok", {"n": n})
        for n in range(3):
            app.trigger("m-sync", {"n": n})
        for n in range(2):
            app.trigger("m-fail", {"n": n})  # two attempts each, then FAILED
        for n in range(3):
            app.trigger("m-held", {"n": n})
        app.trigger("m-ok", {"n": 9}, delay="1h")
        token = app.waitpoints.create_token()
        app.trigger("m-wait", token.id)

        def settled() -> bool:
            s = statuses(dsn)
            return (
                s.get(("m-ok", "COMPLETED")) == 5
                and s.get(("m-sync", "COMPLETED")) == 3
                and s.get(("m-fail", "FAILED")) == 2
                and s.get(("m-wait", "WAITING")) == 1
            )

        wait_for(settled, timeout=30)
        before = database_figures(dsn)
        samples = scrape(port)
        after = fetch(dsn, "SELECT now()")[0][0]
        check_database_figures(samples, before, after)
        assert value(samples, "skiplock_queue_depth", queue="held") == 3

        # runs by final status: what this worker recorded is what the database has (the
        # worker counts an outcome just after its commit: a scrape may come in between)
        finished = {
            (task, status): n
            for (task, status), n in statuses(dsn).items()
            if status in FINAL and task.startswith("m-")  # this module's other test's aside
        }
        assert finished == {
            ("m-ok", "COMPLETED"): 5,
            ("m-sync", "COMPLETED"): 3,
            ("m-fail", "FAILED"): 2,
        }
        # attempt durations: one observation per attempt (part), by how it ended
        observed = attempts(dsn, worker_id, suspended_as="waiting")
        assert observed == {
            ("m-ok", "success"): 5,
            ("m-sync", "success"): 3,
            ("m-fail", "failure"): 4,
            ("m-wait", "waiting"): 1,
        }
        samples = wait_for(lambda: matching(port, finished, observed))
        assert value(samples, "skiplock_worker_attempts_running") == 0

        # the waiting run resumes on its token: its attempt's second part is observed
        app.waitpoints.complete_token(token, {"ok": True})
        wait_for(lambda: statuses(dsn).get(("m-wait", "COMPLETED")) == 1)
        finished["m-wait", "COMPLETED"] = 1
        samples = wait_for(lambda: matching(port, finished, {**observed, ("m-wait", "success"): 1}))
        waiting = fetch(dsn, "SELECT count(*) FROM skiplock.runs WHERE status = 'WAITING'")
        assert value(samples, "skiplock_runs_waiting") == waiting[0][0]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    with pytest.raises(OSError):  # the server stopped with the worker
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def matching(port: int, finished: object, observed: object) -> Samples | None:
    """A scrape whose runs by final status are `finished` and whose attempt durations'
    counts are `observed`, or None."""
    samples = scrape(port)
    same = by_task_and_status(samples) == finished and counts(samples) == observed
    return samples if same else None


FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "SYSTEM_FAILURE", "CANCELED", "CRASHED", "EXPIRED"}


def by_task_and_status(samples: Samples) -> dict[tuple[str, str], float]:
    return {
        (dict(key)["task"], dict(key)["status"]): v
        for (name, key), v in samples.items()
        if name == "skiplock_runs_finished_total"
    }


def counts(samples: Samples) -> dict[tuple[str, str], float]:
    """skiplock_attempt_duration_seconds' observations, by task and outcome."""
    return {
        (dict(key)["task"], dict(key)["outcome"]): v
        for (name, key), v in samples.items()
        if name == "skiplock_attempt_duration_seconds_count"
    }


def attempts(dsn: str, worker_id: str, suspended_as: str) -> dict[tuple[str, str], int]:
    """The worker's attempts in the database, by task and how they ended."""
    rows = fetch(
        dsn,
        "SELECT r.task_identifier, a.status::text, count(*) FROM skiplock.attempts a "
        "JOIN skiplock.runs r ON r.id = a.run_id WHERE a.worker_id = %s GROUP BY 1, 2",
        worker_id,
    )
    outcome = {"COMPLETED": "success", "FAILED": "failure", "SUSPENDED": suspended_as}
    return {(task, outcome[status]): n for task, status, n in rows}


def test_a_worker_without_the_extra_says_what_to_install(dsn: str, tmp_path: Path) -> None:
    shadow = tmp_path / "prometheus_client"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = spawn(dsn, "--metrics-port", str(free_port()), env={"PYTHONPATH": str(tmp_path)})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "error: metrics need the prometheus_client package" in out
    assert "pip install 'skiplock[metrics]'" in out


def test_a_metrics_port_taken_fails_the_worker_at_once(app: Engine) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = app.worker(metrics_port=port, metrics_host="127.0.0.1")
        with pytest.raises(SkiplockError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            worker.run()
