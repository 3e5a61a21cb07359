"""The command line: help texts and the reference benchmark on its embedded default."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ditcheck.cli import build_parser, main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_bench_reference_runs_and_reports_certified_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "reference", "--no-mp-block", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "arb:128" in out and "mp:39" in out and "DiT block" in out


def test_unknown_command_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["frobnicate"])
    assert exit_info.value.code == 2


def test_python_dash_m_entry_points() -> None:
    for module, expected in (("ditcheck", "bench"), ("ditcheck.bench", "reference")):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and expected in done.stdout
