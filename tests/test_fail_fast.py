"""The first hour: a wrong database address fails within seconds in one line that names
it (password hidden), its source and the reason; an unmigrated database says to run
`skiplock migrate`; workers wait for their database; the CLI's small promises (--json,
--status in any case, --version, --help, a closed pipe) hold."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from helpers import SKIPLOCK, TESTS, deploy, fetch, spawn_worker, wait_for
from psycopg import sql
from starlette.testclient import TestClient

from engine import Engine, RunStatus
from engine.cli.main import parser
from engine.dashboard import create_app
from engine.db.database import Database, Query
from engine.errors import (
    DatabaseUnreachableError,
    InvalidArgumentError,
    SchemaNotMigratedError,
    SkiplockError,
)

SECRET = "hunter2-s3cret"
REFUSED = f"postgresql://nobody:{SECRET}@127.0.0.1:1/x"  # nothing listens on port 1
MALFORMED = f"host=127.0.0.1 password={SECRET} not a dsn"
LIMIT = 10.0  # seconds a one-shot command may take to fail (a loaded 2-core CI machine)


def cli(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [SKIPLOCK, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=TESTS,
        env={**os.environ, **(env or {})},
    )
    return done, time.monotonic() - started


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr, "error: ...", and no traceback."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert SECRET not in done.stderr + done.stdout
    return lines[0]


def _create_database(server_dsn: str) -> str:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=name)


@pytest.fixture
def empty_dsn(server_dsn: str) -> str:
    """A database on the test server that was never migrated."""
    return _create_database(server_dsn)


def _has_schema(dsn: str) -> bool:
    return bool(fetch(dsn, "SELECT 1 FROM pg_namespace WHERE nspname = 'skiplock'"))


# -- a wrong address: refused, malformed, silent -----------------------------------------


@pytest.mark.parametrize(
    "args",
    [["runs", "list"], ["migrate"], ["queues", "list", "--json"], ["runs", "watch", "--tag", "t"]],
)
def test_a_refused_address_fails_within_seconds_in_one_line(args: list[str]) -> None:
    done, took = cli("--dsn", REFUSED, *args)
    line = one_error_line(done)
    assert took < LIMIT, f"took {took:.1f}s"
    assert "postgresql://nobody:***@127.0.0.1:1/x" in line  # the address, password hidden
    assert "from the dsn argument" in line and "refused" in line.lower()


def test_the_address_from_the_environment_says_so() -> None:
    done, took = cli("runs", "list", env={"SKIPLOCK_DATABASE_URL": REFUSED})
    line = one_error_line(done)
    assert took < LIMIT and "from $SKIPLOCK_DATABASE_URL" in line


@pytest.mark.parametrize("dsn", [MALFORMED, f"postgresql://nobody:{SECRET} x@127.0.0.1/x"])
def test_a_malformed_address_fails_at_once_in_one_line(dsn: str) -> None:
    done, took = cli("--dsn", dsn, "runs", "list")
    line = one_error_line(done)
    assert took < LIMIT
    assert line.startswith("error: malformed database address") and "from the dsn argument" in line
    assert "***" in line


def test_a_server_that_never_answers_fails_after_the_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        done, took = cli(
            "--dsn",
            f"postgresql://nobody:{SECRET}@127.0.0.1:{port}/x",
            "runs",
            "list",
            env={"SKIPLOCK_CONNECT_TIMEOUT": "2"},
        )
    line = one_error_line(done)
    assert took < LIMIT, f"took {took:.1f}s"
    assert "no answer within 2 s" in line


def test_the_engine_fails_fast_with_typed_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgumentError, match="malformed database address") as bad:
        Engine("not a dsn")
    assert "not a dsn" in str(bad.value)
    with pytest.raises(InvalidArgumentError, match=r"\*\*\*") as hidden:
        Engine(MALFORMED)
    assert SECRET not in str(hidden.value)
    monkeypatch.setenv("SKIPLOCK_DATABASE_URL", "neither")
    with pytest.raises(InvalidArgumentError, match=r"from \$SKIPLOCK_DATABASE_URL"):
        Engine()
    monkeypatch.delenv("SKIPLOCK_DATABASE_URL")
    monkeypatch.setenv("SKIPLOCK_CONNECT_TIMEOUT", "soon")
    with pytest.raises(InvalidArgumentError, match="SKIPLOCK_CONNECT_TIMEOUT"):
        Engine(REFUSED)
    monkeypatch.delenv("SKIPLOCK_CONNECT_TIMEOUT")

    app = Engine(REFUSED)
    started = time.monotonic()
    for call in (
        lambda: app.trigger("t", {}),
        app.migrate,
        app.check,
        lambda: asyncio.run(app.trigger_async("t", {})),
        lambda: asyncio.run(app.runs.list_async()),
    ):
        with pytest.raises(DatabaseUnreachableError) as unreachable:
            call()
        assert "127.0.0.1:1" in str(unreachable.value) and SECRET not in str(unreachable.value)
        assert unreachable.value.source == "from the dsn argument"
    assert time.monotonic() - started < LIMIT
    app.close()


# -- a database never migrated -------------------------------------------------------------


def test_an_unmigrated_database_says_to_run_migrate(empty_dsn: str) -> None:
    done, took = cli("--dsn", empty_dsn, "runs", "list")
    assert "skiplock migrate" in one_error_line(done) and took < LIMIT

    app = Engine(empty_dsn)
    with pytest.raises(SchemaNotMigratedError, match="run `skiplock migrate`"):
        app.trigger("t", {"x": 1})
    with pytest.raises(SchemaNotMigratedError, match="run `skiplock migrate`"):
        asyncio.run(app.trigger_async("t", {"x": 1}))
    with pytest.raises(SchemaNotMigratedError):
        app.runs.retrieve("run_x")
    with pytest.raises(SchemaNotMigratedError):
        app.check()
    assert not _has_schema(empty_dsn)  # nothing was written
    app.migrate()
    app.check()
    assert app.runs.list().data == []
    app.close()


def test_check_names_the_migrations_missing_from_the_ledger(empty_dsn: str) -> None:
    app = Engine(empty_dsn)
    app.migrate()
    (name,) = fetch(
        empty_dsn, "SELECT max(name) FROM skiplock.migrations WHERE kind = 'migration'"
    )[0]
    fetch(empty_dsn, "DELETE FROM skiplock.migrations WHERE name = %s RETURNING name", name)
    with pytest.raises(SchemaNotMigratedError, match=re.escape(name)):
        app.check()
    app.close()


def test_missing_skiplock_objects_map_to_schema_not_migrated_others_do_not(dsn: str) -> None:
    db = Database(dsn)
    try:
        with pytest.raises(SchemaNotMigratedError, match=r"skiplock\.no_such_function"):
            db.run(Query("SELECT skiplock.no_such_function()", (), lambda rows: None))
        with pytest.raises(SchemaNotMigratedError):
            db.run(Query("SELECT * FROM skiplock.no_such_table", (), lambda rows: None))
        with pytest.raises(psycopg.errors.UndefinedFunction):  # not ours: left as it is
            db.run(Query("SELECT public.no_such_function()", (), lambda rows: None))
    finally:
        db.close()


def _output(proc: subprocess.Popen[str]) -> Callable[[], list[str]]:
    """Collects a process's output lines on a thread; returns a getter of those so far."""
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lambda: list(lines)


