"""The command line: help texts and the reference benchmark on its embedded default."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ditcheck.cli import COMMANDS, build_parser, main


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


def _every_command_path() -> list[list[str]]:
    from ditcheck.bench import benchmarks
    from ditcheck.validate.cli import TARGETS

    paths = [[name] for name in COMMANDS]
    paths += [["bench", name] for name in benchmarks()]
    paths += [["validate", name] for name in TARGETS]
    return paths


@pytest.mark.parametrize("path", _every_command_path(), ids=" ".join)
def test_every_command_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ditcheck " + " ".join(path))
