"""DBOS Transact's benchmark workflows (bench/workflow_peers/base.py) and its worker
process: `python -m bench.workflow_peers.dbos_app [--poll S] [--concurrency N] [--pool N]`
launches DBOS on $BENCH_DSN, which dequeues from the two queues below, until SIGTERM.

--poll: polling_interval_sec of both queues (DBOS.register_queue, dbos/_dbos.py: "how often
the worker thread wakes up to look for runnable workflows"; default 1.0, must be > 0);
--concurrency: worker_concurrency of QUEUE (0: no limit); --pool: sys_db_pool_size
(DBOSConfig, dbos/_dbos_config.py; default 20 connections)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from urllib.parse import quote, urlencode

from dbos import DBOS, DBOSConfig
from psycopg.conninfo import conninfo_to_dict

from bench.workflow_peers import ledger
from bench.workflow_peers.base import CONCURRENCY, SLEEP_SECONDS, STEPS

APP = "wfbench"
VERSION = "bench"
QUEUE = "bench"  # runs holding a slot while they work: worker_concurrency 50
WAIT_QUEUE = "bench_waits"  # runs that wait: a DBOS wait holds its thread, so no limit
POLL = 0.01  # polling_interval_sec of both queues (the default is 1.0)


@DBOS.step(name="record")
def record(workflow: str, step: str) -> float:
    return ledger.record(workflow, step)


@DBOS.workflow(name="wf-steps")
def steps(i: int) -> None:
    for s in STEPS:
        record(f"steps-{i}", s)


@DBOS.workflow(name="wf-one")
def one(i: int) -> None:
    record(f"one-{i}", "s0")


@DBOS.workflow(name="wf-resume")
def resume(i: int) -> None:
    record(f"resume-{i}", "before")
    DBOS.recv("go", timeout_seconds=3600)
    record(f"resume-{i}", "after")


@DBOS.workflow(name="wf-sleep")
def sleep(i: int) -> None:
    record(f"sleep-{i}", "start")
    DBOS.sleep(SLEEP_SECONDS)
    record(f"sleep-{i}", "woke")


@DBOS.workflow(name="wf-child")
def child(i: int) -> None:
    record(f"child-{i}", "s0")


@DBOS.workflow(name="wf-parent")
def parent(n: int) -> None:
    queue = DBOS.retrieve_queue(QUEUE)
    assert queue is not None
    handles = [queue.enqueue(child, i) for i in range(n)]
    for h in handles:
        h.get_result()
    record("parent-0", "done")


@DBOS.workflow(name="wf-wait")
def waiter(i: int) -> None:
    record(f"wait-{i}", "before")
    DBOS.recv("never", timeout_seconds=3600)


def sqlalchemy_url(dsn: str) -> str:
    """DBOS takes a SQLAlchemy URL; ours are libpq conninfo strings or URIs."""
    params = conninfo_to_dict(dsn)
    user = quote(str(params.pop("user", "postgres")))
    password = params.pop("password", None)
    auth = user + (f":{quote(str(password))}" if password else "")
    dbname = quote(str(params.pop("dbname", "postgres")))
    return f"postgresql+psycopg://{auth}@/{dbname}?" + urlencode(params)


def config(dsn: str, pool: int | None = None) -> DBOSConfig:
    c: DBOSConfig = {
        "name": APP,
        "system_database_url": sqlalchemy_url(dsn),
        "application_version": VERSION,
        "log_level": "WARNING",
    }
    if pool:
        c["sys_db_pool_size"] = pool
    return c


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--poll", type=float, default=POLL)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help="0: no limit")
    p.add_argument("--pool", type=int, default=None, help="sys_db_pool_size (default 20)")
    args = p.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    DBOS(config=config(os.environ["BENCH_DSN"], args.pool))
    DBOS.launch()
    limit = args.concurrency or None
    DBOS.register_queue(QUEUE, worker_concurrency=limit, polling_interval_sec=args.poll)
    DBOS.register_queue(WAIT_QUEUE, polling_interval_sec=args.poll)
    stop.wait()
    # Workflows still waiting (the idle row's 1,000 in DBOS.recv) are left to recovery;
    # the benchmark kills the process if it has not stopped STOP_GRACE seconds after SIGTERM.
    DBOS.destroy(workflow_completion_timeout_sec=0)


if __name__ == "__main__":
    main()
