"""`skiplock dev MODULE:APP`: everything for local development in one process: the
embedded PostgreSQL (unless a database is configured), migrations, a worker for the app's
tasks and the dashboard. As on Trigger.dev, dev runs of tasks without their own TTL
expire after 10 minutes in the queue."""

from __future__ import annotations

import logging
import threading

from ..api.engine import Engine
from ..dashboard import serve

DEV_TTL = 600.0
DEV_VERSION = "dev"

log = logging.getLogger("skiplock.dev")


def run_dev(app: Engine, *, host: str, port: int, concurrency: int = 10) -> None:
    applied = app.migrate()
    if applied:
        log.info("applied %d migration file(s)", len(applied))
    worker = app.worker(concurrency=concurrency, version=DEV_VERSION, default_ttl=DEV_TTL)
    thread = threading.Thread(target=worker.run, name="skiplock-dev-worker", daemon=True)
    thread.start()
    print(
        f"skiplock dev: {len(app.tasks)} task(s), worker {worker.id}\n"
        f"dashboard: http://{host}:{port}/  (Ctrl-C to stop)",
        flush=True,
    )
    try:
        serve(app, host=host, port=port)
    finally:
        worker.stop()
        thread.join(timeout=worker.shutdown_grace + 5)
