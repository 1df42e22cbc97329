"""Queue drain, skiplock against PgQueuer at equal batch: the matrix of the performance
issue (batch 50 and 200, 1 and 2 worker processes), in alternated pairs.

    python bench/drain_matrix.py [--batches 50,200] [--workers 1,2] [--pairs 5]
                                 [--jobs 20000] [--baseline TREE] [--write-results [PATH]]

Equal batch: skiplock's worker runs with `--concurrency B` (each call records what
finished and claims up to B runs), PgQueuer's with `QueueManager.run(batch_size=B)`. Each
measurement is compare.py's drain (bench/workloads.py): N no-op jobs queued through the
batch API (untimed), then the worker processes spawned, timed from just before the spawn
to the N-th success by the system's own timestamps, every job checked to have run exactly
once; a fresh database each time, durability on. A pair is one measurement of each
system back to back, the order alternating from pair to pair; the ratio is skiplock's
median over PgQueuer's, and the pairs' own ratios are listed too. `--baseline TREE`: another
checkout of skiplock (`git worktree add /tmp/base <commit>`) measured as a third system,
its own engine and SQL, in the same alternation: the ratio before a change, same run.

CPU a run, from /proc, spawn to the N-th success (start-up included): the worker
processes' own, and the cluster's (every PostgreSQL process: the workers' backends, the
poll's, the WAL writer, autovacuum), in CPU seconds per 1,000 jobs. The workers run
under this interpreter (`sys.executable`): run it once per Python version, each writes
its own part of the section.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/drain_matrix.py` puts bench/, not the repo
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    Conn,
    add_dsn,
    add_write_results,
    checkpoint_and_settle,
    cluster,
    connect,
    fresh_database,
    running,
    scalar,
    server_facts,
    wait_until,
)
from bench.peers.base import System  # noqa: E402
from bench.peers.pgqueuer_peer import PgQueuer  # noqa: E402
from bench.peers.skiplock_peer import Skiplock  # noqa: E402
from bench.report import versions  # noqa: E402
from bench.workloads import POLL, db_clock, finish_time  # noqa: E402

SECTION = "## Queue drain against PgQueuer at equal batch (bench/drain_matrix.py)"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int, children: bool = False) -> float:
    """CPU seconds of process `pid` (with `children`: plus its reaped children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds of the whole cluster: the postmaster, its live children, and the
    children it has reaped (ended backends)."""
    total = cpu_of(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == postmaster:
            total += (int(stat[11]) + int(stat[12])) / TICK
    return total


def postmaster_pid(conn: Conn) -> int:
    backend = int(scalar(conn, "SELECT pg_backend_pid()"))
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


@dataclass
class Drain:
    rate: float  # jobs/s, spawn to the N-th success
    busy: float  # jobs/s, first start to the N-th success
    startup: float  # seconds, spawn to the first start
    worker_cpu: float  # CPU seconds per 1,000 jobs
    backend_cpu: float


def drain(system: System, dsn: str, n: int, workers: int, log_dir: Path) -> Drain:
    """bench/workloads.py's drain, with the CPU of the workers and of the cluster."""
    with system.client(dsn) as client:
        client.enqueue_batch(list(range(n)))
    with connect(dsn) as conn:
        system.verify(conn, n, drained=False)
        postmaster = postmaster_pid(conn)
        pg_before = cluster_cpu(postmaster)
        spawned, spawned_perf = db_clock(conn), time.perf_counter()
        cmd, env, tree = (
            system.worker_command(),
            system.worker_env(dsn),
            getattr(system, "tree", None),
        )
        with running(cmd, dsn, workers, log_dir, env, tree) as procs:
            seen = wait_until(
                lambda: system.completed(conn, n) >= n,
                procs,
                max(120.0, n / 50),
                f"{n} jobs done",
                interval=POLL,
            )
            worker_cpu = sum(cpu_of(w.process.pid) for w in procs)
            pg_cpu = cluster_cpu(postmaster) - pg_before
        system.verify(conn, n, drained=True)
        end = finish_time(system, conn, n, spawned, seen - spawned_perf)
        first = system.first_start(conn)
    return Drain(
        rate=n / (end - spawned).total_seconds(),
        busy=n / (end - first).total_seconds(),
        startup=(first - spawned).total_seconds(),
        worker_cpu=worker_cpu * 1000 / n,
        backend_cpu=pg_cpu * 1000 / n,
    )


BASE = "skiplock@base"


@dataclass
class Cell:
    batch: int
    workers: int
    runs: dict[str, list[Drain]] = field(default_factory=lambda: {"skiplock": [], "pgqueuer": []})

    def median(self, name: str, attr: str) -> float:
        return float(statistics.median(getattr(d, attr) for d in self.runs[name]))

    def ratio(self, attr: str = "rate", mine: str = "skiplock") -> float:
        return self.median(mine, attr) / self.median("pgqueuer", attr)

    def pair_ratios(self, mine: str = "skiplock") -> list[float]:
        ours, theirs = self.runs[mine], self.runs["pgqueuer"]
        return [s.rate / p.rate for s, p in zip(ours, theirs, strict=False)]

    def span(self, name: str) -> str:
        v = [d.rate for d in self.runs[name]]
        return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"

    def cpu(self, attr: str) -> str:
        return f"{self.median('skiplock', attr):.3f} / {self.median('pgqueuer', attr):.3f}"


def measure(
    server_dsn: str,
    cell: Cell,
    pairs: int,
    jobs: int,
    log_dir: Path,
    baseline: Path | None,
    worker_args: tuple[str, ...] = (),
) -> None:
    systems: list[System] = [Skiplock(cell.batch, worker_args=worker_args), PgQueuer(cell.batch)]
    if baseline is not None:
        systems.append(Skiplock(cell.batch, baseline, BASE))
        cell.runs[BASE] = []
    for k in range(pairs):
        for system in systems if k % 2 == 0 else systems[::-1]:
            checkpoint_and_settle(server_dsn)
            with fresh_database(server_dsn, f"matrix_{system.name}_{os.getpid()}") as dsn:
                system.install(dsn)
                d = drain(system, dsn, jobs, cell.workers, log_dir)
            cell.runs[system.name].append(d)
            print(
                f"batch {cell.batch:>3} x{cell.workers} {system.name:<13} #{k + 1}: "
                f"{d.rate:6.0f} jobs/s (busy {d.busy:6.0f}, start-up {d.startup:.2f}s); "
                f"CPU s/1000 jobs: worker {d.worker_cpu:.3f}, cluster {d.backend_cpu:.3f}; "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )


def table(cells: list[Cell]) -> list[str]:
    base = any(BASE in c.runs for c in cells)
    out = [
        "| batch | workers | skiplock jobs/s | PgQueuer jobs/s | ratio | pair ratios "
        + ("| baseline jobs/s | baseline ratio | baseline pair ratios " if base else "")
        + "| ratio after start-up | CPU s/1000 jobs, worker: skiplock / PgQueuer "
        "| cluster: skiplock / PgQueuer " + ("| cluster, baseline " if base else "") + "|",
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if base else ""),
    ]
    for c in cells:
        before = ""
        if base:
            before = (
                f"| {c.span(BASE)} | {c.ratio(mine=BASE):.2f} "
                f"| {', '.join(f'{r:.2f}' for r in c.pair_ratios(BASE))} "
            )
        out.append(
            f"| {c.batch} | {c.workers} | {c.span('skiplock')} | {c.span('pgqueuer')} "
            f"| **{c.ratio():.2f}** | {', '.join(f'{r:.2f}' for r in c.pair_ratios())} "
            + before
            + f"| {c.ratio('busy'):.2f} | {c.cpu('worker_cpu')} | {c.cpu('backend_cpu')} "
            + (f"| {c.median(BASE, 'backend_cpu'):.3f} " if base else "")
            + "|"
        )
    return out


