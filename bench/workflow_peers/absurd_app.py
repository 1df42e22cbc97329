"""Absurd's benchmark workflows (bench/workflow_peers/base.py) and its worker process:
`python -m bench.workflow_peers.absurd_app [--mode threads|async] [--batch N] [--poll S]`
runs one of the SDK's two worker loops on queue QUEUE, and with $BENCH_KIND=fanout a
second one on CHILDREN (Absurd refuses await_task_result on the parent's own queue),
until SIGTERM:

* threads: `Absurd.start_worker(concurrency, batch_size, poll_interval)`, a thread pool of
  `concurrency` sharing the client's one psycopg Connection; it claims up to
  min(batch, free threads) whenever a thread is free.
* async: `AsyncAbsurd.start_worker(...)` (bench/workflow_peers/absurd_async_app.py).

Both documented in docs/sdks/python.md ("Starting a Worker") of earendil-works/absurd.
"""

from __future__ import annotations

import argparse
import asyncio
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


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("threads", "async"), default="threads")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    p.add_argument("--batch", type=int, default=None, help="claim size (SDK default: concurrency)")
    p.add_argument("--poll", type=float, default=POLL)
    return p.parse_args(argv)


def main() -> None:
    args = parse()
    dsn = os.environ["BENCH_DSN"]
    queues = [QUEUE, CHILDREN] if os.environ.get("BENCH_KIND") == "fanout" else [QUEUE]
    if args.mode == "async":
        from bench.workflow_peers.absurd_async_app import serve

        asyncio.run(serve(dsn, queues, args.concurrency, args.batch, args.poll))
        return
    apps = [Absurd(dsn, queue_name=q) for q in queues]
    define(apps[0])
    if len(apps) > 1:
        define_children(apps[1])

    def stop(*_: object) -> None:
        for a in apps:
            a.stop_worker()

    signal.signal(signal.SIGTERM, stop)
    options = {
        "concurrency": args.concurrency,
        "batch_size": args.batch,
        "poll_interval": args.poll,
    }
    threads = [threading.Thread(target=a.start_worker, kwargs=options) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        a.close()


if __name__ == "__main__":
    main()
