"""bench/workflows.py's failure handling, with skiplock's peer (the other peers are in
the bench extra, which CI does not install): a workflow that fails ends the measurement
at once with its error, and a failed measurement is shown in the rows it would have
filled."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import workflow_workloads as wl
from bench.common import BenchError, fresh_database
from bench.workflow_peers import ledger
from bench.workflow_peers.skiplock_peer import Skiplock
from bench.workflows import one
from bench.workflows_report import Results, table


class BrokenLedger(Skiplock):
    """skiplock's workers, writing their ledger into a directory that does not exist:
    every step raises FileNotFoundError, so every workflow fails."""

    def worker_command(self, kind: str) -> list[str]:
        return ["env", f"{ledger.ENV}=/nonexistent/ledger", *super().worker_command(kind)]


def settings(tmp_path: Path) -> wl.Settings:
    return wl.Settings(steps=5, resumes=1, sleeps=1, children=1, drain=7, idle=1, logs=tmp_path)


@pytest.mark.slow
def test_a_failed_workflow_ends_the_measurement_with_its_error(
    server_dsn: str, tmp_path: Path
) -> None:
    peer = BrokenLedger()
    with fresh_database(server_dsn, "wf_bench_fail_fast") as dsn:
        peer.install(dsn)
        with pytest.raises(BenchError, match="a workflow failed while waiting") as caught:
            wl.steps(peer, dsn, settings(tmp_path))
    assert "FileNotFoundError" in str(caught.value) or "No such file" in str(caught.value)


def test_a_failed_measurement_shows_in_its_rows(server_dsn: str, tmp_path: Path) -> None:
    def broken(peer: object, dsn: str, s: wl.Settings) -> wl.Result:
        raise BenchError("the measurement broke")

    s = settings(tmp_path)
    res = Results(["skiplock"])
    one(server_dsn, Skiplock(), "drain", 2, broken, s, res, None, 0)
    row = wl.rows("drain", s, workers=2)[0]
    assert res.failures == {(row, "skiplock"): "the measurement broke"}
    shown = [line for line in table(res).splitlines() if line.startswith(f"| {row}")]
    assert len(shown) == 1 and "FAILED" in shown[0]
