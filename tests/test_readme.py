"""The README's first app, run as written: its code blocks are extracted and executed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import SKIPLOCK, fetch, wait_for

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks() -> list[tuple[str, str]]:
    section = README.read_text().split("## A first app", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_the_first_app_in_the_readme_works_as_written(dsn: str, tmp_path: Path) -> None:
    (lang1, app_code), (lang2, commands), (lang3, use) = blocks()
    assert (lang1, lang2, lang3) == ("python", "bash", "python")
    (tmp_path / "myapp.py").write_text(app_code)
    env = {**os.environ, "SKIPLOCK_DATABASE_URL": dsn, "PYTHONPATH": str(tmp_path)}
    migrate, worker = [line.split() for line in commands.strip().splitlines()]
    assert migrate[0] == worker[0] == "skiplock"
    done = subprocess.run(
        [SKIPLOCK, *migrate[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(
        [SKIPLOCK, *worker[1:]],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: fetch(dsn, "SELECT 1 FROM skiplock.workers WHERE version = '2026.11.1'"))
        shown = subprocess.run(
            [sys.executable, "-c", use],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.split()[0] in {"QUEUED", "EXECUTING", "COMPLETED"}
        row = wait_for(
            lambda: fetch(
                dsn,
                "SELECT status, output FROM skiplock.runs "
                "WHERE 'user:42' = ANY (tags) AND status = 'COMPLETED'",
            )
        )
        assert row == [("COMPLETED", {"thumb": "https://example.com/cat.png?w=100"})]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
