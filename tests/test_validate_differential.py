"""``validate dit TARGET --reference REF``: a model against the implementation it must match, submodule by submodule,
with the first divergence placed in the forward it arises in (inline code the component engine cannot see too)."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch
from torch import nn

from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.validate import dit
from ditcheck.validate.zoo import build_model
from targets import text_to_image as t2i
from targets import zoo_bugs

TARGETS = Path(__file__).parent / "targets"


def _against_clean(dtype: str = "float32", seed: int = 0, **options: Any) -> Any:
    return dit(t2i.PixArtStyle(**options), reference=t2i.PixArtStyle(), inputs=t2i.inputs, dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", [{}, {"manual_attention": True}], ids=["same-code", "attention-written-out"])
def test_a_correct_implementation_conforms(options: dict[str, Any], dtype: str) -> None:
    for seed in range(3):  # 9 examples: the rewrite's rounding differs from SDPA's, within the derived tolerance
        report = _against_clean(dtype, seed, **options)
        assert report.ok, report
        assert report.settings["path"] == "differential"
        [submodules] = [c for c in report.checks if c.id.startswith("submodules")]
        assert submodules.id == "submodules (43 compared by name)"


#: planted bug -> (PixArtStyle options, the start of the first divergence)
LOCALISED = {
    **{name: (options, f"inline code of {where} (PixArtStyleBlock) before it calls")
       for name, (options, where) in t2i.PLANTED_INLINE.items()},
    "attention_scale_1_over_d": (t2i.PLANTED["attention_scale_1_over_d"][0],
                                 "inline code of blocks.0.attn (Attention) before it calls blocks.0.attn.proj"),
    "timestep_frequency_shift": (t2i.PLANTED["timestep_frequency_shift"][0],
                                 "inline code of t_embedder (TimestepEmbedder) before it calls t_embedder.mlp"),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bug", sorted(LOCALISED))
def test_a_planted_bug_is_placed_in_the_forward_it_arises_in(bug: str, dtype: str) -> None:
    options, where = LOCALISED[bug]
    report = _against_clean(dtype, **options)
    assert not report.ok and report.loaded
    assert report.first_divergence is not None and report.first_divergence.startswith(where), report


def test_a_fault_inside_a_leaf_is_its_own_forward() -> None:
    built = zoo_bugs._cogvideox_frequency_shift_1(0)[0], zoo_bugs.tiny_cogvideox(0)
    report = dit(built[0], reference=built[1][0], inputs=lambda seed: built[1][1], examples=1)
    assert report.first_divergence.startswith("time_proj (Timesteps): its inputs are within tolerance"), report


class _GuidanceUnscaled(diffusers.FluxTransformer2DModel):
    """A Flux port embedding the guidance scale without the model's x1000 (the timestep keeps it)."""

    def forward(self, *args: Any, guidance: Any = None, **kwargs: Any) -> Any:
        return super().forward(*args, guidance=None if guidance is None else guidance / 1000, **kwargs)


def test_diffusers_ports_against_diffusers() -> None:
    sd35, inputs = zoo_bugs._sd35_second_gate_off_by_1e3(0)  # (1 + 1e-3) on the second attention's gate
    report = dit(sd35, reference=zoo_bugs.tiny_sd35(0)[0], inputs=lambda seed: inputs, examples=1)
    assert report.first_divergence.startswith("inline code of transformer_blocks.0 (JointTransformerBlock)"), report
    flux, inputs = zoo_bugs.tiny_flux_guidance(0)
    port = _GuidanceUnscaled(**flux.config)
    report = dit(port, reference=flux, inputs=lambda seed: inputs, examples=1)
    assert report.first_divergence.startswith("inline code of the model's own forward (_GuidanceUnscaled) before it "
                                              "calls time_text_embed"), report
    # a diffusers class needs no inputs: ditcheck builds them; the reference may be named
    clean = dit(build_model("PixArtTransformer2DModel"), reference="diffusers:PixArtTransformer2DModel", examples=1)
    assert clean.ok and clean.settings["inputs"].startswith("built by ditcheck"), clean


class _TwoLayers(nn.Module):
    def __init__(self, skip_second: bool = False) -> None:
        super().__init__()
        self.first, self.second, self.skip_second = nn.Linear(4, 4), nn.Linear(4, 4), skip_second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        return x if self.skip_second else self.second(x)


class _Renamed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _ones(seed: int) -> torch.Tensor:
    return torch.ones(2, 4)


