"""The components DiTs are built from, one function per mathematical object, conventions as named keywords.

Together with :mod:`ditcheck.reference.layers` (linear, layer_norm, gelu, silu, modulate, mlp,
timestep_embedding, pos_embed_2d, patchify) and :mod:`ditcheck.reference.attention` (softmax,
attention with scale and boolean / additive masks, split_heads, merge_heads) this is the component
library of the DiTs people ship (docs/conventions.md; the team's dit-zoo notes list the knobs):
TimestepEmbedding, RMSNorm, the adaLN family with each chunk order, the FeedForward variants, QK-norm
per head or across heads, joint attention with a token order, RoPE (axis splits, theta, interleaved /
half-split pairing), 3-D patch embedding and linear attention. Every function takes float64 arrays and
``precision`` ("float64", "mp:DIGITS", "arb:BITS", or a Precision such as
:class:`ditcheck.reference.native.Native`); the generic form is ``fn.generic(xp, ...)``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .attention import attention
from .errors import InvalidArgumentError, ShapeError
from .layers import _norm_features, _normalised, gelu, layer_norm, linear, silu
from .precision import Precision, reference_function, require_positive_int, require_real

__all__ = [
    "ACTIVATIONS", "FEED_FORWARD_ACTIVATIONS", "ROPE_PAIRINGS",
    "ADALN_ZERO_ORDER", "ADALN_ZERO_SINGLE_ORDER", "ADALN_CONTINUOUS_ORDER", "SD35_ADALN_ZERO_X_ORDER",
    "activation", "approximate_gelu", "timestep_mlp", "rms_norm", "adaln_chunks", "ada_layer_norm_zero",
    "ada_layer_norm_zero_single", "ada_layer_norm_continuous", "scale_shift_table_chunks", "gated_linear_unit",
    "feed_forward", "qk_norm", "joint_attention", "rope_frequencies", "apply_rope", "patchify_3d", "unpatchify_3d",
    "linear_attention", "round_to_format", "conv2d", "rope_grid_positions", "wan_rope_axes",
]

#: Element-wise activations by the names diffusers' get_activation and torch use.
ACTIVATIONS = ("silu", "gelu", "gelu-tanh", "approximate-gelu", "relu", "identity")
#: diffusers FeedForward(activation_fn=...) values (attention.py): the first module of ``net``.
FEED_FORWARD_ACTIVATIONS = ("gelu", "gelu-approximate", "geglu", "geglu-approximate", "swiglu", "linear-silu")
RopePairing = Literal["interleaved", "half", "complex"]
#: Which channels of a head rotate together: (2i, 2i+1) (Flux, "complex" is the same pairs read as a+ib) or
#: (i, i + d/2) (GPT-NeoX / Allegro "rotate_half").
ROPE_PAIRINGS: tuple[str, ...] = ("interleaved", "half", "complex")

#: adaLN-Zero of DiT (facebookresearch/DiT) and diffusers AdaLayerNormZero: chunk i of the 6D projection.
ADALN_ZERO_ORDER = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
#: diffusers AdaLayerNormZeroSingle (Flux single-stream blocks).
ADALN_ZERO_SINGLE_ORDER = ("shift_msa", "scale_msa", "gate_msa")
#: diffusers AdaLayerNormContinuous: scale first, then shift (the opposite of DiT's final layer).
ADALN_CONTINUOUS_ORDER = ("scale", "shift")
#: diffusers SD35AdaLayerNormZeroX (SD3.5 dual attention).
SD35_ADALN_ZERO_X_ORDER = ADALN_ZERO_ORDER + ("shift_msa2", "scale_msa2", "gate_msa2")

_ROUNDING_FORMATS = {"float32": np.float32, "float16": np.float16}


def _require_order(order: Any, argument: str = "order") -> tuple[str, ...]:
    if not isinstance(order, (tuple, list)) or not order or len(set(order)) != len(order) or \
            not all(isinstance(name, str) for name in order):
        raise InvalidArgumentError(argument, "a non-empty sequence of distinct chunk names", repr(order))
    return tuple(order)


def round_to_format(x: np.ndarray, fmt: str) -> np.ndarray:
    """Each float64 entry rounded to nearest (ties to even) in ``fmt`` ('float32', 'float16', 'bfloat16'), as float64."""
    x = np.asarray(x, dtype=np.float64)
    if fmt in _ROUNDING_FORMATS:
        with np.errstate(over="ignore"):  # beyond the format's max is +-inf, as the cast in torch gives: no warning
            return x.astype(_ROUNDING_FORMATS[fmt]).astype(np.float64)
    if fmt == "bfloat16":
        # bfloat16 keeps float32's top 16 bits: round the float32 bit pattern to nearest even at bit 16;
        # the float64 -> float32 step first is a double rounding, exact enough to emulate a bf16 cast
        with np.errstate(over="ignore"):
            bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return rounded.astype(np.uint32).view(np.float32).astype(np.float64)
    raise InvalidArgumentError("fmt", "'float32', 'float16' or 'bfloat16'", repr(fmt))


# ----------------------------------------------------------------------------------------
# Activations, TimestepEmbedding


@reference_function(arrays=("x",))
def approximate_gelu(xp: Precision, x: Any) -> Any:
    """diffusers ApproximateGELU ("geglu-approximate"): x sigmoid(1.702 x) (Hendrycks & Gimpel 2016, sec. 2); not GEGLU."""
    factor = xp.const(1702) / xp.const(1000)
    with np.errstate(over="ignore"):
        return x / (1 + xp.exp(-factor * x))


def _check_activation(name: Any) -> None:
    if name not in ACTIVATIONS:
        raise InvalidArgumentError("activation", f"one of {ACTIVATIONS}", repr(name))


@reference_function(arrays=("x",))
def activation(xp: Precision, x: Any, name: str = "silu") -> Any:
    """Element-wise activation by name: silu x sigmoid(x), gelu (erf), gelu-tanh, approximate-gelu x sigmoid(1.702x), relu, identity."""
    _check_activation(name)
    if name == "silu":
        return silu.generic(xp, x)
    if name == "gelu":
        return gelu.generic(xp, x, "none")
    if name == "gelu-tanh":
        return gelu.generic(xp, x, "tanh")
    if name == "approximate-gelu":
        return approximate_gelu.generic(xp, x)
    if name == "relu":
        return np.where(xp.to_float(x) > 0, x, xp.const(0) * x)
    return x


@reference_function(arrays=("x", "linear_1_weight", "linear_1_bias", "linear_2_weight", "linear_2_bias"))
def timestep_mlp(xp: Precision, x: Any, linear_1_weight: Any, linear_1_bias: Any, linear_2_weight: Any,
                 linear_2_bias: Any, act: str = "silu", post_act: str | None = None) -> Any:
    """diffusers TimestepEmbedding / DiT t_embedder.mlp: linear_2(act(linear_1 x)), then post_act if given."""
    _check_activation(act)
    hidden = activation.generic(xp, linear.generic(xp, x, linear_1_weight, linear_1_bias), act)
    out = linear.generic(xp, hidden, linear_2_weight, linear_2_bias)
    return out if post_act is None else activation.generic(xp, out, post_act)


# ----------------------------------------------------------------------------------------
# Norms


@reference_function(arrays=("x", "weight", "bias"))
def rms_norm(xp: Precision, x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-6,
             variance_format: str | None = None) -> Any:
    """RMSNorm (Zhang & Sennrich 2019, eq. 4): x / sqrt(mean(x^2) + eps) * w (+ b), over the last axis.

    ``variance_format``: None computes mean(x^2) exactly (in this precision); 'float32', 'float16' or
    'bfloat16' emulate a variance computed in that format (diffusers RMSNorm: float32 always; a port that
    computes it in half precision): x rounded to it, squared, summed and divided there, as NumPy does.
    torch.nn.RMSNorm computes the variance in the input's dtype; its eps=None means finfo(dtype).eps.
    """
    eps = require_real(eps, "eps", low=0.0)
    features = _norm_features(x, weight, bias)
    if variance_format is None:
        variance = xp.mean(x * x, axis=-1, keepdims=True)
    else:
        if variance_format not in ("float32", "float16", "bfloat16"):
            raise InvalidArgumentError("variance_format", "None, 'float32', 'float16' or 'bfloat16'",
                                       repr(variance_format))
        rounded = round_to_format(xp.to_float(x).astype(np.float64), variance_format)
        squares = round_to_format(rounded * rounded, variance_format)
        total = np.sum(squares.astype(np.float32 if variance_format == "float32" else np.float64), axis=-1,
                       keepdims=True)
        variance = xp.asarray(round_to_format(round_to_format(total, variance_format) / features, variance_format))
    return _normalised(xp, x, variance, eps, weight, bias)


@reference_function(arrays=("x", "weight", "bias"))
def qk_norm(xp: Precision, x: Any, weight: Any = None, num_heads: int = 1, eps: float = 1e-6,
            kind: Literal["rms", "layer"] = "rms", across_heads: bool = False, bias: Any = None) -> Any:
    """QK-norm of queries or keys laid out [..., L, H*Dh]: RMS/LayerNorm over each head's Dh channels, or across all H*Dh.

    Per head (Flux, SD3: the norm runs after the head split, weight [Dh]) or across heads (Wan, LTX: before
    the split, weight [H*Dh]); a per-head weight [Dh] with across_heads=True is tiled over the heads, and so
    is a LayerNorm ``bias`` (CogVideoX's QK LayerNorm has one).
    """
    heads = require_positive_int(num_heads, "num_heads")
    if kind not in ("rms", "layer"):
        raise InvalidArgumentError("kind", "'rms' or 'layer'", repr(kind))
    channels = np.shape(x)[-1]
    if channels % heads:
        raise ShapeError("num_heads", f"a divisor of the channel count {channels}", str(heads))
    head_dim = channels // heads
    if across_heads:
        groups, width = 1, channels
        if weight is not None and np.shape(weight) == (head_dim,) and heads > 1:
            weight = np.concatenate([weight] * heads)
        if bias is not None and np.shape(bias) == (head_dim,) and heads > 1:
            bias = np.concatenate([bias] * heads)
    else:
        groups, width = heads, head_dim
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and np.shape(value) != (width,):
            raise ShapeError(name, f"shape ({width},) for {'across-heads' if across_heads else 'per-head'} QK-norm",
                             str(np.shape(value)))
    grouped = np.reshape(x, np.shape(x)[:-1] + (groups, width))
    if kind == "rms":
        out = rms_norm.generic(xp, grouped, weight, bias, eps)
    else:
        out = layer_norm.generic(xp, grouped, weight, bias, eps)
    return np.reshape(out, np.shape(x))


# ----------------------------------------------------------------------------------------
# adaLN family


@reference_function(arrays=("emb", "weight", "bias"))
def adaln_chunks(xp: Precision, emb: Any, weight: Any, bias: Any, order: tuple[str, ...] = ADALN_ZERO_ORDER,
                 pre_activation: str = "silu") -> dict[str, Any]:
    """adaLN modulation: linear(act(emb)) [N, k D] cut into k chunks of D named by ``order`` (chunk i is order[i]).

    Orders: ADALN_ZERO_ORDER (DiT adaLN-Zero, diffusers AdaLayerNormZero), ADALN_ZERO_SINGLE_ORDER,
    ADALN_CONTINUOUS_ORDER (scale, shift), SD35_ADALN_ZERO_X_ORDER.
    """
    order = _require_order(order)
    projected = linear.generic(xp, activation.generic(xp, emb, pre_activation), weight, bias)
    width = np.shape(projected)[-1]
    if width % len(order):
        raise ShapeError("weight", f"an output width divisible by {len(order)} chunks", str(np.shape(weight)))
    size = width // len(order)
    return {name: projected[..., i * size:(i + 1) * size] for i, name in enumerate(order)}


def _modulated(xp: Precision, normed: Any, shift: Any, scale: Any) -> Any:
    """normed (1 + scale) + shift, with scale and shift [N, D] broadcast over the tokens of normed [N, T, D]."""
    return normed * (1 + scale[:, None, :]) + shift[:, None, :]


@reference_function(arrays=("x", "emb", "weight", "bias"))
def ada_layer_norm_zero(xp: Precision, x: Any, emb: Any, weight: Any, bias: Any, eps: float = 1e-6,
                        order: tuple[str, ...] = ADALN_ZERO_ORDER) -> tuple[Any, ...]:
    """diffusers AdaLayerNormZero: (LN(x)(1 + scale_msa) + shift_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp).

    LN has no affine parameters; the chunks are adaln_chunks(emb, weight, bias, order).
    """
    chunks = adaln_chunks.generic(xp, emb, weight, bias, order)
    normed = layer_norm.generic(xp, x, None, None, eps)
    return (_modulated(xp, normed, chunks["shift_msa"], chunks["scale_msa"]), chunks["gate_msa"],
            chunks["shift_mlp"], chunks["scale_mlp"], chunks["gate_mlp"])


@reference_function(arrays=("x", "emb", "weight", "bias"))
def ada_layer_norm_zero_single(xp: Precision, x: Any, emb: Any, weight: Any, bias: Any, eps: float = 1e-6,
                               order: tuple[str, ...] = ADALN_ZERO_SINGLE_ORDER) -> tuple[Any, Any]:
    """diffusers AdaLayerNormZeroSingle: (LN(x)(1 + scale_msa) + shift_msa, gate_msa)."""
    chunks = adaln_chunks.generic(xp, emb, weight, bias, order)
    normed = layer_norm.generic(xp, x, None, None, eps)
    return _modulated(xp, normed, chunks["shift_msa"], chunks["scale_msa"]), chunks["gate_msa"]


@reference_function(arrays=("x", "cond", "weight", "bias", "norm_weight", "norm_bias"))
def ada_layer_norm_continuous(xp: Precision, x: Any, cond: Any, weight: Any, bias: Any, norm_weight: Any = None,
                              norm_bias: Any = None, eps: float = 1e-5, norm: Literal["layer", "rms"] = "layer",
                              order: tuple[str, ...] = ADALN_CONTINUOUS_ORDER) -> Any:
    """diffusers AdaLayerNormContinuous: norm(x)(1 + scale) + shift, (scale, shift) = chunks of linear(silu(cond)) in ``order``."""
    chunks = adaln_chunks.generic(xp, cond, weight, bias, order)
    if norm == "layer":
        normed = layer_norm.generic(xp, x, norm_weight, norm_bias, eps)
    elif norm == "rms":
        normed = rms_norm.generic(xp, x, norm_weight, None, eps)
    else:
        raise InvalidArgumentError("norm", "'layer' or 'rms'", repr(norm))
    return _modulated(xp, normed, chunks["shift"], chunks["scale"])


@reference_function(arrays=("table", "emb"))
def scale_shift_table_chunks(xp: Precision, table: Any, emb: Any,
                             order: tuple[str, ...] = ADALN_ZERO_ORDER) -> dict[str, Any]:
    """PixArt adaLN-single: (table[None] + emb.reshape(N, k, D)) cut along axis 1 into k chunks named by ``order``.

    table [k, D] is the block's learned scale_shift_table, emb [N, k D] the shared t_block output.
    """
    order = _require_order(order)
    count, width = np.shape(table)
    if count != len(order) or np.ndim(emb) != 2 or np.shape(emb)[1] != count * width:
        raise ShapeError("emb", f"shape [N, {count * width}] for a table of shape {np.shape(table)}", str(np.shape(emb)))
    combined = table[None, :, :] + np.reshape(emb, (np.shape(emb)[0], count, width))
    return {name: combined[:, i, :] for i, name in enumerate(order)}


# ----------------------------------------------------------------------------------------
# FeedForward


@reference_function(arrays=("x",))
def gated_linear_unit(xp: Precision, x: Any, gate_activation: str = "gelu", gate_first: bool = False) -> Any:
    """GLU variants (Shazeer 2020): value * act(gate), (value, gate) the two halves of the last axis; GEGLU act=gelu, SwiGLU act=silu.

    diffusers GEGLU and SwiGLU put the value first; gate_first=True is the AuraFlow-style order.
    """
    width = np.shape(x)[-1]
    if width % 2:
        raise ShapeError("x", "an even last axis (value and gate halves)", str(np.shape(x)))
    first, second = x[..., :width // 2], x[..., width // 2:]
    value, gate = (second, first) if gate_first else (first, second)
    return value * activation.generic(xp, gate, gate_activation)


@reference_function(arrays=("x", "proj_weight", "proj_bias", "out_weight", "out_bias"))
def feed_forward(xp: Precision, x: Any, proj_weight: Any, proj_bias: Any, out_weight: Any, out_bias: Any,
                 activation_fn: str = "geglu", gate_first: bool = False) -> Any:
    """diffusers FeedForward: out(act_fn(x)), act_fn = a projection then an activation, by ``activation_fn``.

    gelu: gelu_erf(P x); gelu-approximate: gelu_tanh(P x); geglu: GEGLU(P x) (value first, gelu erf);
    geglu-approximate: (P x) sigmoid(1.702 P x) (ApproximateGELU, not a GLU); swiglu: SwiGLU(P x);
    linear-silu: silu(P x). Dropout is the identity (eval).
    """
    if activation_fn not in FEED_FORWARD_ACTIVATIONS:
        raise InvalidArgumentError("activation_fn", f"one of {FEED_FORWARD_ACTIVATIONS}", repr(activation_fn))
    projected = linear.generic(xp, x, proj_weight, proj_bias)
    if activation_fn in ("geglu", "swiglu"):
        hidden = gated_linear_unit.generic(xp, projected, "gelu" if activation_fn == "geglu" else "silu", gate_first)
    else:
        name = {"gelu": "gelu", "gelu-approximate": "gelu-tanh", "geglu-approximate": "approximate-gelu",
                "linear-silu": "silu"}[activation_fn]
        hidden = activation.generic(xp, projected, name)
    return linear.generic(xp, hidden, out_weight, out_bias)


# ----------------------------------------------------------------------------------------
# Attention variants


@reference_function(arrays=("q_a", "k_a", "v_a", "q_b", "k_b", "v_b"))
def joint_attention(xp: Precision, q_a: Any, k_a: Any, v_a: Any, q_b: Any, k_b: Any, v_b: Any,
                    order: Literal["ab", "ba"] = "ab", scale: float | None = None, mask: Any = None) -> tuple[Any, Any]:
    """MMDiT joint attention: both streams' tokens concatenated (stream a first if order='ab'), one attention, split back.

    Tensors [..., L, D]; returns (out_a, out_b). SD3 (JointAttnProcessor2_0) puts the image stream first,
    Flux and CogVideoX the text stream; without masks and RoPE the two orders agree up to rounding.
    ``mask`` (SDPA style, boolean keep or additive) is over the concatenated keys in the order used: a
    prefix mask written for one order (HunyuanVideo's text padding) hides the wrong tokens in the other.
    """
    if order not in ("ab", "ba"):
        raise InvalidArgumentError("order", "'ab' or 'ba'", repr(order))
    length_a = np.shape(q_a)[-2]
    parts = [(q_a, k_a, v_a), (q_b, k_b, v_b)]
    if order == "ba":
        parts.reverse()
    q, k, v = (np.concatenate([p[i] for p in parts], axis=-2) for i in range(3))
    out = attention.generic(xp, q, k, v, scale=scale, mask=mask)
    if order == "ab":
        return out[..., :length_a, :], out[..., length_a:, :]
    length_b = np.shape(q_b)[-2]
    return out[..., length_b:, :], out[..., :length_b, :]


@reference_function(arrays=("q", "k", "v"))
def linear_attention(xp: Precision, q: Any, k: Any, v: Any, eps: float = 1e-15, kernel: str = "relu") -> Any:
    """Linear attention (Katharopoulos et al. 2020, eq. 5; Sana): o_i = sum_j v_j (phi(k_j) . phi(q_i)) / (sum_j phi(k_j) . phi(q_i) + eps).

    [..., L, D] tensors, phi = relu (Sana) or identity; eps as in Sana's processor (1e-15).
    """
    eps = require_real(eps, "eps", low=0.0)
    if kernel not in ("relu", "identity"):
        raise InvalidArgumentError("kernel", "'relu' or 'identity'", repr(kernel))
    phi_q = activation.generic(xp, q, kernel)
    phi_k = activation.generic(xp, k, kernel)
    kv = xp.matmul(np.swapaxes(phi_k, -1, -2), v)                      # [..., D, Dv]
    numerator = xp.matmul(phi_q, kv)                                   # [..., Lq, Dv]
    denominator = xp.matmul(phi_q, xp.sum(phi_k, axis=-2)[..., :, None])  # [..., Lq, 1]
    return numerator / (denominator + xp.const(eps))


# ----------------------------------------------------------------------------------------
# RoPE


def _require_pairing(pairing: Any) -> None:
    if pairing not in ROPE_PAIRINGS:
        raise InvalidArgumentError("pairing", f"one of {ROPE_PAIRINGS}", repr(pairing))


@reference_function(arrays=("positions",))
def rope_frequencies(xp: Precision, positions: Any, axes_dims: tuple[int, ...], theta: float = 10000.0,
                     pairing: RopePairing = "interleaved") -> tuple[Any, Any]:
    """RoPE tables (Su et al. 2021, eq. 34): per axis a, angle pos_a theta^(-2i/d_a), i < d_a/2; (cos, sin) each [L, sum d_a].

    positions [L, n_axes] (Flux ids), axes_dims one even width per axis (the head dim's axis split);
    each axis' d_a/2 angles are repeated to d_a channels: interleaved (c0 c0 c1 c1 ..., diffusers
    repeat_interleave_real=True) or half (c0 c1 ... c0 c1 ..., repeat_interleave_real=False).
    """
    _require_pairing(pairing)
    theta = require_real(theta, "theta", low=0.0, low_inclusive=False)
    if np.ndim(positions) != 2 or np.shape(positions)[1] != len(axes_dims):
        raise ShapeError("positions", f"shape [L, {len(axes_dims)}] (one column per axis)", str(np.shape(positions)))
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate(axes_dims):
        dim = require_positive_int(dim, f"axes_dims[{axis}]")
        if dim % 2:
            raise InvalidArgumentError(f"axes_dims[{axis}]", "an even width (channels rotate in pairs)", repr(dim))
        exponents = xp.asarray(np.arange(0, dim, 2, dtype=np.float64)) / xp.const(dim)
        inverse = xp.exp(-exponents * xp.log(xp.const(theta)))
        angles = positions[:, axis:axis + 1] * inverse[None, :]
        cos, sin = xp.cos(angles), xp.sin(angles)
        if pairing == "half":
            cos_parts.append(np.concatenate([cos, cos], axis=-1))
            sin_parts.append(np.concatenate([sin, sin], axis=-1))
        else:
            cos_parts.append(np.repeat(cos, 2, axis=-1))
            sin_parts.append(np.repeat(sin, 2, axis=-1))
    return np.concatenate(cos_parts, axis=-1), np.concatenate(sin_parts, axis=-1)


@reference_function(arrays=("x", "cos", "sin"))
def apply_rope(xp: Precision, x: Any, cos: Any, sin: Any, pairing: RopePairing = "interleaved") -> Any:
    """Rotate channel pairs of x [..., L, D] by the angles of (cos, sin) [L, D]: x cos + rot(x) sin.

    interleaved / complex: pairs (2i, 2i+1), rot(x) = (-x_{2i+1}, x_{2i}) (diffusers use_real_unbind_dim=-1);
    half: pairs (i, i + D/2), rot(x) = (-x_{second half}, x_{first half}) (use_real_unbind_dim=-2).
    """
    _require_pairing(pairing)
    width = np.shape(x)[-1]
    if width % 2 or np.shape(cos)[-1] != width or np.shape(sin) != np.shape(cos):
        raise ShapeError("cos", f"tables of width {width} (an even head dim), shaped like sin", str(np.shape(cos)))
    if pairing == "half":
        first, second = x[..., :width // 2], x[..., width // 2:]
        rotated = np.concatenate([-second, first], axis=-1)
    else:
        pairs = np.reshape(x, np.shape(x)[:-1] + (width // 2, 2))
        rotated = np.reshape(np.stack([-pairs[..., 1], pairs[..., 0]], axis=-1), np.shape(x))
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------------------
# 3-D patches


@reference_function(arrays=("x", "weight", "bias"))
def patchify_3d(xp: Precision, x: Any, weight: Any, bias: Any, patch_size: tuple[int, int, int]) -> Any:
    """Conv3d(C, D, kernel = stride = (pt, ph, pw))(x).flatten(2).transpose(1, 2) for video latents x [N, C, F, H, W].

    Tokens [N, (F/pt)(H/ph)(W/pw), D] in (frame, row, column) order; each patch flattened in (C, pt, ph, pw) order.
    """
    if not isinstance(patch_size, (tuple, list)) or len(patch_size) != 3:
        raise InvalidArgumentError("patch_size", "a triple (pt, ph, pw) of positive ints", repr(patch_size))
    pt, ph, pw = (require_positive_int(p, f"patch_size[{i}]") for i, p in enumerate(patch_size))
    if np.ndim(x) != 5:
        raise ShapeError("x", "shape [N, C, F, H, W] (video latents)", str(np.shape(x)))
    n, channels, frames, height, width = np.shape(x)
    if frames % pt or height % ph or width % pw:
        raise ShapeError("x", f"F, H, W divisible by {(pt, ph, pw)}", str(np.shape(x)))
    if np.shape(weight) != (np.shape(weight)[0], channels, pt, ph, pw):
        raise ShapeError("weight", f"shape [D, {channels}, {pt}, {ph}, {pw}] (torch Conv3d layout)", str(np.shape(weight)))
    f, h, w = frames // pt, height // ph, width // pw
    patches = np.reshape(x, (n, channels, f, pt, h, ph, w, pw)).transpose(0, 2, 4, 6, 1, 3, 5, 7)
    patches = patches.reshape(n, f * h * w, channels * pt * ph * pw)
    return linear.generic(xp, patches, np.reshape(weight, (np.shape(weight)[0], -1)), bias)


@reference_function(arrays=("x",))
def unpatchify_3d(xp: Precision, x: Any, patch_size: tuple[int, int, int], grid: tuple[int, int, int]) -> Any:
    """Tokens [N, f h w, pt ph pw C] -> video [N, C, f pt, h ph, w pw] (diffusers WanTransformer3DModel's output).

    Tokens in (frame, row, column) order over the patch ``grid`` (f, h, w), as patchify_3d makes them; each token's
    features in (pt, ph, pw, C) order (reshape, permute(0, 7, 1, 4, 2, 5, 3, 6), flatten).
    """
    if not isinstance(patch_size, (tuple, list)) or len(patch_size) != 3:
        raise InvalidArgumentError("patch_size", "a triple (pt, ph, pw) of positive ints", repr(patch_size))
    pt, ph, pw = (require_positive_int(p, f"patch_size[{i}]") for i, p in enumerate(patch_size))
    if not isinstance(grid, (tuple, list)) or len(grid) != 3:
        raise InvalidArgumentError("grid", "a triple (f, h, w) of positive ints", repr(grid))
    f, h, w = (require_positive_int(g, f"grid[{i}]") for i, g in enumerate(grid))
    if np.ndim(x) != 3:
        raise ShapeError("x", "shape [N, f h w, pt ph pw C] (tokens)", str(np.shape(x)))
    n, tokens, features = np.shape(x)
    if tokens != f * h * w or features % (pt * ph * pw):
        raise ShapeError("x", f"shape [N, {f * h * w}, {pt * ph * pw} C] for grid {(f, h, w)} and patch "
                         f"{(pt, ph, pw)}", str(np.shape(x)))
    blocks = np.reshape(x, (n, f, h, w, pt, ph, pw, -1)).transpose(0, 7, 1, 4, 2, 5, 3, 6)
    return np.reshape(blocks, (n, features // (pt * ph * pw), f * pt, h * ph, w * pw))


# ----------------------------------------------------------------------------------------
# General 2-D convolution (Sana's GLUMBConv: 1x1 and depthwise 3x3 convolutions)


@reference_function(arrays=("x", "weight", "bias"))
def conv2d(xp: Precision, x: Any, weight: Any, bias: Any = None, stride: int = 1, padding: int = 0,
           groups: int = 1) -> Any:
    """torch Conv2d (cross-correlation, zero padding): x [N, C, H, W], weight [O, C/groups, kh, kw] -> [N, O, Ho, Wo].

    Each output is the dot product of its window (C/groups channels, kh kw taps, in torch's (c, i, j) order)
    with its filter, plus the bias: one matrix product per group over all windows.
    """
    stride = require_positive_int(stride, "stride")
    groups = require_positive_int(groups, "groups")
    if not isinstance(padding, (int, np.integer)) or padding < 0:
        raise InvalidArgumentError("padding", "a non-negative int", repr(padding))
    if np.ndim(x) != 4 or np.ndim(weight) != 4:
        raise ShapeError("x", "x [N, C, H, W] and weight [O, C/groups, kh, kw]", f"{np.shape(x)}, {np.shape(weight)}")
    n, channels, height, width = np.shape(x)
    out_channels, group_channels, kh, kw = np.shape(weight)
    if channels % groups or out_channels % groups or group_channels != channels // groups:
        raise ShapeError("weight", f"[O, {channels // groups}, kh, kw] with O divisible by {groups}",
                         str(np.shape(weight)))
    if bias is not None and np.shape(bias) != (out_channels,):
        raise ShapeError("bias", f"shape ({out_channels},)", str(np.shape(bias)))
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=0)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    rows, cols = np.shape(windows)[2:4]
    # [N, C, Ho, Wo, kh, kw] -> [N, groups, Ho Wo, C/groups kh kw]
    windows = np.reshape(windows, (n, groups, group_channels, rows, cols, kh, kw)).transpose(0, 1, 3, 4, 2, 5, 6)
    windows = np.reshape(windows, (n, groups, rows * cols, group_channels * kh * kw))
    filters = np.reshape(weight, (groups, out_channels // groups, group_channels * kh * kw)).transpose(0, 2, 1)
    out = xp.matmul(windows, filters)                                   # [N, groups, Ho Wo, O/groups]
    out = np.reshape(np.transpose(out, (0, 1, 3, 2)), (n, out_channels, rows, cols))
    return out if bias is None else out + np.reshape(bias, (1, out_channels, 1, 1))


# ----------------------------------------------------------------------------------------
# Video RoPE position grids and axis splits


def rope_grid_positions(grid: tuple[int, ...]) -> np.ndarray:
    """Integer positions of a (frames, rows, columns) token grid in row-major token order: [prod(grid), len(grid)]."""
    if not isinstance(grid, (tuple, list)) or not grid:
        raise InvalidArgumentError("grid", "a non-empty tuple of positive ints", repr(grid))
    sizes = [require_positive_int(g, f"grid[{i}]") for i, g in enumerate(grid)]
    mesh = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in sizes], indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=-1)


def wan_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Wan's split of a head's channels over (frame, row, column): h = w = 2 floor(d/6), t = d - 2h (WanRotaryPosEmbed)."""
    head_dim = require_positive_int(head_dim, "head_dim")
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial
