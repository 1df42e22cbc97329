"""Test helpers shared by the test modules."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from engine import Worker


def fetch(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(query.encode(), params).fetchall()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; return its value, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class RunningWorker:
    """A worker running in a background thread of the test process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error


def deploy(
    app: Any, version: str = "dev", tasks: list[Any] | None = None, lease: float = 30.0
) -> str:
    """Register a deployment of `tasks` (default: all of the app's) as a worker would,
    without running one. Returns the worker id used."""
    import uuid

    from engine.db import queries as _queries

    worker_id = f"worker_test_{uuid.uuid4().hex[:12]}"
    entries = [t.deployment_entry() for t in (tasks if tasks is not None else app.tasks.values())]
    app.db.run(_queries.register_worker(worker_id, version, "test", 0, None, 1, entries, lease))
    return worker_id


def count(dsn: str, where: str = "true", *params: Any) -> int:
    return int(fetch(dsn, f"SELECT count(*) FROM skiplock.runs WHERE {where}", *params)[0][0])


TESTS = Path(__file__).resolve().parent
SKIPLOCK = str(Path(sys.executable).parent / "skiplock")


def spawn_worker(
    dsn: str,
    *args: str,
    env: dict[str, str] | None = None,
    capture: bool = False,
    app: str = "cli_app:app",
) -> subprocess.Popen[Any]:
    """A real `skiplock worker APP ARGS...` process serving `app` (a module of tests/:
    tests/cli_app.py unless given)."""
    environ = {**os.environ, "SKIPLOCK_DATABASE_URL": dsn, **(env or {})}
    return subprocess.Popen(
        [SKIPLOCK, "worker", app, *args],
        cwd=TESTS,
        env=environ,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
        text=capture,
    )


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_dev(dsn: str, app: str, port: int, *args: str) -> subprocess.Popen[str]:
    """A real `skiplock dev APP --port PORT ARGS...` process on `dsn`, its output captured."""
    return subprocess.Popen(
        [SKIPLOCK, "--dsn", dsn, "dev", app, "--port", str(port), *args],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