def test_a_submodule_only_one_side_calls_is_a_failed_check() -> None:
    report = dit(_TwoLayers(skip_second=True), reference=_TwoLayers(), inputs=_ones, examples=1)
    assert not report.ok and any(c.id == "calls" and not c.ok for c in report.checks)
    assert report.first_divergence.startswith("second: called by the reference only"), report


def test_weights_that_do_not_load_by_name_and_failing_runs_are_failed_checks() -> None:
    renamed = dit(_Renamed(), reference=_TwoLayers(), inputs=_ones, examples=1)
    assert not renamed.loaded and any(c.id == "weights" and "'reference'" in c.message for c in renamed.checks)
    raising = dit(_TwoLayers(), reference=_TwoLayers(), inputs=lambda seed: torch.ones(2, 5), examples=2)
    assert not raising.ok and not raising.loaded and [c.id for c in raising.checks] == ["call"]
    assert raising.checks[0].message.startswith("2 of 2 calls failed; first: example 0: raised RuntimeError")


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="'inputs'"):
        dit(_TwoLayers(), reference=_TwoLayers())  # ditcheck builds inputs for diffusers classes only
    with pytest.raises(InvalidArgumentError, match="'convention'"):
        dit(_TwoLayers(), reference=_TwoLayers(), inputs=_ones, convention="dit")
    with pytest.raises(InvalidArgumentError, match="'reference'"):
        dit(_TwoLayers(), reference="no_such_module_here:Model", inputs=_ones)


def test_a_float64_target_is_held_to_float64_rounding() -> None:
    # a relative 1e-9 change: invisible in float32, far outside what float64 rounding explains
    report = _against_clean("float64", cross_scale=1 + 1e-9)
    assert not report.ok and report.first_divergence.startswith("inline code of blocks.0 (PixArtStyleBlock)")
    assert _against_clean("float32", cross_scale=1 + 1e-9).ok


