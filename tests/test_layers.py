"""DiT layers: certified balls, a-priori rounding bounds, DiT/diffusers transcriptions, torch Conv2d; planted bugs; bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flint
import numpy as np
import pytest
import torch
from helpers import at_most
from helpers import expect_caught
from hypothesis import given
from hypothesis import strategies as st

from ditcheck.properties import layers as props
from ditcheck.reference import layer_rounding
from ditcheck.reference import layers as ref
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, NonFiniteError, ShapeError
from ditcheck.reference.precision import BallArray

CERTIFIED: dict[str, tuple[Callable[..., Any], st.SearchStrategy[props.LayerCase]]] = {
    "linear": (ref.linear, props.linear_cases()),
    "layer_norm": (ref.layer_norm, props.layer_norm_cases()),
    "gelu": (ref.gelu, props.gelu_cases()),
    "silu": (ref.silu, props.silu_cases()),
    "modulate": (ref.modulate, props.modulate_cases()),
    "mlp": (ref.mlp, props.mlp_cases()),
    "timestep_embedding": (ref.timestep_embedding, props.timestep_cases()),
    "pos_embed_2d": (ref.pos_embed_2d, props.pos_embed_cases()),
    "patchify": (ref.patchify, props.patchify_cases()),
    "unpatchify": (ref.unpatchify, props.unpatchify_cases()),
}


# ----------------------------------------------------------------------------------------
# Certified balls


@pytest.mark.parametrize("name", list(CERTIFIED))
@at_most(15)
@given(data=st.data())
def test_ball_contains_mp_at_twice_the_precision(name: str, data: st.DataObject) -> None:
    function, cases = CERTIFIED[name]
    props.check_ball_contains_mp(function, data.draw(cases))


def without_radius(function: Callable[..., Any]) -> Callable[..., Any]:
    """Planted: the arb result replaced by its midpoints (radius lost, e.g. through a float or mid() shortcut)."""

    def planted(*args: Any, precision: str = "float64", **kwargs: Any) -> Any:
        out = function(*args, precision=precision, **kwargs)
        if isinstance(out, BallArray):
            return BallArray(np.frompyfunc(lambda ball: flint.arb(ball.mid()), 1, 1)(out.balls))
        return out

    planted.__name__ = f"{function.__name__}_without_radius"
    return planted


@pytest.mark.parametrize("name", ["layer_norm", "gelu", "timestep_embedding"])
def test_planted_radius_loss_is_caught(name: str) -> None:
    function, cases = CERTIFIED[name]
    expect_caught(lambda case: props.check_ball_contains_mp(without_radius(function), case), cases,
                  claim="certified-ball")


# ----------------------------------------------------------------------------------------
# linear


def optional_bias(out: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    return out if bias is None else out + bias


def test_planted_float32_linear_is_caught() -> None:
    def float32_linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        out = (x.astype(np.float32) @ weight.T.astype(np.float32)).astype(np.float64)
        return optional_bias(out, bias)

    expect_caught(lambda case: props.check_linear_rounding(float32_linear, case), props.linear_cases(),
                  claim="linear-rounding")


def test_planted_missing_bias_is_caught() -> None:
    expect_caught(lambda case: props.check_linear_rounding(lambda x, w, b: x @ w.T, case),
                  props.linear_cases(), claim="linear-rounding")


# ----------------------------------------------------------------------------------------
# layer_norm


def two_pass_layer_norm(variance_ddof: int = 0, eps_placement: str = "inside") -> Callable[..., np.ndarray]:
    """A NumPy two-pass LayerNorm; the keywords plant the classic bugs."""

    def layer_norm(x: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                   eps: float = 1e-6) -> np.ndarray:
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = np.sum(centred * centred, axis=-1, keepdims=True) / (x.shape[-1] - variance_ddof)
        if eps_placement == "inside":
            out = centred / np.sqrt(variance + eps)
        elif eps_placement == "outside":
            out = centred / (np.sqrt(variance) + eps)
        else:
            out = centred / np.sqrt(variance)
        out = out if weight is None else out * weight
        return out if bias is None else out + bias

    return layer_norm


@pytest.mark.parametrize("planted", [dict(variance_ddof=1), dict(eps_placement="outside"),
                                     dict(eps_placement="missing")], ids=["unbiased", "eps-outside-sqrt", "no-eps"])
def test_planted_layer_norm_bugs_are_caught(planted: dict[str, Any]) -> None:
    cases = props.layer_norm_cases(max_features=16).filter(lambda case: case.arrays()["x"].shape[-1] > 1)
    expect_caught(lambda case: props.check_layer_norm_rounding(two_pass_layer_norm(**planted), case), cases,
                  claim="layer-norm-rounding")


def test_layer_norm_bound_is_informative() -> None:
    """On standard-normal rows of 32 the bound is about 3e-14 (a few dozen ulp): a real test, not a tolerance."""
    x = np.random.default_rng(0).standard_normal((4, 32))
    assert np.max(layer_rounding.layer_norm_rounding_bound(x)) < 1e-13


# ----------------------------------------------------------------------------------------
# RMSNorm


def numpy_rms_norm(mean_divisor_offset: int = 0, eps_placement: str = "inside",
                   centred: bool = False) -> Callable[..., np.ndarray]:
    """A NumPy float64 RMSNorm, x / sqrt(mean(x^2) + eps) * w; the keywords plant the classic bugs."""

    def rms_norm(x: np.ndarray, weight: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
        x = x - x.mean(axis=-1, keepdims=True) if centred else x
        mean_square = np.sum(x * x, axis=-1, keepdims=True) / (x.shape[-1] - mean_divisor_offset)
        out = x / (np.sqrt(mean_square) + eps) if eps_placement == "outside" else x / np.sqrt(mean_square + eps)
        return out if weight is None else out * weight

    return rms_norm


@pytest.mark.parametrize("planted", [dict(mean_divisor_offset=1), dict(eps_placement="outside"), dict(centred=True)],
                         ids=["unbiased-mean", "eps-outside-sqrt", "centred-like-layer-norm"])
def test_planted_rms_norm_bugs_are_caught(planted: dict[str, Any]) -> None:
    cases = props.rms_norm_cases(max_features=16).filter(lambda case: case.arrays()["x"].shape[-1] > 1)
    expect_caught(lambda case: props.check_rms_norm_rounding(numpy_rms_norm(**planted), case), cases,
                  claim="rms-norm-rounding")


# ----------------------------------------------------------------------------------------
# GELU and SiLU


def test_planted_gelu_form_swap_is_caught() -> None:
    swapped = {"tanh": "none", "none": "tanh"}
    expect_caught(lambda case: props.check_gelu_rounding(lambda x, approximate: ref.gelu(x, swapped[approximate]),
                                                         case), props.gelu_cases(), claim="gelu-rounding")


def test_planted_truncated_gelu_constant_is_caught() -> None:
    def gelu_short_constant(x: np.ndarray, approximate: str) -> np.ndarray:
        if approximate == "none":
            return ref.gelu(x, "none")
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.0447 * x**3)))

    expect_caught(lambda case: props.check_gelu_rounding(gelu_short_constant, case), props.gelu_cases(),
                  claim="gelu-rounding")


def test_planted_silu_through_tanh_cancellation_is_caught() -> None:
    # sigmoid(x) = (1 + tanh(x/2))/2 is exact in reals but cancels catastrophically for x << 0
    expect_caught(lambda case: props.check_silu_rounding(lambda x: x * (1 + np.tanh(x / 2)) / 2, case),
                  props.silu_cases(), claim="silu-rounding")


# ----------------------------------------------------------------------------------------
# Implementations within the a-priori rounding bounds: the reference and an independent one per layer


def torch_linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    return torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(weight),
                                      None if bias is None else torch.from_numpy(bias)).numpy()


def torch_rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    gain = None if weight is None else torch.from_numpy(weight)
    return torch.nn.functional.rms_norm(torch.from_numpy(x), (x.shape[-1],), gain, eps).numpy()


def torch_gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    return torch.nn.functional.gelu(torch.from_numpy(x), approximate=approximate).numpy()


def torch_silu(x: np.ndarray) -> np.ndarray:
    return torch.nn.functional.silu(torch.from_numpy(x)).numpy()


#: name -> (the layer's rounding check, an implementation that must pass it, the layer's cases)
WITHIN_ROUNDING_BOUND: dict[str, tuple[Callable[..., Any], Callable[..., Any], st.SearchStrategy[props.LayerCase]]] = {
    "linear-reference": (props.check_linear_rounding, ref.linear, props.linear_cases()),
    "linear-torch": (props.check_linear_rounding, torch_linear, props.linear_cases()),
    "layer_norm-reference": (props.check_layer_norm_rounding, ref.layer_norm, props.layer_norm_cases()),
    "layer_norm-numpy-two-pass": (props.check_layer_norm_rounding, two_pass_layer_norm(), props.layer_norm_cases()),
    "rms_norm-numpy": (props.check_rms_norm_rounding, numpy_rms_norm(), props.rms_norm_cases()),
    "rms_norm-torch": (props.check_rms_norm_rounding, torch_rms_norm, props.rms_norm_cases()),
    "gelu-reference": (props.check_gelu_rounding, ref.gelu, props.gelu_cases()),
    "gelu-torch": (props.check_gelu_rounding, torch_gelu, props.gelu_cases()),
    "silu-reference": (props.check_silu_rounding, ref.silu, props.silu_cases()),
    "silu-torch": (props.check_silu_rounding, torch_silu, props.silu_cases()),
}


@pytest.mark.parametrize("name", list(WITHIN_ROUNDING_BOUND))
@given(data=st.data())
def test_within_rounding_bound(name: str, data: st.DataObject) -> None:
    check, implementation, cases = WITHIN_ROUNDING_BOUND[name]
    check(implementation, data.draw(cases, label="case"))


# ----------------------------------------------------------------------------------------
# modulate


@given(props.modulate_cases())
def test_modulate_identities(case: props.LayerCase) -> None:
    props.check_modulate_identities(ref.modulate, case)


def test_planted_modulate_shift_scale_swap_is_caught() -> None:
    expect_caught(lambda case: props.check_modulate_identities(lambda x, shift, scale: ref.modulate(x, scale, shift),
                                                               case), props.modulate_cases(),
                  claim="modulate-identities")


# ----------------------------------------------------------------------------------------
# Timestep and position embeddings


@given(props.timestep_cases(knobs=False, min_dim=2))
def test_timestep_embedding_matches_dit(case: props.LayerCase) -> None:
    props.check_timestep_embedding_matches_dit(ref.timestep_embedding, case)


@pytest.mark.parametrize("planted", [dict(flip_sin_to_cos=False), dict(downscale_freq_shift=1.0)],
                         ids=["sin-cos-swapped", "freq-shift-off-by-one"])
def test_planted_timestep_bugs_are_caught_by_dit_transcription(planted: dict[str, Any]) -> None:
    expect_caught(lambda case: props.check_timestep_embedding_matches_dit(
        lambda t, dim: ref.timestep_embedding(t, dim, **planted), case),
        props.timestep_cases(knobs=False, min_dim=4), claim="timestep-embedding-dit")


@given(props.timestep_cases())
def test_timestep_knobs_reproduce_diffusers(case: props.LayerCase) -> None:
    props.check_timestep_embedding_matches_diffusers(ref.timestep_embedding, case)


def test_diffusers_dit_timesteps_is_shift_one() -> None:
    """diffusers' Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1), as DiTTransformer2DModel builds it."""
    t = np.array([0.0, 1.0, 17.5, 999.0])
    ours = ref.timestep_embedding(t, 256, downscale_freq_shift=1)
    theirs = props.diffusers_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=1)
    assert np.max(np.abs(ours - theirs)) < 1e-10
    assert np.max(np.abs(ours - ref.timestep_embedding(t, 256))) > 1e-2  # the knob matters


