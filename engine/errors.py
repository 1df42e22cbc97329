"""Typed errors. Every error skiplock raises on purpose is a `SkiplockError`.

SQL functions raise custom SQLSTATEs (``SLnnn``); `SQLSTATE_ERRORS` maps each to its
Python class once, so callers never parse messages.
"""

from __future__ import annotations


class SkiplockError(Exception):
    """Base class of skiplock's errors."""


class InvalidArgumentError(SkiplockError, ValueError):
    """An argument is malformed or out of range; nothing was written."""


class PayloadValidationError(InvalidArgumentError):
    """A payload (or output) does not match the task's annotated type."""


class InvalidDurationError(InvalidArgumentError):
    """A delay, ttl or duration does not parse, or is negative."""


class BatchTooLargeError(InvalidArgumentError):
    """A batch trigger has more items than the limit (1,000)."""


class UnknownTaskError(SkiplockError, LookupError):
    """No task with this id is defined, deployed or has runs."""


class RunNotFoundError(SkiplockError, LookupError):
    """No run with this id exists."""


class UnknownQueueError(SkiplockError, LookupError):
    """No queue by this name exists: no task declares it and no run names it."""


class TokenNotFoundError(SkiplockError, LookupError):
    """No wait token with this id exists."""


class InvalidCronError(InvalidArgumentError):
    """A cron expression that does not parse (wrong number of fields, a value out of its
    field's range, a bad step or name) or never matches (February 30th); the message names
    the field at fault. SQLSTATE SL008 (skiplock.parse_cron). An `InvalidArgumentError`, so
    catching that catches this too; an unknown time zone is a plain `InvalidArgumentError`."""


class ScheduleNotFoundError(SkiplockError, LookupError):
    """No schedule has this id."""


class NonDeterminismError(SkiplockError):
    """A replayed run asked for a different durable call than it recorded at this position."""


class RunNotDelayedError(SkiplockError):
    """The run is not DELAYED, so it cannot be rescheduled."""


class MigrationError(SkiplockError):
    """The database schema does not match the migrations shipped with this version."""


class SchemaNotMigratedError(MigrationError):
    """The database lacks skiplock's schema, or objects of this version of it: it was never
    migrated, or not since an upgrade. The message says what to run."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the database is not migrated ({detail}): run `skiplock migrate` "
            "(or `app.migrate()`, or start the worker with --migrate)"
        )
        self.detail = detail


class DatabaseUnreachableError(SkiplockError):
    """No connection to the database could be opened at first contact (refused, timed
    out, unknown host, authentication failed). The message is one line: the address tried
    (password hidden), where it came from, and why it failed. Once a shell has connected,
    later connection failures are the driver's `psycopg.OperationalError`, retried as
    transient."""

    def __init__(self, address: str, source: str, reason: str) -> None:
        super().__init__(f"cannot connect to the database at {address} ({source}): {reason}")
        self.address = address
        self.source = source
        self.reason = reason


class EmbeddedPostgresError(SkiplockError):
    """The embedded PostgreSQL cluster could not be started."""


class WaitFailedError(SkiplockError):
    """`Result.unwrap()` of a wait that failed: a child run that did not complete, or a
    token that timed out. `error` is what the waitpoint recorded."""

    def __init__(self, error: object, run_id: str | None = None) -> None:
        message = error.get("message") if isinstance(error, dict) else error
        super().__init__(f"{'run ' + run_id + ': ' if run_id else ''}{message}")
        self.error = error
        self.run_id = run_id


class DurableCallError(SkiplockError, RuntimeError):
    """A durable call (a wait, a step, `trigger_and_wait`) made outside a running task, or
    the blocking `_sync` form of one made in an `async def` task (it would block the loop)."""


class UnknownTaskWarning(UserWarning):
    """A trigger named a task that neither this engine nor any deployment declares: its
    run waits in PENDING_VERSION until a worker of that task registers (often a typo)."""


class AbortTaskRunError(Exception):
    """Raise inside a task to fail the run at once, with no retry."""


class TaskRunCanceledError(Exception):
    """Raised inside a task by `ctx.check_canceled()` once its run was canceled or timed out."""


SQLSTATE_ERRORS: dict[str, type[SkiplockError]] = {
    "SL001": RunNotFoundError,
    "SL002": RunNotDelayedError,
    "SL003": UnknownTaskError,
    "SL004": InvalidArgumentError,
    "SL005": BatchTooLargeError,
    "SL006": UnknownQueueError,
    "SL007": TokenNotFoundError,
    "SL008": InvalidCronError,
    "SL009": ScheduleNotFoundError,
}