def test_cli_names_the_forward_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "fork.py").write_text(f"import sys\nsys.path.insert(0, {str(TARGETS)!r})\n"
                                      "from text_to_image import PixArtStyle, inputs\n\n\n"
                                      "def swapped():\n    return PixArtStyle(modulate_swapped=True)\n")
    arguments = ["--reference", "fork.py:PixArtStyle", "--inputs", "fork.py:inputs", "--examples", "1"]

    def run(target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ditcheck", "validate", "dit", target, *arguments],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)

    failing, clean = run("fork.py:swapped"), run("fork.py:PixArtStyle")
    assert failing.returncode == 1 and "first divergence: inline code of blocks.0" in failing.stdout, failing.stdout
    assert clean.returncode == 0 and "CONFORMS" in clean.stdout, clean.stdout + clean.stderr


def test_a_failing_run_saves_a_script_that_repeats_it(tmp_path: Path) -> None:
    (tmp_path / "fork.py").write_text(f"import sys\nsys.path.insert(0, {str(TARGETS)!r})\n"
                                      "from text_to_image import PixArtStyle, inputs\n\n\n"
                                      "def swapped():\n    return PixArtStyle(modulate_swapped=True)\n")
    spec = str(tmp_path / "fork.py")
    report = dit(f"{spec}:swapped", reference=f"{spec}:PixArtStyle", inputs=f"{spec}:inputs", examples=1, seed=3)
    [script] = report.save_failures(tmp_path / "saved")
    assert script.name == "reference.py"  # no arrays: weights and inputs are drawn from the seed again
    rerun = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0 and str(report).splitlines()[2] in rerun.stdout, rerun.stdout + rerun.stderr
    given = dit(t2i.PixArtStyle(modulate_swapped=True), reference=t2i.PixArtStyle(), inputs=t2i.inputs, examples=1)
    snippet = given.failures[0].snippet
    assert "# reference=...,  # given as a Python object" in snippet and "# inputs=...," in snippet


class _TwoOutputs(nn.Module):
    """REPA's pattern: forward returns (prediction, projected features); the bug touches only the second."""

    def __init__(self, feature_scale: float = 1.0) -> None:
        super().__init__()
        self.head, self.projector, self.feature_scale = nn.Linear(4, 4), nn.Linear(4, 8), feature_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.head(x), [self.projector(x) * self.feature_scale]


def test_every_tensor_of_a_tuple_output_is_compared() -> None:
    assert dit(_TwoOutputs(), reference=_TwoOutputs(), inputs=_ones, examples=1).ok
    report = dit(_TwoOutputs(feature_scale=1.001), reference=_TwoOutputs(), inputs=_ones, examples=1)
    assert not report.ok and [c.id for c in report.checks if not c.ok] == ["output"], report


@pytest.mark.parametrize("inputs, expected", [(lambda seed: 1 / 0, "ZeroDivisionError"), (lambda seed: 3, "got int")])
def test_inputs_that_raise_or_are_malformed_are_a_failed_inputs_check(inputs: Any, expected: str) -> None:
    report = dit(_TwoLayers(), reference=_TwoLayers(), inputs=inputs, examples=1)
    assert not report.loaded and [c.id for c in report.checks] == ["inputs"] and expected in report.checks[0].message


class _Overflows(nn.Module):
    """exp of large inputs: finite in float64, inf in float16 (its max is 65504)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.linear(x) * 0 + 12.0) / 1e5  # exp(12) = 1.6e5: inf in float16, the output is not


def test_a_reference_that_overflows_in_the_targets_dtype_gives_no_vacuous_tolerance() -> None:
    report = dit(_Overflows(), reference=_Overflows(), inputs=_ones, examples=1, dtype="float16")
    assert all(c.tolerance is None or math.isfinite(c.tolerance.value) for c in report.checks)
    assert any("held to the ulp floor" in note for note in report.notes), report


_SIDE_BY_SIDE_PACKAGE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.proj = nn.LayerNorm(8), nn.Linear(8, 8)

    def forward(self, x):
        return x + {factor} * self.proj(self.norm(x))
'''
_SIDE_BY_SIDE_FACTORY = '''
import torch
{top_level_import}

def make():
    from side_by_side_net import Tiny  # imported again when built: a lazy import must find the file's own too
    return Tiny()


def inputs(seed):
    return (torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(seed)),)
'''


def test_a_fork_and_its_upstream_importing_a_package_of_one_name_each_get_their_own(tmp_path: Path) -> None:
    # HunyuanDiT copied twice (hydit/ beside each factory): the reference's `from hydit... import` returned the
    # target's cached package, so a planted bug was compared with itself and conformed
    for top_level in (True, False):  # imported when the file runs, or only when its factory builds the model
        case = tmp_path / ("top_level" if top_level else "lazy")
        for folder, factor in (("upstream", "1.0"), ("fork", "1.001"), ("same", "1.0")):
            (case / folder / "side_by_side_net").mkdir(parents=True)
            (case / folder / "side_by_side_net" / "__init__.py").write_text(_SIDE_BY_SIDE_PACKAGE.format(factor=factor))
            (case / folder / "factory.py").write_text(_SIDE_BY_SIDE_FACTORY.format(
                top_level_import="from side_by_side_net import Tiny" if top_level else ""))
        spec = {folder: f"{case / folder / 'factory.py'}" for folder in ("upstream", "fork", "same")}
        try:
            fork = dit(f"{spec['fork']}:make", reference=f"{spec['upstream']}:make", inputs=f"{spec['fork']}:inputs")
            assert not fork.ok and fork.first_divergence.startswith("the output: every submodule compared conforms"), \
                str(fork)
            same = dit(f"{spec['same']}:make", reference=f"{spec['upstream']}:make", inputs=f"{spec['same']}:inputs")
            assert same.ok, str(same)
        finally:
            for name in [name for name in sys.modules if name.split(".")[0] == "side_by_side_net"]:
                del sys.modules[name]


class _InPlace(nn.Module):
    """In-place code after a hooked call (``h += x``) and on the forward's own input (``x.mul_``): legal torch."""

    def __init__(self, inner_factor: float = 1.0) -> None:
        super().__init__()
        self.sub, self.out, self.inner_factor = nn.Linear(4, 4), nn.Linear(4, 4), inner_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.sub(x) * self.inner_factor if self.inner_factor != 1.0 else self.sub(x)
        h += x  # changes the tensor the hook on sub saw
        x.mul_(2.0)  # changes the caller's input
        return self.out(h + x)


def _fixed_inputs(seed: int) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 8).reshape(2, 4)