@pytest.mark.parametrize("ignored", ["flip_sin_to_cos", "downscale_freq_shift"])
def test_planted_ignored_timestep_knob_is_caught(ignored: str) -> None:
    def ignoring(t: np.ndarray, dim: int, **knobs: Any) -> np.ndarray:
        knobs.pop(ignored)
        return ref.timestep_embedding(t, dim, **knobs)

    expect_caught(lambda case: props.check_timestep_embedding_matches_diffusers(ignoring, case),
                  props.timestep_cases(), claim="timestep-embedding-diffusers")


@given(props.pos_embed_cases())
def test_pos_embed_matches_dit(case: props.LayerCase) -> None:
    props.check_pos_embed_matches_dit(ref.pos_embed_2d, case)


def test_pos_embed_first_half_encodes_columns() -> None:
    """DiT's meshgrid(grid_w, grid_h): grid[0] is the column index j, and it fills the first half."""
    table = ref.pos_embed_2d(8, (2, 3))
    token = 1 * 3 + 2  # row i = 1, column j = 2
    assert np.allclose(table[token, :4], [np.sin(2.0), np.sin(0.02), np.cos(2.0), np.cos(0.02)], rtol=0, atol=1e-15)
    assert np.allclose(table[token, 4:], [np.sin(1.0), np.sin(0.01), np.cos(1.0), np.cos(0.01)], rtol=0, atol=1e-15)


