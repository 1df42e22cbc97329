"""What a worker process does not load until it needs it (a worker's RSS, see
bench/worker_footprint.py): the blocking API's pool, the retry library, the webhooks'
HTTP client, OpenTelemetry (unless the application imported it), and pydantic while its
tasks are untyped (payloads and outputs plain JSON: engine/api/codec.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import SKIPLOCK, TESTS, count, fetch, wait_for
from untyped_app import UNLOADED

from engine import Engine

LAZY = ("psycopg_pool", "tenacity", "urllib.request", "opentelemetry", *UNLOADED)

_SCRIPT = """
import sys
import engine
import engine.cli.main
import engine.worker.runtime
import untyped_app
loaded = [name for name in sys.argv[1:] if name in sys.modules]
print(",".join(loaded))
"""


def test_a_worker_imports_no_pool_retries_http_client_tracing_or_pydantic() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *LAZY],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TESTS,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_engine_exports_every_public_name_lazily_or_not() -> None:
    import engine

    for name in engine.__all__:
        assert getattr(engine, name) is not None, name
    assert set(engine.__all__) <= set(dir(engine))
    with pytest.raises(AttributeError):
        engine.NotAName  # noqa: B018


def test_a_worker_of_untyped_tasks_runs_them_without_pydantic(dsn: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [SKIPLOCK, "worker", "untyped_app:app", "--concurrency", "10"],
            cwd=TESTS,
            env={**os.environ, "SKIPLOCK_DATABASE_URL": dsn},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        registered = "SELECT 1 FROM skiplock.workers WHERE pid = %s AND stopped_at IS NULL"
        wait_for(lambda: fetch(dsn, registered, worker.pid), 60)
        tasks = ("untyped-async", "untyped-sync", "untyped-bare")
        with Engine(dsn) as client:
            for task_id in tasks:
                for n in range(5):
                    client.trigger(task_id, {"n": n})
        ours = "task_identifier LIKE 'untyped-%%'"
        done = f"{ours} AND status = 'COMPLETED'"
        try:
            wait_for(lambda: count(dsn, done) == 15, 60)
        except AssertionError:
            raise AssertionError(log.read_text()[-5000:]) from None
        rows = fetch(dsn, f"SELECT output FROM skiplock.runs WHERE {ours}")
        outputs: list[dict[str, Any]] = [row[0] for row in rows]
        assert sorted(o["n"] for o in outputs) == sorted(list(range(5)) * 3)
        assert [o for o in outputs if o["after"] or o.get("before")] == []
        assert sorted(o["twice"] for o in outputs if "twice" in o) == [0, 2, 4, 6, 8]
    finally:
        worker.terminate()
        worker.wait(30)
    assert worker.returncode == 0
