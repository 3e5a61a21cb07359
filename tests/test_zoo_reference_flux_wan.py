"""Whole-model references for FluxTransformer2DModel and WanTransformer3DModel (ditcheck.reference.flux / .wan).

The diffusers 0.42.1 models (zoo tiny configs, random weights at scale 0.3) are compared with the references end to
end, output and every block's output, the project's way: "exact" is the reference in a format wider than the
target's (long double for float64 targets, float64 for float32 ones), the tolerance is
derive_tolerance(naive) = max(2 x the error of the reference evaluated in the target's own format (worst of NumPy's
three summation orders and torch's kernels, components.TorchKernels, as the component validator does), 4 ulps of
max |exact|). The float64 target runs under Float32AsFloat64. Planted bugs modelled
on reported ones are caught at the block where they first act. That the clean classes raise no alarm over 5 seeds x
2 dtypes and conform in ``validate dit diffusers:<Class>`` is tested with PixArt's and SD3's in
tests/test_zoo_reference.py.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers.models.transformers import transformer_flux  # noqa: E402
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed  # noqa: E402

from ditcheck.reference.diffusers_modules import patch_embed  # noqa: E402
from ditcheck.reference.errors import InvalidArgumentError  # noqa: E402
from ditcheck.reference.flux import FLUX_EPS, flux_forward  # noqa: E402
from ditcheck.reference.native import Native  # noqa: E402
from ditcheck.reference.precision import FLOAT64  # noqa: E402
from ditcheck.reference.sd3 import SD3_NORM_EPS  # noqa: E402
from ditcheck.reference.wan import wan_forward  # noqa: E402
from ditcheck.validate import dit, zoo  # noqa: E402
from ditcheck.validate.dit_precision import Float32AsFloat64  # noqa: E402
from ditcheck.validate import zoo_reference  # noqa: E402
from ditcheck.validate.report import Check  # noqa: E402
from ditcheck.validate.zoo_reference import CHECK_PREFIX, reference_inputs  # noqa: E402
from test_zoo_reference import FLUX, WAN, WHOLE_MODEL_BLOCKS, _scale_output, _whole  # noqa: E402

logging.getLogger("diffusers").setLevel(logging.ERROR)

FORWARDS = {FLUX: flux_forward, WAN: wan_forward}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _model(name: str, fmt: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """The zoo's tiny model (``overrides`` change its config), weights redrawn by zoo.randomise_weights(seed)."""
    if overrides:
        cls = getattr(diffusers, name)
        model = zoo.randomise_weights(cls(**{**zoo.TINY_CONFIGS[name], **overrides}), seed)
        model = model.to(TORCH_DTYPES[fmt]).eval()
    else:
        model = zoo.build_model(name, TORCH_DTYPES[fmt], seed)
    return model


def _checks(name: str, model: torch.nn.Module, fmt: str, seed: int = 0) -> list[Check]:
    """The product's whole-model checks of the zoo's example ``seed``: compare_whole_model, one per block in execution
    order ("whole model: <block>", the worst of its tensors), then the output."""
    _, kwargs = zoo.build_inputs(model, seed, TORCH_DTYPES[fmt], name=name)
    return zoo_reference.compare_whole_model(model, kwargs, TORCH_DTYPES[fmt], name=name)


def _first_failure(checks: list[Check]) -> tuple[str, float] | None:
    """(block or "output", error / tolerance) of the first check out of tolerance, None if all conform."""
    return next(((c.id.removeprefix(f"{CHECK_PREFIX}: "), c.ratio) for c in checks if not c.ok), None)


# ----------------------------------------------------------------------------------------
# (a) clean models conform, output and every block


