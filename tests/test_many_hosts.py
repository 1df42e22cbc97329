"""Workers on several hosts against one database, the scale-out path: three `skiplock
worker` processes, each in a UTS namespace of its own with its own host name (`unshare
--uts`, as containers on separate machines would be) and its own connections. Limits,
leases and crash detection hold across them; every deadline is read from the database's
clock, so the hosts' clocks do not matter."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any

import pytest
from helpers import SKIPLOCK, TESTS, fetch, wait_for

from engine import Engine, RunStatus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="needs root and unshare(1) for a UTS namespace per worker",
    ),
]


def host_worker(dsn: str, host: str, *args: str) -> subprocess.Popen[bytes]:
    """`skiplock worker cli_app:app ARGS` on host name `host` (its own UTS namespace)."""
    command = f'hostname {host} && exec "$0" worker cli_app:app "$@"'
    return subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", command, SKIPLOCK, *args],
        cwd=TESTS,
        env={**os.environ, "SKIPLOCK_DATABASE_URL": dsn},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_limits_leases_and_crashes_hold_across_hosts(app: Engine, dsn: str) -> None:
    fast_lease = ("--heartbeat-interval", "0.5", "--lease-timeout", "3", "--concurrency", "4")
    workers = [host_worker(dsn, f"host-{n}", *fast_lease) for n in range(3)]
    try:
        wait_for(
            lambda: (
                fetch(
                    dsn,
                    "SELECT array_agg(DISTINCT hostname ORDER BY hostname) FROM skiplock.workers "
                    "WHERE stopped_at IS NULL AND lost_at IS NULL",
                )[0][0]
                == ["host-0", "host-1", "host-2"]
            ),
            timeout=60,
        )
        # a queue of limit 2 served from three hosts: never more than 2 at once
        runs = [app.trigger("limited-sleep", 0.3).id for _ in range(12)]
        wait_for(lambda: all(app.runs.retrieve(r).is_completed for r in runs), timeout=60)
        rows = fetch(
            dsn,
            "SELECT a.started_at, a.finished_at, w.hostname FROM skiplock.attempts a "
            "JOIN skiplock.workers w ON w.id = a.worker_id WHERE a.run_id = ANY (%s)",
            runs,
        )
        events = sorted([(s, 1) for s, _, _ in rows] + [(f, -1) for _, f, _ in rows])
        level = peak = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        assert peak == 2
        # more than one host's worth of work (concurrency 4 each) is shared out
        spread = [app.trigger("cli-slow", 0.5).id for _ in range(12)]
        wait_for(lambda: all(app.runs.retrieve(r).is_completed for r in spread), timeout=60)
        hosts = fetch(
            dsn,
            "SELECT count(DISTINCT w.hostname) FROM skiplock.attempts a "
            "JOIN skiplock.workers w ON w.id = a.worker_id WHERE a.run_id = ANY (%s)",
            spread,
        )
        assert hosts[0][0] >= 2

        # a host vanishes while running a run: another host's tick crashes the run once
        # its lease lapses (3 s), and the worker is marked lost
        victim_run = app.trigger("cli-once", 60).id
        holder = wait_for(
            lambda: fetch(
                dsn,
                "SELECT w.hostname, w.pid, w.id FROM skiplock.runs r "
                "JOIN skiplock.workers w ON w.id = r.worker_id "
                "WHERE r.id = %s AND r.status = 'EXECUTING'",
                victim_run,
            ),
            timeout=30,
        )[0]
        victim = workers[int(holder[0].rsplit("-", 1)[1])]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        crashed = wait_for(
            lambda: (r := app.runs.retrieve(victim_run)).status is RunStatus.CRASHED and r,
            timeout=30,
        )
        assert crashed.attempts[-1].worker_id == holder[2]
        lost = fetch(
            dsn, "SELECT lost_at IS NOT NULL FROM skiplock.workers WHERE id = %s", holder[2]
        )
        assert lost == [(True,)]
        # the surviving hosts carry on
        after = app.trigger("cli-echo", {"after": "crash"}).id
        done: Any = wait_for(lambda: (r := app.runs.retrieve(after)).is_completed and r, timeout=30)
        assert done.status is RunStatus.COMPLETED
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for w in workers:
            try:
                w.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.kill()
