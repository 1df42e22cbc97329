"""skiplock.table_health, app.table_health(), `skiplock db health` and the Database page:
how big each table is and whether vacuum keeps up."""

from __future__ import annotations

import asyncio
import json
import subprocess

from helpers import SKIPLOCK

from engine import Engine, TaskContext


def test_every_table_is_shown_with_sizes_that_grow(app: Engine) -> None:
    @app.task("health-grow")
    def grow(p: str, ctx: TaskContext) -> None: ...

    before = {t.table_name: t for t in app.table_health()}
    assert {"runs", "attempts", "waitpoints", "queues", "workers", "migrations"} <= set(before)
    grow.batch_trigger(["x" * 2000] * 500)
    with app.db.pool.connection() as c:
        c.execute("ANALYZE skiplock.runs")
    after = {t.table_name: t for t in app.table_health()}
    runs = after["runs"]
    assert runs.total_bytes > before["runs"].total_bytes
    assert runs.total_bytes >= runs.table_bytes + runs.index_bytes
    assert runs.live_tuples is not None and runs.live_tuples >= 500
    assert runs.last_analyze is not None
    ordered = [t.total_bytes for t in app.table_health()]
    assert ordered == sorted(ordered, reverse=True)  # largest first
    assert [t.table_name for t in asyncio.run(app.table_health_async())] == list(after)


def test_db_health_on_the_cli_and_the_dashboard(app: Engine, dsn: str) -> None:
    env = {"SKIPLOCK_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"}
    text = subprocess.run(
        [SKIPLOCK, "db", "health"], env=env, capture_output=True, text=True, timeout=60
    )
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].split()[:4] == ["TABLE", "TOTAL", "HEAP", "INDEXES"]
    assert any(line.startswith("runs ") for line in text.stdout.splitlines())
    as_json = subprocess.run(
        [SKIPLOCK, "db", "health", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    rows = json.loads(as_json.stdout)
    assert {"runs", "attempts"} <= {r["table_name"] for r in rows}

    from starlette.testclient import TestClient

    from engine.dashboard import create_app

    page = TestClient(create_app(app), base_url="http://127.0.0.1:8080").get("/database")
    assert page.status_code == 200
    assert '<td class="mono">runs</td>' in page.text and "Dead ratio" in page.text
