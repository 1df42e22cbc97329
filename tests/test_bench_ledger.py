"""The exactly-once check of bench/workflows.py (bench/workflow_peers/ledger.py): a step
that ran twice, never, or unexpectedly fails the measurement."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.workflow_peers import ledger
from bench.workflow_peers.base import expected


def lines(*pairs: tuple[str, str]) -> list[ledger.Line]:
    return [ledger.Line(wf, step, float(k)) for k, (wf, step) in enumerate(pairs)]


def test_each_expected_step_once_passes() -> None:
    got = lines(("steps-0", "s0"), ("steps-0", "s1"), ("steps-0", "s2"))
    assert ledger.check(got, expected("steps", 1)) == 3


@pytest.mark.parametrize(
    ("got", "why"),
    [
        (lines(("one-0", "s0"), ("one-0", "s0")), "1 steps ran more than once"),
        (lines(), "1 never ran"),
        (lines(("one-0", "s0"), ("one-1", "s0")), "1 unexpected"),
    ],
)
def test_duplicate_missing_or_extra_fails(got: list[ledger.Line], why: str) -> None:
    with pytest.raises(ledger.LedgerError, match=why):
        ledger.check(got, expected("one", 1))


def test_records_are_read_back_from_every_process_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ledger.ENV, str(tmp_path))
    monkeypatch.setattr(ledger, "_fd", None)
    at = ledger.record("parent-0", "done")
    (tmp_path / "ledger-1.tsv").write_text("child-0\ts0\t1.5\npartial-line")
    read = ledger.read(tmp_path)
    assert ledger.check(read, expected("fanout", 1)) == 2
    assert ledger.times(read, "done") == {"parent-0": at}
