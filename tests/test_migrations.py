"""Migrations: ledger with checksums, idempotent, safe concurrently, append-only."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _migrated_before(
    dsn: str, monkeypatch: pytest.MonkeyPatch, name: str
) -> tuple[list[Any], list[Any]]:
    """Migrate `dsn` with the migrations before `name` only (a database made by an older
    release), keeping that view of the files until `monkeypatch.undo()`; every file, and
    those applied."""
    every = _migrate.sql_files()
    before = [f for f in every if f.kind == "migration" and f.name < name]
    monkeypatch.setattr(_migrate, "sql_files", lambda root=None: before)
    Engine(dsn).migrate()
    return every, before


def test_upgrade_keeps_what_runs_hold(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database made before 0011 (batches found through an index on runs.batch_id):
    after the upgrade its batches list their runs, by batches.run_ids."""
    every, before = _migrated_before(empty_dsn, monkeypatch, "0011")
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


def test_the_row_and_deployment_of_a_new_run_are_inlined_where_runs_are_inserted(
    conn: psycopg.Connection[Any],
) -> None:
    """trigger() and insert_runs take a run's row from new_run and its task's deployment
    from task_deployment, SQL functions the planner inlines: their statements plan as if
    written out. Not inlined, a SQL function plans its query at every call. Planned here
    as PL/pgSQL plans them: with parameters, on generic plans."""
    conn.execute("SET plan_cache_mode = force_generic_plan")
    row_args = "text, jsonb, skiplock.run_values, jsonb, boolean, skiplock.runs, timestamptz"
    conn.execute(f"PREPARE one({row_args}) AS SELECT skiplock.new_run($1, $2, $3, $4, $5, $6, $7)")
    conn.execute(
        f"PREPARE many({row_args}) AS"
        " SELECT skiplock.new_run($1, i.payload, i.v, $4, $5, $6, $7)"
        " FROM (SELECT x.item->'payload' AS payload, $3 AS v, x.n"
        "       FROM jsonb_array_elements($2) WITH ORDINALITY AS x(item, n) OFFSET 0) i"
        " ORDER BY i.n"
    )
    conn.execute("PREPARE deployment(text, text) AS SELECT * FROM skiplock.task_deployment($1, $2)")
    args = "('t', '[]', NULL, '{}', true, NULL, now())"
    for statement, ids in ((f"one{args}", 1), (f"many{args}", 1), ("deployment('t', NULL)", 0)):
        explained = conn.execute(f"EXPLAIN (VERBOSE) EXECUTE {statement}").fetchall()
        plan = "\n".join(r[0] for r in explained)
        assert "new_run" not in plan and "task_deployment" not in plan, plan
        assert plan.count("nextval") == ids, plan  # gen_id, written out


# What the re-applied files of each directory may hold, besides comments: CREATE OR
# REPLACE statements of one kind. Re-applying one must be safe (nothing in it may fail the
# second time) and change nothing but what it defines: a DROP, a DO block or a data change
# belongs in a migration.
_ALLOWED = {
    "functions": re.compile(r"CREATE OR REPLACE FUNCTION skiplock\.\w+\("),
    "views": re.compile(r"CREATE OR REPLACE VIEW skiplock\.\w+ AS\b"),
    "triggers": re.compile(r"CREATE OR REPLACE TRIGGER \w+\s"),
}

# what a statement splitter must step over: comments, quoted strings and identifiers,
# dollar-quoted bodies (their opening tag); and the statement separator
_TOKEN = re.compile(
    r"""--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")*"|\$(?:[A-Za-z_]\w*)?\$|;""", re.S
)


def _statements(text: str) -> list[str]:
    """The top-level statements of a SQL file, comments removed."""
    statements: list[str] = []
    current: list[str] = []
    pos = 0
    while match := _TOKEN.search(text, pos):
        current.append(text[pos : match.start()])
        token, pos = match.group(), match.end()
        if token == ";":
            statements.append("".join(current).strip())
            current = []
        elif token.startswith("$"):  # a body: up to the same tag
            end = text.find(token, pos)
            assert end >= 0, f"unterminated {token} body"
            current.append(text[match.start() : end + len(token)])
            pos = end + len(token)
        elif token.startswith(("--", "/*")):
            current.append(" ")
        else:
            current.append(token)
    statements.append("".join([*current, text[pos:]]).strip())
    return [s for s in statements if s]