def part(cells: list[Cell], command: str, pg: dict[str, str], loads: tuple[float, float]) -> str:
    py = platform.python_version()
    vers = ", ".join(f"{k} {v}" for k, v in versions(["skiplock", "pgqueuer"]).items())
    return "\n".join(
        [
            f"### Python {'.'.join(py.split('.')[:2])}",
            "",
            f"`{command}` (Python {py}; {vers}; PostgreSQL {pg['server_version']}, "
            f"fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}; "
            f"{os.cpu_count()} CPUs, load average {loads[0]:.2f} at the start, "
            f"{loads[1]:.2f} at the end; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            *table(cells),
            "",
        ]
    )


INTRO = """\
skiplock `--concurrency B` against PgQueuer 1.6 `batch_size=B`, 20,000 pre-filled no-op
jobs, durability on, fresh database per measurement, pairs alternating which system goes
first. jobs/s from the workers' spawn to the N-th success (start-up included, as in the
comparison above), median (min-max); ratio = skiplock's median / PgQueuer's; "after
start-up" = the same ratio from each system's first job start. CPU per 1,000 jobs from
/proc, spawn to the last success: the worker processes, and the whole cluster (their
backends, WAL writer, autovacuum, the harness's poll). The machine is shared with other
benchmarks (see the load): compare within a row, not across runs.
"""