def test_in_place_code_neither_alters_the_records_nor_the_other_runs_inputs() -> None:
    same = dit(_InPlace(), reference=_InPlace(), inputs=_fixed_inputs, examples=2)
    assert same.ok, same  # the input changed in place by one run is not what the next run gets
    report = dit(_InPlace(inner_factor=1.0001), reference=_InPlace(), inputs=_fixed_inputs, examples=2)
    assert not report.ok and report.first_divergence.startswith("inline code of the model's own forward"), report
    [submodules] = [c for c in same.checks if c.id.startswith("submodules")]
    assert submodules.tolerance.naive_error < 1e-6  # was 2.18: the float64 record of sub aliased h += x


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_targets_are_held_to_their_arithmetic_not_their_input_rounding(dtype: str) -> None:
    for seed in range(3):  # the references get the inputs rounded to the target's dtype, as the target does
        assert _against_clean(dtype, seed).ok
        report = _against_clean(dtype, seed, scale_power=-1.0)
        assert not report.ok and report.first_divergence.startswith("inline code of blocks.0.attn (Attention)"), report


class _Samples(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + 0.1 * torch.randn_like(x)


def test_a_forward_that_samples_in_eval_mode_gives_no_tolerance() -> None:
    report = dit(_Samples(), reference=_Samples(), inputs=_ones, examples=2)
    assert not report.loaded and [c.id for c in report.checks] == ["determinism"], report


class _Branches(nn.Module):
    """``late`` runs only for inputs whose first entry is negative: not in every example."""

    def __init__(self, late_factor: float = 1.0) -> None:
        super().__init__()
        self.early, self.late, self.late_factor = nn.Linear(4, 4), nn.Linear(4, 4), late_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.early(x)
        return self.late(h) * self.late_factor if bool(x[0, 0] < 0) else h


def _sign_by_seed(seed: int) -> torch.Tensor:
    return torch.ones(2, 4) * (1.0 if seed % 7919 == 0 else -1.0)  # example 0 positive, the others negative


def test_a_submodule_first_called_in_a_later_example_is_compared() -> None:
    report = dit(_Branches(late_factor=1.01), reference=_Branches(), inputs=_sign_by_seed, examples=2)
    assert not report.ok and any(c.id.startswith("submodules (2 compared") for c in report.checks), report


class _Functional(_TwoLayers):
    """The second layer applied through F.linear with its parameters: the same numbers, one module call fewer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.first(x), self.second.weight, self.second.bias)


def test_a_functional_rewrite_of_a_call_is_a_note_when_every_number_conforms() -> None:
    report = dit(_Functional(), reference=_TwoLayers(), inputs=_ones, examples=1)
    assert report.ok and any("second (called by the reference only); every comparison conforms" in note
                             for note in report.notes), report


class _Hangs(_TwoLayers):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        threading.Event().wait(5.0)
        return super().forward(x)


def test_a_time_out_stops_the_run() -> None:
    report = dit(_Hangs(), reference=_TwoLayers(), inputs=_ones, examples=3, timeout=0.5)
    assert not report.loaded and [c.id for c in report.checks] == ["call"], report
    assert report.checks[0].message.startswith("1 of 3 calls failed") and "timed out" in report.checks[0].message


class _ReturnsNothing(_TwoLayers):
    def forward(self, x: torch.Tensor) -> None:
        super().forward(x)


class _ReturnsDict(_TwoLayers):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction": super().forward(x)}


def test_outputs_without_a_tensor_fail_and_a_different_output_type_is_noted() -> None:
    nothing = dit(_ReturnsNothing(), reference=_TwoLayers(), inputs=_ones, examples=1)
    assert any(c.id == "output" and "the target's output holds no floating tensor" in c.message
               for c in nothing.checks), nothing
    wrapped = dit(_ReturnsDict(), reference=_TwoLayers(), inputs=_ones, examples=1)
    assert wrapped.ok and "output: the target returns a dict, the reference a Tensor" in wrapped.notes, wrapped


def test_a_reference_naming_no_diffusers_class_names_the_reference() -> None:
    with pytest.raises(InvalidArgumentError, match="^argument 'reference'"):
        dit(_TwoLayers(), reference="diffusers:NoSuchTransformer", inputs=_ones)


def test_the_script_of_a_run_on_the_models_own_weights_says_they_are_not_saved() -> None:
    report = dit(t2i.PixArtStyle(modulate_swapped=True), reference=t2i.PixArtStyle(), inputs=t2i.inputs,
                 examples=1, weights="model")
    assert "weights='model': the target's own weights" in report.failures[0].snippet


class _SamplesRaisingFirst(_Samples):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x[0, 0] > 0):  # example 0 (positive inputs): the target raises, the reference never does
            raise RuntimeError("planted")
        return super().forward(x)


def test_the_determinism_check_runs_when_the_first_example_fails() -> None:
    report = dit(_SamplesRaisingFirst(), reference=_Samples(), inputs=_sign_by_seed, examples=2)
    assert "determinism" in [c.id for c in report.checks], report