def _not_allowed(directory: str, text: str) -> list[str]:
    return [s for s in _statements(text) if not _ALLOWED[directory].match(s)]


def test_the_reapplied_files_check_catches_anything_but_create_or_replace() -> None:
    function = (
        "-- f: a comment that says DROP FUNCTION\n"
        "CREATE OR REPLACE FUNCTION skiplock.f(p text) RETURNS text\n"
        "LANGUAGE plpgsql AS $$ BEGIN DROP TABLE x; RETURN ';'; END; $$;\n"
    )
    assert _not_allowed("functions", function) == []
    drop = "DROP FUNCTION IF EXISTS skiplock.f(text)"
    assert _not_allowed("functions", function + drop + ";\n") == [drop]
    assert _not_allowed("functions", drop + ";\n" + function) == [drop]
    assert _not_allowed("functions", function + "DO $b$ BEGIN END $b$") == ["DO $b$ BEGIN END $b$"]
    view = "CREATE OR REPLACE VIEW skiplock.v AS SELECT 1"
    assert _not_allowed("functions", view) == [view]
    assert _not_allowed("views", view + ";") == []
    assert _not_allowed("views", "CREATE VIEW skiplock.v AS SELECT 1;") != []


@pytest.mark.parametrize("directory", sorted(_ALLOWED))
def test_reapplied_files_hold_only_create_or_replace_of_their_kind(directory: str) -> None:
    """Function files hold functions only, view files views, trigger files triggers: what
    drops or changes anything else goes in a migration (which runs before them)."""
    paths = sorted((_migrate.sql_dir() / directory).glob("*.sql"))
    assert paths
    for path in paths:
        assert _not_allowed(directory, path.read_text()) == [], path.name


def test_migrate_applies_every_directory() -> None:
    applied = {d for d, _ in _migrate.DIRECTORIES}
    assert applied == set(_ALLOWED) | {"migrations"}
    for path in _migrate.sql_dir().iterdir():
        assert not path.is_dir() or path.name in applied, f"{path} is never applied"


def test_upgrade_drops_the_functions_later_versions_replaced(empty_dsn: str) -> None:
    """A database migrated before 0014, when the function files dropped old signatures
    themselves: 0014 drops them, and the function files, changed since, make the current
    ones. claim kept its arguments and changed its return type, which CREATE OR REPLACE
    cannot do: it needs the migration's drop."""
    Engine(empty_dsn).migrate()
    signature = "skiplock.claim(text, text, text[], text[], integer)"
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(f"DROP FUNCTION {signature}")
        c.execute(  # claim as it was before waitpoints: no metadata column
            "CREATE FUNCTION skiplock.claim(p_worker_id text, p_version text, p_tasks text[],"
            " p_queues text[], p_limit integer) RETURNS TABLE (run_id text,"
            " task_identifier text, payload jsonb, max_duration double precision,"
            " attempt_id text, attempt_number integer) LANGUAGE sql AS"
            " 'SELECT NULL::text, NULL::text, NULL::jsonb, NULL::float8, NULL::text, 0 LIMIT 0'"
        )
        c.execute(
            "CREATE FUNCTION skiplock.subscription_settled(p_horizon xid8) RETURNS boolean"
            " LANGUAGE sql AS 'SELECT true'"
        )
        c.execute(
            "CREATE FUNCTION skiplock.register_worker(text, text, text, integer, text[],"
            " integer, jsonb) RETURNS text LANGUAGE sql AS 'SELECT NULL::text'"
        )
        with pytest.raises(psycopg.errors.InvalidFunctionDefinition), c.transaction():
            c.execute((_migrate.sql_dir() / "functions" / "30_dequeue.sql").read_bytes())
        c.execute("DELETE FROM skiplock.migrations WHERE name LIKE '0014%'")
        c.execute(
            "UPDATE skiplock.migrations SET checksum = 'before 0014'"
            " WHERE name IN ('05_realtime.sql', '20_workers.sql', '30_dequeue.sql')"
        )
    assert Engine(empty_dsn).migrate() == [
        "0014_drop_replaced_functions.sql",
        "05_realtime.sql",
        "20_workers.sql",
        "30_dequeue.sql",
    ]
    with psycopg.connect(empty_dsn) as c:
        left = c.execute(
            "SELECT oid::regprocedure::text FROM pg_proc"
            " WHERE pronamespace = 'skiplock'::regnamespace"
            " AND proname IN ('claim', 'register_worker', 'subscription_settled') ORDER BY 1"
        ).fetchall()
        assert [r[0] for r in left] == [
            "skiplock.claim(text,text,text[],text[],integer)",
            "skiplock.register_worker(text,text,text,integer,text[],integer,jsonb,"
            "double precision)",
        ]
        claim = c.execute("SELECT * FROM skiplock.claim('nobody', 'v', '{}', NULL, 1)")
        assert claim.description is not None
        assert "metadata" in [column.name for column in claim.description]


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


