"""Webhook delivery for alerts (alerts.py): a POST of the alert's JSON, signed when the
webhook has a secret. Imported by the first webhook delivery: a worker without webhooks
never loads urllib's HTTP client."""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from typing import Any

from ..api.alerts import Webhook

_BODY_CHARS = 200  # of a webhook's answer quoted in an error
_USER_AGENT = "skiplock-alerts"


def post_webhook(hook: Webhook, body: bytes, alert_id: str) -> None:
    """POST `body` (JSON) to the webhook; raise unless it answers 2xx within its timeout."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "Idempotency-Key": alert_id,
        **hook.headers,
    }
    if hook.secret is not None:
        digest = hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Skiplock-Signature"] = f"sha256={digest}"
    request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=hook.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # answered, but not 2xx
        try:
            text = exc.read(_BODY_CHARS).decode(errors="replace")
        except OSError:
            text = ""
        raise WebhookError(f"HTTP {exc.code} from {hook.url}: {text}".rstrip(": ")) from None
    if not 200 <= status < 300:
        raise WebhookError(f"HTTP {status} from {hook.url}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that is not 2xx: urllib would follow it as a GET without
    the body, and take that GET's 200 for a delivery."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookError(Exception):
    """A webhook answered, but not with 2xx."""
