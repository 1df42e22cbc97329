"""Alert delivery: a worker of an engine with `on_run_failed` callbacks or webhooks takes
alerts from the database's outbox (sql/functions/66_alerts.sql) and delivers them.

Any such worker delivers any alert, whichever worker's run failed. Each look takes up
to `app.alerts.batch` due alerts in one short transaction, each under a lease of
`app.alerts.lease` seconds (FOR UPDATE SKIP LOCKED: workers take different ones), then,
for each alert concurrently, reads its run and calls its sinks in order (callbacks, then
webhooks) that an earlier delivery did not reach, and records how it went: delivered,
or due again after a backoff (doubling from `retry_delay` up to `max_retry_delay`).
Nothing holds a transaction while a callback runs. A worker that dies between its
callbacks and the record leaves the alert to be taken again when the lease runs out:
delivery is at least once, and `Alert.id` is what a receiver dedupes by.

Looks are made when a failure's NOTIFY arrives (channel skiplock_alerts), at once again
while a look finds a full batch, and every `poll_interval` seconds (retries come due
without a notification). The loop stops taking alerts when the worker stops; a
delivery cut short by the worker's exit is delivered again after its lease.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from typing import TYPE_CHECKING, Any

import psycopg

from ..api.alerts import Alert, Webhook, webhook_body
from ..api.hooks import Hook, positional_arity
from ..db import queries as _queries
from ..db.listener import Listener
from ..errors import RunNotFoundError, SkiplockError
from ..values import RunStatus
from .state import WorkerState, wait_any
from .threads import DaemonThreadPool

if TYPE_CHECKING:
    from ..api.engine import Engine
    from ..models import Run

log = logging.getLogger("skiplock.alerts")

CHANNEL = "skiplock_alerts"
_ERROR_CHARS = 2000  # of an alert's last_error


class AlertDelivery:
    """The worker's alert loop (`run`); does nothing for an engine without alerts."""

    def __init__(self, state: WorkerState, engine: Engine) -> None:
        self._state = state
        self._engine = engine
        self._threads: DaemonThreadPool | None = None

    async def run(self) -> None:
        alerts = self._engine.alerts
        if not alerts.enabled:
            return
        self._threads = DaemonThreadPool(max(alerts.batch, 1), name="skiplock-alerts")
        state, loop = self._state, asyncio.get_running_loop()
        notified = asyncio.Event()

        def on_notify(_payloads: list[str] | None, _conn: object) -> None:
            loop.call_soon_threadsafe(notified.set)  # None too: (re)connected, look

        # where the worker LISTENs (resolved at its start-up); poll-only: nowhere, the
        # poll interval alone brings looks
        listen = self._engine.listen_dsn
        listener = Listener.for_dsn(listen) if listen is not None else None
        registration = listener.add(CHANNEL, on_notify) if listener is not None else None
        try:
            while not state.stopping.is_set():
                notified.clear()
                taken = await self._take()
                if taken:
                    await asyncio.gather(*(self._deliver_guarded(row) for row in taken))
                    if len(taken) >= alerts.batch:
                        continue  # there may be more
                await wait_any(notified, state.stopping, timeout=alerts.poll_interval)
        finally:
            if listener is not None and registration is not None:
                listener.remove(registration)
            self._threads.shutdown()

    async def _take(self) -> list[dict[str, Any]]:
        alerts = self._engine.alerts
        try:
            return await self._engine.adb.run(
                _queries.claim_alerts(self._state.id, alerts.batch, alerts.lease, alerts.max_age)
            )
        except (psycopg.Error, SkiplockError):
            log.warning("taking alerts failed; trying again later", exc_info=True)
            return []

    async def _deliver_guarded(self, row: dict[str, Any]) -> None:
        try:
            await self._deliver(row)
        except Exception:  # the loop goes on; the alert is taken again after its lease
            log.exception("delivering alert %s failed", row.get("id"))

    async def _deliver(self, row: dict[str, Any]) -> None:
        """Call the sinks an earlier delivery did not reach, within the alert's lease
        (a sink not done by then is counted as failed: the alert may be taken again),
        and record how it went."""
        alerts = self._engine.alerts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + alerts.lease
        alert = Alert(
            id=row["id"],
            run_id=row["run_id"],
            task_identifier=row["task_identifier"],
            status=RunStatus(row["status"]),
            failed_at=row["created_at"],
            delivery=row["attempts"],
        )
        reached: list[str] = []
        errors: list[str] = []
        try:
            # from the primary, never a replica (`runs.retrieve` may read one): a run
            # missing there would drop its alert as purged
            from ..models import Run

            run: Run[Any, Any] = Run.model_validate(
                await self._engine.adb.run(_queries.retrieve(alert.run_id))
            )
        except RunNotFoundError:
            return  # purged meanwhile, its alert with it
        except (psycopg.Error, SkiplockError) as exc:
            errors.append(f"reading run {alert.run_id}: {exc}")
        else:
            done = set(row["delivered_to"] or ())
            for key, sink in alerts.sinks():
                if key in done:
                    continue
                try:
                    left = max(deadline - loop.time(), 0.0)
                    await asyncio.wait_for(self._call(sink, run, alert), left)
                except TimeoutError:
                    log.warning(
                        "alert %s (run %s of %s, delivery %d): %s not done within the "
                        "alert's lease (%gs)",
                        alert.id,
                        alert.run_id,
                        alert.task_identifier,
                        alert.delivery,
                        key,
                        alerts.lease,
                    )
                    errors.append(f"{key}: not done within the lease ({alerts.lease:g}s)")
                except Exception as exc:
                    log.warning(
                        "alert %s (run %s of %s, delivery %d): %s raised",
                        alert.id,
                        alert.run_id,
                        alert.task_identifier,
                        alert.delivery,
                        key,
                        exc_info=True,
                    )
                    errors.append(f"{key}: {type(exc).__name__}: {exc}")
                else:
                    reached.append(key)
        error = "; ".join(errors)[:_ERROR_CHARS] if errors else None
        delay = min(alerts.retry_delay * 2 ** max(alert.delivery - 1, 0), alerts.max_retry_delay)
        try:
            await self._engine.adb.run(
                _queries.record_alert(alert.id, alert.delivery, reached, error, delay)
            )
        except (psycopg.Error, SkiplockError):
            # delivered again once the lease runs out: at least once
            log.warning("recording alert %s failed", alert.id, exc_info=True)
            return
        if error is not None:
            log.info("alert %s: delivery %d failed, next in %gs", alert.id, alert.delivery, delay)

    async def _call(self, sink: Hook | Webhook, run: Run[Any, Any], alert: Alert) -> None:
        """Deliver to one sink; raise if it did not take the alert. A callback gets (run,
        alert), or as many of them as it takes; async ones run on the loop, others in a
        daemon thread (a hung one does not hold up the worker's exit), as webhooks do."""
        assert self._threads is not None
        if isinstance(sink, Webhook):
            body = json.dumps(webhook_body(alert, run)).encode()
            from .webhooks import post_webhook  # urllib and hmac: 1.2 MB of RSS, if needed

            await self._threads.submit(post_webhook, sink, body, alert.id)
            return
        args = (run, alert)[: positional_arity(sink)]
        if inspect.iscoroutinefunction(sink):
            await sink(*args)
            return
        result = await self._threads.submit(sink, *args)
        if inspect.isawaitable(result):
            await result
