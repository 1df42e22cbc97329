"""Real `skiplock worker fault_app:app` processes: spawned, killed, frozen, replaced,
each logging to a file of its own (the evidence when an invariant fails). With
`upstream` set, each worker reaches PostgreSQL through a TCP proxy of its own (see
proxy.py), so that its network can be cut or partitioned alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from .proxy import Proxy

HERE = Path(__file__).resolve().parent
SKIPLOCK = str(Path(sys.executable).parent / "skiplock")


@dataclass
class WorkerSettings:
    concurrency: int = 4
    heartbeat_interval: float = 0.5
    lease_timeout: float = 4.0
    shutdown_grace: float = 10.0

    def args(self) -> list[str]:
        return [
            "--concurrency", str(self.concurrency),
            "--heartbeat-interval", str(self.heartbeat_interval),
            "--lease-timeout", str(self.lease_timeout),
            "--shutdown-grace", str(self.shutdown_grace),
        ]  # fmt: skip


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[Any]
    log: Path
    proxy: Proxy | None = None  # its way to the server, when the pool is proxied

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class WorkerPool:
    dsn: str
    log_dir: Path
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    # (host, port) of the server's TCP listener: each worker gets a proxy to it
    upstream: tuple[str, int] | None = None
    env: dict[str, str] = field(default_factory=dict)  # for every worker
    procs: list[WorkerProc] = field(default_factory=list)
    retired: list[WorkerProc] = field(default_factory=list)
    _spawned: int = 0

    def spawn(self, env: dict[str, str] | None = None) -> WorkerProc:
        self._spawned += 1
        name = f"w{self._spawned}"
        log = self.log_dir / f"{name}.log"
        dsn, proxy = self.dsn, None
        if self.upstream is not None:
            proxy = Proxy(*self.upstream, name=f"fault-proxy-{name}").start()
            dsn = make_conninfo(self.dsn, host="127.0.0.1", port=str(proxy.port))
        # application_name marks the worker's own connections (the LISTEN connection sets
        # its own, 'skiplock-listener:PID'); the pythonpath makes the worktree's engine win
        env = {
            **os.environ,
            "SKIPLOCK_DATABASE_URL": f"{dsn} application_name=fault-worker-{name}",
            "PYTHONPATH": os.pathsep.join(
                [str(HERE), str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")]
            ),
            **self.env,
            **(env or {}),
        }
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [SKIPLOCK, "-v", "worker", "fault_app:app", *self.settings.args()],
                cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        worker = WorkerProc(name, proc, log, proxy)
        self.procs.append(worker)
        return worker

    def live(self) -> list[WorkerProc]:
        return [w for w in self.procs if w.alive()]

    def kill(self, worker: WorkerProc) -> None:
        """SIGKILL, reap, and forget it (a worker that died on its own is only reaped)."""
        if worker.alive():
            worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        if worker.proxy is not None:
            worker.proxy.close()
        self.procs.remove(worker)
        self.retired.append(worker)

    def freeze(self, worker: WorkerProc, seconds: float) -> None:
        worker.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            worker.proc.send_signal(signal.SIGCONT)

    def stop_all(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM every worker and wait; returns the names of those that had to be
        killed or had died on their own with a non-zero code."""
        bad: list[str] = []
        for w in self.procs:
            if w.alive():
                w.proc.send_signal(signal.SIGTERM)
            elif w.proc.returncode not in (0, None):
                bad.append(f"{w.name} exited {w.proc.returncode}")
        deadline = time.monotonic() + timeout
        for w in self.procs:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)
                bad.append(f"{w.name} did not stop on SIGTERM")
        for w in self.procs:
            if w.proxy is not None:
                w.proxy.close()
        self.retired.extend(self.procs)
        self.procs = []
        return bad

    def all_logs(self) -> list[Path]:
        return [w.log for w in self.retired + self.procs]
