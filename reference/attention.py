"""Softmax and scaled dot-product attention, forward and backward, in every precision.

Conventions (docs/conventions.md#attention): rows are tokens; tensors are [..., L, D] with any
leading batch/head axes, so [B, H, L, D] (SDPA layout) works as is. Logits are
``scale * q @ k^T`` with ``scale`` defaulting to the exact real 1/sqrt(D) (DiT,
SDPA); pass ``scale=1/D`` for Alman-Song or ``scale=1.0`` for Hu et al. sec. 4.

Masks follow torch SDPA: a boolean mask is True where a query may attend; a
float mask is added to the logits, with -inf meaning "may not attend". A row
with nothing to attend to is 0/0: by default that raises FullyMaskedRowError;
``fully_masked="zero"`` returns zeros for such rows instead (documented choice,
matching what several fused kernels return).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .errors import DTypeError, FullyMaskedRowError, InvalidArgumentError, ShapeError
from .layers import linear
from .precision import Precision, as_float64_array, reference_function, require_positive_int, require_real

__all__ = [
    "softmax",
    "attention",
    "attention_vjp",
    "split_heads",
    "merge_heads",
    "multi_head_attention",
    "attention_weight_loss",
    "attention_weight_gradient",
    "default_scale",
]

FullyMasked = Literal["raise", "zero"]


def default_scale(xp: Precision, head_dim: int) -> Any:
    """The DiT / SDPA logit scale 1/sqrt(D), exact in arb, rounded in float64."""
    return xp.const(1) / xp.sqrt(xp.const(head_dim))


def _check_fully_masked(fully_masked: str) -> None:
    if fully_masked not in ("raise", "zero"):
        raise InvalidArgumentError("fully_masked", "'raise' or 'zero'", repr(fully_masked))


def split_mask(xp: Precision, mask: Any, shape: tuple[int, ...]) -> tuple[np.ndarray | None, Any]:
    """(keep, bias) from an SDPA-style mask: boolean keep-mask, additive float bias (or 0)."""
    if mask is None:
        return None, 0
    raw = np.asarray(mask)
    try:
        np.broadcast_shapes(raw.shape, shape)
    except ValueError:
        raise ShapeError("mask", f"an array broadcastable to the logits' shape {shape}", str(raw.shape)) from None
    if raw.dtype == bool:
        return np.broadcast_to(raw, shape), 0
    if raw.dtype.kind != "f":  # an integer 0/1 "mask" would silently become an additive bias (SDPA rejects it too)
        raise DTypeError("mask", "a boolean keep-mask or a float additive mask", str(raw.dtype))
    additive = as_float64_array(raw, "mask", allow_neg_inf=True)
    keep = np.broadcast_to(np.isfinite(additive), shape)
    return keep, xp.asarray(np.where(np.isfinite(additive), additive, 0.0))


@reference_function(arrays=("x",))
def softmax(xp: Precision, x: Any, axis: int = -1, mask: Any = None, fully_masked: FullyMasked = "raise") -> Any:
    """Row softmax exp(x_j - m) / sum_l exp(x_l - m) along ``axis`` (any shift m gives the same reals).

    ``mask``: boolean keep-mask or additive float mask (-inf = excluded), broadcast to x.
    ``fully_masked``: 'raise' (FullyMaskedRowError) or 'zero' (such rows are all zeros).
    """
    _check_fully_masked(fully_masked)
    shape = np.shape(x)
    if len(shape) == 0:
        raise ShapeError("x", "an array with at least one axis", "a scalar")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -len(shape) <= axis < len(shape):
        raise ShapeError("axis", f"an integer axis of an array with {len(shape)} axes", repr(axis))
    keep, bias = split_mask(xp, mask, shape)
    x = x + bias
    if keep is None:
        e = xp.exp(x - xp.shift(x, axis))
        return e / xp.sum(e, axis=axis, keepdims=True)
    empty = ~np.any(keep, axis=axis, keepdims=True)
    if empty.any() and fully_masked == "raise":
        row = tuple(int(i) for i in np.argwhere(empty)[0])
        raise FullyMaskedRowError("mask", "at least one attended position in every softmax row",
                                  f"a fully masked row at index {row} (pass fully_masked='zero' to get zeros)")
    shift = np.max(np.where(keep, xp.to_float(x), -np.inf), axis=axis, keepdims=True)
    shift = np.where(empty, 0.0, shift)
    zero = xp.const(0)
    # masked logits may sit far above the kept maximum: exponentiate 0 there, not them
    e = np.where(keep, xp.exp(np.where(keep, x - shift, zero)), zero)
    total = xp.sum(e, axis=axis, keepdims=True)
    total = np.where(empty, xp.const(1), total)
    return e / total


def _check_qkv(q: Any, k: Any, v: Any) -> None:
    if np.ndim(q) < 2 or np.ndim(k) < 2 or np.ndim(v) < 2:
        raise ShapeError("q, k, v", "arrays of shape [..., L, D] (at least 2 axes)",
                         f"{np.shape(q)}, {np.shape(k)}, {np.shape(v)}")
    if np.shape(q)[-1] != np.shape(k)[-1]:
        raise ShapeError("k", f"head dim equal to q's ({np.shape(q)[-1]})", str(np.shape(k)))
    if np.shape(k)[-2] != np.shape(v)[-2]:
        raise ShapeError("v", f"as many tokens as k ({np.shape(k)[-2]})", str(np.shape(v)))
    try:
        np.broadcast_shapes(np.shape(q)[:-2], np.shape(k)[:-2], np.shape(v)[:-2])
    except ValueError:
        raise ShapeError("q, k, v", "broadcastable leading (batch, head) axes",
                         f"{np.shape(q)}, {np.shape(k)}, {np.shape(v)}") from None


def _logits(xp: Precision, q: Any, k: Any, scale: float | None) -> Any:
    s = default_scale(xp, np.shape(q)[-1]) if scale is None else xp.const(scale)
    return xp.matmul(q, np.swapaxes(k, -1, -2)) * s


def _check_scale(scale: Any) -> None:
    if scale is not None:
        require_real(scale, "scale")


@reference_function(arrays=("q", "k", "v"))
def attention(xp: Precision, q: Any, k: Any, v: Any, scale: float | None = None, mask: Any = None,
              fully_masked: FullyMasked = "raise", return_weights: bool = False) -> Any:
    """Scaled dot-product attention softmax(scale q k^T + mask) v over [..., L, D] (Vaswani et al. 2017, eq. 1).

    Returns the output [..., Lq, Dv], or (output, weights) with ``return_weights``.
    """
    _check_qkv(q, k, v)
    _check_scale(scale)
    weights = softmax.generic(xp, _logits(xp, q, k, scale), -1, mask, fully_masked)
    out = xp.matmul(weights, v)
    return (out, weights) if return_weights else out


@reference_function(arrays=("q", "k", "v", "grad_out"))
def attention_vjp(xp: Precision, q: Any, k: Any, v: Any, grad_out: Any, scale: float | None = None,
                  mask: Any = None, fully_masked: FullyMasked = "raise") -> tuple[Any, Any, Any]:
    """Vector-Jacobian product (dQ, dK, dV) of attention for cotangent dO = ``grad_out``.

    With P = softmax(S), S = scale q k^T: dV = P^T dO; dP = dO V^T;
    dS = P * (dP - rowsum(P * dP)); dQ = scale dS K; dK = scale dS^T Q.
    """
    _check_qkv(q, k, v)
    _check_scale(scale)
    expected = np.broadcast_shapes(np.shape(q)[:-2], np.shape(v)[:-2]) + (np.shape(q)[-2], np.shape(v)[-1])
    if np.shape(grad_out) != expected:
        raise ShapeError("grad_out", f"the output's shape {expected}", str(np.shape(grad_out)))
    s = default_scale(xp, np.shape(q)[-1]) if scale is None else xp.const(scale)
    weights = softmax.generic(xp, _logits(xp, q, k, scale), -1, mask, fully_masked)
    grad_v = xp.matmul(np.swapaxes(weights, -1, -2), grad_out)
    grad_weights = xp.matmul(grad_out, np.swapaxes(v, -1, -2))
    grad_logits = weights * (grad_weights - xp.sum(weights * grad_weights, axis=-1, keepdims=True))
    grad_q = xp.matmul(grad_logits, k) * s
    grad_k = xp.matmul(np.swapaxes(grad_logits, -1, -2), q) * s
    return _sum_to_shape(xp, grad_q, np.shape(q)), _sum_to_shape(xp, grad_k, np.shape(k)), \
        _sum_to_shape(xp, grad_v, np.shape(v))


def _sum_to_shape(xp: Precision, grad: Any, shape: tuple[int, ...]) -> Any:
    """Reduce a broadcast gradient back to its input's shape."""
    extra = np.ndim(grad) - len(shape)
    if extra:
        grad = xp.sum(grad, axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and np.shape(grad)[i] != 1)
    return xp.sum(grad, axis=axes, keepdims=True) if axes else grad


