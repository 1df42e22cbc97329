"""Automatic claim lanes (engine/worker/claims.py): a worker records completions apart from
its claims, on its second session, while no other worker holds a lease; beside another,
its claims carry them; it hears at once (NOTIFY skiplock_workers) when a worker registers
or stops. Own module: a fresh database, no worker of another test holding a lease."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from helpers import RunningWorker, fetch, wait_for

from engine import Engine, TaskContext, Worker

# heartbeats far apart: a switch within SWITCH seconds came from the NOTIFY, not a count
# at a heartbeat
SLOW_HEARTBEAT: dict[str, Any] = {"heartbeat_interval": 30.0, "lease_timeout": 60.0}
SWITCH = 5.0


def test_completions_apart_alone_carried_by_claims_beside_another_worker(
    app: Engine, start_worker: Callable[..., Worker]
) -> None:
    @app.task("lanes-noop")
    async def noop(p: int, ctx: TaskContext) -> int:
        return p

    first = start_worker(concurrency=8, **SLOW_HEARTBEAT)
    wait_for(lambda: first.claim_lanes_active == 2, SWITCH)
    noop.batch_trigger(list(range(200)))  # completions apart
    done = "SELECT count(*) FROM skiplock.runs WHERE task_identifier = %s AND status = 'COMPLETED'"
    wait_for(lambda: fetch(app.dsn, done, noop.id)[0][0] == 200, 60)

    second = RunningWorker(app.worker(concurrency=8, **SLOW_HEARTBEAT))
    with second as other:
        wait_for(lambda: first.claim_lanes_active == 1 and other.claim_lanes_active == 1, SWITCH)
        noop.batch_trigger(list(range(200)))  # claims carrying the completions
        wait_for(lambda: fetch(app.dsn, done, noop.id)[0][0] == 400, 60)
    # the second stopped: the first is alone again
    wait_for(lambda: first.claim_lanes_active == 2, SWITCH)


def test_fixed_lanes_do_not_follow_the_other_workers(
    app: Engine, start_worker: Callable[..., Worker]
) -> None:
    one = start_worker(concurrency=8, claim_lanes=1)
    two = start_worker(concurrency=8, claim_lanes=2)
    peers = "SELECT skiplock.peer_workers(%s)"
    wait_for(lambda: fetch(app.dsn, peers, one.id)[0][0] >= 1)
    time.sleep(0.3)
    assert (one.claim_lanes_active, two.claim_lanes_active) == (1, 2)


def test_small_concurrency_claims_in_one_lane(
    app: Engine, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(concurrency=3)
    assert fetch(app.dsn, "SELECT skiplock.peer_workers(%s)", worker.id)[0][0] == 0
    time.sleep(0.5)
    assert worker.claim_lanes_active == 1
