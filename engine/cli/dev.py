"""`skiplock dev MODULE:APP`: everything for local development in one process: the
embedded PostgreSQL (unless a database is configured), migrations, a worker for the app's
tasks and the dashboard. As on Trigger.dev, dev runs of tasks without their own TTL
expire after 10 minutes in the queue."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from ..api.engine import Engine
from ..dashboard import server
from ..worker.report import plural

DEV_TTL = 600.0
DEV_VERSION = "dev"

log = logging.getLogger("skiplock.dev")


def run_dev(app: Engine, *, host: str, port: int, concurrency: int = 10) -> None:
    applied = app.migrate()
    if applied:
        log.info("applied %s", plural(len(applied), "migration file"))
    worker = app.worker(concurrency=concurrency, version=DEV_VERSION, default_ttl=DEV_TTL)
    dashboard = server(app, host=host, port=port)
    # uvicorn takes SIGTERM and SIGINT while it serves, then restores the handlers it found
    # and raises the signal again: with the default SIGTERM handler that killed the process
    # at once, runs left EXECUTING. Ours asks the worker to drain (and stops the server, if
    # the signal came before uvicorn took over); a second one interrupts what still runs.
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            print("skiplock dev: second signal, interrupting the running attempts", flush=True)
            worker.stop(now=True)  # their runs are queued again, not lost
            return
        stopping.set()
        dashboard.should_exit = True
        worker.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=worker.run, name="skiplock-dev-worker", daemon=True)
    thread.start()
    print(
        f"skiplock dev: {plural(len(app.tasks), 'task')}, worker {worker.id}\n"
        f"dashboard: http://{host}:{port}/  (Ctrl-C to stop)",
        flush=True,
    )
    try:
        dashboard.run()
    finally:
        worker.stop()
        print(f"skiplock dev: draining (up to {worker.shutdown_grace:g}s)", flush=True)
        thread.join(timeout=worker.shutdown_grace + 5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
