"""Run logs, the worker's side: the `logging` records a run emits, buffered per attempt
and written in batches.

What is stored with the run:

* every record of `ctx.logger` (api/context.py), from whichever thread;
* with capture on (the task's `capture_logs`, else its engine's), every record created
  while the attempt runs, from any logger (a library's too): in the attempt's asyncio
  task and in what carries its context (a `def` task's thread, `asyncio.to_thread`, tasks
  it starts, sync hooks);
* always, the records of `skiplock.hooks` in the attempt's context: a hook or middleware
  that raised is logged to the run.

Never the worker's own loggers' (`skiplock.*` otherwise): their lines are about the
worker (claims, outcomes, its connection), and go to its stderr as before.

How a record is caught: a log record factory (`logging.setLogRecordFactory`), installed
once per process and chained to the factory before it, looks up the attempt of the
current context: the durable execution the executor sets for every attempt
(api/durable.py). Outside an attempt that costs one context-variable read. Not a handler
on the root logger: one there would silence logging's last resort (a process with no
logging configured would stop printing warnings), and goes away when the application
reconfigures logging (dictConfig, basicConfig(force=True)). Records are formatted as they
are made (their arguments may change later); a logger's level still decides what is made.

Buffers and bounds: an attempt's buffer is made on its first record, and holds at most
1,000 records and 256 KB between two writes (the oldest dropped and counted, as the
database drops them past the same bounds per run); a message or traceback is cut at 16 K
characters.

Writes: one statement (skiplock.append_run_logs) for every buffer of the worker, every
0.5 s while any holds records, and before outcomes are recorded whenever records are
held (`pending`, checked by the claim loop before a claim carries completions and by
Outcomes before a failure or a batch of its own): an attempt's last lines are stored
before its outcome, a failing run's before its failure, and a claim's batch of 50
successes costs one write, not 50. A run that logs nothing costs nothing: no buffer, no
write, one check per claim round. A write that fails is tried again by the next one (a
lost connection may have committed it: its records may then be stored twice); one the
database refuses is dropped, with a warning.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg

from ..api import context as _context
from ..api.durable import current_execution
from ..db import queries as _queries
from ..errors import InvalidArgumentError, SkiplockError
from .replay import Execution

if TYPE_CHECKING:
    from ..api.context import TaskContext
    from ..api.engine import Engine

log = logging.getLogger("skiplock.worker")

MAX_RECORDS = 1000  # a buffer's records between two writes (the database's bound per run)
MAX_BYTES = 256 * 1024  # their message and traceback bytes
MAX_FIELD = 16 * 1024  # characters of a message, of a traceback
INTERVAL = 0.5  # seconds between the writes of what was logged meanwhile

# (attempt, time.time() when made, level, logger, message, exception, bytes)
Entry = tuple[int, float, str, str, str, str | None, int]

_lock = threading.Lock()  # every buffer's records, and each writer's list of them
_formatter = logging.Formatter()


class AttemptLog:
    """The records of one attempt not yet written."""

    __slots__ = ("attempt", "bytes", "dropped", "entries", "queued", "run_id", "writer")

    def __init__(self, writer: RunLogWriter, run_id: str, attempt: int) -> None:
        self.writer, self.run_id, self.attempt = writer, run_id, attempt
        self.entries: list[Entry] = []
        self.bytes = 0
        self.dropped = 0  # records dropped since the last write, the buffer being full
        self.queued = False  # in its writer's list of buffers to write

    def add(self, record: logging.LogRecord) -> None:
        entry = _entry(self.attempt, record)
        with _lock:
            self.entries.append(entry)
            self.bytes += entry[6]
            if len(self.entries) > MAX_RECORDS or self.bytes > MAX_BYTES:
                self._keep([])
            if not self.queued:
                self.queued = True
                self.writer.dirty.append(self)

    def _keep(self, entries: list[Entry]) -> None:
        """Append `entries` (newer than those held), then drop the oldest past the bounds.
        Under `_lock`."""
        held = self.entries
        held.extend(entries)
        for e in entries:
            self.bytes += e[6]
        cut = 0
        while len(held) - cut > MAX_RECORDS or (self.bytes > MAX_BYTES and len(held) - cut > 1):
            self.bytes -= held[cut][6]
            cut += 1
        if cut:
            del held[:cut]
            self.dropped += cut

    def take(self) -> tuple[list[Entry], int]:
        """Its records and drops, for a write (the buffer is left empty). Under `_lock`."""
        entries, dropped = self.entries, self.dropped
        self.entries, self.bytes, self.dropped, self.queued = [], 0, 0, False
        return entries, dropped

    def give_back(self, entries: list[Entry], dropped: int) -> None:
        """A write failed: hold its records again, before those logged since. Under
        `_lock`."""
        newer = self.entries
        self.entries, self.bytes = [], 0
        self._keep(entries)
        self._keep(newer)
        self.dropped += dropped
        if not self.queued:
            self.queued = True
            self.writer.dirty.append(self)


def _entry(attempt: int, record: logging.LogRecord) -> Entry:
    try:
        message = record.getMessage()
    except Exception as exc:  # its arguments do not fit its format: keep what it said
        message = f"{record.msg!r} {record.args!r} (not formatted: {exc})"
    exception = None
    if record.exc_info:
        exception = _formatter.formatException(record.exc_info)
    elif record.exc_text:
        exception = record.exc_text
    if record.stack_info:
        exception = f"{exception}\n{record.stack_info}" if exception else record.stack_info
    message, size = _text(message)
    if exception is not None:
        exception, more = _text(exception)
        size += more
    name = _text(record.name)[0]
    return (attempt, record.created, record.levelname, name, message, exception, size)


def _text(value: str) -> tuple[str, int]:
    """`value` as the database can store it (cut at MAX_FIELD characters, no NUL, no lone
    surrogate), and its size in bytes."""
    if len(value) > MAX_FIELD:
        value = f"{value[:MAX_FIELD]}… [cut: {len(value) - MAX_FIELD:,} more characters]"
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        return value, len(value.encode())
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode()
        return value, len(value.encode())


class RunLogWriter:
    """Writes the run logs of the attempts of an engine's workers on one event loop (one,
    usually): shared by those workers (`acquire`, `release`)."""

    _writers: ClassVar[dict[tuple[int, asyncio.AbstractEventLoop], RunLogWriter]] = {}
    _installed: ClassVar[bool] = False

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine, self.loop = engine, loop
        self.dirty: list[AttemptLog] = []  # buffers holding records (under `_lock`)
        self._sending = asyncio.Lock()
        self._users = 0
        self._flusher: asyncio.Task[None] | None = None
        self._failing = False  # the last write failed (one warning per outage)

    @classmethod
    def acquire(cls, engine: Engine) -> RunLogWriter:
        """The writer of `engine` on the running loop, its flusher started, for a worker
        that calls `release` when it stops."""
        loop = asyncio.get_running_loop()
        with _lock:
            _install()
            writer = cls._writers.get((id(engine), loop))
            if writer is None:
                writer = cls._writers[(id(engine), loop)] = cls(engine, loop)
            writer._users += 1
        if writer._flusher is None:
            # no context variables: what it logs belongs to no run
            writer._flusher = loop.create_task(
                writer._run(), name="skiplock-run-logs", context=contextvars.Context()
            )
        return writer

    async def release(self) -> None:
        """A worker stops: the last one writes what is left and stops the flusher."""
        with _lock:
            self._users -= 1
            if self._users > 0:
                return
            del self._writers[(id(self.engine), self.loop)]
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self.flush()

    @classmethod
    def find(cls, ctx: TaskContext) -> RunLogWriter | None:
        """The writer of the attempt `ctx` (by the durable execution of the current
        context, else a writer of an engine with its task). Under `_lock`."""
        execution = current_execution.get()
        if isinstance(execution, Execution) and execution.ctx is ctx:
            writer = cls._writers.get((id(execution.engine), execution.loop))
            if writer is not None:
                return writer
        for writer in cls._writers.values():
            if ctx.task_id in writer.engine.tasks:
                return writer
        return None

    def sending(self) -> bool:
        return self._sending.locked()

    async def write_now(self) -> None:
        """Write what is held (after a write in flight): outcomes are recorded after the
        records of their attempts. Shielded (a cancel of the caller does not cut the write
        short) and in an empty context (what the write logs is nobody's run's)."""
        write = self.loop.create_task(self.flush(), context=contextvars.Context())
        await asyncio.shield(write)

    async def flush(self) -> None:
        """Write every buffer's records, in one statement. Never raises but cancelled."""
        async with self._sending:
            with _lock:
                dirty, self.dirty = self.dirty, []
                taken = [(buf, *buf.take()) for buf in dirty]
            if taken:
                await self._send(taken)

    async def _send(self, taken: list[tuple[AttemptLog, list[Entry], int]]) -> None:
        now = time.time()
        batch = [
            {
                "run_id": buf.run_id,
                "dropped": dropped,
                "records": [
                    [e[0], round(max(now - e[1], 0.0), 6), e[2], e[3], e[4], e[5]] for e in entries
                ],
            }
            for buf, entries, dropped in taken
        ]
        text = json.dumps(batch, ensure_ascii=False, separators=(",", ":"))
        try:
            await self.engine.adb.run(_queries.append_run_logs(text))
        except asyncio.CancelledError:  # the worker stops: its last write takes them
            with _lock:
                for buf, entries, dropped in taken:
                    buf.give_back(entries, dropped)
            raise
        except (psycopg.Error, SkiplockError) as exc:
            count = sum(len(entries) for _, entries, _ in taken)
            if isinstance(exc, psycopg.DataError | InvalidArgumentError):  # resending won't help
                log.warning("dropped %d run log records the database refused: %s", count, exc)
                return
            if not self._failing:
                log.warning("could not write %d run log records (%s); will retry", count, exc)
                self._failing = True
            with _lock:
                for buf, entries, dropped in taken:
                    buf.give_back(entries, dropped)
            return
        if self._failing:
            log.info("run log records written again")
            self._failing = False

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            if self.dirty:
                try:
                    await self.flush()
                except Exception:
                    log.exception("writing run logs failed")


