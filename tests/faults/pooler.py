"""A PgBouncer in transaction mode in front of a test server, as the tests run it.

Debian's `pgbouncer` (the README's test command installs it when missing). It listens on
127.0.0.1 at a free port and reaches the server the way the given DSN does (the embedded
cluster's Unix socket, or TCP); `auth_type = any` with the server user on the database
line, so the trust-authenticated test clusters need no password file. As root it runs as
an unprivileged user (PgBouncer refuses to run as root), like the embedded cluster.

`kill()` and `start()` again restart it on the same port (the fault scenario)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from engine.db.embedded import _as, _unprivileged_user

SEARCH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


def pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    for d in SEARCH:
        if os.access(f"{d}/pgbouncer", os.X_OK):
            return f"{d}/pgbouncer"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as(server_host: str) -> pwd.struct_passwd | None:
    """As root: the owner of the server's socket directory (it can reach the socket: the
    embedded cluster keeps it in its data directory, mode 700), else an unprivileged user."""
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        with contextlib.suppress(OSError, KeyError):
            owner = pwd.getpwuid(os.stat(server_host).st_uid)
            if owner.pw_uid != 0:
                return owner
    return _unprivileged_user()


class PgBouncer:
    """One pgbouncer process in front of the server `server_dsn` names (any database on
    it: the `*` entry forwards the client's database name)."""

    def __init__(self, server_dsn: str, *, pool_size: int = 20) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError(
                "pgbouncer is not installed: apt-get install pgbouncer (the README's test "
                "command does it)"
            )
        self.binary = binary
        params = conninfo_to_dict(server_dsn)
        self.server_host = str(params.get("host") or "/var/run/postgresql")
        self.server_port = str(params.get("port") or "5432")
        self.server_user = str(params.get("user") or "postgres")
        self.pool_size = pool_size
        self.user = _run_as(self.server_host)
        self.base = Path(tempfile.mkdtemp(prefix="skiplock-pgbouncer-"))
        self.base.chmod(0o755)
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.port = _free_port()
        self.log = self.base / "pgbouncer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._write_config()

    def _write_config(self) -> None:
        (self.base / "userlist.txt").write_text(f'"{self.server_user}" ""\n')
        (self.base / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port} user={self.server_user}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = any\n"
            f"auth_file = {self.base / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 1000\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_db_connections = 0\n"
            "server_reset_query =\n"
            "server_login_retry = 1\n"
            f"logfile = {self.log}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        for name in ("userlist.txt", "pgbouncer.ini"):
            if self.user is not None:
                os.chown(self.base / name, self.user.pw_uid, self.user.pw_gid)

    def dsn(self, dbname: str, **extra: str) -> str:
        return make_conninfo(
            host="127.0.0.1",
            port=str(self.port),
            user=self.server_user,
            dbname=dbname,
            **extra,
        )

    def dsn_for(self, direct_dsn: str) -> str:
        """The pooled DSN of the database `direct_dsn` names."""
        return self.dsn(str(conninfo_to_dict(direct_dsn).get("dbname") or "postgres"))

    def start(self, timeout: float = 15.0) -> PgBouncer:
        cmd = _as(self.user, [self.binary, str(self.base / "pgbouncer.ini")])
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    self.dsn("postgres"), connect_timeout=2, prepare_threshold=None
                ) as c:
                    c.execute("SELECT 1")
                return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"pgbouncer did not start: {self.log.read_text()[-2000:]}"
                        if self.log.exists()
                        else "pgbouncer did not start"
                    ) from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: every client and server connection it held is cut."""
        if self.proc is not None and self.proc.poll() is None:
            # runuser's child is pgbouncer: the whole session goes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_for: float = 0.5) -> float:
        began = time.monotonic()
        self.kill()
        time.sleep(down_for)
        self.start()
        return time.monotonic() - began

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)
