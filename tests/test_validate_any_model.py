"""``validate dit MODEL --inputs F``: any torch model (here a PixArt-alpha-style original code base, neither the
DiT layout nor a diffusers class) checked component by component from the inputs the user's function gives."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.validate import dit
from ditcheck.validate.batch import read_targets, run_target
from ditcheck.validate.call_inputs import INPUTS_HINT, call_arguments, inputs_function
from ditcheck.validate.zoo import build_inputs, build_model
from targets import text_to_image as t2i

TARGETS = Path(__file__).parent / "targets"
MODEL_SPEC = f"{TARGETS / 'text_to_image.py'}:PixArtStyle"
INPUTS_SPEC = f"{TARGETS / 'text_to_image.py'}:inputs"


def _cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ditcheck", "validate", "dit", *arguments], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_original_code_text_to_image_dit_conforms_component_by_component(dtype: str) -> None:
    report = dit(t2i.PixArtStyle(), inputs=t2i.inputs, dtype=dtype)
    assert report.ok and report.loaded, report.render()
    assert report.settings["path"] == "components" and report.settings["dtype"] == dtype
    assert report.settings["convention"] == "as each module states"
    checked = {check.id.split(" (")[0] for check in report.checks}
    assert {"Attention", "Mlp", "Linear", "LayerNorm", "Conv2d", "output"} <= checked
    # honest about what it did not check: the unrecognised classes (the model's own forward at least) are listed
    assert any(note.startswith("not recognised (run, not checked): ") and "PixArtStyle" in note.split(": ")[1]
               for note in report.notes)
    recomputed, total = (int(n) for n in report.settings["components"].split(" calls")[0].split(" of "))
    assert 0 < recomputed < total


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bug", sorted({**t2i.PLANTED, **t2i.PLANTED_INLINE}))
def test_planted_bug_in_original_code_is_localised(bug: str, dtype: str) -> None:
    options, where = {**t2i.PLANTED, **t2i.PLANTED_INLINE}[bug]
    report = dit(t2i.PixArtStyle(**options), inputs=t2i.inputs, dtype=dtype)
    assert not report.ok and report.loaded
    assert report.first_divergence is not None and report.first_divergence.startswith(f"{where} ("), report.render()


def test_planted_knob_bugs_are_explained_by_the_knob() -> None:
    for bug, knob in (("attention_scale_1_over_d", {"scale": "1/head_dim"}),
                      ("timestep_frequency_shift", {"downscale_freq_shift": 1.0})):
        report = dit(t2i.PixArtStyle(**t2i.PLANTED[bug][0]), inputs=t2i.inputs, examples=1)
        assert [entry["knobs"] for entry in report.diagnosis] == [knob], bug


def test_call_arguments_reads_every_documented_form() -> None:
    x = torch.zeros(1)
    assert call_arguments({"x": x}) == ((), {"x": x})
    assert call_arguments((x, 3)) == ((x, 3), {})
    assert call_arguments([x]) == ((x,), {})
    assert call_arguments(((x,), {"y": 1})) == ((x,), {"y": 1})
    assert call_arguments(x) == ((x,), {})
    with pytest.raises(InvalidArgumentError, match="'inputs'.*a dict of keyword arguments.*got int"):
        call_arguments(3)
    with pytest.raises(InvalidArgumentError, match="'inputs'.*string keys"):
        call_arguments({1: x})


def test_inputs_function_passes_each_example_its_seed_or_calls_without() -> None:
    seen: list[int] = []

    def of_seed(seed: int) -> dict[str, Any]:
        seen.append(seed)
        return t2i.inputs(seed)

    report = dit(t2i.PixArtStyle(), inputs=of_seed, examples=3, seed=4)
    assert report.ok and len(set(seen)) == 3  # fresh inputs per example
    calls: list[int] = []
    fixed = t2i.inputs(0)

    def of_nothing() -> dict[str, Any]:
        calls.append(1)
        return fixed

    assert dit(t2i.PixArtStyle(), inputs=of_nothing, examples=2).ok and len(calls) == 2
    assert dit(t2i.PixArtStyle(), inputs=fixed, examples=2).ok  # a value, used for every example
    assert inputs_function(INPUTS_SPEC)(0)[1].keys() == fixed.keys()  # MODULE:ATTR is loaded, not called
    with pytest.raises(InvalidArgumentError, match="'inputs'.*a function of the example seed, or of no argument"):
        inputs_function(lambda seed, other: fixed)


def test_float32_inputs_run_in_a_float64_model() -> None:
    seen: list[torch.dtype] = []
    model = t2i.PixArtStyle()
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["x"].dtype), with_kwargs=True)
    report = dit(model, inputs=t2i.inputs, dtype="float64", examples=1, weights="model")
    assert report.ok and seen == [torch.float64]


@pytest.mark.parametrize("inputs, expected", [
    (lambda seed: 3, "got int"),
    (lambda seed: 1 / 0, "ZeroDivisionError"),
])
def test_unusable_inputs_are_a_failed_inputs_check(inputs: Any, expected: str) -> None:
    report = dit(t2i.PixArtStyle(), inputs=inputs)
    assert not report.ok and not report.loaded
    [check] = [c for c in report.checks if c.id == "inputs"]
    assert not check.ok and expected in check.message


class _NonFinite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * math.inf


def test_a_target_that_raises_or_returns_non_finite_values_is_a_failed_check() -> None:
    raised = dit(t2i.PixArtStyle(), inputs=lambda seed: {**t2i.inputs(seed), "unknown": 1})
    assert not raised.ok and any(c.id == "call" and "unknown" in c.message for c in raised.checks)
    infinite = dit(_NonFinite(), inputs=lambda seed: torch.ones(2, 4))
    assert not infinite.ok and any(c.id == "output" and not c.ok and "non-finite" in c.message
                                   for c in infinite.checks)


@pytest.mark.parametrize("argument, value", [("convention", "dit"), ("heads", 4), ("stream", True)])
def test_options_of_the_dit_layout_are_refused_with_inputs(argument: str, value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=f"'{argument}'"):
        dit(t2i.PixArtStyle(), inputs=t2i.inputs, **{argument: value})


def test_a_diffusers_class_takes_the_users_inputs_instead_of_ditchecks() -> None:
    model = build_model("PixArtTransformer2DModel")
    given = []

    def inputs(seed: int) -> dict[str, Any]:
        given.append(seed)
        return build_inputs(model, seed)[1]

    report = dit(model, inputs=inputs, examples=1)
    assert report.ok and given and report.settings["inputs"].endswith("inputs")
    assert any(c.id.startswith("AdaLayerNormSingle") for c in report.checks)


def test_cli_without_inputs_says_how_to_give_them_and_with_them_validates(tmp_path: Path) -> None:
    refused = _cli(MODEL_SPEC, cwd=tmp_path)
    assert refused.returncode == 2 and INPUTS_HINT in refused.stdout, refused.stdout + refused.stderr
    done = _cli(MODEL_SPEC, "--inputs", INPUTS_SPEC, "--examples", "1", cwd=tmp_path)
    assert done.returncode == 0 and "CONFORMS" in done.stdout, done.stdout + done.stderr
    missing = _cli(MODEL_SPEC, "--inputs", f"{TARGETS / 'text_to_image.py'}:no_such", cwd=tmp_path)
    assert missing.returncode == 2 and "argument 'inputs'" in missing.stdout + missing.stderr
    assert "Traceback" not in missing.stdout + missing.stderr


def test_a_targets_file_gives_inputs_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(f"import sys\nsys.path.insert(0, {str(TARGETS)!r})\n"
                                       "from text_to_image import PixArtStyle, inputs\n")
    listing = tmp_path / "targets.toml"
    listing.write_text('[[dit]]\ntarget = "model.py:PixArtStyle"\ninputs = "model.py:inputs"\nexamples = 1\n\n'
                       '[[dit]]\ntarget = "model.py:PixArtStyle"\ninputs = "model.py:inputs"\n'
                       'reference = "model.py:PixArtStyle"\nexamples = 1\n')
    components, against = read_targets(listing)
    assert components.options["inputs"] == against.options["reference"].replace("PixArtStyle", "inputs") == \
        f"{tmp_path / 'model.py'}:inputs"
    for spec in (components, against):
        outcome = run_target(spec)
        assert outcome.exit_code == 0, outcome.text
    assert "path=differential" in run_target(against).text


def test_a_failing_component_run_saves_a_script_that_repeats_it(tmp_path: Path) -> None:
    (tmp_path / "fork.py").write_text(f"import sys\nsys.path.insert(0, {str(TARGETS)!r})\n"
                                      "from text_to_image import PixArtStyle, inputs\n\n\n"
                                      "def shifted():\n    return PixArtStyle(timestep_shift=1.0)\n")
    report = dit(f"{tmp_path / 'fork.py'}:shifted", inputs=f"{tmp_path / 'fork.py'}:inputs", examples=1)
    assert not report.ok
    [script] = report.save_failures(tmp_path / "saved")
    rerun = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0 and f"first divergence: {report.first_divergence}" in rerun.stdout, rerun.stdout


def test_a_model_built_by_validate_is_not_copied_and_a_callers_model_is_not_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    given = t2i.PixArtStyle()
    before = {name: value.clone() for name, value in given.state_dict().items()}
    assert dit(given, inputs=t2i.inputs, examples=1).ok  # copied: the random weights go into the copy
    assert all(torch.equal(before[name], value) for name, value in given.state_dict().items())

    def no_copy(value: Any, memo: Any = None) -> Any:
        raise AssertionError("a model validate built itself was deep-copied")
    monkeypatch.setattr(copy, "deepcopy", no_copy)
    assert dit(t2i.PixArtStyle, inputs=t2i.inputs, examples=1).ok  # a factory: its model is validate's own