@pytest.mark.parametrize("fmt", ["float32", "float64"])
@pytest.mark.parametrize("name", [FLUX, WAN])
def test_reference_matches_diffusers_model(name: str, fmt: str) -> None:
    # measured worst error / tolerance over the output and all block tensors, seed 0: Flux float32 0.50 (output
    # 6.5e-4 vs 1.3e-3), Flux float64 0.52 (single_transformer_blocks.0[1] 6.0e-11 vs 1.2e-10); Wan float32 0.47
    # (output 1.7e-5 vs 3.7e-5), Wan float64 0.49 (output 6.9e-14 vs 1.4e-13). Without TorchKernels among the naive
    # baselines Flux float32 had 4 false alarms in seeds 5-30 (worst 1.46): torch's exp / sin / GEMM round differently
    # from NumPy's, and the target's error is then close to the torch-kernel naive's (ratio 0.50-0.51 on all 26).
    model = _model(name, fmt)
    checks = _checks(name, model, fmt)
    assert _first_failure(checks) is None, [str(c) for c in checks]
    assert [c.id.removeprefix(f"{CHECK_PREFIX}: ") for c in checks] == WHOLE_MODEL_BLOCKS[name] + ["output"]


@pytest.mark.parametrize("name", [FLUX, WAN])
def test_reference_keeps_the_format_it_is_evaluated_in(name: str) -> None:
    # a float64 constant or table leaking into Native("float32") would make the naive baseline too accurate
    model = _model(name, "float32")
    _, kwargs = zoo.build_inputs(model, 0, torch.float32, name=name)
    params, inputs = reference_inputs(model.state_dict()), reference_inputs(kwargs)
    for xp, dtype in ((Native("float32"), np.float32), (Native("longdouble"), np.longdouble), (FLOAT64, np.float64)):
        assert FORWARDS[name](xp, params, dict(model.config), inputs).dtype == dtype


def test_wan_float32_rope_tables_are_the_shipped_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # WanRotaryPosEmbed keeps its tables .float() from construction on, so a float64 Wan uses float32-rounded RoPE
    # tables (reference.wan.WAN_ROPE_TABLE_FORMAT): against exact tables it is out of tolerance at its first block
    # (measured 5.7e-9 vs 1.8e-13, ratio 3.2e4) ...
    monkeypatch.setitem(zoo_reference.WHOLE_MODEL_REFERENCES, WAN, functools.partial(wan_forward, rope_table_format=None))
    model = _model(WAN, "float64")
    failure = _first_failure(_checks(WAN, model, "float64"))
    assert failure is not None and failure[0] == "blocks.0" and failure[1] > 100, failure
    # ... and that is all of it: the tables built again inside Float32AsFloat64 (float64 buffers) match exact tables
    config = model.config
    with Float32AsFloat64():
        model.rope = WanRotaryPosEmbed(config.attention_head_dim, config.patch_size, config.rope_max_seq_len)
    assert model.rope.freqs_cos.dtype == torch.float64
    assert _first_failure(_checks(WAN, model, "float64")) is None


# ----------------------------------------------------------------------------------------
# (b) planted bugs, each caught at the block where it first acts


def _guidance_without_x1000(model: torch.nn.Module) -> None:
    """A port that embeds the guidance scale as given (reported: Flux ports forgetting the x1000 of guidance)."""
    def pre_hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        timestep, guidance, pooled = args
        return timestep, guidance / 1000, pooled
    model.time_text_embed.register_forward_pre_hook(pre_hook)