def test_a_worker_on_an_unmigrated_database_exits_with_one_line(empty_dsn: str) -> None:
    proc = spawn_worker(empty_dsn, capture=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "skiplock migrate" in errors[0], out
    assert not _has_schema(empty_dsn)


def test_worker_migrate_flag_migrates_an_empty_database_and_runs(empty_dsn: str) -> None:
    proc = spawn_worker(empty_dsn, "--migrate", "--version", "mig-1", capture=True)
    try:
        wait_for(
            lambda: (
                _has_schema(empty_dsn)
                and fetch(empty_dsn, "SELECT 1 FROM skiplock.workers WHERE version = 'mig-1'")
            ),
            timeout=60,
        )
        app = Engine(empty_dsn)
        h = app.trigger("cli-echo", {"n": 1})
        run = wait_for(lambda: (r := app.runs.retrieve(h)).is_completed and r, timeout=30)
        assert run.status is RunStatus.COMPLETED and run.output["echo"] == {"n": 1}
        app.check()
        app.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


class _Forwarder:
    """A TCP port that forwards to the test server (TCP, or its Unix socket), opened on
    demand: the database "comes up" when it starts."""

    def __init__(self, server_dsn: str, port: int) -> None:
        params = psycopg.conninfo.conninfo_to_dict(server_dsn)
        host, upstream_port = (
            str(params.get("host") or "localhost"),
            str(params.get("port") or 5432),
        )
        self.port = port
        self._unix = f"{host}/.s.PGSQL.{upstream_port}" if host.startswith("/") else None
        self._tcp = (host, int(upstream_port))
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._unix is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self._tcp)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def start(self) -> None:
        async def serve() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_waits_for_its_database_logging_one_line(dsn: str, server_dsn: str) -> None:
    port = _free_port()
    through = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=port)
    proc = spawn_worker(through, "--version", "late-1", capture=True)
    forwarder = _Forwarder(server_dsn, port)
    try:
        lines = _output(proc)
        # nothing listens yet: the worker says so, in one line, and keeps trying
        waiting = wait_for(
            lambda: [x for x in lines() if "trying again" in x and "cannot connect" in x],
            timeout=30,
        )
        assert f"127.0.0.1:{port}" in waiting[0] or f"port={port}" in waiting[0]
        assert "from $SKIPLOCK_DATABASE_URL" in waiting[0] and "Traceback" not in "".join(lines())
        assert proc.poll() is None
        forwarder.start()  # the database comes up
        wait_for(
            lambda: fetch(dsn, "SELECT 1 FROM skiplock.workers WHERE version = 'late-1'"),
            timeout=30,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        forwarder.stop()
    assert proc.returncode == 0, "".join(lines())


# -- the dashboard -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/queues", "/workers", "/runs/run_x", "/schedules", "/schedules/sched_x"]
)
def test_the_dashboard_answers_503_with_the_reason(path: str, empty_dsn: str) -> None:
    unreachable = TestClient(create_app(Engine(REFUSED)), base_url="http://127.0.0.1:8080")
    page = unreachable.get(path)
    assert page.status_code == 503
    assert "cannot connect to the database at postgresql://nobody:***@127.0.0.1:1/x" in page.text
    assert SECRET not in page.text
    unmigrated = TestClient(create_app(Engine(empty_dsn)), base_url="http://127.0.0.1:8080")
    page = unmigrated.get(path)
    assert page.status_code == 503 and "run `skiplock migrate`" in page.text


