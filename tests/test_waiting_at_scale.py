"""1,000 runs waiting at once hold no worker memory, no slots and no connections."""

from __future__ import annotations

from pathlib import Path

from helpers import count, fetch, spawn_worker, wait_for

from engine import Engine


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connections(dsn: str) -> int:
    return int(
        fetch(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'scale-worker'")[
            0
        ][0]
    )


def test_a_thousand_waiting_runs_hold_no_worker_memory_or_connections(
    app: Engine, dsn: str
) -> None:
    proc = spawn_worker(
        dsn, "--concurrency", "50", "--version", "scale", env={"PGAPPNAME": "scale-worker"}
    )
    try:
        token = app.waitpoints.create_token()
        wait_for(lambda: fetch(dsn, "SELECT 1 FROM skiplock.workers WHERE version = 'scale'"))
        for _ in range(2):  # warm up: imports, plans, connections
            app.trigger("token-waiter", token.id)
        wait_for(lambda: count(dsn, "task_identifier = 'token-waiter' AND status = 'WAITING'") == 2)
        before_rss, before_conns = rss_kib(proc.pid), connections(dsn)

        for _ in range(10):
            app.db.run(_batch("token-waiter", token.id, 100))
        wait_for(
            lambda: count(dsn, "task_identifier = 'token-waiter' AND status = 'WAITING'") == 1002,
            timeout=120,
        )
        after_rss, after_conns = rss_kib(proc.pid), connections(dsn)
        in_hand = fetch(
            dsn,
            "SELECT runs_in_hand FROM skiplock.worker_status "
            "WHERE version = 'scale' AND state = 'active'",
        )
        assert in_hand == [(0,)]  # no run is held by the worker while it waits
        # connections are the worker's bounded cache (10) and its LISTEN connection, not one
        # per waiting run
        assert before_conns <= after_conns <= 11
        # nothing per waiting run stays in the worker (a held run would cost tens of KB)
        assert after_rss - before_rss < 20 * 1024, (before_rss, after_rss)

        app.waitpoints.complete_token(token, "go")
        wait_for(
            lambda: count(dsn, "task_identifier = 'token-waiter' AND status = 'COMPLETED'") == 1002,
            timeout=120,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _batch(task: str, token_id: str, n: int) -> object:
    import json

    from engine.db import queries as _queries

    items = json.dumps([{"payload": token_id}] * n)
    return _queries.trigger_batch(task, items, {})
