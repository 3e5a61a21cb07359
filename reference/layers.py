"""DiT building blocks in every precision: linear, norms, activations, embeddings, patchify.

Each function follows the original DiT code (facebookresearch/DiT models.py) exactly,
with every convention that real code varies exposed as a named keyword (docs/conventions.md).
Irrational constants (pi, sqrt(2/pi), ln(max_period)) are built with ``xp`` so that arb
balls enclose the exact real result; decimal constants such as GELU's 0.044715 are the
exact decimal (a ratio of integers), not its float64 rounding.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from .errors import InvalidArgumentError, ShapeError
from .precision import Precision, reference_function, require_positive_int, require_real

__all__ = [
    "linear",
    "layer_norm",
    "gelu",
    "silu",
    "modulate",
    "mlp",
    "timestep_embedding",
    "pos_embed_2d",
    "patchify",
    "unpatchify",
    "GELU_APPROXIMATIONS",
]

GeluApproximation = Literal["tanh", "none"]
GELU_APPROXIMATIONS: tuple[GeluApproximation, ...] = ("tanh", "none")
GELU_TANH_CUBIC = (44715, 10**6)  # 0.044715 exactly (Hendrycks & Gimpel 2016), as numerator, denominator


# ----------------------------------------------------------------------------------------
# Argument checks shared by the layers and the DiT model


def require_grid(grid: Any, argument: str) -> tuple[int, int]:
    """An int n (meaning n x n) or a pair (h, w) of positive ints, as (h, w)."""
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        side = require_positive_int(grid, argument)
        return side, side
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise InvalidArgumentError(argument, "a positive int or a pair (h, w) of positive ints", repr(grid))
    return require_positive_int(grid[0], f"{argument}[0]"), require_positive_int(grid[1], f"{argument}[1]")


def _require_shape(x: Any, expected: tuple[int, ...], argument: str, layout: str) -> None:
    if np.shape(x) != expected:
        raise ShapeError(argument, f"shape {expected} ({layout})", str(np.shape(x)))


# ----------------------------------------------------------------------------------------
# Dense layers, norms and activations


@reference_function(arrays=("x", "weight", "bias"))
def linear(xp: Precision, x: Any, weight: Any, bias: Any = None) -> Any:
    """torch ``Linear``: y = x W^T + b, W of shape [out, in]."""
    if np.ndim(weight) != 2 or np.shape(x)[-1] != np.shape(weight)[1]:
        raise ShapeError("weight", f"shape [out, {np.shape(x)[-1]}] (torch Linear layout)", str(np.shape(weight)))
    out = xp.matmul(x, np.transpose(weight))
    if bias is None:
        return out
    if np.shape(bias) != (np.shape(weight)[0],):
        raise ShapeError("bias", f"shape ({np.shape(weight)[0]},)", str(np.shape(bias)))
    return out + bias


@reference_function(arrays=("x", "weight", "bias"))
def layer_norm(xp: Precision, x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-6) -> Any:
    """torch ``LayerNorm`` over the last axis: (x - mean)/sqrt(var + eps) * w + b, var biased (Ba et al. 2016, eq. 4).

    DiT uses eps = 1e-6 without affine parameters; diffusers' DiT uses eps = 1e-5 in the MLP branch.
    """
    eps = require_real(eps, "eps", low=0.0, low_inclusive=False)
    _norm_features(x, weight, bias)
    centred = x - xp.mean(x, axis=-1, keepdims=True)
    variance = xp.mean(centred * centred, axis=-1, keepdims=True)
    return _normalised(xp, centred, variance, eps, weight, bias)


def _norm_features(x: Any, weight: Any, bias: Any) -> int:
    """F, the size of x's last axis (the one a norm normalises); ShapeError unless x has an axis and the optional
    affine ``weight`` and ``bias`` hold one value per feature."""
    if np.ndim(x) < 1:
        raise ShapeError("x", "an array with at least one axis", "a scalar")
    features = np.shape(x)[-1]
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None:
            _require_shape(value, (features,), name, "one value per feature of x's last axis")
    return features


def _normalised(xp: Precision, centred: Any, variance: Any, eps: float, weight: Any, bias: Any) -> Any:
    """centred / sqrt(variance + eps) * weight + bias (weight and bias optional): the tail LayerNorm (centred =
    x - mean, Ba et al. 2016, eq. 4) and RMSNorm (centred = x, Zhang & Sennrich 2019, eq. 4) share."""
    out = centred / xp.sqrt(variance + xp.const(eps))
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def _check_gelu_approximation(approximate: Any) -> None:
    if approximate not in GELU_APPROXIMATIONS:
        raise InvalidArgumentError("approximate", f"one of {GELU_APPROXIMATIONS} (torch GELU)", repr(approximate))


@reference_function(arrays=("x",))
def gelu(xp: Precision, x: Any, approximate: GeluApproximation = "tanh") -> Any:
    """torch ``GELU`` (Hendrycks & Gimpel 2016, sec. 2): 0.5x(1 + erf(x/sqrt 2)), or 'tanh' 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))).

    DiT's MLP uses approximate='tanh'.
    """
    _check_gelu_approximation(approximate)
    half = xp.const(1) / 2
    if approximate == "none":
        return half * x * (1 + xp.erf(x / xp.sqrt(xp.const(2))))
    inner_scale = xp.sqrt(xp.const(2) / xp.pi())
    cubic = xp.const(GELU_TANH_CUBIC[0]) / xp.const(GELU_TANH_CUBIC[1])
    return half * x * (1 + xp.tanh(inner_scale * (x + cubic * x * x * x)))


@reference_function(arrays=("x",))
def silu(xp: Precision, x: Any) -> Any:
    """torch ``SiLU``: x * sigmoid(x) = x / (1 + exp(-x)) (Elfwing, Uchibe & Doya 2018)."""
    # exp(-x) overflows to inf in float64 for x < -709; x/inf = -0 is then the correctly rounded sign.
    with np.errstate(over="ignore"):
        return x / (1 + xp.exp(-x))


@reference_function(arrays=("x", "shift", "scale"))
def modulate(xp: Precision, x: Any, shift: Any, scale: Any) -> Any:
    """DiT ``modulate``: x * (1 + scale[:, None]) + shift[:, None]; x [N, T, D], shift and scale [N, D] broadcast over tokens."""
    if np.ndim(x) != 3:
        raise ShapeError("x", "shape [N, T, D] (tokens)", str(np.shape(x)))
    n, _, hidden = np.shape(x)
    _require_shape(shift, (n, hidden), "shift", "one row per sample, [N, D]")
    _require_shape(scale, (n, hidden), "scale", "one row per sample, [N, D]")
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


@reference_function(arrays=("x", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"))
def mlp(xp: Precision, x: Any, fc1_weight: Any, fc1_bias: Any, fc2_weight: Any, fc2_bias: Any,
        approximate: GeluApproximation = "tanh") -> Any:
    """timm ``Mlp`` as DiT configures it: fc2(gelu(fc1(x))), GELU approximate='tanh', no dropout."""
    _check_gelu_approximation(approximate)
    features = np.shape(x)[-1] if np.ndim(x) else None
    if np.ndim(fc1_weight) != 2 or np.shape(fc1_weight)[1] != features:
        raise ShapeError("fc1_weight", f"shape [hidden, {features}] (torch Linear layout)", str(np.shape(fc1_weight)))
    width = np.shape(fc1_weight)[0]
    _require_shape(fc1_bias, (width,), "fc1_bias", "one value per fc1 output")
    _require_shape(fc2_weight, (features, width), "fc2_weight", "[features, hidden], torch Linear layout")
    _require_shape(fc2_bias, (features,), "fc2_bias", "one value per output feature")
    hidden = linear.generic(xp, x, fc1_weight, fc1_bias)
    return linear.generic(xp, gelu.generic(xp, hidden, approximate), fc2_weight, fc2_bias)


# ----------------------------------------------------------------------------------------
# Sinusoidal embeddings


def _geometric_frequencies(xp: Precision, count: int, max_period: float, denominator: Any) -> Any:
    """freqs_i = exp(-ln(max_period) i / denominator), i = 0..count-1 (exact in arb)."""
    index = xp.asarray(np.arange(count, dtype=np.float64))
    return xp.exp(-xp.log(xp.const(max_period)) * index / denominator)


@reference_function(arrays=("t",))
def timestep_embedding(xp: Precision, t: Any, dim: int, max_period: float = 10000, flip_sin_to_cos: bool = True,
                       downscale_freq_shift: float = 0.0, time_scale: float = 1.0) -> Any:
    """Sinusoidal timestep features: freqs_i = exp(-ln(max_period) i/(half - downscale_freq_shift)), args = time_scale t freqs.

    Output [N, dim]: [cos(args), sin(args)] if flip_sin_to_cos else [sin(args), cos(args)], then a zero
    column when dim is odd. The defaults are DiT's TimestepEmbedder.timestep_embedding (GLIDE nn.py);
    downscale_freq_shift=1 is diffusers' Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)
    (diffusers embeddings.get_timestep_embedding, where ``scale`` is our time_scale).
    """
    dim = require_positive_int(dim, "dim")
    max_period = require_real(max_period, "max_period", low=0.0, low_inclusive=False)
    shift = require_real(downscale_freq_shift, "downscale_freq_shift")
    time_scale = require_real(time_scale, "time_scale")
    if not isinstance(flip_sin_to_cos, (bool, np.bool_)):
        raise InvalidArgumentError("flip_sin_to_cos", "a bool", repr(flip_sin_to_cos))
    if np.ndim(t) != 1:
        raise ShapeError("t", "a 1-D array of N timesteps", str(np.shape(t)))
    half = dim // 2
    if half and not half - shift > 0:
        raise InvalidArgumentError("downscale_freq_shift", f"less than dim // 2 = {half} (it divides the exponent)",
                                   repr(downscale_freq_shift))
    freqs = _geometric_frequencies(xp, half, max_period, xp.const(half) - xp.const(shift))
    args = xp.const(time_scale) * t[:, None] * freqs[None, :]
    halves = [xp.cos(args), xp.sin(args)] if flip_sin_to_cos else [xp.sin(args), xp.cos(args)]
    if dim % 2:
        halves.append(xp.zeros((np.shape(t)[0], 1)))
    return np.concatenate(halves, axis=-1)


def _sincos_1d(xp: Precision, dim: int, positions: Any, max_period: float) -> Any:
    """MAE get_1d_sincos_pos_embed_from_grid: [sin(pos omega), cos(pos omega)], omega_k = max_period^(-k/(dim/2))."""
    omega = _geometric_frequencies(xp, dim // 2, max_period, xp.const(dim // 2))
    args = positions[:, None] * omega[None, :]
    return np.concatenate([xp.sin(args), xp.cos(args)], axis=-1)


def _grid_positions(xp: Precision, count: int, base_size: float | None, interpolation_scale: float) -> Any:
    """diffusers get_2d_sincos_pos_embed positions i / (count / base_size) / interpolation_scale, exact in arb."""
    index = xp.asarray(np.arange(count, dtype=np.float64))
    if base_size is None and interpolation_scale == 1:
        return index
    base = xp.const(count) if base_size is None else xp.const(base_size)
    return index * base / (xp.const(count) * xp.const(interpolation_scale))


@reference_function()
def pos_embed_2d(xp: Precision, embed_dim: int, grid_size: int | tuple[int, int],
                 max_period: float = 10000, base_size: float | None = None,
                 interpolation_scale: float = 1.0) -> Any:
    """DiT get_2d_sincos_pos_embed (from MAE pos_embed.py): fixed [h*w, embed_dim] sin-cos table, token t = i*w + j.

    As in DiT (grid = np.meshgrid(grid_w, grid_h)), the first embed_dim/2 channels encode
    grid[0], the column index j (the w axis), the last embed_dim/2 the row index i; each half
    is [sin, cos] of position * max_period^(-k/(embed_dim/4)). grid_size: n (square) or (h, w).
    diffusers' get_2d_sincos_pos_embed divides positions: i / (n / base_size) / interpolation_scale per
    axis (PatchEmbed: base_size = height // patch_size); the defaults (None, 1) are DiT's integer positions.
    """
    embed_dim = require_positive_int(embed_dim, "embed_dim")
    if embed_dim % 4:
        raise InvalidArgumentError("embed_dim", "a multiple of 4 (two axes, each [sin, cos])", repr(embed_dim))
    height, width = require_grid(grid_size, "grid_size")
    max_period = require_real(max_period, "max_period", low=0.0, low_inclusive=False)
    if base_size is not None:
        base_size = require_real(base_size, "base_size", low=0.0, low_inclusive=False)
    interpolation_scale = require_real(interpolation_scale, "interpolation_scale", low=0.0, low_inclusive=False)
    row_positions = _grid_positions(xp, height, base_size, interpolation_scale)
    column_positions = _grid_positions(xp, width, base_size, interpolation_scale)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    columns_embedding = _sincos_1d(xp, embed_dim // 2, column_positions[cols.reshape(-1)], max_period)
    rows_embedding = _sincos_1d(xp, embed_dim // 2, row_positions[rows.reshape(-1)], max_period)
    return np.concatenate([columns_embedding, rows_embedding], axis=-1)


# ----------------------------------------------------------------------------------------
# Patches


@reference_function(arrays=("x", "weight", "bias"))
def patchify(xp: Precision, x: Any, weight: Any, bias: Any, patch_size: int) -> Any:
    """DiT x_embedder: Conv2d(C, D, kernel = stride = p)(x).flatten(2).transpose(1, 2), as a matmul over patches.

    x [N, C, H, W], weight [D, C, p, p], bias [D] (or None) -> tokens [N, (H/p)(W/p), D], token
    t = i*(W/p) + j; each patch is flattened in (C, p, p) order, the order of the conv weight.
    """
    p = require_positive_int(patch_size, "patch_size")
    if np.ndim(x) != 4:
        raise ShapeError("x", "shape [N, C, H, W] (image latents)", str(np.shape(x)))
    n, channels, height, width = np.shape(x)
    if height % p or width % p:
        raise ShapeError("x", f"H and W divisible by patch_size={p}", str(np.shape(x)))
    if np.ndim(weight) != 4 or np.shape(weight)[1:] != (channels, p, p):
        raise ShapeError("weight", f"shape [D, {channels}, {p}, {p}] (torch Conv2d layout)", str(np.shape(weight)))
    h, w = height // p, width // p
    patches = np.reshape(x, (n, channels, h, p, w, p)).transpose(0, 2, 4, 1, 3, 5).reshape(n, h * w, channels * p * p)
    return linear.generic(xp, patches, np.reshape(weight, (np.shape(weight)[0], -1)), bias)


@reference_function(arrays=("x",))
def unpatchify(xp: Precision, x: Any, patch_size: int, out_channels: int, grid: Any = None) -> Any:
    """DiT unpatchify: [N, h*w, p*p*C] -> reshape [N, h, w, p, p, C], einsum 'nhwpqc->nchpwq' -> [N, C, h*p, w*p].

    grid = (h, w); None means square, h = w = sqrt(T), as in DiT.
    """
    p = require_positive_int(patch_size, "patch_size")
    channels = require_positive_int(out_channels, "out_channels")
    if np.ndim(x) != 3:
        raise ShapeError("x", "shape [N, T, p*p*C] (tokens)", str(np.shape(x)))
    n, tokens, features = np.shape(x)
    if grid is None:
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ShapeError("x", "a square number of tokens (or pass grid=(h, w))", str(np.shape(x)))
        grid = (side, side)
    h, w = require_grid(grid, "grid")
    if h * w != tokens:
        raise ShapeError("x", f"h*w = {h * w} tokens for grid {(h, w)}", str(np.shape(x)))
    if features != p * p * channels:
        raise ShapeError("x", f"p*p*out_channels = {p * p * channels} features per token", str(np.shape(x)))
    blocks = np.reshape(x, (n, h, w, p, p, channels)).transpose(0, 5, 1, 3, 2, 4)  # nhwpqc -> nchpwq
    return blocks.reshape(n, channels, h * p, w * p)
