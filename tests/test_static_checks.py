"""The engine package stays `mypy --strict` and `ruff` clean (run as part of the suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_mypy_strict_is_clean() -> None:
    done = _tool("mypy", "--strict", "engine")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_is_clean() -> None:
    done = _tool("ruff", "check", "engine", "tests")
    assert done.returncode == 0, done.stdout + done.stderr
    fmt = _tool("ruff", "format", "--check", "engine")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