def test_skiplock_dashboard_says_at_start_that_the_database_is_unreachable() -> None:
    proc = subprocess.Popen(
        [SKIPLOCK, "--dsn", REFUSED, "dashboard", "--port", str(_free_port())],
        cwd=TESTS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("warning: cannot connect to the database at ")
        assert "127.0.0.1:1" in first and SECRET not in first
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


# -- the CLI's small promises ----------------------------------------------------------


def test_every_json_flag_the_readme_shows_prints_json(app: Engine) -> None:
    @app.task("json-q")
    def json_q(p: dict[str, Any], ctx: Any) -> None:
        pass

    deploy(app)
    h = json_q.trigger({}, delay="1h")
    dsn = app.dsn
    for args in (
        ["queues", "list", "--json"],
        ["queues", "--json"],
        ["queues", "--json", "list"],
        ["queues", "pause", "json-q", "--json"],
        ["queues", "resume", "json-q", "--json"],
        ["queues", "limit", "json-q", "3", "--json"],
        ["runs", "list", "--json"],
        ["runs", "show", h.id, "--json"],
        ["runs", "reschedule", h.id, "--delay", "2h", "--json"],
        ["runs", "replay", h.id, "--json"],
        ["runs", "cancel", h.id, "--json"],
    ):
        done, _ = cli("--dsn", dsn, *args)
        assert done.returncode == 0, (args, done.stderr)
        json.loads(done.stdout)  # the whole output is one JSON value
    done, _ = cli("--dsn", dsn, "queues", "limit", "json-q", "none", "--json")
    [queue] = json.loads(done.stdout)
    assert queue["name"] == "json-q" and queue["concurrency_limit"] is None


def test_runs_list_status_takes_any_case_and_lists_the_valid_ones(app: Engine) -> None:
    h = app.trigger("status-case", {}, delay="1h")  # no deployment: PENDING_VERSION
    status = app.runs.retrieve(h).status.value
    for given in (status.lower(), status.title(), status):
        done, _ = cli("--dsn", app.dsn, "runs", "list", "--status", given, "--json")
        assert done.returncode == 0, done.stderr
        assert [r["id"] for r in json.loads(done.stdout)] == [h.id]
    done, _ = cli("--dsn", app.dsn, "runs", "list", "--status", "completed", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == []
    done, _ = cli("--dsn", app.dsn, "runs", "list", "--status", "nonsense")
    line = one_error_line(done)
    assert "'nonsense'" in line and all(s.value in line for s in RunStatus)


def test_version_prints_the_installed_distributions_version() -> None:
    done, _ = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"skiplock {importlib.metadata.version('skiplock')}"


def test_output_into_a_closed_pipe_stops_quietly(dsn: str) -> None:
    for args in (["runs", "list"], ["queues", "list", "--json"]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before a byte is written (`| head -0`)
        try:
            done = subprocess.run(
                [SKIPLOCK, "--dsn", dsn, *args],
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
                cwd=TESTS,
            )
        finally:
            os.close(write_end)
        assert done.stderr == ""  # no traceback, no "Exception ignored"
        assert done.returncode == 128 + signal.SIGPIPE


def test_a_pipe_into_head_prints_no_traceback(app: Engine) -> None:
    fetch(
        app.dsn,
        "SELECT skiplock.trigger('pipe', '{}', '{\"delay_seconds\": 3600}') "
        "FROM generate_series(1, 1000)",
    )
    done = subprocess.run(
        f"'{SKIPLOCK}' --dsn \"$DSN\" runs list --limit 1000 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=TESTS,
        env={**os.environ, "DSN": app.dsn},
    )
    assert done.stdout.startswith("ID") and len(done.stdout.splitlines()) == 1
    assert done.stderr == ""


def _subcommands(p: argparse.ArgumentParser) -> tuple[dict[str, str], dict[str, Any]]:
    """(each subcommand's help line, each subcommand's parser) of `p`."""
    (action,) = [a for a in p._actions if isinstance(a.choices, dict)]
    helps = {c.dest: str(c.help) for c in action._get_subactions()}
    return helps, dict(action.choices)  # type: ignore[arg-type]


def test_help_lists_every_command_and_runs_help_every_action() -> None:
    commands, parsers = _subcommands(parser())
    assert {"migrate", "worker", "runs", "queues", "dashboard", "dev", "demo"} <= set(commands)
    done, _ = cli("--help", env={"COLUMNS": "100"})
    for name, text in commands.items():  # one line each
        assert re.search(rf"^ +{name} +{re.escape(text)}$", done.stdout, re.M), done.stdout
    actions, _ = _subcommands(parsers["runs"])
    assert set(actions) == {
        "list",
        "show",
        "cancel",
        "replay",
        "reschedule",
        "watch",
        "purge",
        "logs",
    }
    done, _ = cli("runs", "--help", env={"COLUMNS": "100"})
    for name, text in actions.items():
        assert text and re.search(rf"^ +{name} +{re.escape(text)}$", done.stdout, re.M), name


def test_every_typed_error_here_is_a_skiplock_error() -> None:
    assert issubclass(DatabaseUnreachableError, SkiplockError)
    assert issubclass(SchemaNotMigratedError, SkiplockError)
