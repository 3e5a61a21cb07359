"""The command line: help texts and the reference benchmark on its embedded default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ditcheck.cli import COMMANDS, build_parser, main

TARGETS = Path(__file__).resolve().parent / "targets"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_static_command_help_matches_the_modules_and_top_level_help_is_unchanged() -> None:
    """ditcheck --help lists commands from COMMAND_HELP without importing them: it must equal each module's HELP,
    and the lazy parser's help must be the full parser's, character for character."""
    import importlib

    from ditcheck.cli import COMMAND_HELP

    assert set(COMMAND_HELP) == set(COMMANDS)
    for name, module in COMMANDS.items():
        assert COMMAND_HELP[name] == importlib.import_module(module).HELP, name
    assert build_parser(load=[]).format_help() == build_parser().format_help()


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


# ----------------------------------------------------------------------------------------
# One grammar: lists, typed errors as one line, derived inputs for `ditcheck criteria --model`

TINY_MODELS = '''
import torch
from diffusers import DiTTransformer2DModel


def diffusers_dit():
    torch.manual_seed(0)
    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                 num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
                                 norm_num_groups=1)


class NeedsLabels(torch.nn.Module):
    """A class-conditional DiT with no config to say so: y is required."""

    def __init__(self):
        super().__init__()
        self.inner = diffusers_dit()

    def forward(self, x, t, y):
        return self.inner(x, t, y).sample


def needs_labels():
    return NeedsLabels()


def no_config():
    return torch.nn.Identity()
'''


@pytest.fixture
def tiny_models(tmp_path):
    pytest.importorskip("diffusers")
    path = tmp_path / "tiny_models.py"
    path.write_text(TINY_MODELS)
    return path


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str], command: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), err
    return lines[0]


def _criteria_description(argv: list[str], tmp_path) -> str:
    import json

    out = tmp_path / "criteria.json"
    assert main(["criteria", *argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())["model"]


def test_criteria_derives_shape_time_and_label_of_a_diffusers_dit(tiny_models, tmp_path, capsys) -> None:
    description = _criteria_description(["--model", f"{tiny_models}:diffusers_dit"], tmp_path)
    assert "module(x, t, y)" in description and "(2, 4, 8, 8)" in description
    assert "t = 500" in description and "y = 0" in description
    assert "1 attention layers" in capsys.readouterr().out


def test_criteria_options_override_the_derived_inputs(tiny_models, tmp_path) -> None:
    description = _criteria_description(["--model", f"{tiny_models}:diffusers_dit", "--input-shape", "1,4,8,8",
                                          "--time", "10", "--label", "3"], tmp_path)
    assert "(1, 4, 8, 8)" in description and "t = 10" in description and "y = 3" in description


def test_criteria_without_a_config_names_the_option_to_pass(tiny_models, capsys) -> None:
    line = _error_line(capsys, ["criteria", "--model", f"{tiny_models}:no_config"], "ditcheck criteria")
    assert "--input-shape" in line
    line = _error_line(capsys, ["criteria", "--model", f"{tiny_models}:needs_labels", "--input-shape", "1,4,8,8"],
                       "ditcheck criteria")
    assert "--label" in line and "TypeError" in line


def test_criteria_reads_the_inputs_of_a_dit_fork_off_its_recognised_layout(tmp_path) -> None:
    """A fork of the original DiT has no config (SiT, fast-DiT...): the shape and the label come from the layout
    ``ditcheck validate dit`` recognises, so a new user's first call needs no --input-shape."""
    described = _criteria_description(["--model", f"{TARGETS / 'dit_forks.py'}:original_style"], tmp_path)
    assert "module(x, t, y)" in described and "from the recognised DiT layout" in described


@pytest.mark.parametrize("spec, says", [("no_colon", "MODULE:ATTR"), ("absent_dir/absent.py:f", "absent.py"),
                                        ("ditcheck.loader:nope", "'nope'")])
def test_unloadable_model_is_one_line_and_exit_2(spec: str, says: str, capsys) -> None:
    assert says in _error_line(capsys, ["criteria", "--model", spec], "ditcheck criteria")


