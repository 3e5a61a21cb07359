"""Properties of the DiT layers: certified balls, float64 rounding checks, and DiT/diffusers transcriptions.

Each ``check_*`` takes the implementation under test as its first argument and a case
drawn by one of the strategies below, and raises PropertyViolation (via ``require``).

The a-priori rounding bounds the checks use (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., ch. 3), their derivations and their stated libm assumption live in
``ditcheck.reference.layer_rounding``; here they are evaluated for float64, the reference's format.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ditcheck.reference.components import rms_norm
from ditcheck.reference.layer_rounding import (BOUND_PRECISION, dot_product_rounding_bound, gelu_rounding_bound,
                                               layer_norm_rounding_bound, linear_rounding_bound,
                                               pos_embed_rounding_bound, rms_norm_rounding_bound,
                                               silu_rounding_bound, timestep_embedding_rounding_bound)
from ditcheck.reference.layers import gelu, layer_norm, linear, patchify, silu

from .certified import require_contains, require_within
from .strategies import ArraySpec, array_specs, scales
from .violation import require

__all__ = [
    "LayerCase",
    "linear_cases",
    "layer_norm_cases",
    "rms_norm_cases",
    "gelu_cases",
    "silu_cases",
    "modulate_cases",
    "mlp_cases",
    "timestep_cases",
    "pos_embed_cases",
    "patchify_cases",
    "unpatchify_cases",
    "dit_timestep_embedding",
    "diffusers_timestep_embedding",
    "dit_2d_sincos_pos_embed",
    "dit_unpatchify",
    "patch_permutation_weight",
    "check_ball_contains_mp",
    "check_linear_rounding",
    "check_layer_norm_rounding",
    "check_rms_norm_rounding",
    "check_gelu_rounding",
    "check_silu_rounding",
    "check_modulate_identities",
    "check_timestep_embedding_matches_dit",
    "check_timestep_embedding_matches_diffusers",
    "check_pos_embed_matches_dit",
    "check_patchify_matches_conv",
    "check_unpatchify_round_trip",
    "check_unpatchify_matches_dit",
]

_BOUNDS = BOUND_PRECISION


# ----------------------------------------------------------------------------------------
# Cases and strategies


@dataclass(frozen=True)
class LayerCase:
    """The inputs of one layer call: named ArraySpecs (rebuilt on demand) plus keyword options (a reproducer)."""

    specs: tuple[tuple[str, ArraySpec | None], ...]
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, options: dict[str, Any] | None = None, **specs: ArraySpec | None) -> LayerCase:
        return cls(tuple(specs.items()), tuple((options or {}).items()))

    def arrays(self) -> dict[str, np.ndarray | None]:
        return {name: None if spec is None else spec.build() for name, spec in self.specs}

    def inputs(self) -> dict[str, Any]:
        """Keyword arguments of the layer call: the arrays and the options."""
        return {**self.arrays(), **dict(self.options)}


def _leading_shapes(max_rows: int) -> st.SearchStrategy[tuple[int, ...]]:
    """Leading (batch, token) axes: one or two, each 1..max_rows."""
    return st.lists(st.integers(1, max_rows), min_size=1, max_size=2).map(tuple)


def _weights(shape: tuple[int, ...]) -> st.SearchStrategy[ArraySpec]:
    return array_specs(shape, scale=scales(1e-2, 1e1))


def _optional(strategy: st.SearchStrategy[ArraySpec]) -> st.SearchStrategy[ArraySpec | None]:
    return st.one_of(st.none(), strategy)


@st.composite
def linear_cases(draw: st.DrawFn, max_rows: int = 4, max_features: int = 16) -> LayerCase:
    """x [..., in], weight [out, in], optional bias [out]."""
    fan_in, fan_out = draw(st.integers(1, max_features)), draw(st.integers(1, max_features))
    return LayerCase.of(x=draw(array_specs(draw(_leading_shapes(max_rows)) + (fan_in,))),
                        weight=draw(_weights((fan_out, fan_in))), bias=draw(_optional(_weights((fan_out,)))))


@st.composite
def layer_norm_cases(draw: st.DrawFn, max_rows: int = 4, max_features: int = 32) -> LayerCase:
    """x [..., D] from every value family (near_ties: variance far below eps), optional affine, eps."""
    features = draw(st.integers(1, max_features))
    return LayerCase.of({"eps": draw(st.sampled_from([1e-6, 1e-5, 1e-3]))},
                        x=draw(array_specs(draw(_leading_shapes(max_rows)) + (features,))),
                        weight=draw(_optional(_weights((features,)))), bias=draw(_optional(_weights((features,)))))


@st.composite
def rms_norm_cases(draw: st.DrawFn, max_rows: int = 4, max_features: int = 32) -> LayerCase:
    """x [..., D] from every value family, an optional gain (RMSNorm's usual affine) and eps."""
    features = draw(st.integers(1, max_features))
    return LayerCase.of({"eps": draw(st.sampled_from([1e-6, 1e-5, 1e-3]))},
                        x=draw(array_specs(draw(_leading_shapes(max_rows)) + (features,))),
                        weight=draw(_optional(_weights((features,)))))


@st.composite
def gelu_cases(draw: st.DrawFn, max_rows: int = 6) -> LayerCase:
    """x of any small shape, magnitudes 1e-3..1e2, both GELU forms."""
    return LayerCase.of({"approximate": draw(st.sampled_from(["tanh", "none"]))},
                        x=draw(array_specs(draw(_leading_shapes(max_rows)) + (draw(st.integers(1, 8)),))))


@st.composite
def silu_cases(draw: st.DrawFn, max_rows: int = 6) -> LayerCase:
    """x with |x| well inside the SiLU bound's domain (scale <= 50, standardised families)."""
    shape = draw(_leading_shapes(max_rows)) + (draw(st.integers(1, 8)),)
    return LayerCase.of(x=draw(array_specs(shape, scale=scales(1e-3, 50.0))))


@st.composite
def modulate_cases(draw: st.DrawFn, max_batch: int = 3, max_tokens: int = 5, max_hidden: int = 8) -> LayerCase:
    """x [N, T, D], shift and scale [N, D]."""
    n, tokens, hidden = (draw(st.integers(1, m)) for m in (max_batch, max_tokens, max_hidden))
    return LayerCase.of(x=draw(array_specs((n, tokens, hidden))), shift=draw(array_specs((n, hidden))),
                        scale=draw(array_specs((n, hidden))))


@st.composite
def mlp_cases(draw: st.DrawFn, max_batch: int = 2, max_tokens: int = 4, max_hidden: int = 8) -> LayerCase:
    """x [N, T, D], fc1 [H, D], fc2 [D, H] with biases, both GELU forms."""
    n, tokens, hidden = (draw(st.integers(1, m)) for m in (max_batch, max_tokens, max_hidden))
    width = draw(st.integers(1, 4 * max_hidden))
    return LayerCase.of({"approximate": draw(st.sampled_from(["tanh", "none"]))},
                        x=draw(array_specs((n, tokens, hidden))),
                        fc1_weight=draw(_weights((width, hidden))), fc1_bias=draw(_weights((width,))),
                        fc2_weight=draw(_weights((hidden, width))), fc2_bias=draw(_weights((hidden,))))


@st.composite
def timestep_cases(draw: st.DrawFn, max_batch: int = 4, max_dim: int = 48, knobs: bool = True,
                   min_dim: int = 1) -> LayerCase:
    """Timesteps t [N] (magnitudes up to 1e3, every family) and dim >= min_dim (odd included); with ``knobs``
    also max_period, flip_sin_to_cos, downscale_freq_shift (0 or 1) and time_scale (1 or 1000, t in [0, 1])."""
    shift = draw(st.sampled_from([0.0, 1.0])) if knobs else 0.0
    dim = draw(st.integers(max(min_dim, 4 if shift else 1), max_dim))
    options: dict[str, Any] = {"dim": dim}
    if knobs:
        options.update(max_period=draw(st.sampled_from([10000.0, 1000.0, 10.0])),
                       flip_sin_to_cos=draw(st.booleans()), downscale_freq_shift=shift,
                       time_scale=draw(st.sampled_from([1.0, 1000.0])))
    t_scale = scales(1e-3, 1.0) if options.get("time_scale") == 1000.0 else scales(1e-3, 1e3)
    return LayerCase.of(options, t=draw(array_specs((draw(st.integers(1, max_batch)),), scale=t_scale)))


@st.composite
def pos_embed_cases(draw: st.DrawFn, max_side: int = 5, max_dim: int = 32) -> LayerCase:
    """embed_dim a multiple of 4, grid (h, w) possibly non-square."""
    grid = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    return LayerCase.of({"embed_dim": 4 * draw(st.integers(1, max_dim // 4)), "grid_size": grid})


@st.composite
def patchify_cases(draw: st.DrawFn, max_channels: int = 3, max_patch: int = 3, max_side: int = 3,
                   max_hidden: int = 8) -> LayerCase:
    """x [N, C, h p, w p], Conv2d weight [D, C, p, p], optional bias [D]."""
    n, channels, p = draw(st.integers(1, 2)), draw(st.integers(1, max_channels)), draw(st.integers(1, max_patch))
    h, w, hidden = draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), draw(st.integers(1, max_hidden))
    return LayerCase.of({"patch_size": p}, x=draw(array_specs((n, channels, h * p, w * p))),
                        weight=draw(_weights((hidden, channels, p, p))), bias=draw(_optional(_weights((hidden,)))))


@st.composite
def unpatchify_cases(draw: st.DrawFn, max_channels: int = 3, max_patch: int = 3, max_side: int = 4) -> LayerCase:
    """Tokens [N, h*w, p*p*C] with the grid (h, w), possibly non-square."""
    n, channels, p = draw(st.integers(1, 2)), draw(st.integers(1, max_channels)), draw(st.integers(1, max_patch))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    return LayerCase.of({"patch_size": p, "out_channels": channels, "grid": (h, w)},
                        x=draw(array_specs((n, h * w, p * p * channels))))


# ----------------------------------------------------------------------------------------
# Independent transcriptions of the original code (float64; DiT itself runs these in float32)


def dit_timestep_embedding(t: np.ndarray, dim: int, max_period: float = 10000) -> np.ndarray:
    """DiT TimestepEmbedder.timestep_embedding (from GLIDE nn.py), transcribed line by line in NumPy float64."""
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(start=0, stop=half, dtype=np.float64) / half)
    args = t[:, None] * freqs[None]
    embedding = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
    if dim % 2:
        embedding = np.concatenate([embedding, np.zeros_like(embedding[:, :1])], axis=-1)
    return embedding


def diffusers_timestep_embedding(timesteps: np.ndarray, embedding_dim: int, flip_sin_to_cos: bool = False,
                                 downscale_freq_shift: float = 1, scale: float = 1,
                                 max_period: float = 10000) -> np.ndarray:
    """diffusers.models.embeddings.get_timestep_embedding, transcribed line by line in NumPy float64."""
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * np.arange(start=0, stop=half_dim, dtype=np.float64)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = np.exp(exponent)
    emb = timesteps[:, None] * emb[None, :]
    emb = scale * emb
    emb = np.concatenate([np.sin(emb), np.cos(emb)], axis=-1)
    if flip_sin_to_cos:
        emb = np.concatenate([emb[:, half_dim:], emb[:, :half_dim]], axis=-1)
    if embedding_dim % 2 == 1:
        emb = np.pad(emb, ((0, 0), (0, 1)))
    return emb


def _mae_1d_sincos(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    pos = pos.reshape(-1)
    out = np.einsum("m,d->md", pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def dit_2d_sincos_pos_embed(embed_dim: int, grid_size: tuple[int, int]) -> np.ndarray:
    """DiT get_2d_sincos_pos_embed (MAE pos_embed.py), transcribed; (h, w) grids as diffusers generalises it."""
    grid_h = np.arange(grid_size[0], dtype=np.float64)
    grid_w = np.arange(grid_size[1], dtype=np.float64)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size[0], grid_size[1]])
    emb_h = _mae_1d_sincos(embed_dim // 2, grid[0])
    emb_w = _mae_1d_sincos(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def dit_unpatchify(x: np.ndarray, patch_size: int, out_channels: int, grid: tuple[int, int]) -> np.ndarray:
    """DiT.unpatchify transcribed (einsum 'nhwpqc->nchpwq'), with DiT's square grid generalised to (h, w)."""
    h, w = grid
    x = x.reshape(x.shape[0], h, w, patch_size, patch_size, out_channels)
    x = np.einsum("nhwpqc->nchpwq", x)
    return x.reshape(x.shape[0], out_channels, h * patch_size, w * patch_size)


def patch_permutation_weight(channels: int, patch_size: int) -> np.ndarray:
    """Conv2d weight [p*p*C, C, p, p] copying pixel (c, p, q) of a patch to feature (p*P + q)*C + c.

    patchify reads patches in (C, p, p) order and unpatchify writes features in (p, p, C) order,
    so with this weight unpatchify(patchify(x)) = x exactly.
    """
    weight = np.zeros((patch_size * patch_size * channels, channels, patch_size, patch_size))
    for row in range(patch_size):
        for col in range(patch_size):
            for c in range(channels):
                weight[(row * patch_size + col) * channels + c, c, row, col] = 1.0
    return weight


# ----------------------------------------------------------------------------------------
# Properties


def check_ball_contains_mp(function: Callable[..., Any], case: LayerCase, *, bits: int = 100, digits: int = 60,
                           claim: str = "certified-ball") -> None:
    """The arb ball (``bits``) contains mpmath at about twice the precision, and is narrow."""
    inputs = case.inputs()
    ball = function(**inputs, precision=f"arb:{bits}")
    second_opinion = function(**inputs, precision=f"mp:{digits}")
    require_contains(ball, second_opinion, claim, function.__name__, case=case)


def check_linear_rounding(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """|linear(x, W, b) - exact| <= gamma_{n+1}(|x||W|^T + |b|) entrywise (Higham 3.5)."""
    a = case.arrays()
    ball = linear(a["x"], a["weight"], a["bias"], precision=_BOUNDS)
    bound = linear_rounding_bound(a["x"], a["weight"], a["bias"])
    require_within(ball, implementation(a["x"], a["weight"], a["bias"]), bound, "linear-rounding", "linear",
                   case=case)


def check_layer_norm_rounding(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """Two-pass float64 LayerNorm within layer_norm_rounding_bound of the certified layer_norm."""
    inputs = case.inputs()
    ball = layer_norm(**inputs, precision=_BOUNDS)
    bound = layer_norm_rounding_bound(**inputs)
    require_within(ball, implementation(**inputs), bound, "layer-norm-rounding", "layer_norm", case=case)


def check_rms_norm_rounding(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """float64 RMSNorm within rms_norm_rounding_bound of the certified rms_norm (variance computed exactly)."""
    inputs = case.inputs()
    ball = rms_norm(**inputs, precision=_BOUNDS)
    bound = rms_norm_rounding_bound(**inputs)
    require_within(ball, implementation(**inputs), bound, "rms-norm-rounding", "rms_norm", case=case)


def check_gelu_rounding(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """float64 GELU (both forms) within gelu_rounding_bound of the certified gelu."""
    inputs = case.inputs()
    ball = gelu(**inputs, precision=_BOUNDS)
    bound = gelu_rounding_bound(**inputs)
    require_within(ball, implementation(**inputs), bound, "gelu-rounding", f"gelu({inputs['approximate']})",
                   case=case)


def check_silu_rounding(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """float64 SiLU within silu_rounding_bound of the certified silu."""
    x = case.arrays()["x"]
    require_within(silu(x, precision=_BOUNDS), implementation(x), silu_rounding_bound(x), "silu-rounding", "silu",
                   case=case)


def check_modulate_identities(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """modulate(x, 0, 0) = x, modulate(x, shift, 0) = x + shift, modulate(x, 0, scale) = x (1 + scale), bit for bit.

    Each right-hand side is the same single rounding as the left, so equality is exact; a
    swapped shift/scale or a missing broadcast over tokens breaks it.
    """
    a = case.arrays()
    x, shift, scale = a["x"], a["shift"], a["scale"]
    zero = np.zeros_like(shift)
    for name, got, expected in (("modulate(x, 0, 0)", implementation(x, zero, zero), x),
                                ("modulate(x, shift, 0)", implementation(x, shift, zero), x + shift[:, None, :]),
                                ("modulate(x, 0, scale)", implementation(x, zero, scale), x * (1 + scale[:, None, :]))):
        require(np.shape(got) == np.shape(expected) and np.array_equal(got, expected), "modulate-identities",
                f"{name} is not exactly its closed form", case=case)


def _check_close(got: np.ndarray, expected: np.ndarray, tolerance: np.ndarray, claim: str, what: str,
                 case: LayerCase) -> None:
    require(np.shape(got) == np.shape(expected), claim, f"{what}: wrong shape", got=np.shape(got),
            expected=np.shape(expected), case=case)
    bad = ~(np.abs(got - expected) <= tolerance)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        require(False, claim, f"{what}: differs by more than both rounding bounds", index=index,
                got=float(got[index]), expected=float(expected[index]), bound=float(tolerance[index]), case=case)


def check_timestep_embedding_matches_dit(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """With DiT's defaults, the embedding equals DiT's own timestep_embedding up to both rounding bounds.

    Draw dim >= 2: at dim = 1 DiT returns shape [N, 0] (its zero column is embedding[:, :1] of an
    empty array), a degenerate case the reference does not copy (it returns the zero column).
    """
    inputs = case.inputs()
    t, dim = inputs["t"], inputs["dim"]
    transcription = dit_timestep_embedding(t, dim)
    tolerance = 2 * timestep_embedding_rounding_bound(t, dim)
    _check_close(implementation(t, dim), transcription, tolerance, "timestep-embedding-dit",
                 "timestep_embedding (DiT defaults)", case)


def check_timestep_embedding_matches_diffusers(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """Every knob combination equals diffusers' get_timestep_embedding(flip_sin_to_cos, downscale_freq_shift, scale, max_period)."""
    inputs = case.inputs()
    knobs = {key: inputs[key] for key in ("max_period", "flip_sin_to_cos", "downscale_freq_shift", "time_scale")}
    transcription = diffusers_timestep_embedding(inputs["t"], inputs["dim"], knobs["flip_sin_to_cos"],
                                                 knobs["downscale_freq_shift"], knobs["time_scale"],
                                                 knobs["max_period"])
    tolerance = 2 * timestep_embedding_rounding_bound(**inputs)
    _check_close(implementation(inputs["t"], inputs["dim"], **knobs), transcription, tolerance,
                 "timestep-embedding-diffusers", f"timestep_embedding {knobs}", case)


def check_pos_embed_matches_dit(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """pos_embed_2d(D, (h, w)) equals DiT's get_2d_sincos_pos_embed up to both rounding bounds."""
    inputs = case.inputs()
    dim, grid = inputs["embed_dim"], inputs["grid_size"]
    tolerance = pos_embed_rounding_bound(dim, grid, pow_path=False) + pos_embed_rounding_bound(dim, grid, pow_path=True)
    _check_close(implementation(dim, grid), dit_2d_sincos_pos_embed(dim, grid), tolerance, "pos-embed-dit",
                 "pos_embed_2d", case)


def check_patchify_matches_conv(implementation: Callable[..., np.ndarray], conv: Callable[..., np.ndarray],
                                case: LayerCase) -> None:
    """patchify equals Conv2d(kernel = stride = p) + flatten(2).transpose(1, 2) up to both dot-product bounds.

    Each token is a dot product of length n = C p^2 (+ bias) in either code, so each is within
    gamma_{n+1}(|patch||W| + |b|) of the exact value and they differ by at most twice that.
    """
    a, p = case.arrays(), dict(case.options)["patch_size"]
    x, weight, bias = a["x"], a["weight"], a["bias"]
    n = int(np.prod(np.shape(weight)[1:]))
    magnitude = patchify(np.abs(x), np.abs(weight), None if bias is None else np.abs(bias), p, precision=_BOUNDS)
    tolerance = 2 * dot_product_rounding_bound(magnitude, n + 1)
    _check_close(implementation(x, weight, bias, p), conv(x, weight, bias, p), tolerance, "patchify-conv",
                 "patchify vs Conv2d", case)


def check_unpatchify_round_trip(patchify_impl: Callable[..., np.ndarray], unpatchify_impl: Callable[..., np.ndarray],
                                case: LayerCase) -> None:
    """unpatchify(patchify(x, P, 0, p), p, C, grid) = x bit for bit, P = patch_permutation_weight (one 1 per row)."""
    a, options = case.arrays(), dict(case.options)
    p, channels, (h, w) = options["patch_size"], options["out_channels"], options["grid"]
    image = a["x"].reshape(-1, channels, h * p, w * p)
    weight = patch_permutation_weight(channels, p)
    tokens = patchify_impl(image, weight, np.zeros(weight.shape[0]), p)
    back = unpatchify_impl(tokens, p, channels, (h, w))
    require(np.shape(back) == image.shape and np.array_equal(back, image), "unpatchify-round-trip",
            "unpatchify(patchify(x)) != x with the permutation weight", case=case)


def check_unpatchify_matches_dit(implementation: Callable[..., np.ndarray], case: LayerCase) -> None:
    """unpatchify equals DiT's reshape + einsum('nhwpqc->nchpwq') exactly (pure data movement)."""
    inputs = case.inputs()
    x, p, channels, grid = inputs["x"], inputs["patch_size"], inputs["out_channels"], inputs["grid"]
    got = implementation(x, p, channels, grid)
    expected = dit_unpatchify(x, p, channels, grid)
    require(np.shape(got) == expected.shape and np.array_equal(got, expected), "unpatchify-dit",
            "unpatchify differs from DiT's einsum 'nhwpqc->nchpwq'", case=case)
