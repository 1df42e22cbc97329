"""sql/schema.sql shows the schema a fresh migrate makes, and stays in step with it."""

from __future__ import annotations

import difflib

from engine.db import migrate as _migrate
from engine.db import schema_dump


def test_schema_sql_is_what_a_fresh_migrate_makes(dsn: str) -> None:
    """`dsn` is a fresh clone of the session's migrated template."""
    committed = (_migrate.sql_dir() / "schema.sql").read_text()
    fresh = schema_dump.dump(dsn)
    diff = "".join(
        list(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                "sql/schema.sql",
                "a fresh migrate",
            )
        )[:60]
    )
    assert committed == fresh, (
        f"sql/schema.sql differs from the schema a fresh migrate makes; regenerate it with "
        f"`{schema_dump.REGENERATE}`\n{diff}"
    )


def test_schema_sql_is_not_applied_by_migrate() -> None:
    assert "schema.sql" not in {f.name for f in _migrate.sql_files()}


def test_postgresql_15_view_qualifiers_are_taken_out() -> None:
    """PostgreSQL 15 qualifies the columns of a view's own relation (r.id), 16+ does not;
    columns inside a sub-SELECT keep their qualifier in both."""
    pg15 = (
        "CREATE VIEW skiplock.v AS\n"
        " SELECT r.id,\n"
        "    (skiplock.now() - r.created_at) AS age,\n"
        "    'r.id'::text AS literal,\n"
        "    COALESCE(( SELECT count(*) AS count\n"
        "           FROM skiplock.attempts a\n"
        "          WHERE (a.run_id = r.id)), (0)::bigint) AS attempts\n"
        "   FROM skiplock.runs r;\n"
    )
    pg16 = (
        "CREATE VIEW skiplock.v AS\n"
        " SELECT id,\n"
        "    (skiplock.now() - created_at) AS age,\n"
        "    'r.id'::text AS literal,\n"
        "    COALESCE(( SELECT count(*) AS count\n"
        "           FROM skiplock.attempts a\n"
        "          WHERE (a.run_id = r.id)), (0)::bigint) AS attempts\n"
        "   FROM skiplock.runs r;\n"
    )
    assert schema_dump.normalise(pg15) == schema_dump.normalise(pg16) == pg16


def test_what_pg_dump_versions_add_is_taken_out_and_function_bodies_are_kept() -> None:
    body = (
        "CREATE FUNCTION skiplock.f() RETURNS integer\n"
        "    LANGUAGE plpgsql\n"
        "    AS $$\n"
        "-- a comment at the start of a line, in the body\n"
        "SET x = 1;\n"
        "\n"
        "\n"
        "BEGIN RETURN 1; END $$;\n"
    )
    dump = (
        "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\n"
        "-- Dumped from database version 17.6\n\n"
        "SET statement_timeout = 0;\nSET transaction_timeout = 0;\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n\n"
        "--\n-- Name: f(); Type: FUNCTION; Schema: skiplock; Owner: -\n--\n\n"
        + body
        + "\n\n\\unrestrict AbC123\n"
    )
    assert schema_dump.normalise(dump) == body