def test_validate_dit_unloadable_target_is_one_line(capsys) -> None:
    assert main(["validate", "dit", "no_colon"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "MODULE:ATTR" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("target, stream, code, block_by_block", [
    ("dit_forks.py:original_style", "--stream", 0, True),
    ("dit_forks.py:original_style", "--no-stream", 0, False),
    ("clean.py:tiny_diffusers_dit", "--stream", 2, False),
])
def test_validate_dit_stream_option_chooses_the_path(target: str, stream: str, code: int, block_by_block: bool,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--stream forces block by block (a model this small defaults to the whole-model path), --no-stream the
    whole-model path; the diffusers layout has no block-by-block path: a one-line error naming the option."""
    assert main(["validate", "dit", f"{TARGETS / target}", stream, "--examples", "1"]) == code
    out = capsys.readouterr()
    assert ("path=block by block" in out.out) == block_by_block and "Traceback" not in out.err
    assert code == 0 or "argument 'stream'" in out.out + out.err


def test_a_typed_error_never_reaches_the_user_as_a_traceback(tiny_models) -> None:
    done = subprocess.run([sys.executable, "-m", "ditcheck", "criteria", "--model", f"{tiny_models}:no_config"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("ditcheck criteria: error: ") and "input-shape" in done.stderr


def test_output_piped_into_a_reader_that_stops_early_ends_without_a_traceback() -> None:
    """`ditcheck validate dit ... | head -1`: the reader has gone when the report prints; exit status 141 (SIGPIPE's)."""
    child = subprocess.Popen([sys.executable, "-m", "ditcheck", "validate", "dit", f"{TARGETS / 'clean.py'}:tiny_dit",
                              "--examples", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the child has imported torch: its first print meets a closed pipe
    errors = child.stderr.read()
    assert child.wait(timeout=300) == 141 and "Traceback" not in errors, errors


@pytest.mark.parametrize("path, option, tokens, expected", [
    (["bench", "attention"], "lengths", ["1024,4096"], [1024, 4096]),
    (["bench", "attention"], "lengths", ["1024", "4096"], [1024, 4096]),
    (["bench", "gradient"], "lengths", ["1024,4096"], [1024, 4096]),
    (["bench", "gradient"], "lengths", ["1024", "4096"], [1024, 4096]),
    (["bench", "attention"], "backends", ["exact,rf"], ["exact", "rf"]),
    (["bench", "samplers"], "budgets", ["8,16", "32"], [8, 16, 32]),
    (["validate", "scheduler", "diffusers:DDIMScheduler"], "steps", ["10,50"], [10, 50]),
    (["validate", "attention", "m:f"], "kinds", ["normal", "one_hot"], ["normal", "one_hot"]),
    (["audit"], "claims", ["AS1,AS2"], ["AS1", "AS2"]),
])
def test_every_list_option_takes_commas_and_spaces(path, option, tokens, expected) -> None:
    args = build_parser().parse_args([*path, f"--{option}", *tokens])
    assert getattr(args, option) == expected


@pytest.mark.parametrize("argv", [["bench", "attention", "--lengths", "1024,x"],
                                  ["bench", "attention", "--backends", "exact,flash"],
                                  ["validate", "attention", "m:f", "--kinds", "normal,nope"]])
def test_a_bad_list_item_is_a_usage_error(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "invalid item" in capsys.readouterr().err


def test_shared_options_have_one_meaning() -> None:
    """--seed is an int seed with metavar S everywhere; list options say their grammar in their help."""
    from ditcheck.options import LIST_HELP

    seen: dict[str, set[str]] = {}
    for path in _every_command_path():
        parser = build_parser()
        sub = parser
        for name in path:
            action = next(a for a in sub._actions if isinstance(a, __import__("argparse")._SubParsersAction))
            sub = action.choices[name]
        for action in sub._actions:
            for flag in action.option_strings:
                seen.setdefault(flag, set()).add(str(action.metavar))
            if action.nargs == "+" and action.option_strings:
                assert LIST_HELP.split(",")[0] in (action.help or ""), (path, action.option_strings)
    assert seen["--seed"] == {"S"}
    assert seen["--json"] == {"PATH"}