def swapped_axes_pos_embed(embed_dim: int, grid_size: tuple[int, int]) -> np.ndarray:
    """Planted: the first half encodes rows (the natural reading of DiT's misleading 'emb_h' comment)."""
    table = ref.pos_embed_2d(embed_dim, grid_size)
    return np.concatenate([table[:, embed_dim // 2:], table[:, :embed_dim // 2]], axis=1)


def cos_first_pos_embed(embed_dim: int, grid_size: tuple[int, int]) -> np.ndarray:
    """Planted: each axis as [cos, sin] instead of MAE's [sin, cos]."""
    quarter = embed_dim // 4
    table = ref.pos_embed_2d(embed_dim, grid_size)
    order = np.concatenate([np.arange(quarter, 2 * quarter), np.arange(quarter),
                            np.arange(3 * quarter, 4 * quarter), np.arange(2 * quarter, 3 * quarter)])
    return table[:, order]


@pytest.mark.parametrize("planted", [swapped_axes_pos_embed, cos_first_pos_embed])
def test_planted_pos_embed_bugs_are_caught(planted: Callable[..., np.ndarray]) -> None:
    expect_caught(lambda case: props.check_pos_embed_matches_dit(planted, case), props.pos_embed_cases(),
                  claim="pos-embed-dit")


# ----------------------------------------------------------------------------------------
# patchify / unpatchify


def torch_conv_patchify(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, patch_size: int) -> np.ndarray:
    """DiT's x_embedder: timm PatchEmbed = Conv2d(kernel = stride = p), flatten(2).transpose(1, 2)."""
    out = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                     None if bias is None else torch.from_numpy(bias), stride=patch_size)
    return out.flatten(2).transpose(1, 2).numpy()


@given(props.patchify_cases())
def test_patchify_matches_torch_conv2d(case: props.LayerCase) -> None:
    props.check_patchify_matches_conv(ref.patchify, torch_conv_patchify, case)


def channels_last_patchify(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, p: int) -> np.ndarray:
    """Planted: patches flattened in (p, p, C) order while the conv weight is (C, p, p)."""
    n, c, height, width = x.shape
    h, w = height // p, width // p
    patches = x.reshape(n, c, h, p, w, p).transpose(0, 2, 4, 3, 5, 1).reshape(n, h * w, c * p * p)
    return optional_bias(patches @ weight.reshape(weight.shape[0], -1).T, bias)


def column_major_patchify(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, p: int) -> np.ndarray:
    """Planted: tokens ordered j*h + i (grid transposed)."""
    tokens = ref.patchify(x, weight, bias, p)
    h, w = x.shape[2] // p, x.shape[3] // p
    return tokens.reshape(x.shape[0], h, w, -1).transpose(0, 2, 1, 3).reshape(tokens.shape)


@pytest.mark.parametrize("planted", [channels_last_patchify, column_major_patchify])
def test_planted_patchify_bugs_are_caught(planted: Callable[..., np.ndarray]) -> None:
    expect_caught(lambda case: props.check_patchify_matches_conv(planted, torch_conv_patchify, case),
                  props.patchify_cases(), claim="patchify-conv")


@given(props.unpatchify_cases())
def test_unpatchify_inverts_patchify(case: props.LayerCase) -> None:
    props.check_unpatchify_round_trip(ref.patchify, ref.unpatchify, case)


@given(props.unpatchify_cases())
def test_unpatchify_matches_dit(case: props.LayerCase) -> None:
    props.check_unpatchify_matches_dit(ref.unpatchify, case)


def patch_transposed_unpatchify(x: np.ndarray, p: int, c: int, grid: tuple[int, int]) -> np.ndarray:
    """Planted: einsum 'nhwpqc->nchqwp' (the two in-patch axes swapped)."""
    h, w = grid
    blocks = np.einsum("nhwpqc->nchqwp", x.reshape(x.shape[0], h, w, p, p, c))
    return blocks.reshape(x.shape[0], c, h * p, w * p)


def grid_transposed_unpatchify(x: np.ndarray, p: int, c: int, grid: tuple[int, int]) -> np.ndarray:
    """Planted: tokens read as a (w, h) grid."""
    h, w = grid
    blocks = np.einsum("nwhpqc->nchpwq", x.reshape(x.shape[0], w, h, p, p, c))
    return blocks.reshape(x.shape[0], c, h * p, w * p)


@pytest.mark.parametrize("planted", [patch_transposed_unpatchify, grid_transposed_unpatchify])
def test_planted_unpatchify_bugs_are_caught_by_round_trip(planted: Callable[..., np.ndarray]) -> None:
    expect_caught(lambda case: props.check_unpatchify_round_trip(ref.patchify, planted, case),
                  props.unpatchify_cases(), claim="unpatchify-round-trip")


@pytest.mark.parametrize("planted", [patch_transposed_unpatchify, grid_transposed_unpatchify])
def test_planted_unpatchify_bugs_are_caught_by_dit_transcription(planted: Callable[..., np.ndarray]) -> None:
    expect_caught(lambda case: props.check_unpatchify_matches_dit(planted, case), props.unpatchify_cases(),
                  claim="unpatchify-dit")


# ----------------------------------------------------------------------------------------
# Bad input: typed errors that name the argument

X = np.ones((2, 3, 4))
SAMPLE_CALLS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "linear": (ref.linear, {"x": X, "weight": np.ones((5, 4)), "bias": np.ones(5)}),
    "layer_norm": (ref.layer_norm, {"x": X, "weight": np.ones(4), "bias": np.ones(4)}),
    "gelu": (ref.gelu, {"x": X}),
    "silu": (ref.silu, {"x": X}),
    "modulate": (ref.modulate, {"x": X, "shift": np.ones((2, 4)), "scale": np.ones((2, 4))}),
    "mlp": (ref.mlp, {"x": X, "fc1_weight": np.ones((6, 4)), "fc1_bias": np.ones(6), "fc2_weight": np.ones((4, 6)),
                      "fc2_bias": np.ones(4)}),
    "timestep_embedding": (ref.timestep_embedding, {"t": np.array([1.0, 2.0]), "dim": 8}),
    "patchify": (ref.patchify, {"x": np.ones((1, 2, 4, 6)), "weight": np.ones((3, 2, 2, 2)), "bias": np.ones(3),
                                "patch_size": 2}),
    "unpatchify": (ref.unpatchify, {"x": np.ones((1, 6, 8)), "patch_size": 2, "out_channels": 2, "grid": (2, 3)}),
}
ARRAY_ARGUMENTS = [(name, argument) for name, (_, kwargs) in SAMPLE_CALLS.items()
                   for argument, value in kwargs.items() if isinstance(value, np.ndarray)]


@pytest.mark.parametrize("name", list(SAMPLE_CALLS))
def test_sample_calls_are_valid(name: str) -> None:
    function, kwargs = SAMPLE_CALLS[name]
    assert np.all(np.isfinite(function(**kwargs)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("name", "argument"), ARRAY_ARGUMENTS)
def test_non_finite_input_names_the_argument(name: str, argument: str, bad: float) -> None:
    function, kwargs = SAMPLE_CALLS[name]
    corrupted = kwargs[argument].copy()
    corrupted.flat[-1] = bad
    with pytest.raises(NonFiniteError) as info:
        function(**{**kwargs, argument: corrupted})
    assert info.value.argument == argument


@pytest.mark.parametrize("dtype", [np.complex128, np.bool_, np.str_])
@pytest.mark.parametrize(("name", "argument"), ARRAY_ARGUMENTS)
def test_non_float_input_names_the_argument(name: str, argument: str, dtype: type) -> None:
    function, kwargs = SAMPLE_CALLS[name]
    with pytest.raises(DTypeError) as info:
        function(**{**kwargs, argument: kwargs[argument].astype(dtype)})
    assert info.value.argument == argument


@pytest.mark.parametrize(("name", "argument", "shape"), [
    ("linear", "weight", (5, 3)), ("linear", "bias", (4,)), ("layer_norm", "weight", (3,)),
    ("layer_norm", "bias", (4, 1)), ("modulate", "shift", (2, 3)), ("modulate", "scale", (1, 4)),
    ("modulate", "x", (3, 4)), ("mlp", "fc1_weight", (6, 3)), ("mlp", "fc2_bias", (5,)),
    ("timestep_embedding", "t", (2, 1)), ("patchify", "x", (1, 2, 5, 6)), ("patchify", "weight", (3, 2, 2, 3)),
    ("patchify", "x", (2, 4, 6)), ("unpatchify", "x", (1, 5, 8)), ("unpatchify", "x", (1, 6, 7)),
])
def test_shape_mismatch_names_the_argument(name: str, argument: str, shape: tuple[int, ...]) -> None:
    function, kwargs = SAMPLE_CALLS[name]
    with pytest.raises(ShapeError) as info:
        function(**{**kwargs, argument: np.ones(shape)})
    assert info.value.argument == argument


@pytest.mark.parametrize(("name", "argument", "value"), [
    ("layer_norm", "eps", -1e-6), ("layer_norm", "eps", float("nan")), ("gelu", "approximate", "erf"),
    ("mlp", "approximate", None), ("timestep_embedding", "dim", 0), ("timestep_embedding", "dim", 2.0),
    ("timestep_embedding", "max_period", 0.0), ("timestep_embedding", "downscale_freq_shift", 4.0),
    ("timestep_embedding", "time_scale", float("inf")), ("timestep_embedding", "flip_sin_to_cos", "yes"),
    ("patchify", "patch_size", 0), ("unpatchify", "grid", (2, 0, 1)), ("unpatchify", "out_channels", -1),
])
def test_invalid_option_names_the_argument(name: str, argument: str, value: Any) -> None:
    function, kwargs = SAMPLE_CALLS[name]
    with pytest.raises(InvalidArgumentError) as info:
        function(**{**kwargs, argument: value})
    assert info.value.argument == argument


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"embed_dim": 6, "grid_size": 2}, "embed_dim"), ({"embed_dim": 8, "grid_size": (2, 0)}, "grid_size[1]"),
    ({"embed_dim": 8, "grid_size": "2x2"}, "grid_size"), ({"embed_dim": 8, "grid_size": 2, "max_period": -1.0},
                                                          "max_period"),
])
def test_invalid_pos_embed_names_the_argument(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ref.pos_embed_2d(**kwargs)
    assert info.value.argument == argument


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        ref.gelu(np.array([np.nan]))


def test_layer_norm_eps_must_be_positive() -> None:
    from ditcheck.reference import InvalidArgumentError, layer_norm

    with pytest.raises(InvalidArgumentError) as info:
        layer_norm(np.ones((1, 4)), eps=0.0)  # a constant row would give 0/0
    assert info.value.argument == "eps"