@pytest.fixture
def flux_half_split_rope(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """RoPE pairs (i, i + d/2) (GPT-NeoX rotate_half) instead of Flux's (2i, 2i + 1): tables and rotation both."""
    table, rotate = transformer_flux.get_1d_rotary_pos_embed, transformer_flux.apply_rotary_emb
    monkeypatch.setattr(transformer_flux, "get_1d_rotary_pos_embed",
                        lambda *a, **k: table(*a, **{**k, "repeat_interleave_real": False}))
    monkeypatch.setattr(transformer_flux, "apply_rotary_emb",
                        lambda *a, **k: rotate(*a, **{**k, "use_real_unbind_dim": -2}))
    yield


def _swap_scale_shift(model: torch.nn.Module, block: int) -> None:
    """Block ``block`` reads its modulation (scale, shift) instead of (shift, scale), both halves (msa and mlp)."""
    order = [1, 0, 2, 4, 3, 5]
    target = model.blocks[block]
    with torch.no_grad():
        target.scale_shift_table.copy_(target.scale_shift_table[:, order].clone())

    def pre_hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden, text, temb, rope = args
        return hidden, text, temb[:, order], rope
    target.register_forward_pre_hook(pre_hook)


@pytest.mark.parametrize("fmt", ["float32", "float64"])
def test_flux_guidance_without_x1000_caught_at_first_block(fmt: str) -> None:
    # measured error / tolerance at transformer_blocks.0 (compare_whole_model): float32 1.7e4, float64 1.2e13
    model = _model(FLUX, fmt)
    _guidance_without_x1000(model)
    failure = _first_failure(_checks(FLUX, model, fmt))
    assert failure is not None and failure[0] == "transformer_blocks.0", failure


@pytest.mark.parametrize("fmt", ["float32", "float64"])
def test_flux_half_split_rope_caught_at_first_block(fmt: str, flux_half_split_rope: None) -> None:
    # measured error / tolerance at transformer_blocks.0[0]: float32 6.3e2, float64 2.4e11
    model = _model(FLUX, fmt)
    failure = _first_failure(_checks(FLUX, model, fmt))
    assert failure is not None and failure[0] == "transformer_blocks.0", failure


@pytest.mark.parametrize("fmt", ["float32", "float64"])
def test_wan_sin_cos_swapped_caught_at_first_block(fmt: str) -> None:
    # Timesteps(flip_sin_to_cos=False): [sin, cos] where Wan embeds [cos, sin]
    # measured error / tolerance at blocks.0: float32 2.4e5, float64 6.5e13
    model = _model(WAN, fmt)
    model.condition_embedder.timesteps_proj.flip_sin_to_cos = False
    failure = _first_failure(_checks(WAN, model, fmt))
    assert failure is not None and failure[0] == "blocks.0", failure


@pytest.mark.parametrize("fmt", ["float32", "float64"])
def test_wan_scale_shift_swapped_in_one_block_caught_there(fmt: str) -> None:
    # two blocks, the second one wrong: blocks.0 conforms, blocks.1 fails
    # measured error / tolerance at blocks.1: float32 1.6e5, float64 4.6e13
    model = _model(WAN, fmt, num_layers=2)
    _swap_scale_shift(model, 1)
    failure = _first_failure(_checks(WAN, model, fmt))
    assert failure is not None and failure[0] == "blocks.1", failure


@pytest.mark.parametrize("fmt", ["float32", "float64"])
@pytest.mark.parametrize(("name", "block", "overrides"), [
    (FLUX, "single_transformer_blocks.0", {}),
    (WAN, "blocks.1", {"num_layers": 2}),
])
def test_subtle_perturbation_of_one_block_caught_there(name: str, block: str, overrides: dict[str, Any],
                                                       fmt: str) -> None:
    # a 1e-3 relative change of one block's output; measured error / tolerance at that block:
    # Flux float32 15, float64 1.1e10; Wan float32 2.7e2, float64 8.5e10
    model = _model(name, fmt, **overrides)
    # the block's hidden states (entry 1 of Flux's (text, image)) scaled: a subtle wrong kernel somewhere inside it
    model.get_submodule(block).register_forward_hook(_scale_output(1 + 1e-3, index=1))
    failure = _first_failure(_checks(name, model, fmt))
    assert failure is not None and failure[0] == block, failure


def test_flux_double_block_eps_is_sd3s() -> None:
    # flux_double_block runs reference.sd3.sd3_block, whose norms use SD3_NORM_EPS: the Flux reference is right only
    # while that equals FLUX_EPS, the eps of diffusers' FluxTransformerBlock norms
    block = transformer_flux.FluxTransformerBlock(dim=16, num_attention_heads=2, attention_head_dim=8)
    shipped = {block.norm1.norm.eps, block.norm1_context.norm.eps, block.norm2.eps, block.norm2_context.eps,
               block.attn.norm_q.eps, block.attn.norm_k.eps}
    assert shipped == {FLUX_EPS}
    assert SD3_NORM_EPS == FLUX_EPS


# ----------------------------------------------------------------------------------------
# what the references do not model raises a typed error naming it


def test_unmodelled_options_raise_invalid_argument() -> None:
    flux = _model(FLUX, "float32")
    _, kwargs = zoo.build_inputs(flux, 0, torch.float32, name=FLUX)
    params, inputs = reference_inputs(flux.state_dict()), reference_inputs(kwargs)
    with pytest.raises(InvalidArgumentError, match="controlnet_block_samples"):
        flux_forward(FLOAT64, params, dict(flux.config), {**inputs, "controlnet_block_samples": [np.zeros(1)]})
    with pytest.raises(InvalidArgumentError, match="guidance"):
        flux_forward(FLOAT64, params, dict(flux.config), {k: v for k, v in inputs.items() if k != "guidance"})
    with pytest.raises(InvalidArgumentError, match="axes_dims_rope"):
        flux_forward(FLOAT64, params, {**flux.config, "axes_dims_rope": (4, 4, 4)}, inputs)
    wan = _model(WAN, "float32")
    _, kwargs = zoo.build_inputs(wan, 0, torch.float32, name=WAN)
    params, inputs = reference_inputs(wan.state_dict()), reference_inputs(kwargs)
    with pytest.raises(InvalidArgumentError, match="added_kv_proj_dim"):
        wan_forward(FLOAT64, params, {**wan.config, "added_kv_proj_dim": 12}, inputs)
    with pytest.raises(InvalidArgumentError, match="rope_table_format"):
        wan_forward(FLOAT64, params, dict(wan.config), inputs, rope_table_format="float8")
    with pytest.raises(InvalidArgumentError, match="timestep"):
        wan_forward(FLOAT64, params, dict(wan.config), {**inputs, "timestep": np.ones((2, 3))})
    with pytest.raises(InvalidArgumentError, match="params"):
        wan_forward(FLOAT64, {k: v for k, v in params.items() if k != "blocks.0.norm2.bias"}, dict(wan.config), inputs)


def test_patch_embed_with_max_size_requires_the_persistent_table() -> None:
    # with pos_embed_max_size (SD3) diffusers' PatchEmbed table is a persistent buffer: read from the state dict,
    # never recomputed; a state dict without it is a typed error naming the entry
    params = {"pos_embed.proj.weight": np.ones((8, 4, 2, 2)), "pos_embed.proj.bias": np.zeros(8)}
    latent = np.ones((1, 4, 4, 4))
    with pytest.raises(InvalidArgumentError, match="pos_embed.pos_embed"):
        patch_embed(FLOAT64, params, "pos_embed", latent, 2, 2, 1, max_size=4)
    table = np.arange(4 * 4 * 8, dtype=np.float64).reshape(1, 16, 8)
    tokens = patch_embed(FLOAT64, {**params, "pos_embed.pos_embed": table}, "pos_embed", latent, 2, 2, 1, max_size=4)
    assert np.array_equal(tokens - 16.0, table.reshape(4, 4, 8)[1:3, 1:3].reshape(1, 4, 8))


# ----------------------------------------------------------------------------------------
# registered in ditcheck.validate.zoo_reference: validate dit runs them (the clean classes: test_zoo_reference.py)


def test_validate_dit_names_the_first_block_of_a_planted_flux_bug() -> None:
    model = _model(FLUX, "float32")
    _guidance_without_x1000(model)
    report = dit(model, dtype="float32", examples=1, weights="model")
    checks = {c.id: c for c in _whole(report)}
    assert not report.ok and not checks[f"{CHECK_PREFIX}: transformer_blocks.0"].ok, str(report)
