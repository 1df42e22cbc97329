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

Channels in GATED carry only what a registered session watches (skiplock.subscribe()
and skiplock.watch(), see sql/functions/05_realtime.sql): skiplock_runs, and
skiplock_logs (new records of a run's logs, sql/functions/66_run_logs.sql). On each
connection the listener registers the session, then calls the channel's `on_connect`
hooks (which say what to watch). A transaction that looked for watchers just before such
a registration committed announces nothing, so handlers of a gated channel get their
None only once every transaction older than the registration has ended;
`after_settled` schedules any other work on the same rule.

A polling listener (`poll_interval`, for a DSN behind a transaction-mode pooler, where
LISTEN never receives) listens to nothing: it tells every handler to catch up (None)
every `poll_interval` seconds, on a connection of its own that keeps no session state
(no prepared statements, no startup options), and runs `after_settled` work at the
next round. Gated channels register nothing (skiplock.subscribe/watch key by session).
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
OnConnect = Callable[[psycopg.Connection[Any]], None]
GATED = frozenset({"skiplock_runs", "skiplock_logs"})

_IDLE_CHECK = 5.0  # seconds without traffic before the connection is probed
_SETTLE_POLL = 0.02  # seconds between checks of a gated registration's horizon
_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(eq=False)
class Registration:
    channel: str
    handler: Handler
    on_connect: OnConnect | None = None
    pending_catch_up: bool = field(default=False)


class Listener:
    """The process's LISTEN connection for one DSN; get it with `Listener.for_dsn`."""

    _instances: ClassVar[dict[tuple[str, float | None], Listener]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def for_dsn(cls, dsn: str, *, poll_interval: float | None = None) -> Listener:
        """The process's listener for `dsn`; with `poll_interval`, its polling one."""
        with cls._instances_lock:
            listener = cls._instances.get((dsn, poll_interval))
            if listener is None:
                listener = cls._instances[dsn, poll_interval] = cls(dsn, poll_interval)
            return listener

    def __init__(self, dsn: str, poll_interval: float | None = None) -> None:
        self.dsn = dsn
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._registrations: list[Registration] = []
        self._calls: list[Callable[[psycopg.Connection[Any]], None]] = []
        self._thread: threading.Thread | None = None
        # (horizon, fn): run fn once no transaction older than horizon is in flight
        self._waiting: list[tuple[int, Callable[[psycopg.Connection[Any]], None]]] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.connects = 0  # connections opened so far (observable in tests)

    # -- API for other threads -----------------------------------------------------------

    def add(
        self, channel: str, handler: Handler, on_connect: OnConnect | None = None
    ) -> Registration:
        """Call `handler` for notifications on `channel` from now on. It gets a None once
        the channel is being listened to; changes before that must be read by the caller.
        `on_connect(conn)` runs on every new connection before that None."""
        reg = Registration(channel, handler, on_connect, pending_catch_up=True)
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

    def after_settled(self, fn: Callable[[psycopg.Connection[Any]], None]) -> None:
        """Run `fn` on the listener thread once every transaction in flight now (on the
        listener's clock: after the calls queued before this one) has ended. A polling
        listener runs it at its next round (it registers nothing that could be missed)."""
        if self.polling:
            self.call(fn)
            return
        self.call(lambda conn: self._waiting.append((_horizon(conn), fn)))

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

    @property
    def polling(self) -> bool:
        """Polls instead of listening (see the module's docstring)."""
        return self.poll_interval is not None

    def _connect(self) -> psycopg.Connection[Any]:
        if self.polling:
            conn = psycopg.Connection.connect(
                self.dsn,
                autocommit=True,
                application_name=f"skiplock-poller:{os.getpid()}",
                prepare_threshold=None,  # a pooler's server sessions change under it
            )
        else:
            conn = psycopg.Connection.connect(
                self.dsn,
                autocommit=True,
                application_name=f"skiplock-listener:{os.getpid()}",
                # handlers re-run a few statements all the time: planning them anew each
                # time cost more than running them (bench/realtime.py); their generic
                # plans are good
                options="-c plan_cache_mode=force_generic_plan",
            )
        self.connects += 1
        return conn

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        if self.polling:
            self._poll(conn)
            return
        received: dict[str, list[str]] = {}

        def collect(channel: str, payload: str) -> None:
            received.setdefault(channel, []).append(payload)

        conn.add_notify_handler(lambda n: collect(n.channel, n.payload))
        listening: set[str] = set()
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
                self._waiting.clear()  # catch-ups of subscriptions that are gone
                return  # closes the connection; the thread ends if still idle
            # the session is registered while it listens to any gated channel: unregistering
            # removes every watch of the session, the other gated channels' too
            for channel in sorted(wanted - listening):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if channel in GATED and not listening & GATED:
                    conn.execute("SELECT skiplock.subscribe()")
                listening.add(channel)
            for channel in sorted(listening - wanted):
                conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
                listening.discard(channel)
                if channel in GATED and not listening & GATED:
                    conn.execute("SELECT skiplock.unsubscribe()")
            for fn in calls:
                _guarded(_ignoring_payloads(fn), None, conn)
            self._catch_up(conn, regs)
            self._run_settled(conn)
            self._dispatch(conn, regs, received)

            # notifications that came in while handlers ran: go round again at once
            timeout = 0.0 if received else _SETTLE_POLL if self._waiting else _IDLE_CHECK
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

    def _poll(self, conn: psycopg.Connection[Any]) -> None:
        """A polling listener's rounds: the calls, new registrations' None at once, and
        every `poll_interval` seconds every handler's None."""
        assert self.poll_interval is not None
        with self._lock:
            for reg in self._registrations:
                reg.pending_catch_up = True
        next_poll = time.monotonic() + self.poll_interval
        while True:
            with self._lock:
                regs = list(self._registrations)
                calls, self._calls = self._calls, []
            if not regs and not calls:
                return
            for fn in calls:
                _guarded(_ignoring_payloads(fn), None, conn)
            polling = time.monotonic() >= next_poll
            if polling:
                next_poll = time.monotonic() + self.poll_interval
            for reg in regs:
                if polling or reg.pending_catch_up:
                    reg.pending_catch_up = False
                    _guarded(reg.handler, None, conn)
            timeout = max(next_poll - time.monotonic(), 0.0)
            readable, _, _ = select.select([self._wake_r.fileno()], [], [], timeout)
            if readable:
                _drain(self._wake_r)

    def _catch_up(self, conn: psycopg.Connection[Any], regs: list[Registration]) -> None:
        """New registrations, and all of them on a new connection, get their None: at once
        on a plain channel; on a gated one after `on_connect` and once settled."""
        for reg in regs:
            if not reg.pending_catch_up:
                continue
            reg.pending_catch_up = False
            if reg.channel not in GATED:
                _guarded(reg.handler, None, conn)
                continue
            if reg.on_connect is not None:
                _guarded(_ignoring_payloads(reg.on_connect), None, conn)
            self._waiting.append((_horizon(conn), _ignoring_payloads_none(reg.handler)))

    def _run_settled(self, conn: psycopg.Connection[Any]) -> None:
        if not self._waiting:
            return
        xmin = _xmin(conn)
        due = [fn for h, fn in self._waiting if h <= xmin]
        self._waiting = [(h, fn) for h, fn in self._waiting if h > xmin]
        for fn in due:
            _guarded(_ignoring_payloads(fn), None, conn)

    def _dispatch(
        self,
        conn: psycopg.Connection[Any],
        regs: list[Registration],
        received: dict[str, list[str]],
    ) -> None:
        notes = dict(received)
        received.clear()
        for reg in regs:
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


def _ignoring_payloads_none(handler: Handler) -> Callable[[psycopg.Connection[Any]], None]:
    def fn(conn: psycopg.Connection[Any]) -> None:
        handler(None, conn)

    return fn


def _horizon(conn: psycopg.Connection[Any]) -> int:
    """The next xid: every transaction that could have read the state before now has one
    below it (it wrote before it looked for watchers)."""
    row = conn.execute("SELECT skiplock.subscription_horizon()::text").fetchone()
    assert row is not None
    return int(row[0])


def _xmin(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(row[0])


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass
