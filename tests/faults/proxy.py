"""A TCP proxy between a worker and PostgreSQL, in the test process (stdlib asyncio on a
thread of its own), that can cut every connection or partition them (blackhole).

- `cut()`: every current connection is reset (RST, both the client's and the server's
  side), as a middlebox dropping its state or a host's network restarting would; new
  connections are accepted and forwarded as before.
- `blackhole(seconds)`: a partition. Nothing arrives in either direction: bytes read from
  either side are held, not forwarded; connections opened meanwhile are accepted but
  never reach the server (the client waits for an answer that does not come, as it would
  for a SYN nobody acknowledges). When the partition ends, every connection that lived
  through it (or was opened during it) is reset and the held bytes are discarded: a
  partition longer than the lease, under keepalives, retransmission timeouts and stateful
  firewalls, ends TCP sessions, and a reset is what the peers then see. (`cut_after=False`
  models the other ending, a short partition TCP rides out: the held bytes are then
  delivered, late, and the sessions go on.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
_CHUNK = 65536


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    cut: bool = False
    held: int = field(default=0)  # bytes held during a partition

    def reset(self) -> None:
        """Abort both sides with an RST (SO_LINGER 0), dropping anything unsent."""
        self.cut = True
        for w in (self.client, self.server):
            if w is None or w.transport.is_closing():
                continue
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()


class Proxy:
    """Listens on 127.0.0.1:<free port> and forwards to `upstream` (host, port)."""

    def __init__(self, upstream_host: str, upstream_port: int, name: str = "proxy") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.name = name
        self.port = 0
        self.connections = 0  # accepted so far
        self.cuts = 0  # connections reset by cut() or at the end of a partition
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._open: asyncio.Event | None = None  # set: forwarding; clear: partitioned

    # -- control, from any thread ------------------------------------------------------------

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._start())
        return self

    def cut(self) -> int:
        """Reset every current connection; returns how many."""
        return self._call(self._cut())

    def blackhole(self, seconds: float, cut_after: bool = True) -> tuple[int, int]:
        """Partition for `seconds` (blocking). Returns (connections reset at the end, bytes
        held and discarded); with `cut_after=False` the held bytes are delivered instead
        and nothing is reset."""
        self._call(self._partition())
        try:
            threading.Event().wait(seconds)
        finally:
            result = self._call(self._heal(cut_after))
        return result

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- on the proxy's loop -----------------------------------------------------------------

    async def _start(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _cut(self) -> int:
        conns = list(self._conns)
        for c in conns:
            c.reset()
        self.cuts += len(conns)
        return len(conns)

    async def _partition(self) -> None:
        assert self._open is not None
        self._open.clear()

    async def _heal(self, cut_after: bool) -> tuple[int, int]:
        assert self._open is not None
        held = sum(c.held for c in self._conns)
        n = await self._cut() if cut_after else 0
        for c in self._conns:
            c.held = 0
        self._open.set()
        return n, held

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()
        if self._open is not None:
            self._open.set()  # let held handlers see their cut and end

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._open is not None
        self.connections += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            await self._open.wait()  # opened during a partition: it never reaches the server
            if conn.cut:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return  # the server is down: the client sees its connection closed
            conn.server = up_writer
            if conn.cut:  # cut while connecting
                conn.reset()
                return
            await asyncio.gather(
                self._pipe(reader, up_writer, conn), self._pipe(up_reader, writer, conn)
            )
        finally:
            self._conns.discard(conn)
            if not conn.cut:
                for w in (conn.client, conn.server):
                    if w is not None:
                        w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        assert self._open is not None
        try:
            while not conn.cut:
                data = await reader.read(_CHUNK)
                if not data or conn.cut:
                    break
                if not self._open.is_set():
                    conn.held += len(data)  # partitioned: held until it heals (or dropped)
                    await self._open.wait()
                    if conn.cut:
                        break
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            # one side ended (EOF or error): end the other too, as the server would
            if not conn.cut:
                for w in (conn.client, conn.server):
                    if w is not None and not w.transport.is_closing():
                        w.close()