def split_heads(x: Any, num_heads: int) -> Any:
    """[N, L, H*Dh] -> [N, H, L, Dh] (head h owns channels h*Dh:(h+1)*Dh)."""
    n, length, channels = np.shape(x)
    if channels % num_heads:
        raise ShapeError("num_heads", f"a divisor of the channel count {channels}", str(num_heads))
    return np.reshape(x, (n, length, num_heads, channels // num_heads)).transpose(0, 2, 1, 3)


def merge_heads(x: Any) -> Any:
    """[N, H, L, Dh] -> [N, L, H*Dh], the inverse of split_heads."""
    n, heads, length, head_dim = np.shape(x)
    return np.transpose(x, (0, 2, 1, 3)).reshape(n, length, heads * head_dim)


@reference_function(arrays=("x", "qkv_weight", "qkv_bias", "proj_weight", "proj_bias"))
def multi_head_attention(xp: Precision, x: Any, qkv_weight: Any, qkv_bias: Any, proj_weight: Any,
                         proj_bias: Any, num_heads: int, scale: float | None = None, mask: Any = None,
                         qkv_order: str = "qkv") -> Any:
    """timm/DiT ``Attention``: qkv = x W_qkv^T + b split as (q, k, v) then heads; proj(attn(q, k, v)).

    x: [N, L, C]; qkv_weight: [3C, C]; proj_weight: [C, C]. ``qkv_order`` names the order in
    which the 3C output channels hold q, k and v (DiT: 'qkv').
    """
    if np.ndim(x) != 3:
        raise ShapeError("x", "an array of shape [N, L, C]", str(np.shape(x)))
    channels = np.shape(x)[-1]
    num_heads = require_positive_int(num_heads, "num_heads")
    expected_shapes = {"qkv_weight": (3 * channels, channels), "qkv_bias": (3 * channels,),
                       "proj_weight": (channels, channels), "proj_bias": (channels,)}
    given = {"qkv_weight": qkv_weight, "qkv_bias": qkv_bias, "proj_weight": proj_weight, "proj_bias": proj_bias}
    for name, expected in expected_shapes.items():
        if given[name] is not None and np.shape(given[name]) != expected:
            raise ShapeError(name, f"shape {expected}", str(np.shape(given[name])))
    if sorted(qkv_order) != ["k", "q", "v"]:
        raise InvalidArgumentError("qkv_order", "a permutation of 'qkv'", repr(qkv_order))
    qkv = linear.generic(xp, x, qkv_weight, qkv_bias)
    parts = {name: qkv[..., i * channels:(i + 1) * channels] for i, name in enumerate(qkv_order)}
    q, k, v = (split_heads(parts[name], num_heads) for name in "qkv")
    out = attention.generic(xp, q, k, v, scale=scale, mask=mask)
    return linear.generic(xp, merge_heads(out), proj_weight, proj_bias)


def _weight_loss_parts(xp: Precision, a1: Any, a2: Any, a3: Any, w: Any, w_ov: Any, y: Any,
                       scale: float) -> tuple[Any, Any, Any]:
    scale = require_real(scale, "scale")
    for name, arr in (("a1", a1), ("a2", a2), ("a3", a3), ("w", w), ("w_ov", w_ov), ("y", y)):
        if np.ndim(arr) != 2:
            raise ShapeError(name, "a 2-D array", str(np.shape(arr)))
    d, length = np.shape(a1)
    if np.shape(a2) != (d, length) or np.shape(a3) != (d, length):
        raise ShapeError("a2, a3", f"shape {(d, length)} like a1", f"{np.shape(a2)}, {np.shape(a3)}")
    if np.shape(w) != (d, d) or np.shape(w_ov) != (d, d):
        raise ShapeError("w, w_ov", f"shape {(d, d)}", f"{np.shape(w)}, {np.shape(w_ov)}")
    if np.shape(y) != (length, d):
        raise ShapeError("y", f"shape {(length, d)}", str(np.shape(y)))
    logits = xp.matmul(xp.matmul(np.transpose(a1), w), a2) * xp.const(scale)
    f = softmax.generic(xp, logits, -1)
    h = xp.matmul(np.transpose(a3), np.transpose(w_ov))
    return f, h, xp.matmul(f, h) - y


@reference_function(arrays=("a1", "a2", "a3", "w", "w_ov", "y"))
def attention_weight_loss(xp: Precision, a1: Any, a2: Any, a3: Any, w: Any, w_ov: Any, y: Any,
                          scale: float = 1.0) -> Any:
    """LD7 loss (Hu et al. 2024, sec. 5): L0(W) = 1/2 ||f(W) h - Y||_F^2, f = softmax_rows(scale A1^T W A2), h = A3^T W_OV^T."""
    _, _, c = _weight_loss_parts(xp, a1, a2, a3, w, w_ov, y, scale)
    return xp.sum(c * c) / 2


@reference_function(arrays=("a1", "a2", "a3", "w", "w_ov", "y"))
def attention_weight_gradient(xp: Precision, a1: Any, a2: Any, a3: Any, w: Any, w_ov: Any, y: Any,
                              scale: float = 1.0) -> Any:
    """LD7 closed form (Hu et al. 2024, sec. 5): dL0/dW = scale A1 p A2^T, p = f*q - diag(r) f, q = c h^T, r_j = <f_j, q_j>."""
    f, h, c = _weight_loss_parts(xp, a1, a2, a3, w, w_ov, y, scale)
    q = xp.matmul(c, np.transpose(h))
    r = xp.sum(f * q, axis=-1, keepdims=True)
    p = f * q - r * f
    return xp.matmul(xp.matmul(a1, p), np.transpose(a2)) * xp.const(scale)
