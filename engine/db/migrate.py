"""Schema migrations: numbered files in sql/migrations, then the re-applied files of
sql/functions, sql/views and sql/triggers.

A ledger table (skiplock.migrations) records each file applied with its checksum.
Migrations are append-only: a changed checksum of an applied migration is an error.
The other files hold only CREATE OR REPLACE statements of one kind each (functions,
views, triggers: tests/test_migrations.py checks it) and are re-applied when their
checksum changes, after every migration, so a migration can drop what a changed file
then creates anew: a function whose arguments or return type change, which CREATE OR
REPLACE cannot do. A migration that drops what an unchanged file creates deletes that
file's ledger row: the ledger is read again after the migrations. Views and triggers
come after the functions they call. Everything runs in one transaction under an advisory
lock, so concurrent migrators serialise and each file is applied exactly once.

sql/schema.sql is not applied: it shows the schema a fresh migrate makes
(engine.db.schema_dump writes it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ..errors import MigrationError, SchemaNotMigratedError

_LOCK_KEY = 0x736B69706C6F636B  # "skiplock": the advisory lock all migrators take

# kind: how a file is applied, "migration" once, "function" again at every change (the
# files of sql/views and sql/triggers too).
_LEDGER = """
CREATE TABLE IF NOT EXISTS skiplock.migrations (
    name       text        PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('migration', 'function')),
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class SqlFile:
    name: str
    kind: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def sql_dir() -> Path:
    """sql/ as shipped in the wheel (engine/sql), else the source checkout's sql/."""
    package = Path(__file__).resolve().parent.parent  # engine/
    for candidate in (package / "sql", package.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise MigrationError(f"sql/ not found in or next to {package}")


# sql/'s directories in the order they are applied, with the ledger kind of their files
DIRECTORIES = (
    ("migrations", "migration"),
    ("functions", "function"),
    ("views", "function"),
    ("triggers", "function"),
)


def sql_files(root: Path | None = None) -> list[SqlFile]:
    """Every file to apply, in order. The ledger knows a file by its name alone, so
    names are unique across the directories."""
    root = root or sql_dir()
    files = [
        SqlFile(p.name, kind, p.read_text())
        for directory, kind in DIRECTORIES
        for p in sorted((root / directory).glob("*.sql"))
    ]
    names = [f.name for f in files]
    if shared := sorted({name for name in names if names.count(name) > 1}):
        raise MigrationError(f"file names must be unique across {root}'s directories: {shared}")
    return files


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply what is missing or changed; return the names applied (empty when current).

    `conn` must be a connection not inside a transaction; the work commits as one unit."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS skiplock")
        conn.execute(_LEDGER)
        ledger = _ledger(conn)
        migrated = False
        for f in sql_files():
            if f.kind != "migration" and migrated:
                # a migration may drop what a file creates and forget that file (a view,
                # before its columns change type: 0035): read the ledger again
                ledger, migrated = _ledger(conn), False
            recorded = ledger.get(f.name)
            if recorded == f.checksum:
                continue
            if recorded is not None and f.kind == "migration":
                raise MigrationError(
                    f"migration {f.name} was changed after it was applied; migrations are "
                    "append-only: add a new numbered file instead"
                )
            conn.execute(f.text.encode())
            conn.execute(
                "INSERT INTO skiplock.migrations (name, kind, checksum) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
                (f.name, f.kind, f.checksum),
            )
            applied_now.append(f.name)
            migrated = migrated or f.kind == "migration"
    return applied_now


def _ledger(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT name, checksum FROM skiplock.migrations").fetchall()
    return {name: checksum for name, checksum in rows}


def check_applied(applied: set[str]) -> None:
    """Raise `SchemaNotMigratedError` unless every sql/ file of this version is in the
    ledger (`applied`). A function file changed since it was applied is not counted: the
    database may be newer than this code, and migrating from older code would undo it."""
    missing = [f.name for f in sql_files() if f.name not in applied]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise SchemaNotMigratedError(f"{len(missing)} file(s) of this version not applied: {shown}")
