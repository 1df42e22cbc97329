"""What a worker process holds while it waits (bench/workflows.py, the idle row): its
resident memory, and the PostgreSQL connections it has open, counted on the server side:
the pg_stat_activity backends whose socket's other end is one of the worker's sockets
(Unix sockets: the peer inode that `ss -x` reports; TCP: pg_stat_activity.client_port
against the worker's local ports). Reads /proc of the server's backends: run as their
user or root."""

from __future__ import annotations

import contextlib
import os
import subprocess

import psutil

from bench.common import Conn


def processes(pid: int) -> list[psutil.Process]:
    """The worker and every process under it."""
    top = psutil.Process(pid)
    return [top, *top.children(recursive=True)]


def rss_bytes(pid: int) -> int:
    return sum(p.memory_info().rss for p in processes(pid))


def socket_inodes(pid: int) -> set[int]:
    out = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    out.add(int(target[8:-1]))
    return out


def unix_peers() -> dict[int, int]:
    """Unix stream socket inode -> its peer's inode, from `ss -xn`."""
    text = subprocess.run(["ss", "-xn"], capture_output=True, text=True, check=True).stdout
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[5].isdigit() and parts[7].isdigit():
            out[int(parts[5])] = int(parts[7])
    return out


def connections(conn: Conn, pid: int) -> int:
    """How many PostgreSQL client backends serve the worker `pid` (and its children)."""
    procs = processes(pid)
    mine = set().union(*(socket_inodes(p.pid) for p in procs))
    peers = unix_peers()
    server_ends = {peers[i] for i in mine if i in peers}
    ports = {c.laddr.port for p in procs for c in p.net_connections(kind="tcp") if c.laddr}
    rows = conn.execute(
        "SELECT pid, client_port FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchall()
    return sum(
        1
        for backend, port in rows
        if (port is not None and port > 0 and port in ports)
        or (socket_inodes(backend) & server_ends)
    )
