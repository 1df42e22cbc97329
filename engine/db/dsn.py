"""Database addresses: checked when configured, shown with the password hidden, and the
one line that says why a first connection failed.

A DSN is either a URL (``postgresql://user:password@host:port/dbname?...``) or libpq's
``key=value`` form; both are parsed by libpq's own rules (`conninfo_to_dict`), so what is
accepted here is exactly what a connection would accept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..errors import DatabaseUnreachableError, InvalidArgumentError

DEFAULT_CONNECT_TIMEOUT = 5
"""Seconds a connection attempt may take unless the DSN sets ``connect_timeout``. psycopg's
own default is 130 s; libpq counts whole seconds, and psycopg waits at least 2."""

_URL_PASSWORD = re.compile(r"(?P<head>^[a-z][a-z0-9+.-]*://[^:@/?#]*:)(?P<pw>[^@]*)(?=@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&#]+)", re.I)
_EXPECTED = "expected postgresql://user:password@host:port/dbname or 'host=... dbname=...'"


def _passwords(dsn: str) -> list[str]:
    found = [m["pw"] for m in _URL_PASSWORD.finditer(dsn)]
    found += [m["pw"] for m in _KV_PASSWORD.finditer(dsn)]
    return [pw for pw in found if pw]


def hide_password(dsn: str) -> str:
    """`dsn` with any password (in the URL's user part, or a ``password=`` parameter, in
    either form) shown as ``***``; works on malformed DSNs too."""
    shown = _URL_PASSWORD.sub(lambda m: m["head"] + "***" if m["pw"] else m[0], dsn)
    return _KV_PASSWORD.sub(lambda m: m["head"] + "***", shown)


def _without_passwords(text: str, dsn: str) -> str:
    """libpq quotes bits of the DSN in its complaints (``unexpected spaces found in "..."``),
    which may be the password."""
    for pw in _passwords(dsn):
        text = text.replace(f'"{pw}"', '"***"')
        if len(pw) >= 3:  # a shorter one would blank out letters of the message itself
            text = text.replace(pw, "***")
    return text


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


@dataclass(frozen=True)
class Address:
    """A DSN as configured: `source` says where it came from (shown in errors), and
    `connect_timeout` bounds each connection attempt unless the DSN sets its own."""

    dsn: str
    source: str = "from the dsn argument"
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT

    @classmethod
    def checked(
        cls, dsn: str, source: str, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    ) -> Address:
        """The address, once libpq's parser accepts `dsn`; else `InvalidArgumentError`."""
        try:
            conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            reason = _without_passwords(_first_line(exc), dsn)
            raise InvalidArgumentError(
                f"malformed database address {hide_password(dsn)!r} ({source}): {reason}; "
                f"{_EXPECTED}"
            ) from None
        return cls(dsn, source, connect_timeout)

    @property
    def shown(self) -> str:
        """The DSN as it may be printed: password hidden."""
        return hide_password(self.dsn)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for psycopg's connect: the connect timeout, unless the DSN
        sets one (the user's own choice wins)."""
        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            return {"connect_timeout": self.connect_timeout}  # connect will say what is wrong
        return {} if "connect_timeout" in params else {"connect_timeout": self.connect_timeout}

    def unreachable(self, exc: BaseException) -> DatabaseUnreachableError:
        """The one-line error for a failed first connection."""
        if isinstance(exc, psycopg.errors.ConnectionTimeout):
            timeout = self.connect_kwargs().get("connect_timeout")
            reason = (
                f"no answer within {timeout} s (the connect timeout, SKIPLOCK_CONNECT_TIMEOUT)"
                if timeout is not None
                else "no answer within the connect_timeout the DSN sets"
            )
        else:
            reason = _first_line(exc).removeprefix("connection failed: ")
            # 'connection to server at "h", port 5432 failed: FATAL:  why': the address is
            # in the message already, the why is what is new
            m = re.match(r"connection to server (?:at|on) .*? failed: (?:FATAL:\s+)?(.*)$", reason)
            if m:
                reason = m[1]
        return DatabaseUnreachableError(
            self.shown, self.source, _without_passwords(reason, self.dsn)
        )
