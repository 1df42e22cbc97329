"""Alerts: callbacks and webhooks told when a run fails for good, registered with
`Engine.on_run_failed`; here is only what is declared and how it is tuned.

When a run ends FAILED, CRASHED, SYSTEM_FAILURE or TIMED_OUT, the transaction that ends it
writes an alert to the database (an outbox: sql/functions/66_alerts.sql), whichever
worker ran it and whether that worker still lives (a crashed worker's runs too). The
workers of an engine with alerts take them from there and deliver them (the worker's
alert loop: engine/worker/alerts.py), at least once: a worker that dies after calling a
callback but before recording it leaves the alert to be delivered again once its lease
runs out, with the same `Alert.id`. Not alerted: CANCELED (someone asked for it) and
EXPIRED (its TTL passed before it started), as in Trigger.dev.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import InvalidArgumentError
from ..values import RunStatus
from .hooks import Hook

if TYPE_CHECKING:
    from ..models import Run

ALERTED_STATUSES = frozenset(
    {RunStatus.FAILED, RunStatus.CRASHED, RunStatus.SYSTEM_FAILURE, RunStatus.TIMED_OUT}
)


@dataclass(frozen=True)
class Alert:
    """A run's final failure, as given to an `on_run_failed` callback beside the `Run`.

    Delivery is at least once: dedupe by `id`, the same on every delivery of this alert
    (webhooks get it as the `Idempotency-Key` header and the body's `id`). `delivery` is
    1 on the first try, more on a retry or a redelivery after a worker was lost."""

    id: str
    run_id: str
    task_identifier: str
    status: RunStatus
    failed_at: datetime
    delivery: int


@dataclass(frozen=True)
class Webhook:
    """A URL that gets a JSON POST per alert (see `Engine.on_run_failed`)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    secret: str | None = None  # signs the body: X-Skiplock-Signature: sha256=<HMAC hex>
    timeout: float = 10.0


@dataclass
class Alerts:
    """`app.alerts`: the engine's alert callbacks and webhooks, and how its workers
    deliver them. The settings are read by each worker as it takes alerts."""

    callbacks: list[Hook] = field(default_factory=list)
    webhooks: list[Webhook] = field(default_factory=list)
    #: seconds a delivery holds its alert: a worker lost meanwhile leaves it to be taken
    #: again after this (a callback that takes longer gets a second delivery)
    lease: float = 60.0
    #: seconds between looks for alerts when no notification came (a failure notifies)
    poll_interval: float = 5.0
    #: the first retry after a failed delivery, doubled each time up to `max_retry_delay`
    retry_delay: float = 5.0
    max_retry_delay: float = 600.0
    #: seconds after the failure past which an undelivered alert is abandoned (retries
    #: stop; an app that starts alerting is not sent older failures)
    max_age: float = 86400.0
    #: alerts a worker takes at once (delivered concurrently)
    batch: int = 10

    @property
    def enabled(self) -> bool:
        """Whether there is anything to deliver to: the worker delivers only then."""
        return bool(self.callbacks or self.webhooks)

    def add_callback(self, fn: Hook) -> Hook:
        if not callable(fn):
            raise InvalidArgumentError(f"on_run_failed needs a callable, got {fn!r}")
        self.callbacks.append(fn)
        return fn

    def add_webhook(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        timeout: float = 10.0,
    ) -> Webhook:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgumentError(f"webhook must be an http(s) URL, got {url!r}")
        if not timeout > 0:
            raise InvalidArgumentError(f"webhook timeout must be positive, got {timeout!r}")
        hook = Webhook(url, dict(headers or {}), secret, float(timeout))
        self.webhooks.append(hook)
        return hook

    def sinks(self) -> list[tuple[str, Hook | Webhook]]:
        """Every callback and webhook under a key that names it the same way in every
        process of the app (an alert records the keys it reached, and a retry skips
        them): "callback:module.qualname", "webhook:url"; a repeated key gets "#2"..."""
        keyed: list[tuple[str, Hook | Webhook]] = []
        seen: dict[str, int] = {}
        sinks: list[Hook | Webhook] = [*self.callbacks, *self.webhooks]
        for sink in sinks:
            if isinstance(sink, Webhook):
                key = f"webhook:{sink.url}"
            else:
                name = getattr(sink, "__qualname__", None) or type(sink).__qualname__
                key = f"callback:{getattr(sink, '__module__', None) or '?'}.{name}"
            seen[key] = seen.get(key, 0) + 1
            keyed.append((key if seen[key] == 1 else f"{key}#{seen[key]}", sink))
        return keyed


def webhook_body(alert: Alert, run: Run[Any, Any]) -> dict[str, Any]:
    """What a webhook is POSTed (as JSON): the alert, and the run without its payload,
    output and metadata (they may be large or private; fetch the run by id for them)."""
    fields = (
        "id",
        "task_identifier",
        "status",
        "error",
        "attempt_count",
        "tags",
        "queue",
        "version",
        "idempotency_key",
        "batch_id",
        "parent_id",
        "root_id",
        "created_at",
        "started_at",
        "finished_at",
    )
    snapshot = run.model_dump(mode="json", include=set(fields))
    return {
        "id": alert.id,
        "type": "run.failed",
        "delivery": alert.delivery,
        "failed_at": alert.failed_at.isoformat(),
        "run": snapshot,
    }
