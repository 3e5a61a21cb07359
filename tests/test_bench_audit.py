"""ditcheck bench audit: one row per configuration, and a configuration whose numbers differ is flagged (exit 1)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ditcheck.audit.execute import run_audit
from ditcheck.bench import audit as bench
from ditcheck.cli import main


def test_rows_per_configuration_and_identical_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    timings = bench.bench_audit("quick", 0, workers=(1, 1), cluster=None, claim_ids=("AS6", "GP3"))
    assert [t.where for t in timings] == ["in process, 1 worker"] * 2
    assert all(t.identical and not t.failed and t.seconds > 0 for t in timings)
    assert main(["bench", "audit", "--mode", "quick", "--workers", "1", "--cluster", "0", "--claims", "AS6"]) == 0
    assert "identical: yes" in capsys.readouterr().out


def test_a_configuration_with_different_numbers_is_flagged(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def drifting(*args: Any, **kwargs: Any) -> Any:
        results, placement = run_audit(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # planted: the second configuration's AS6 table differs in one entry
            results = [dataclasses.replace(r, table=r.table[:-1]) for r in results]
        return results, placement

    monkeypatch.setattr("ditcheck.audit.execute.run_audit", drifting)
    assert main(["bench", "audit", "--mode", "quick", "--workers", "1,1", "--cluster", "0", "--claims", "AS6"]) == 1
    out = capsys.readouterr().out
    assert "identical: NO" in out and "NUMBERS DIFFER" in out


def test_bad_worker_counts_are_usage_errors() -> None:
    assert main(["bench", "audit", "--workers", "0", "--cluster", "0"]) == 2
