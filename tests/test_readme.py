"""The README's first app, run as written: its code blocks are the files of examples/,
and those files are executed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import SKIPLOCK, fetch, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ["myapp.py", "commands.sh", "trigger_resize.py"]  # the first app's blocks, in order


def blocks() -> list[tuple[str, str]]:
    section = README.read_text().split("## A first app", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_the_readme_shows_the_examples_as_they_are() -> None:
    shown = [code for _, code in blocks()]
    assert shown == [(ROOT / "examples" / name).read_text() for name in EXAMPLES]
    assert [lang for lang, _ in blocks()] == ["python", "bash", "python"]


def test_the_first_app_in_the_readme_works_as_written(dsn: str, tmp_path: Path) -> None:
    app_code, commands, use = [(ROOT / "examples" / name).read_text() for name in EXAMPLES]
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
        # what the README's comment says it prints: poll waited for the worker
        assert shown.stdout == "COMPLETED thumb='https://example.com/cat.png?w=100'\n"
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