def write(path: Path, text: str) -> None:
    """Put `text` (one Python version's part) into the section, replacing that version's
    part of an earlier run and keeping the other's."""
    doc = path.read_text() if path.exists() else ""
    head = text.splitlines()[0]
    if SECTION not in doc:
        doc = doc.rstrip("\n") + f"\n\n{SECTION}\n\n{INTRO}\n"
    start = doc.index(SECTION)
    nxt = re.search(r"^## ", doc[start + len(SECTION) :], re.M)
    end = start + len(SECTION) + nxt.start() if nxt else len(doc)
    section = doc[start:end].rstrip("\n") + "\n"
    parts = re.split(r"(?=^### )", section, flags=re.M)
    kept = [p for p in parts[1:] if not p.startswith(head + "\n")]
    body = sorted([*kept, text.rstrip("\n") + "\n"])
    new = parts[0].rstrip("\n") + "\n\n" + "\n".join(body)
    path.write_text(doc[:start] + new + ("\n" + doc[end:] if end < len(doc) else ""))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="50,200", help="batch sizes (default 50,200)")
    p.add_argument("--workers", default="1,2", help="worker process counts (default 1,2)")
    p.add_argument("--pairs", type=int, default=5, help="alternated pairs per cell (5)")
    p.add_argument("--jobs", type=int, default=20000, help="jobs per drain (20000)")
    p.add_argument(
        "--worker-args",
        default="",
        help='more options for this checkout\'s `skiplock worker`, e.g. "--claim-lanes 2"',
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="TREE",
        help="another checkout of skiplock, measured as a third system (skiplock@base)",
    )
    add_dsn(p)
    add_write_results(p, "write this Python version's part of the section")
    args = p.parse_args(argv)
    args.batches = [int(x) for x in args.batches.split(",")]
    args.workers = [int(x) for x in args.workers.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    cells = [Cell(b, w) for b in args.batches for w in args.workers]
    with cluster(args.dsn) as server, tempfile.TemporaryDirectory(prefix="matrix-") as logs:
        pg = server_facts(server.dsn)
        print(
            f"Python {platform.python_version()}; PostgreSQL {pg['server_version']}: "
            f"fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}",
            flush=True,
        )
        for cell in cells:
            measure(
                server.dsn,
                cell,
                args.pairs,
                args.jobs,
                Path(logs),
                args.baseline,
                tuple(args.worker_args.split()),
            )
    command = "python bench/drain_matrix.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = part(cells, command.strip(), pg, (load_start, os.getloadavg()[0]))
    print()
    print(text)
    if args.write_results:
        write(Path(args.write_results), text)
        print(f"wrote {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
