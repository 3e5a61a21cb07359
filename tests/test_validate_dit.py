"""ditcheck.validate.dit: ditcheck's DiT and diffusers' DiTTransformer2DModel against the reference, the first
divergence, the convention diagnosis, the planted DiT bugs, the diffusers parameter mapping, and the CLI."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

import planted_bugs as pb
from ditcheck.models.dit import DiT
from ditcheck.properties.validation import FLOOR_ULPS, unit_roundoff
from ditcheck.reference.dit import dit_param_shapes, random_dit_params
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.validate import diffusers_state_dict, dit, params_from_diffusers, recognise

TARGETS = Path(__file__).parent / "targets"
DIFFUSERS_TARGET = f"{TARGETS / 'clean.py'}:tiny_diffusers_dit"


@pytest.fixture(scope="module")
def diffusers_model() -> torch.nn.Module:
    from targets.clean import tiny_diffusers_dit

    return tiny_diffusers_dit()


def failing(report) -> list[str]:
    return [check.id for check in report.checks if not check.ok]


# ----------------------------------------------------------------------------------------
# Real code: ditcheck's DiT and diffusers


def test_original_layout_dit_conforms_and_every_block_is_checked() -> None:
    report = dit(pb.clean_dit(), examples=3)
    assert report.ok, str(report)
    assert report.settings["layout"] == "dit"
    ids = {check.id for check in report.checks}
    assert {"pos_embed", "x_embedder", "t_embedder", "y_embedder", "blocks.0", "blocks.1", "final_layer"} <= ids
    assert report.first_divergence is None and report.diagnosis == []


def test_diffusers_conforms_under_its_own_convention(diffusers_model: torch.nn.Module) -> None:
    report = dit(diffusers_model, convention="diffusers", examples=3)
    assert report.ok, str(report)
    assert report.settings["layout"] == "diffusers"
    assert "transformer_blocks.1 ~ blocks.1" in {check.id for check in report.checks}


def test_diffusers_under_the_dit_convention_fails_and_is_diagnosed(diffusers_model: torch.nn.Module) -> None:
    report = dit(diffusers_model, convention="dit", examples=3)
    assert not report.ok and report.exit_code == 1
    assert report.first_divergence == "transformer_blocks.0.norm1.emb.timestep_embedder (reference t_embedder)"
    # the diagnosis names the timestep frequency shift and the MLP-branch LayerNorm eps, together
    assert report.diagnosis[0]["knobs"] == {"downscale_freq_shift": 1.0, "ln_eps_mlp": 1e-5}, report.diagnosis
    output = next(check for check in report.checks if check.id.startswith("output"))
    magnitude = output.tolerance.floor / (FLOOR_ULPS * 2 * unit_roundoff(torch.float32))  # the floor's max |exact|
    assert output.observed / magnitude > 1e-3  # relative: a convention difference, far above float32 rounding
    text = str(report)
    assert "first divergence: transformer_blocks.0.norm1.emb.timestep_embedder" in text
    assert "downscale_freq_shift=1.0, ln_eps_mlp=1e-05" in text
    assert json.loads(report.to_json())["diagnosis"][0]["knobs"]["ln_eps_mlp"] == 1e-5


def test_in_float64_diffusers_float32_islands_are_reported_apart_and_it_conforms(
        diffusers_model: torch.nn.Module) -> None:
    """diffusers stores pos_embed as a float32 buffer (``.float()``) and computes the sinusoidal timestep features
    in float32 whatever the model dtype (get_timestep_embedding: float32 arange, ``timesteps.float()``). In float64
    the float32 requests are mapped to float64 for the comparison (it conforms to float64 accuracy) and each island
    is measured as written: its own finding, within float32's bound, exit 0; --strict-precision fails them."""
    diffusers_model.train()
    report = dit(diffusers_model, convention="diffusers", examples=1, dtype=torch.float64, diagnose=False)
    assert report.ok and report.exit_code == 0, str(report)
    found = {finding.id: finding for finding in report.precision}
    assert {"precision: pos_embed", "precision: transformer_blocks.0.norm1.emb.time_proj"} <= set(found), found
    assert all(finding.ok for finding in report.precision)
    assert 1e-9 < found["precision: pos_embed"].observed < 1e-7
    assert 1e-8 < found["precision: transformer_blocks.0.norm1.emb.time_proj"].observed < 1e-3
    assert "computes in float32 (Timesteps" in str(report)
    assert diffusers_model.training and next(diffusers_model.parameters()).dtype == torch.float32
    strict = dit(diffusers_model, convention="diffusers", examples=1, dtype=torch.float64, diagnose=False,
                 strict_precision=True)
    assert not strict.ok and strict.exit_code == 1
    assert "precision: transformer_blocks.0.norm1.emb.time_proj" in failing(strict)


