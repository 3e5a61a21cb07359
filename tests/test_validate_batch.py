"""ditcheck validate --all: targets from [tool.ditcheck] or --targets, run in parallel, one report and exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ditcheck.cli import main
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.validate.batch import TargetOutcome, TargetSpec, combined_exit_code, read_targets, run_targets

TARGETS = Path(__file__).parent / "targets"

ATTENTION = """
[[tool.ditcheck.attention]]
target = "{folder}/clean.py:sdpa"
dtype = "float64"
examples = 6
max-tokens = 32
gradients = false
"""
SCHEDULER = """
[[tool.ditcheck.scheduler]]
target = "diffusers:DDIMScheduler"
steps = [10]
samples = 200
search = false
schedule = false
config = {clip_sample = false}
"""
BROKEN = """
[[tool.ditcheck.attention]]
target = "broken.py:raises"
examples = 2
max_tokens = 16
"""


def _write(folder: Path, text: str, name: str = "targets.toml") -> Path:
    path = folder / name
    path.write_text(text.replace("{folder}", str(TARGETS)))
    return path


def test_read_targets_resolves_paths_and_keywords(tmp_path: Path) -> None:
    specs = read_targets(_write(tmp_path, ATTENTION + SCHEDULER + BROKEN))
    assert [(s.kind, s.entry) for s in specs] == [("attention", "[tool.ditcheck] attention[0]"),
                                                  ("attention", "[tool.ditcheck] attention[1]"),
                                                  ("scheduler", "[tool.ditcheck] scheduler[0]")]
    assert specs[0].options == {"dtype": "float64", "examples": 6, "max_tokens": 32, "gradients": False}
    assert specs[1].target == f"{tmp_path.resolve()}/broken.py:raises"  # relative to the file's folder
    assert specs[2].options["steps"] == (10,) and specs[2].options["config"] == {"clip_sample": False}


@pytest.mark.parametrize("text, message", [
    ("[[tool.ditcheck.attention]]\ntarget = 'a:b'\nexamplez = 3\n", "examplez"),
    ("[[tool.ditcheck.attention]]\nexamples = 3\n", "target"),
    ("[[tool.ditcheck.unet]]\ntarget = 'a:b'\n", "unet"),
    ("[tool.other]\nx = 1\n", "tool.ditcheck"),
    ("[[tool.ditcheck.attention\n", "TOML"),
])
def test_malformed_targets_are_typed_errors(tmp_path: Path, text: str, message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InvalidArgumentError, match=message):
        read_targets(path)
    assert main(["validate", "--all", "--targets", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_combined_exit_code() -> None:
    spec = TargetSpec("attention", "m:f")
    outcomes = {code: TargetOutcome(spec, code, "") for code in (0, 1, 2)}
    assert combined_exit_code([outcomes[0], outcomes[0]]) == 0
    assert combined_exit_code([outcomes[0], outcomes[1]]) == 1
    assert combined_exit_code([outcomes[0], outcomes[2]]) == 1  # one could not run while another did
    assert combined_exit_code([outcomes[2], outcomes[2]]) == 2
    assert combined_exit_code([]) == 2


@pytest.mark.slow
def test_validate_all_gives_one_report_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, ATTENTION + SCHEDULER)
    out = tmp_path / "all.json"
    assert main(["validate", "--all", "--targets", str(path), "--workers", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[tool.ditcheck] attention[0]" in printed and "[tool.ditcheck] scheduler[0]" in printed
    assert "ditcheck validate --all on local process pool, 2 workers" in printed
    assert "exit code 0: every target conforms" in printed
    document = json.loads(out.read_text())
    assert document["exit_code"] == 0 and [t["kind"] for t in document["targets"]] == ["attention", "scheduler"]
    assert all(t["exit_code"] == 0 and t["report"] for t in document["targets"])


def test_a_target_that_raises_fails_the_batch_without_stopping_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.py").write_text((TARGETS / "broken.py").read_text())
    path = _write(tmp_path, ATTENTION + BROKEN)
    assert main(["validate", "--all", "--targets", str(path), "--workers", "1"]) == 1
    printed = capsys.readouterr().out
    assert "CONFORMS" in printed and "COULD NOT RUN" in printed
    only_broken = _write(tmp_path, BROKEN, "broken.toml")
    assert main(["validate", "--all", "--targets", str(only_broken), "--workers", "1"]) == 2


def test_all_reads_the_projects_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, "[project]\nname = 'x'\n" + ATTENTION, "pyproject.toml")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # the nearest pyproject.toml above
    assert main(["validate", "--all", "--workers", "1"]) == 0
    assert "exit code 0" in capsys.readouterr().out
    monkeypatch.chdir(Path(tmp_path.anchor))
    assert main(["validate"]) == 2  # neither a kind nor --all
    assert "--all" in capsys.readouterr().err


def test_validate_all_on_a_scheduler_without_dask_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    path = _write(tmp_path, ATTENTION)
    assert main(["validate", "--all", "--targets", str(path), "--scheduler", "local:2"]) == 2
    assert 'pip install "ditcheck[distributed]"' in capsys.readouterr().err


@pytest.mark.slow
def test_validate_all_on_a_local_cluster(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    specs = read_targets(_write(tmp_path, ATTENTION))
    outcomes, placement = run_targets(specs, scheduler="local:1")
    assert placement.workers == 1 and placement.scheduler and placement.scheduler.startswith("tcp://127.0.0.1:")
    assert [o.exit_code for o in outcomes] == [0] and outcomes[0].report
