"""Migrations: ledger with checksums, idempotent, safe concurrently, append-only."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from engine import Engine
from engine.db import migrate as _migrate
from engine.errors import MigrationError


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(server_dsn, dbname=name)


def test_migrate_applies_everything_once_then_nothing(empty_dsn: str) -> None:
    app = Engine(empty_dsn)
    applied = app.migrate()
    assert applied == [f.name for f in _migrate.sql_files()]
    assert app.migrate() == []
    with psycopg.connect(empty_dsn) as c:
        tables = {
            r[0]
            for r in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'skiplock'"
            ).fetchall()
        }
        ledger = c.execute("SELECT name, checksum FROM skiplock.migrations").fetchall()
    assert {"runs", "attempts", "queues", "workers", "deployments", "migrations"} <= tables
    assert dict(ledger) == {f.name: f.checksum for f in _migrate.sql_files()}


def test_concurrent_migrations_apply_each_file_once(empty_dsn: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def go() -> None:
        try:
            barrier.wait()
            results.append(Engine(empty_dsn).migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0] * 5 + [len(_migrate.sql_files())]


def test_a_changed_migration_is_refused(empty_dsn: str) -> None:
    Engine(empty_dsn).migrate()
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(
            "UPDATE skiplock.migrations SET checksum = 'tampered' WHERE name = '0001_init.sql'"
        )
    with pytest.raises(MigrationError, match="append-only"):
        Engine(empty_dsn).migrate()


def test_a_changed_function_file_is_reapplied(empty_dsn: str) -> None:
    Engine(empty_dsn).migrate()
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute("UPDATE skiplock.migrations SET checksum = 'old' WHERE name = '60_tick.sql'")
        c.execute("DROP FUNCTION skiplock.tick(integer)")
    assert Engine(empty_dsn).migrate() == ["60_tick.sql"]
    with psycopg.connect(empty_dsn) as c:
        assert c.execute("SELECT skiplock.tick()").fetchone() is not None


def test_upgrade_keeps_what_runs_hold(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database made before 0011 (batches found through an index on runs.batch_id):
    after the upgrade its batches list their runs, by batches.run_ids."""
    every = _migrate.sql_files()
    before = [f for f in every if f.kind == "migration" and f.name < "0011"]
    monkeypatch.setattr(_migrate, "sql_files", lambda root=None: before)
    Engine(empty_dsn).migrate()
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO skiplock.batches VALUES ('batch_old', 'old-task', 3, now()),"
            " ('batch_empty', 'old-task', 0, now())"
        )
        c.execute(
            "INSERT INTO skiplock.runs (id, task_identifier, status, payload, queue,"
            " max_attempts, order_at, available_at, created_at, updated_at, batch_id)"
            " SELECT 'run_' || i, 'old-task', 'COMPLETED', '{}', 'q', 1, now(), now(), now(),"
            " now(), CASE WHEN i <= 3 THEN 'batch_old' END FROM generate_series(1, 5) i"
        )
    monkeypatch.undo()
    assert Engine(empty_dsn).migrate() == [f.name for f in every if f not in before]
    with psycopg.connect(empty_dsn) as c:
        listed = c.execute("SELECT id FROM skiplock.list_runs(p_batch := 'batch_old')")
        assert [r[0] for r in listed.fetchall()] == ["run_3", "run_2", "run_1"]
        assert c.execute(
            "SELECT run_ids FROM skiplock.batches WHERE id = 'batch_empty'"
        ).fetchone() == ([],)


def test_functions_that_pin_plans_run_without_jit(empty_dsn: str) -> None:
    """A function that switches a plan node type off switches JIT off too: on PostgreSQL
    15-17 a disabled node costs 10^10, over jit_above_cost, and a server with JIT compiled
    each such call with LLVM (a claim took 170-260 ms instead of 0.3 on PostgreSQL 15)."""
    Engine(empty_dsn).migrate()
    with psycopg.connect(empty_dsn) as c:
        rows = c.execute(
            "SELECT p.proname, p.proconfig FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'skiplock'"
            " AND EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'enable%=off')"
        ).fetchall()
    assert {"lock_ready", "begin_attempts", "complete_attempts"} <= {name for name, _ in rows}
    assert [name for name, config in rows if "jit=off" not in config] == []


def test_function_files_only_create_or_replace() -> None:
    """Re-applying a function file must be safe: nothing in it may fail the second time."""
    for path in sorted((_migrate.sql_dir() / "functions").glob("*.sql")):
        for line in path.read_text().splitlines():
            if line.startswith("CREATE"):
                assert line.startswith("CREATE OR REPLACE"), (path.name, line)


def test_sql_files_ship_with_the_package() -> None:
    root = _migrate.sql_dir()
    assert (root / "migrations" / "0001_init.sql").is_file()
    assert (
        Path(__file__)
        .resolve()
        .parent.parent.joinpath("pyproject.toml")
        .read_text()
        .count('"sql" = "engine/sql"')
        == 1
    )