def test_in_float64_diffusers_under_the_original_convention_fails_and_is_diagnosed(
        diffusers_model: torch.nn.Module) -> None:
    report = dit(diffusers_model, convention="dit", examples=1, dtype=torch.float64)
    assert not report.ok and report.exit_code == 1
    assert report.first_divergence.startswith("transformer_blocks.0.norm1.emb.timestep_embedder")
    assert report.diagnosis[0]["knobs"] == {"downscale_freq_shift": 1.0, "ln_eps_mlp": 1e-5}, report.diagnosis


# ----------------------------------------------------------------------------------------
# Planted DiT bugs

DIT_BUGS = sorted(name for name, bug in pb.BUGS.items() if bug.validator == "dit")
EXPLAINED = {"dit_sin_cos_swapped": {"flip_sin_to_cos": False},
             "dit_shift_scale_swapped": {"adaln_chunk_order": ("scale_msa", "shift_msa", "gate_msa", "scale_mlp",
                                                               "shift_mlp", "gate_mlp")},
             "dit_wrong_ln_eps": {"ln_eps_mlp": 1e-5}}


@pytest.mark.parametrize("name", DIT_BUGS)
def test_planted_dit_bug_is_caught_and_localised(name: str) -> None:
    bug = pb.BUGS[name]
    report = dit(bug.target(), examples=2, diagnose=name in EXPLAINED, **bug.options)
    assert not report.ok
    assert bug.fails in failing(report), str(report)
    assert report.first_divergence is not None
    if name in EXPLAINED:  # a convention bug is named by the knob that explains it
        assert report.diagnosis and report.diagnosis[0]["knobs"] == EXPLAINED[name], report.diagnosis


def test_knobs_that_only_explain_the_mismatch_together_are_found_from_one_example() -> None:
    """time_scale 1000 with frequency shift 1: neither knob alone moves the first divergence or halves the error,
    so the pair comes from the all-pairs pass. One example suffices: it is seed-dependent, not Hypothesis'
    simplest draw (t = 0, where neither knob changes anything)."""
    model = DiT(pb.TINY.replace(time_scale=1000.0, downscale_freq_shift=1.0), dtype=torch.float64)
    report = dit(model, examples=1, seed=3)
    assert not report.ok and report.first_divergence == "t_embedder"
    assert report.diagnosis[0]["knobs"] == {"time_scale": 1000.0, "downscale_freq_shift": 1.0}, report.diagnosis


def test_a_bug_outside_every_convention_gets_no_diagnosis() -> None:
    report = dit(pb.dit_missing_gate(), examples=1)
    assert not report.ok and report.diagnosis == []
    assert any("no single convention knob" in note for note in report.notes)


# ----------------------------------------------------------------------------------------
# The component engine localises a failing whole-model comparison (dit_localise)


