"""What a worker process does not load until it needs it (a worker's RSS, see
bench/worker_footprint.py): the blocking API's pool, the retry library, the webhooks'
HTTP client, OpenTelemetry (unless the application imported it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LAZY = ("psycopg_pool", "tenacity", "urllib.request", "opentelemetry")

_SCRIPT = """
import sys
import engine
import engine.cli.main
import engine.worker.runtime
loaded = [name for name in sys.argv[1:] if name in sys.modules]
print(",".join(loaded))
"""


def test_a_worker_imports_no_pool_retries_http_client_or_tracing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *LAZY],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