def test_upgrade_keeps_the_results_of_batches_completed_before(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch completed before 0031 (a replay read its runs): its BATCH waitpoint gets
    their results, in id order, so that the log of the run that waited on it holds them."""
    _migrated_before(empty_dsn, monkeypatch, "0031")
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO skiplock.runs (id, task_identifier, status, payload, queue,"
            " max_attempts, order_at, available_at, created_at, updated_at, batch_id, output,"
            " error) VALUES"
            " ('run_2', 'item', 'FAILED', '1', 'q', 1, now(), now(), now(), now(), 'batch_old',"
            ' NULL, \'{"message": "no"}\'),'
            " ('run_1', 'item', 'COMPLETED', '0', 'q', 1, now(), now(), now(), now(),"
            " 'batch_old', '{\"n\": 0}', NULL),"
            " ('run_p', 'parent', 'WAITING', '0', 'q', 1, now(), now(), now(), now(), NULL,"
            " NULL, NULL)"
        )
        c.execute(
            "INSERT INTO skiplock.batches VALUES ('batch_old', 'item', 2, now(), '{run_2,run_1}')"
        )
        c.execute(
            "INSERT INTO skiplock.waitpoints (id, type, status, batch_id, pending_runs, output,"
            " created_at, completed_at) VALUES ('waitpoint_b', 'BATCH', 'COMPLETED',"
            " 'batch_old', 0, '\"batch_old\"', now(), now())"
        )
        c.execute(
            "INSERT INTO skiplock.run_steps (run_id, position, kind, name, output, waitpoint_id,"
            " created_at) VALUES ('run_p', 0, 'batch', 'item', '\"batch_old\"', 'waitpoint_b',"
            " now())"
        )
    monkeypatch.undo()
    Engine(empty_dsn).migrate()
    with psycopg.connect(empty_dsn) as c:
        log = c.execute("SELECT kind, batch_results FROM skiplock.run_log('run_p')").fetchall()
    assert log == [
        (
            "batch",
            [
                {"id": "run_1", "status": "COMPLETED", "output": {"n": 0}, "error": None},
                {"id": "run_2", "status": "FAILED", "output": None, "error": {"message": "no"}},
            ],
        )
    ]


def test_upgrade_marks_the_edges_of_pending_waitpoints(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run waiting before 0033: its edge to a pending waitpoint is marked pending, those
    to completed ones are not, and completing the pending one resumes the run."""
    _migrated_before(empty_dsn, monkeypatch, "0033")
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO skiplock.runs (id, task_identifier, status, payload, queue,"
            " max_attempts, order_at, available_at, created_at, updated_at) VALUES"
            " ('run_w', 'parent', 'WAITING', '0', 'q', 1, now(), now(), now(), now())"
        )
        c.execute(
            "INSERT INTO skiplock.waitpoints (id, type, status, created_at, completed_at)"
            " VALUES ('waitpoint_1', 'TOKEN', 'COMPLETED', now(), now()),"
            " ('waitpoint_2', 'DATETIME', 'COMPLETED', now(), now()),"
            " ('waitpoint_3', 'TOKEN', 'COMPLETED', now(), now()),"
            " ('waitpoint_open', 'TOKEN', 'PENDING', now(), NULL)"
        )
        c.execute(
            "INSERT INTO skiplock.run_waitpoints (run_id, waitpoint_id, created_at)"
            " SELECT 'run_w', w.id, now() FROM skiplock.waitpoints w"
        )
    monkeypatch.undo()
    Engine(empty_dsn).migrate()
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        pending = c.execute(
            "SELECT waitpoint_id FROM skiplock.run_waitpoints WHERE pending"
        ).fetchall()
        assert pending == [("waitpoint_open",)]
        assert c.execute("SELECT skiplock.resume_if_ready('run_w')").fetchone() == (False,)
        c.execute("SELECT skiplock.complete_token('waitpoint_open', '1')")
        status = c.execute("SELECT status FROM skiplock.runs WHERE id = 'run_w'").fetchone()
        assert status == ("QUEUED",)


def test_upgrade_compares_identifiers_as_bytes(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database made before 0035, its views and functions in place: the upgrade collates
    the identifier columns "C" (hot-path indexes compare bytes, not strcoll), applies every
    function, view and trigger file again (the views were dropped for the type change),
    and keeps the runs, which the runs API still lists and looks up by index."""
    every = _migrate.sql_files()
    before = [f for f in every if f.kind != "migration" or f.name < "0035"]
    monkeypatch.setattr(_migrate, "sql_files", lambda root=None: before)
    Engine(empty_dsn).migrate()
    with psycopg.connect(empty_dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO skiplock.runs (id, task_identifier, status, payload, queue,"
            " max_attempts, order_at, available_at, created_at, updated_at, tags)"
            " SELECT 'run_' || i, 'old-task', 'COMPLETED', '{}', 'q', 1, now(), now(), now(),"
            " now(), '{Blue}' FROM generate_series(1, 3) i"
        )
    monkeypatch.undo()
    applied = Engine(empty_dsn).migrate()
    assert applied == ["0035_identifiers_collate_c.sql"] + [
        f.name for f in every if f.kind != "migration"
    ]
    with psycopg.connect(empty_dsn) as c:
        collations = dict(
            c.execute(
                "SELECT a.attname, coalesce(l.collname, '') FROM pg_attribute a"
                " LEFT JOIN pg_collation l ON l.oid = a.attcollation"
                " WHERE a.attrelid = 'skiplock.runs'::regclass AND a.attnum > 0"
                " AND a.atttypid IN ('text'::regtype, 'text[]'::regtype)"
            ).fetchall()
        )
        assert set(collations.values()) == {"C"}, collations
        # every column that names a run, an attempt or a worker, in every table: one
        # left in the default collation would lose its index in joins with runs
        mixed = c.execute(
            "SELECT c.relname || '.' || a.attname FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'skiplock' AND c.relkind = 'r' AND a.attnum > 0"
            " AND (a.attname IN ('id', 'run_id', 'worker_id', 'task_identifier', 'queue',"
            "                    'version', 'waitpoint_id', 'batch_id', 'key')"
            "      OR a.attname LIKE '%\\_id')"
            " AND a.atttypid = 'text'::regtype AND c.relname <> 'migrations'"
            " AND a.attcollation <> 'pg_catalog.\"C\"'::regcollation"
        ).fetchall()
        assert mixed == []
        listed = c.execute("SELECT id FROM skiplock.list_runs(p_tasks := '{old-task}')")
        assert [r[0] for r in listed.fetchall()] == ["run_3", "run_2", "run_1"]
        assert c.execute("SELECT count(*) FROM skiplock.queue_stats").fetchone() is not None
        c.execute("SET enable_seqscan = off")
        plan = c.execute(
            "EXPLAIN SELECT * FROM skiplock.runs r JOIN skiplock.attempts a"
            " ON a.run_id = r.id WHERE r.id = ANY (%s)",
            (["run_1"],),
        ).fetchall()
        assert "runs_pkey" in " ".join(r[0] for r in plan)