class ScaledLinear(torch.nn.Linear):
    """A fork's own Linear whose weight is used 0.1% too large: a leaf bug the component engine names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight * (1 + 1e-3), self.bias)


def _with_scaled_linear(model: torch.nn.Module, name: str) -> torch.nn.Module:
    parent, _, child = name.rpartition(".")
    old = model.get_submodule(name)
    new = ScaledLinear(old.in_features, old.out_features, dtype=old.weight.dtype)
    new.load_state_dict(old.state_dict())
    setattr(model.get_submodule(parent), child, new)
    return model


def components(report) -> dict[str, str]:
    return {check.id.removeprefix("component "): check.message for check in report.checks
            if check.id.startswith("component ")}


def test_a_leaf_bug_is_localised_to_that_leaf_below_the_first_divergence() -> None:
    from targets import dit_forks as forks

    report = dit(_with_scaled_linear(forks.original_style(), "blocks.1.mlp.fc2"), examples=1, diagnose=False)
    assert not report.ok and report.first_divergence == "blocks.1.mlp", str(report)
    assert components(report) == {"blocks.1.mlp.fc2": "ScaledLinear"}, str(report)
    assert any(note.startswith("components: ") and "the first blocks.1.mlp.fc2 (ScaledLinear)" in note
               for note in report.notes)


def test_inline_code_of_a_composite_is_localised_when_its_children_conform() -> None:
    from targets import dit_forks as forks

    report = dit(forks.fork_bug("heads_merged_wrong"), examples=1, diagnose=False)
    assert report.first_divergence == "blocks.0.attn"
    assert components(report) == {f"blocks.{i}.attn": "Attention at inline code in Attention.forward"
                                  for i in range(2)}, str(report)


def test_a_convention_bug_has_every_component_conforming_to_its_own_settings() -> None:
    from targets import dit_forks as forks

    report = dit(forks.fork_bug("ln_eps_mlp_1e-5"), examples=1, diagnose=False, dtype=torch.float64)
    assert report.first_divergence == "blocks.0.norm2" and components(report) == {}, str(report)
    assert any("every recognised component conforms to its own settings" in note for note in report.notes)


def test_diffusers_leaf_bug_is_localised_and_a_clean_run_pays_nothing(diffusers_model: torch.nn.Module) -> None:
    import copy

    clean = dit(diffusers_model, convention="diffusers", examples=1)
    assert clean.ok and not any(note.startswith("components:") for note in clean.notes)
    buggy = _with_scaled_linear(copy.deepcopy(diffusers_model), "transformer_blocks.0.ff.net.2")
    report = dit(buggy, convention="diffusers", examples=1, diagnose=False)
    assert not report.ok and report.first_divergence.startswith("transformer_blocks.0.ff"), str(report)
    assert components(report) == {"transformer_blocks.0.ff.net.2": "ScaledLinear"}, str(report)
    # under the original's convention the mismatch is a convention difference: every component conforms
    report = dit(diffusers_model, convention="dit", examples=1, diagnose=False, dtype=torch.float64)
    assert not report.ok and components(report) == {}, str(report)


# ----------------------------------------------------------------------------------------
# The diffusers <-> reference parameter mapping


def test_diffusers_mapping_round_trips_and_loads(diffusers_model: torch.nn.Module) -> None:
    layout = recognise(diffusers_model)
    config = layout.config
    params = random_dit_params(config, 5)
    state = diffusers_state_dict(params, config)
    back = params_from_diffusers({k: v for k, v in state.items() if k != "pos_embed"}, config)
    assert set(back) == set(dit_param_shapes(config)) - {"pos_embed"}
    assert all(np.array_equal(back[name], params[name]) for name in back)
    layout.load(diffusers_model, params, torch.float32, torch.device("cpu"))
    own = layout.params(diffusers_model)
    assert np.array_equal(own["blocks.1.attn.qkv.weight"], params["blocks.1.attn.qkv.weight"].astype(np.float32))


def test_diffusers_blocks_with_different_embedders_are_refused(diffusers_model: torch.nn.Module) -> None:
    config = recognise(diffusers_model).config
    state = diffusers_state_dict(random_dit_params(config, 1), config)
    state["transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias"] = \
        state["transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias"] + 1.0
    with pytest.raises(InvalidArgumentError, match="transformer_blocks.1.norm1.emb"):
        params_from_diffusers(state, config)


# ----------------------------------------------------------------------------------------
# Isolation and bad input


class NaNDiT(DiT):
    def forward(self, x, t, y=None):
        return super().forward(x, t, y) * math.nan


class CroppedDiT(DiT):
    """Returns one channel of four: neither all of them nor the first C = 2 (a SiT-style forward, recognised)."""

    def forward(self, x, t, y=None):
        return super().forward(x, t, y)[:, :1]


@pytest.mark.parametrize("cls, message", [(NaNDiT, "inf"), (CroppedDiT, "shape")])
def test_unusable_model_outputs_are_failed_checks(cls, message: str) -> None:
    report = dit(cls(pb.TINY, dtype=torch.float32), examples=1, diagnose=False)
    assert not report.ok and report.exit_code == 1  # it returned: a discrepancy, not an unusable target
    assert any(message in (check.message + str(check.observed)) for check in report.checks), str(report)


class RaisingDiT(DiT):
    def forward(self, x, t, y=None):
        raise RuntimeError("fused kernel missing")


def test_a_model_whose_every_call_raises_could_not_be_called() -> None:
    report = dit(RaisingDiT(pb.TINY, dtype=torch.float32), examples=2, diagnose=False)
    assert not report.loaded and report.exit_code == 2
    assert "RuntimeError: fused kernel missing" in str(report)


def test_unrecognised_model_is_reported_not_guessed() -> None:
    report = dit(torch.nn.Linear(3, 3))
    assert not report.loaded and report.exit_code == 2
    assert "one patch embedder" in str(report)


def test_bad_arguments_raise_typed_errors() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        dit(pb.clean_dit(), convention="timm")
    assert info.value.argument == "convention"
    for kwargs in ({"weights": "pretrained"}, {"examples": 0}, {"seed": 1.5}, {"timeout": -1},
                   {"device": "nodevice"}, {"dtype": "int8"}):
        with pytest.raises(InvalidArgumentError) as info:
            dit(pb.clean_dit(), **kwargs)
        assert info.value.argument == next(iter(kwargs))


# ----------------------------------------------------------------------------------------
# Command line


def test_cli_on_diffusers_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ditcheck.cli import main

    assert main(["validate", "dit", DIFFUSERS_TARGET, "--convention", "diffusers", "--examples", "2"]) == 0
    out = tmp_path / "r.json"
    code = main(["validate", "dit", DIFFUSERS_TARGET, "--examples", "2", "--json", str(out),
                 "--save-failures", str(tmp_path / "failures")])
    assert code == 1
    text = capsys.readouterr().out
    assert "first divergence: transformer_blocks.0.norm1.emb.timestep_embedder" in text
    assert json.loads(out.read_text())["ok"] is False
    assert list((tmp_path / "failures").glob("*.npz"))
    capsys.readouterr()
    runpy.run_path(str(next((tmp_path / "failures").glob("*.py"))), run_name="__main__")  # re-runs the target
    printed = capsys.readouterr().out
    rerun = float(printed.split("max |target - reference|")[1].split()[0])
    assert rerun > 1e-3 and rerun == float(printed.split("(ditcheck saw")[1].split()[0])
    assert main(["validate", "dit", f"{TARGETS / 'broken.py'}:not_a_model"]) == 2
    assert main(["validate", "dit", f"{TARGETS / 'broken.py'}:Unrecognised"]) == 2


def test_saved_reproducer_names_the_target_file_absolutely(tmp_path: Path, monkeypatch) -> None:
    """A target given as a relative file path ('models.py:DiT_S_2') is saved as an absolute one, so the
    --save-failures script loads the same target from any directory."""
    from ditcheck.validate.dit_reproducer import reproducer
    from ditcheck.validate.report import Report

    monkeypatch.chdir(TARGETS)
    report = Report("clean.py:tiny_diffusers_dit", "dit", {"dtype": "float32", "device": "cpu"})
    inputs = {"params": {}, "x": np.zeros(1), "t": np.zeros(1), "y": None, "config": None}
    snippet = reproducer(report, inputs, np.zeros(1), "dit").snippet
    assert f"load_module({str(TARGETS.resolve() / 'clean.py') + ':tiny_diffusers_dit'!r})" in snippet


def test_cli_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    from ditcheck.cli import main
    from ditcheck.models.dit import state_dict_from_params

    path = tmp_path / "ckpt.pt"
    torch.save({"ema": state_dict_from_params(random_dit_params(pb.TINY, 3), dtype=torch.float32)}, path)
    target = f"{TARGETS / 'clean.py'}:tiny_dit"
    assert main(["validate", "dit", target, "--checkpoint", str(path), "--checkpoint-key", "ema",
                 "--examples", "1"]) == 0
    assert main(["validate", "dit", target, "--checkpoint", str(path), "--checkpoint-key", "model"]) == 2
