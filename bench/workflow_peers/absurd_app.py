"""Absurd's benchmark workflows (bench/workflow_peers/base.py) and its worker process:
`python -m bench.workflow_peers.absurd_app` runs the SDK's own worker loop
(`Absurd.start_worker`, threads) on queue QUEUE, and with $BENCH_KIND=fanout a second one
on CHILDREN (Absurd refuses await_task_result on the parent's own queue), until SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from absurd_sdk import Absurd, TaskContext

from bench.workflow_peers import ledger
from bench.workflow_peers.base import CONCURRENCY, SLEEP_SECONDS, STEPS

QUEUE = "bench"
CHILDREN = "bench_children"
POLL = 0.01  # start_worker(poll_interval=...): the default is 0.25 s
P = dict[str, Any]


def define(app: Absurd) -> None:
    """Register every main-queue task on `app`."""

    def rec(ctx: TaskContext, wf: str, step: str) -> float:
        return float(ctx.step(step, lambda: ledger.record(wf, step)))

    @app.register_task("wf-steps")
    def steps(p: P, ctx: TaskContext) -> None:
        for s in STEPS:
            rec(ctx, f"steps-{p['i']}", s)

    @app.register_task("wf-one")
    def one(p: P, ctx: TaskContext) -> None:
        rec(ctx, f"one-{p['i']}", "s0")

    @app.register_task("wf-resume")
    def resume(p: P, ctx: TaskContext) -> None:
        rec(ctx, f"resume-{p['i']}", "before")
        ctx.await_event(f"go-{p['i']}")
        rec(ctx, f"resume-{p['i']}", "after")

    @app.register_task("wf-sleep")
    def sleep(p: P, ctx: TaskContext) -> None:
        rec(ctx, f"sleep-{p['i']}", "start")
        ctx.sleep_for("nap", SLEEP_SECONDS)
        rec(ctx, f"sleep-{p['i']}", "woke")

    @app.register_task("wf-parent")
    def parent(p: P, ctx: TaskContext) -> None:
        def spawn_all() -> list[str]:
            return [
                str(app.spawn("wf-child", {"i": i}, queue=CHILDREN)["task_id"])
                for i in range(p["n"])
            ]

        for task_id in ctx.step("spawn", spawn_all):
            if ctx.await_task_result(task_id, queue_name=CHILDREN).state != "completed":
                raise RuntimeError(f"child {task_id} did not complete")
        rec(ctx, "parent-0", "done")

    @app.register_task("wf-wait")
    def waiter(p: P, ctx: TaskContext) -> None:
        rec(ctx, f"wait-{p['i']}", "before")
        ctx.await_event(f"never-{p['i']}")


def define_children(app: Absurd) -> None:
    @app.register_task("wf-child", queue=CHILDREN)
    def child(p: P, ctx: TaskContext) -> None:
        ctx.step("s0", lambda: ledger.record(f"child-{p['i']}", "s0"))


def main() -> None:
    dsn = os.environ["BENCH_DSN"]
    apps = [Absurd(dsn, queue_name=QUEUE)]
    define(apps[0])
    if os.environ.get("BENCH_KIND") == "fanout":
        apps.append(Absurd(dsn, queue_name=CHILDREN))
        define_children(apps[1])

    def stop(*_: object) -> None:
        for a in apps:
            a.stop_worker()

    signal.signal(signal.SIGTERM, stop)
    threads = [
        threading.Thread(
            target=a.start_worker, kwargs={"concurrency": CONCURRENCY, "poll_interval": POLL}
        )
        for a in apps
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        a.close()


if __name__ == "__main__":
    main()
