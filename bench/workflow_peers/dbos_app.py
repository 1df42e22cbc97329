"""DBOS Transact's benchmark workflows (bench/workflow_peers/base.py) and its worker
process: `python -m bench.workflow_peers.dbos_app` launches DBOS on $BENCH_DSN, which
dequeues from the two queues below, until SIGTERM."""

from __future__ import annotations

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


def config(dsn: str) -> DBOSConfig:
    return {
        "name": APP,
        "system_database_url": sqlalchemy_url(dsn),
        "application_version": VERSION,
        "log_level": "WARNING",
    }


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    DBOS(config=config(os.environ["BENCH_DSN"]))
    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=CONCURRENCY, polling_interval_sec=POLL)
    DBOS.register_queue(WAIT_QUEUE, polling_interval_sec=POLL)
    stop.wait()
    DBOS.destroy()


if __name__ == "__main__":
    main()
