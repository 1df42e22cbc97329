"""One LISTEN connection per process and database, shared by everything in the process
that waits for notifications: run subscriptions, and workers waiting for work.

A daemon thread owns the connection. Handlers are called on that thread with the
payloads of one read, grouped by channel (a burst of notifications is one call: the
debounce), or with None after the connection was (re)established, meaning "you may have
missed notifications: catch up by reading the state". Handlers must be quick; they may
run queries on the connection they are given (its notifications are kept meanwhile).

A lost connection (terminated backend, server restart) is reopened with backoff, LISTENs
are re-issued, and every handler then gets its None. Notifications are hints, never the
state itself, so nothing is missed as long as handlers re-read on None.

Channels in GATED are only announced while some session is registered as a listener of
them (skiplock.subscribe(), see sql/functions/05_realtime.sql). A transaction that looked
for listeners just before the registration committed announces nothing, so handlers of a
gated channel get their None only once every transaction older than the registration has
ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
from psycopg import sql

log = logging.getLogger("skiplock.listener")

Handler = Callable[[list[str] | None, psycopg.Connection[Any]], None]
GATED = frozenset({"skiplock_runs"})

_IDLE_CHECK = 5.0  # seconds without traffic before the connection is probed
_SETTLE_POLL = 0.02  # seconds between checks of a gated registration's horizon
_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(eq=False)
class Registration:
    channel: str
    handler: Handler
    pending_catch_up: bool = field(default=False)


class Listener:
    """The process's LISTEN connection for one DSN; get it with `Listener.for_dsn`."""

    _instances: ClassVar[dict[str, Listener]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def for_dsn(cls, dsn: str) -> Listener:
        with cls._instances_lock:
            listener = cls._instances.get(dsn)
            if listener is None:
                listener = cls._instances[dsn] = cls(dsn)
            return listener

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = threading.Lock()
        self._registrations: list[Registration] = []
        self._calls: list[Callable[[psycopg.Connection[Any]], None]] = []
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.connects = 0  # connections opened so far (observable in tests)

    # -- API for other threads -----------------------------------------------------------

    def add(self, channel: str, handler: Handler) -> Registration:
        """Call `handler` for notifications on `channel` from now on. It gets a None once
        the channel is being listened to; changes before that must be read by the caller."""
        reg = Registration(channel, handler, pending_catch_up=True)
        with self._lock:
            self._registrations.append(reg)
            self._ensure_thread()
        self._poke()
        return reg

    def remove(self, reg: Registration) -> None:
        with self._lock:
            if reg in self._registrations:
                self._registrations.remove(reg)
        self._poke()

    def call(self, fn: Callable[[psycopg.Connection[Any]], None]) -> None:
        """Run `fn` on the listener thread with its connection, once it is connected."""
        with self._lock:
            self._calls.append(fn)
            self._ensure_thread()
        self._poke()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._main, name="skiplock-listener", daemon=True
            )
            self._thread.start()

    def _poke(self) -> None:
        # a full pipe means a wake-up is pending anyway
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"\0")

    # -- the listener thread -------------------------------------------------------------

    def _idle(self) -> bool:
        with self._lock:
            if self._registrations or self._calls:
                return False
            self._thread = None  # the next add() starts a new thread
            return True

    def _main(self) -> None:
        failures = 0
        while not self._idle():
            try:
                with self._connect() as conn:
                    failures = 0
                    self._serve(conn)
            except (psycopg.Error, OSError) as exc:
                delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                failures += 1
                # the first failure in a row is worth a warning, the retries are not
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "LISTEN connection lost (%s); reconnecting in %.2fs",
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    delay,
                )
                time.sleep(delay)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.Connection.connect(
            self.dsn, autocommit=True, application_name=f"skiplock-listener:{os.getpid()}"
        )
        self.connects += 1
        return conn

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        received: dict[str, list[str]] = {}

        def collect(channel: str, payload: str) -> None:
            received.setdefault(channel, []).append(payload)

        conn.add_notify_handler(lambda n: collect(n.channel, n.payload))
        listening: set[str] = set()
        horizon: Any = None  # of the gated registration, until settled
        with self._lock:  # every handler catches up on a new connection
            for reg in self._registrations:
                reg.pending_catch_up = True
        while True:
            with self._lock:
                regs = list(self._registrations)
                calls, self._calls = self._calls, []
            wanted = {r.channel for r in regs}
            if not wanted and not calls:
                if listening & GATED:
                    conn.execute("SELECT skiplock.unsubscribe()")
                return  # closes the connection; the thread ends if still idle
            for channel in sorted(wanted - listening):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if channel in GATED:
                    conn.execute("SELECT skiplock.subscribe()")
                    horizon = _scalar(conn, "SELECT skiplock.subscription_horizon()")
                listening.add(channel)
            for channel in sorted(listening - wanted):
                conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
                if channel in GATED:
                    conn.execute("SELECT skiplock.unsubscribe()")
                listening.discard(channel)
            if horizon is not None and _scalar(
                conn, "SELECT skiplock.subscription_settled(%s)", horizon
            ):
                horizon = None
            for fn in calls:
                _guarded(_ignoring_payloads(fn), None, conn)
            self._dispatch(conn, regs, received, gated_ready=horizon is None)

            # notifications that came in while handlers ran: go round again at once
            timeout = 0.0 if received else _SETTLE_POLL if horizon is not None else _IDLE_CHECK
            fd, wake = conn.fileno(), self._wake_r.fileno()
            readable, _, _ = select.select([fd, wake], [], [], timeout)
            if wake in readable:
                _drain(self._wake_r)
            if fd in readable:
                conn.pgconn.consume_input()
                while (pgn := conn.pgconn.notifies()) is not None:
                    collect(pgn.relname.decode(), pgn.extra.decode())
                if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the LISTEN connection was closed")
            elif not readable and timeout == _IDLE_CHECK:
                conn.execute("SELECT 1")  # a quiet connection may be a dead one

    def _dispatch(
        self,
        conn: psycopg.Connection[Any],
        regs: list[Registration],
        received: dict[str, list[str]],
        *,
        gated_ready: bool,
    ) -> None:
        notes = dict(received)
        received.clear()
        for reg in regs:
            if reg.pending_catch_up and (gated_ready or reg.channel not in GATED):
                reg.pending_catch_up = False
                _guarded(reg.handler, None, conn)
            payloads = notes.get(reg.channel)
            if payloads:
                _guarded(reg.handler, payloads, conn)


def _guarded(handler: Handler, payloads: list[str] | None, conn: psycopg.Connection[Any]) -> None:
    try:
        handler(payloads, conn)
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise  # the connection is gone: reconnect
    except Exception:
        log.exception("a notification handler failed")


def _ignoring_payloads(fn: Callable[[psycopg.Connection[Any]], None]) -> Handler:
    def handler(_payloads: list[str] | None, conn: psycopg.Connection[Any]) -> None:
        fn(conn)

    return handler


def _scalar(conn: psycopg.Connection[Any], query: Any, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    return row[0] if row else None


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass
