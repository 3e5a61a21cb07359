"""LD6 criteria analyser (ditcheck.fast_attention.criteria): numbers equal direct recomputation, planted bug, diffusers layers, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import at_most, expect_caught
from hypothesis import given

from ditcheck import criteria as criteria_command
from ditcheck.fast_attention import criteria
from ditcheck.cli import main
from ditcheck.models.dit import DiT
from ditcheck.properties import dit as props
from ditcheck.properties import torch_dit as tprops
from ditcheck.reference.dit import DiTConfig, random_dit_params
from ditcheck.bounds import UnreachableAccuracyError
from ditcheck.reference.errors import InvalidArgumentError


def plumbing_degree(radius: float, eps: float) -> int:
    """Not a bound: a cheap deterministic stand-in for bounds.minimal_degree (which certifies in arb, 0.1-20 s a call),
    so the Hypothesis test can check that the analyser reports degree_fn(R) for the recomputed R, and the
    'no certified degree' path. The certified function itself runs in test_certified_degrees_on_a_small_model."""
    if radius > 6:
        raise UnreachableAccuracyError("eps", "stand-in: no degree above R = 6", repr(eps))
    return math.ceil(4 * radius + math.log(1 / eps))


@at_most(30)
@given(props.dit_cases(conventions=True))
def test_criteria_equal_direct_recomputation(case: props.DiTCase) -> None:
    tprops.check_criteria_recomputed(criteria.analyse, case, degree_fn=plumbing_degree)


def test_certified_degrees_on_a_small_model() -> None:
    """The default degree function is bounds.minimal_degree, and the analyser reports what it certifies."""
    config = DiTConfig(input_size=(4, 6), patch_size=2, in_channels=2, hidden_size=16, depth=2, num_heads=2,
                       num_classes=3)
    case = tprops.ScaledDiTCase(config, 3, 4, (10.0, 900.0), (1, 3), weight_scale=0.25)
    tprops.check_criteria_recomputed(criteria.analyse, case, eps=1e-3)


def test_planted_forgotten_scale_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criteria, "attention_scale", lambda layer, head_dim: (1.0, "planted: scale forgotten"))
    expect_caught(lambda case: tprops.check_criteria_recomputed(criteria.analyse, case, degree_fn=plumbing_degree),
                  props.dit_cases(), claim="LD6", max_examples=10)


def _logits_against_sqrt_log(analyse):
    """The old LD6 mix-up: the logit range R reported as the entry bound and set against sqrt(ln L)."""
    def planted(*args, **kwargs):
        return [dataclasses.replace(c, entry_bound=c.radius, below_threshold=None if c.threshold is None
                                    else c.radius < c.threshold) for c in analyse(*args, **kwargs)]
    return planted


def _scale_folded_without_head_dim(analyse):
    """B with sqrt(scale) folded in but not Alman-Song's 1/d: logits = Q K^T, not Q K^T / d."""
    def planted(*args, **kwargs):
        return [dataclasses.replace(c, entry_bound=c.entry_bound_folded, below_threshold=None if c.threshold is None
                                    else c.entry_bound_folded < c.threshold) for c in analyse(*args, **kwargs)]
    return planted


@pytest.mark.parametrize("plant", [_logits_against_sqrt_log, _scale_folded_without_head_dim])
def test_planted_ld6_scale_conventions_are_caught(plant) -> None:
    expect_caught(lambda case: tprops.check_criteria_recomputed(plant(criteria.analyse), case,
                                                                degree_fn=plumbing_degree),
                  props.dit_cases(), claim="LD6", max_examples=10)


def test_diffusers_attention_layers_are_found_and_measured() -> None:
    """diffusers DiTTransformer2DModel: to_q/to_k/to_v layers, SDPA's 1/sqrt(d); R recomputed from each layer's input."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=2,
                                            out_channels=4, num_layers=2, sample_size=4, patch_size=2,
                                            num_embeds_ada_norm=10).double().eval()
    for parameter in model.parameters():  # adaLN-Zero init would make every block after the first trivial
        torch.nn.init.normal_(parameter, std=0.3)
    inputs: dict[str, torch.Tensor] = {}
    attentions = {name: m for name, m in model.named_modules() if hasattr(m, "to_q")}
    for name, module in attentions.items():
        module.register_forward_pre_hook(lambda _m, args, kwargs, name=name: inputs.__setitem__(name, args[0]),
                                         with_kwargs=True)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    layers = criteria.analyse(model, x, torch.tensor([3, 500]), torch.tensor([0, 9]), degree_fn=plumbing_degree)
    assert [c.name for c in layers] == list(attentions) and all(c.layout == "to_qkv" for c in layers)
    for c in layers:
        module, hidden = attentions[c.name], inputs[c.name].detach()
        with torch.no_grad():
            q, k = (getattr(module, part)(hidden).reshape(2, 4, 2, 8).transpose(1, 2) for part in ("to_q", "to_k"))
            radius = (q @ k.transpose(-1, -2) / math.sqrt(8)).abs().amax(dim=(0, 2, 3))
            value_output = float((module.to_v(hidden) @ module.to_out[0].weight.T).abs().max())
        assert c.scale == 1 / math.sqrt(8) and "AttnProcessor2_0" in c.scale_source
        assert np.allclose(c.radius_per_head, radius.numpy(), rtol=1e-12, atol=0)
        assert c.max_value_output == pytest.approx(value_output, rel=1e-12)


class TimmStyleAttention(torch.nn.Module):
    """timm's Attention layout with qk_norm=True: LayerNorm on q and k per head after the qkv split."""

    def __init__(self, dim: int = 8, num_heads: int = 2):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.q_norm, self.k_norm = torch.nn.LayerNorm(self.head_dim), torch.nn.LayerNorm(self.head_dim)
        for norm in (self.q_norm, self.k_norm):
            torch.nn.init.normal_(norm.weight, std=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


def test_timm_layout_with_qk_norm_is_measured_after_the_norms() -> None:
    torch.manual_seed(1)
    layer = TimmStyleAttention().double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    [measured] = criteria.analyse(layer, x, degree_fn=plumbing_degree)
    with torch.no_grad():
        q, k, _ = layer.qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = layer.q_norm(q), layer.k_norm(k)
        radius = (layer.scale * q @ k.transpose(-1, -2)).abs().amax(dim=(0, 2, 3))
    assert measured.layout == "qkv" and measured.max_query == pytest.approx(float(q.abs().max()), rel=1e-12)
    assert np.allclose(measured.radius_per_head, radius.numpy(), rtol=1e-12, atol=0)


def test_layers_keep_running_maxima_over_calls() -> None:
    config = DiTConfig(input_size=4, patch_size=2, in_channels=1, hidden_size=8, depth=1, num_heads=2, num_classes=0)
    model = DiT.from_params(config, random_dit_params(config, seed=1))
    small, large = torch.randn(1, 1, 4, 4, dtype=torch.float64), 10 * torch.randn(1, 1, 4, 4, dtype=torch.float64)
    t = torch.ones(1, dtype=torch.float64)

    def twice(x: torch.Tensor) -> None:
        model(x, t)
        model(large, t)

    both = criteria.analyse(_wrap(model, twice), small, degree_fn=plumbing_degree)
    separate = [criteria.analyse(model, x, t, degree_fn=plumbing_degree)[0].radius for x in (small, large)]
    assert both[0].radius == max(separate)


def _wrap(model: torch.nn.Module, forward: Any) -> torch.nn.Module:
    """A module holding ``model`` whose forward is ``forward``."""
    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dit = model

        def forward(self, *args: Any) -> Any:
            return forward(*args)

    return Wrapper()


# ----------------------------------------------------------------------------------------
# Bad input


def test_bad_analyser_input_names_the_argument() -> None:
    config = DiTConfig(input_size=2, patch_size=1, in_channels=1, hidden_size=8, depth=1, num_heads=1, num_classes=0)
    model = DiT.from_params(config, random_dit_params(config, 0))
    x, t = torch.zeros(1, 1, 2, 2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    cases = [(lambda: criteria.analyse(torch.nn.Linear(2, 2), torch.zeros(2)), "model"),
             (lambda: criteria.analyse(model, x, t, eps=0.0), "eps"),
             (lambda: criteria.analyse(_wrap(model, lambda *_: None), x), "model"),
             (lambda: criteria_command.load_user_model("no_colon"), "model"),
             (lambda: criteria_command.load_user_model("/nonexistent/file.py:model"), "model"),
             (lambda: criteria_command.load_user_model("ditcheck.fast_attention.criteria:NOPE"), "model"),
             (lambda: criteria_command.preset_model("DiT-XXL/1"), "config")]
    for call, argument in cases:
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert info.value.argument == argument


# ----------------------------------------------------------------------------------------
# Command line


def test_cli_default_runs_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "criteria.json"
    assert main(["criteria", "--batch", "1", "--weight-scale", "0.25", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [layer["name"] for layer in report["layers"]] == ["blocks.0.attn", "blocks.1.attn"]
    assert all(layer["key_length"] == 64 and layer["rank"] == math.comb(16 + layer["degree"], layer["degree"])
               for layer in report["layers"])
    text = capsys.readouterr().out
    assert "blocks.1.attn" in text and "sqrt(ln L)" in text and "attention layers have B below sqrt(ln L)" in text
    assert all(layer["entry_bound"] ** 2 >= layer["radius"] and layer["logit_threshold"] == pytest.approx(math.log(64))
               for layer in report["layers"])


USER_MODULE = '''
import torch
from ditcheck.models.dit import DiT
from ditcheck.reference.dit import DiTConfig, random_dit_params

CONFIG = DiTConfig(input_size=4, patch_size=1, in_channels=2, hidden_size=8, depth=3, num_heads=2, num_classes=5)

def build():
    return DiT.from_params(CONFIG, random_dit_params(CONFIG, 7, 0.25), dtype=torch.float32)

def build_with_inputs():
    return build(), (torch.randn(1, 2, 4, 4), torch.full((1,), 10.0), torch.tensor([4]))
'''


def test_cli_analyses_a_user_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "user_dit.py"
    path.write_text(USER_MODULE)
    assert main(["criteria", "--model", f"{path}:build", "--input-shape", "2,2,4,4", "--label", "3"]) == 0
    assert "blocks.2.attn" in capsys.readouterr().out
    out = tmp_path / "user.json"
    assert main(["criteria", "--model", f"{path}:build_with_inputs", "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["layers"]) == 3
    # without --input-shape and --label they come from the model's config (ditcheck's DiT: in_channels, input_size,
    # num_classes); a module without such a config is a one-line error naming --input-shape, exit 2
    assert main(["criteria", "--model", f"{path}:build"]) == 0
    assert "blocks.2.attn" in capsys.readouterr().out
    assert main(["criteria", "--model", "torch.nn:Identity"]) == 2
    assert "ditcheck criteria: error: argument 'input-shape'" in capsys.readouterr().err


def test_cli_help_lists_criteria(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "criteria" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------
# Every diffusers transformer class: one row per scaled_dot_product_attention call


class _SDPACapture(torch.overrides.TorchFunctionMode):
    """The test's own record of every SDPA call (query, key, value, mask, causal, scale), independent of the analyser."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            call = {**dict(zip(names, args)), **kwargs}
            self.calls.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in call.items()})
        return func(*args, **kwargs)


def check_call_rows_recomputed(rows: Any, captured: list[dict[str, Any]]) -> None:
    """Each row equals a direct float64 recomputation from the q, k, v, mask and scale its SDPA call received.

    R over the pairs that enter the softmax (a bool mask's True, an additive mask above -1e4), per head; B =
    sqrt(d scale) max(|q|, |k|); thresholds sqrt(ln Lk), ln Lk; degree plumbing_degree(R); rank C(d + g, g); exact
    FLOPs H Lq Lk (2 d + 2 dv + 10). Tolerance on R: the two float64 evaluations of each logit (different summation
    orders) differ by at most 2 gamma_d scale sum_t |q_t k_t| <= 2 gamma_d scale d max|q| max|k| (gamma from the
    reference's rounding model); the maxima of |q|, |k| are exact copies.
    """
    from reference.rounding import gamma

    assert len(rows) == len(captured)
    for row, call in zip(rows, captured):
        q, k = call["query"].double(), call["key"].double()
        if k.shape[-3] != q.shape[-3]:
            k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
        d, heads, lq, lk = q.shape[-1], q.shape[-3], q.shape[-2], k.shape[-2]
        scale = call.get("scale") or 1 / math.sqrt(d)
        logits = scale * torch.einsum("...qd,...kd->...qk", q, k)
        mask = call.get("attn_mask")
        if mask is not None:
            keep = mask if mask.dtype == torch.bool else mask > -1e4
            logits = logits.masked_fill(~keep.broadcast_to(logits.shape), 0.0)
        radius = logits.abs().transpose(0, -3).reshape(heads, -1).amax(dim=1)
        max_q, max_k = float(q.abs().max()), float(k.abs().max())
        tolerance = 2 * float(gamma(d)) * scale * d * max_q * max_k
        assert (row.heads, row.head_dim, row.query_length, row.key_length) == (heads, d, lq, lk)
        assert row.scale == scale and row.max_query == max_q and row.max_key == max_k
        assert np.allclose(row.radius_per_head, radius.numpy(), rtol=0, atol=tolerance)
        entry_bound = math.sqrt(d * scale) * max(max_q, max_k)
        assert row.entry_bound == pytest.approx(entry_bound, rel=1e-14), "B: the scale folded in as sqrt(d scale)"
        assert row.threshold == pytest.approx(math.sqrt(math.log(lk)), rel=1e-14)
        assert row.below_threshold == (entry_bound < row.threshold) and row.logit_below == (row.radius < math.log(lk))
        try:
            degree: int | None = plumbing_degree(row.radius, row.eps)
        except InvalidArgumentError:
            degree = None
        assert row.degree == degree
        assert row.rank == (None if degree is None else math.comb(d + degree, degree))
        dv = call["value"].shape[-1]
        assert row.flops_exact == heads * lq * lk * (2 * d + 2 * dv + 10)


ZOO_CLASSES = ["FluxTransformer2DModel", "SD3Transformer2DModel", "WanTransformer3DModel", "PixArtTransformer2DModel"]


def _zoo_case(name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    zoo = pytest.importorskip("ditcheck.validate.zoo")
    pytest.importorskip("diffusers")
    model = zoo.build_model(name, torch.float32, seed=0)
    _, kwargs = zoo.build_inputs(model, seed=0)
    return model, kwargs


@pytest.mark.parametrize("name", ZOO_CLASSES)
def test_every_attention_call_of_a_diffusers_class_is_measured(name: str) -> None:
    """Flux (joint + single-stream, RoPE, QK-norm), SD3.5 (joint, RMS QK-norm, dual attention), Wan (self + cross),
    PixArt (cross-attention with a padding mask):
    one row per SDPA call, each recomputed from what that call received."""
    model, kwargs = _zoo_case(name)
    with _SDPACapture() as capture:
        analysis = criteria.analyse_calls(model, degree_fn=plumbing_degree, **kwargs)
    check_call_rows_recomputed(analysis.rows, capture.calls)
    assert all(row.layout == "sdpa" and "attn" in row.name for row in analysis.rows) and not analysis.unmeasured
    if name == "PixArtTransformer2DModel":  # the cross-attention calls get the text padding mask
        assert [row.mask for row in analysis.rows] == ["none", "additive"] * 2


def _fold_scale_not_its_root(analyse_calls):
    """B = sqrt(d) scale max|q, k|: the scale folded into q and k whole instead of as sqrt(scale) on each side."""
    def planted(*args, **kwargs):
        result = analyse_calls(*args, **kwargs)
        rows = tuple(dataclasses.replace(c, entry_bound=math.sqrt(c.head_dim) * c.scale * max(c.max_query, c.max_key))
                     for c in result.rows)
        return dataclasses.replace(result, rows=rows)
    return planted


def test_planted_wrong_scale_folding_is_caught() -> None:
    model, kwargs = _zoo_case("FluxTransformer2DModel")
    with _SDPACapture() as capture:
        analysis = _fold_scale_not_its_root(criteria.analyse_calls)(model, degree_fn=plumbing_degree, **kwargs)
    with pytest.raises(AssertionError, match="sqrt\\(d scale\\)"):
        check_call_rows_recomputed(analysis.rows, capture.calls)


class ScaledSDPA(torch.nn.Module):
    """An attention whose SDPA call passes a scale of its own (0.3, not 1/sqrt(4)), with a boolean mask."""

    def __init__(self) -> None:
        super().__init__()
        self.to_qkv, self.to_out = torch.nn.Linear(8, 24), torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_qkv(x).reshape(*x.shape[:2], 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
        return self.to_out(out.transpose(1, 2).reshape(x.shape))


def test_sdpa_scale_argument_and_mask_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scale SDPA gets is the one folded in; a planted reader that ignores it (SDPA's default) is caught."""
    torch.manual_seed(2)
    layer = ScaledSDPA().double()
    x, mask = torch.randn(2, 5, 8, dtype=torch.float64), torch.rand(2, 1, 5, 5) > 0.3
    with _SDPACapture() as capture:
        [row] = criteria.analyse_calls(layer, x, mask, degree_fn=plumbing_degree).rows
    check_call_rows_recomputed([row], capture.calls)
    assert row.scale == 0.3 and row.mask == "bool" and row.name == "ScaledSDPA"
    tokens = capture.calls[0]["value"].transpose(1, 2).reshape(2, 5, 8)
    assert row.max_value_output == pytest.approx(float((tokens @ layer.to_out.weight.detach().T).abs().max()), rel=1e-12)
    monkeypatch.setattr(criteria, "sdpa_scale", lambda scale, d: (1 / math.sqrt(d), "planted: scale ignored"))
    with _SDPACapture() as capture:
        rows = criteria.analyse_calls(layer, x, mask, degree_fn=plumbing_degree).rows
    with pytest.raises(AssertionError):
        check_call_rows_recomputed(rows, capture.calls)


def test_cli_measures_a_diffusers_class_by_name_and_a_factory(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("diffusers")
    out = tmp_path / "flux.json"
    assert main(["criteria", "--model", "diffusers:FluxTransformer2DModel", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["name"] for row in report["layers"]] == ["transformer_blocks.0.attn", "single_transformer_blocks.0.attn"]
    assert all(row["layout"] == "sdpa" and row["max_value_output"] is None for row in report["layers"])
    assert "of 2 attention calls have B below sqrt(ln L); 2 have R below ln L" in capsys.readouterr().out
    path = tmp_path / "user_flux.py"
    path.write_text("from diffusers import FluxTransformer2DModel\nfrom ditcheck.validate.zoo import TINY_CONFIGS\n\n"
                    "def make():\n    return FluxTransformer2DModel(**TINY_CONFIGS['FluxTransformer2DModel'])\n")
    assert main(["criteria", "--model", f"{path}:make", "--weights", "random", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["layers"] == report["layers"]  # the same draw as diffusers:CLASS, seed 0


def test_weights_model_keeps_diffusers_initialisation() -> None:
    pytest.importorskip("diffusers")
    random, own = (criteria_command.zoo_model("WanTransformer3DModel", weights=w) for w in ("random", "model"))
    gate = "blocks.0.scale_shift_table"
    assert not torch.equal(random.state_dict()[gate], own.state_dict()[gate])


def test_bad_zoo_specs_are_typed_errors(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("diffusers")
    for spec in ("diffusers:NoSuchTransformer", "diffusers:PriorTransformer"):  # unknown; out of scope
        assert main(["criteria", "--model", spec]) == 2
        assert "argument 'model'" in capsys.readouterr().err
    # every class in scope is built now (SANA-WM was pending): its criteria run
    assert not pytest.importorskip("ditcheck.validate.zoo").PENDING
    assert main(["criteria", "--model", "diffusers:SanaWMTransformer3DModel"]) == 0
    capsys.readouterr()
    assert main(["criteria", "--weights", "model"]) == 2
    assert "argument 'weights'" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError) as info:
        criteria.analyse_calls(torch.nn.Linear(2, 2), torch.zeros(2))
    assert info.value.argument == "model"


def test_sdpa_inside_multi_head_attention_forward_is_measured() -> None:
    """nn.MultiheadAttention calls SDPA from inside F.multi_head_attention_forward (HunyuanDiT's pooler does too),
    where the mode that intercepted the outer function is off: still one row, equal to a recomputation from in_proj."""
    torch.manual_seed(3)
    layer = torch.nn.MultiheadAttention(8, 2, batch_first=True).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    [row] = criteria.analyse_calls(layer, x, x, x, need_weights=False, degree_fn=plumbing_degree).rows
    with torch.no_grad():
        q, k, v = (torch.nn.functional.linear(x, w, b).reshape(2, 5, 2, 4).transpose(1, 2) for w, b in
                   zip(layer.in_proj_weight.chunk(3), layer.in_proj_bias.chunk(3)))
        radius = (q @ k.transpose(-1, -2) / 2).abs().amax(dim=(0, 2, 3))
        value_output = float((v.transpose(1, 2).reshape(2, 5, 8) @ layer.out_proj.weight.T).abs().max())
    assert row.name == "MultiheadAttention" and (row.heads, row.head_dim, row.key_length) == (2, 4, 5)
    assert np.allclose(row.radius_per_head, radius.numpy(), rtol=1e-12, atol=0)
    assert row.max_query == pytest.approx(float(q.abs().max()), rel=1e-12)
    assert row.max_value_output == pytest.approx(value_output, rel=1e-12)
    assert torch.nn.functional.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention  # restored


def test_planted_padding_counted_in_the_logit_range_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """PixArt pads the text with an additive -10000: a reader that keeps only -inf entries out counts padding keys."""
    model, kwargs = _zoo_case("PixArtTransformer2DModel")
    monkeypatch.setattr(criteria, "PADDING_BIAS", -math.inf)
    with _SDPACapture() as capture:
        rows = criteria.analyse_calls(model, degree_fn=plumbing_degree, **kwargs).rows
    with pytest.raises(AssertionError):
        check_call_rows_recomputed(rows, capture.calls)
