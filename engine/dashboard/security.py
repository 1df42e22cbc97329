"""Who may use the dashboard: loopback only, or anyone holding the access token; and
CSRF protection for every action.

- Bound to a loopback address, the dashboard needs no token, but answers only requests
  whose Host header names a loopback host (a web page elsewhere cannot reach it through
  DNS rebinding). Bound to any other address it refuses to start without a token.
- With a token, every request (pages, fragments, Server-Sent Events, actions) must carry
  it: as `Authorization: Bearer <token>`, as the cookie set when a browser first opens a
  page with `?token=<token>`, or as that query parameter. Others get 401.
- Actions are POST forms carrying the server's CSRF token (a per-process secret no other
  origin can read) and, when the browser sends one, an Origin naming this host.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import InvalidArgumentError

COOKIE = "skiplock_dashboard"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token (before anything listens)."""
    if not is_loopback(host) and not token:
        raise InvalidArgumentError(
            f"refusing to serve the dashboard on {host} without an access token: "
            "pass --token or set SKIPLOCK_DASHBOARD_TOKEN (or bind to 127.0.0.1)"
        )


class AccessGuard:
    """ASGI middleware: the token (or loopback Host) check for every HTTP request."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._refusal(request)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        if self.token is None:
            host = (request.url.hostname or "").lower()
            if not is_loopback(host):
                return PlainTextResponse("this dashboard answers on localhost only", 403)
            return None
        header = request.headers.get("authorization", "")
        offered = [
            header[7:] if header.lower().startswith("bearer ") else "",
            request.cookies.get(COOKIE, ""),
            request.query_params.get("token", ""),
        ]
        if not any(o and hmac.compare_digest(o, self.token) for o in offered):
            return PlainTextResponse("401: an access token is required", 401)
        if request.query_params.get("token") and request.method == "GET":
            # trade the token in the address for a cookie, and drop it from the address
            clean = URL(str(request.url)).remove_query_params("token")
            redirect = RedirectResponse(str(clean), 303)
            redirect.set_cookie(
                COOKIE,
                self.token,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return redirect
        return None


class Csrf:
    """The per-process CSRF token, and the check of a submitted form."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(32)

    def valid(self, request: Request, submitted: object) -> bool:
        if not isinstance(submitted, str) or not hmac.compare_digest(submitted, self.token):
            return False
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")
