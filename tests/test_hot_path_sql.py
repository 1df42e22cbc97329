"""The SQL helpers on the claim and completion path stay cheap to call: the ones that
cannot be inlined are PL/pgSQL (a SQL function that is not inlined is planned at every
call on PostgreSQL before 18), and purge_at, evaluated for every completed run's index
entry, is inlined and gives what the plain sum gives."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

NOT_INLINABLE = ["worker_is_active", "executing_run"]


@pytest.mark.parametrize("name", NOT_INLINABLE)
def test_locking_helpers_are_plpgsql(conn: psycopg.Connection[Any], name: str) -> None:
    row = conn.execute(
        "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'skiplock' AND p.proname = %s",
        (name,),
    ).fetchone()
    assert row is not None and row[0] == "plpgsql"


def test_purge_at_is_inlined(conn: psycopg.Connection[Any]) -> None:
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "EXPLAIN (VERBOSE) SELECT skiplock.purge_at(f, 3600, NULL) FROM (VALUES (now())) v(f)"
        )
    )
    assert "purge_at" not in plan, plan


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Australia/Lord_Howe"])
def test_purge_at_equals_the_plain_sum(conn: psycopg.Connection[Any], zone: str) -> None:
    """Across time zones with daylight saving (a day's retention over a DST change), and
    with an idempotency key expiring later or earlier."""
    conn.execute("SELECT set_config('timezone', %s, false)", (zone,))
    diffs, total = conn.execute(
        """
        SELECT count(*) FILTER (WHERE skiplock.purge_at(f, r, k)
                                      IS DISTINCT FROM greatest(f + r * interval '1 second', k)),
               count(*)
          FROM (SELECT timestamptz '2026-03-01 00:00:00+00' + g * interval '17 min 3.25 s' AS f,
                       (g % 53) * 3600.5 + 0.125 AS r,
                       CASE g % 3 WHEN 0 THEN timestamptz '2026-05-01 00:00:00+00'
                                  WHEN 1 THEN timestamptz '2026-01-01 00:00:00+00' END AS k
                  FROM generate_series(1, 20000) g) s
        """
    ).fetchone()  # type: ignore[misc]
    assert (diffs, total) == (0, 20000)