def _buffer(ctx: TaskContext) -> AttemptLog | None:
    """The attempt's buffer, made on its first record (None: no worker writes it)."""
    buf: AttemptLog | None = ctx._run_log
    if buf is not None:
        return buf
    with _lock:
        buf = ctx._run_log
        if buf is None:
            writer = RunLogWriter.find(ctx)
            if writer is None:
                return None
            buf = ctx._run_log = AttemptLog(writer, ctx.run_id, ctx.attempt)
    return buf


def _store(ctx: TaskContext, record: logging.LogRecord) -> None:
    """ctx.logger's sink: its records go to the run's log."""
    buf = _buffer(ctx)
    if buf is not None:
        buf.add(record)


_previous_factory = logging.getLogRecordFactory()


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """The record factory: a record made in an attempt's context goes to its run's log if
    the attempt captures logs (or it is one of skiplock.hooks)."""
    record = _previous_factory(*args, **kwargs)
    execution = current_execution.get()
    if execution is None or not isinstance(execution, Execution):
        return record
    name = record.name
    if name == "skiplock.hooks":
        pass  # a hook that raised: always the run's
    elif not isinstance(name, str) or name == "skiplock" or name.startswith("skiplock."):
        return record  # the worker's own; ctx.logger's reach the run by its sink
    elif not _captures(execution):
        return record
    buf = _buffer(execution.ctx)
    if buf is not None:
        buf.add(record)
    return record


def _captures(execution: Execution) -> bool:
    engine = execution.engine
    task = engine.tasks.get(execution.ctx.task_id)
    if task is not None and task.capture_logs is not None:
        return task.capture_logs
    return engine.capture_logs


def _install() -> None:
    """Once per process: the record factory, and ctx.logger's sink. Under `_lock`."""
    global _previous_factory
    if RunLogWriter._installed:
        return
    _previous_factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_factory)
    _context.log_sink = _store
    RunLogWriter._installed = True


def pending(engine: Engine) -> RunLogWriter | None:
    """The writer of `engine`'s attempts on the running loop if it holds records or is
    writing some: they go to the database before any outcome does (`write_now`). A check
    per outcome sent (a claim's batch, a failure), not per run: nothing else when nothing
    was logged."""
    writer = RunLogWriter._writers.get((id(engine), asyncio.get_running_loop()))
    if writer is not None and (writer.dirty or writer.sending()):
        return writer
    return None
