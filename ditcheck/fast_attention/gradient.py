"""The attention-weight gradient of LD7, exact and through the LD8 low-rank chain (torch).

Problem (Hu et al. 2024, sec. 5; Alman & Song 2024, arXiv 2402.04497), with the argument
conventions of ``ditcheck.reference.attention_weight_gradient``: A1, A2, A3 in R^{d x L}
(tokens are columns), W, W_OV in R^{d x d}, Y in R^{L x d} and a logit scale s,

    f = softmax_rows(s A1^T W A2) (L x L),  h = A3^T W_OV^T,  L0(W) = 1/2 ||f h - Y||_F^2,
    c = f h - Y,  q = c h^T,  r_j = <f_j, q_j>,  p = f * q - diag(r) f,  dL0/dW = s A1 p A2^T.

The low-rank chain replaces f by f~ = D~^-1 U1 V1^T, the polynomial features of AS1
(``ditcheck.fast_attention.polynomial``; rank k1 = C(d+g, g)), and never forms an L x L matrix:

- c~ = f~ h - Y and r~_i = <c~_i, (f~ h)_i> in O(L k1 d);
- q~ = c~ h^T has rank k2 = d (the paper's generic factorisation [U1, -Y] has k1 + d);
- f~ * q~ = P Q^T with row-wise Kronecker (Khatri-Rao) factors P_i = (U1_i / D~_i) (x) c~_i and
  Q_j = V1_j (x) h_j, rank k3 = k1 k2; A1 P and A2 Q (d x k3) are built as one GEMM each of
  a d^2 x L matrix with an L x k1 one, so the L x k3 factors are never materialised either;
- diag(r~) f~ = (diag(r~/D~) U1) V1^T, rank k4 = k1.

Time O(L k1 d^2) = O(L k d), memory O(L (k1 + d^2)). The entry-wise error is bounded by
``ditcheck.bounds.low_rank_gradient_bound`` (LD8) from the certified eps of the polynomial.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ditcheck.bounds import feature_rank, gamma, low_rank_gradient_bound, minimal_degree
from ditcheck.fast_attention.attention import certified_radius
from ditcheck.fast_attention.polynomial import exp_approximation, polynomial_features
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, NonFiniteError, ShapeError
from ditcheck.reference.formats import FLOAT64

__all__ = [
    "LowRankFactors",
    "LowRankGradient",
    "attention_weight_loss",
    "attention_weight_gradient_exact",
    "attention_weight_gradient_lowrank",
    "attention_weight_loss_lowrank",
    "LowRankAttentionWeightLoss",
    "logit_radius",
]

_NAMES = ("a1", "a2", "a3", "w", "w_ov", "y")


def _check_inputs(a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor, w: torch.Tensor, w_ov: torch.Tensor,
                  y: torch.Tensor, scale: float) -> tuple[int, int]:
    """(d, L) after checking shapes, dtypes, devices and finiteness; raises the typed errors of reference.errors."""
    arrays = dict(zip(_NAMES, (a1, a2, a3, w, w_ov, y)))
    for name, arr in arrays.items():
        if not isinstance(arr, torch.Tensor):
            raise DTypeError(name, "a torch.Tensor", type(arr).__name__)
        if arr.ndim != 2:
            raise ShapeError(name, "a 2-D tensor", str(tuple(arr.shape)))
        if not arr.dtype.is_floating_point:
            raise DTypeError(name, "a floating-point tensor", str(arr.dtype))
        if arr.dtype != a1.dtype or arr.device != a1.device:
            raise DTypeError(name, f"dtype {a1.dtype} on {a1.device} like a1", f"{arr.dtype} on {arr.device}")
        if not bool(torch.isfinite(arr).all()):
            raise NonFiniteError(name, "finite entries", "NaN or Inf")
    d, length = a1.shape
    if d < 1 or length < 1:
        raise ShapeError("a1", "shape (d, L) with d >= 1 and L >= 1", str(tuple(a1.shape)))
    for name, arr, shape in (("a2", a2, (d, length)), ("a3", a3, (d, length)), ("w", w, (d, d)),
                             ("w_ov", w_ov, (d, d))):
        if arr.shape != shape:
            raise ShapeError(name, f"shape {shape} (d, L from a1)", str(tuple(arr.shape)))
    if y.shape != (length, d):
        raise ShapeError("y", f"shape {(length, d)}", str(tuple(y.shape)))
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise InvalidArgumentError("scale", "a finite real number", repr(scale))
    return d, length


def attention_weight_loss(a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor, w: torch.Tensor,
                          w_ov: torch.Tensor, y: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """LD7 loss (Hu et al. 2024, sec. 5): 1/2 ||softmax(scale A1^T W A2) A3^T W_OV^T - Y||_F^2 through torch SDPA.

    Exact (O(L^2 d)) and differentiable in every argument: ``loss.backward()`` is the autograd
    baseline the low-rank gradient is measured against.
    """
    _check_inputs(a1, a2, a3, w, w_ov, y, scale)
    query = (a1.T @ w)[None, None]
    out = F.scaled_dot_product_attention(query, a2.T[None, None], (a3.T @ w_ov.T)[None, None], scale=scale)
    return 0.5 * ((out[0, 0] - y) ** 2).sum()


def attention_weight_gradient_exact(a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor, w: torch.Tensor,
                                    w_ov: torch.Tensor, y: torch.Tensor, *, scale: float = 1.0,
                                    chunk_size: int | None = None) -> torch.Tensor:
    """LD7 closed form (Hu et al. 2024, sec. 5): dL0/dW = scale A1 p A2^T, p = f*q - diag(r) f, q = c h^T.

    O(L^2 d) time; rows of f are processed ``chunk_size`` at a time (default: about 2^22
    entries per chunk), so memory stays O(chunk_size L).
    """
    d, length = _check_inputs(a1, a2, a3, w, w_ov, y, scale)
    chunk = _chunk(chunk_size, length, max(1, (1 << 22) // max(length, 1)))
    h = a3.T @ w_ov.T
    queries = a1.T @ w
    gradient = torch.zeros_like(w)
    for start in range(0, length, chunk):
        rows = slice(start, start + chunk)
        f = torch.softmax(scale * (queries[rows] @ a2), dim=-1)
        c = f @ h - y[rows]
        q = c @ h.T
        p = f * q - (f * q).sum(-1, keepdim=True) * f
        gradient += a1[:, rows] @ (p @ a2.T)
    return scale * gradient


def _chunk(chunk_size: int | None, length: int, default: int) -> int:
    if chunk_size is None:
        return min(length, default)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise InvalidArgumentError("chunk_size", "a positive integer or None", repr(chunk_size))
    return chunk_size


def logit_radius(a1: torch.Tensor, a2: torch.Tensor, w: torch.Tensor, *, scale: float = 1.0) -> float:
    """LD7 logit range by Cauchy-Schwarz: max |scale a1_i^T W a2_j| <= |scale| max ||W^T a1_i|| max ||a2_j||.

    O(L d^2), computed in float64 whatever the input dtype, so it bounds the logits of the
    given numbers up to float64 rounding of the norms (relative 1e-15; a margin of 1e-12 is added).
    """
    with torch.no_grad():
        query_norm = torch.linalg.vector_norm(w.double().T @ a1.double(), dim=0).max()
        key_norm = torch.linalg.vector_norm(a2.double(), dim=0).max()
        return float(abs(scale) * query_norm * key_norm) * (1 + 1e-12)


def _exact_logit_max(a1: torch.Tensor, a2: torch.Tensor, w: torch.Tensor, scale: float) -> float:
    """max |scale A1^T W A2| by chunked matmuls (O(L^2 d)), rounded up; used only to verify a radius tighter than logit_radius.

    The float64 products (A1^T W) A2 err by at most gamma_{2d+1} (|A1|^T |W|) |A2| entry-wise (Higham
    Thm 3.5), bounded by Cauchy-Schwarz on the absolute values; that margin is added.
    """
    with torch.no_grad():
        queries, keys, length = a1.double().T @ w.double(), a2.double(), a1.shape[1]
        chunk = max(1, (1 << 22) // max(length, 1))
        best = max(float((scale * (queries[s:s + chunk] @ keys)).abs().max()) for s in range(0, length, chunk))
        absolute = torch.linalg.vector_norm(a1.double().abs().T @ w.double().abs(), dim=-1).max() \
            * torch.linalg.vector_norm(keys, dim=0).max()
        d = a1.shape[0]
        margin = abs(scale) * float(absolute) * gamma(2 * d + 1, FLOAT64)
        return best + 2 * margin


def _resolve_radius(a1: torch.Tensor, a2: torch.Tensor, w: torch.Tensor, scale: float, radius: float | None) -> float:
    bound = logit_radius(a1, a2, w, scale=scale)
    if radius is None:
        # the certificate grid of poly attention (guarded against log2 rounding), so certificates are shared
        return certified_radius(bound)
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise InvalidArgumentError("radius", "a positive finite logit range R >= max |scale A1^T W A2|", repr(radius))
    if radius < bound:
        actual = _exact_logit_max(a1, a2, w, scale)
        if actual > radius:
            raise InvalidArgumentError("radius", f"R >= max |scale A1^T W A2| = {actual:.6g} (AS1 needs every logit "
                                       "in [-R, R])", repr(radius))
    return float(radius)


def _approximation(radius: float, eps: float | None, degree: int | None, kind: str, scale: float) -> Any:
    """The certified polynomial P ~ exp on [-radius, radius] (ditcheck.fast_attention.polynomial)."""

    if scale == 0:
        raise InvalidArgumentError("scale", "a nonzero logit scale for the low-rank chain (at scale 0, dL0/dW = 0)",
                                   repr(scale))
    if (eps is None) == (degree is None):
        raise InvalidArgumentError("eps, degree", "exactly one of them", f"eps={eps!r}, degree={degree!r}")
    if eps is not None:
        if not (isinstance(eps, (int, float)) and 0 < eps < 1):
            raise InvalidArgumentError("eps", "a target relative error in (0, 1)", repr(eps))

        degree = minimal_degree(radius, eps)
    elif not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise InvalidArgumentError("degree", "a non-negative integer", repr(degree))
    approximation = exp_approximation(radius, degree, kind=kind)
    if not approximation.eps < 1:
        raise InvalidArgumentError("degree", f"a degree whose certified eps on [-{radius:.4g}, {radius:.4g}] is < 1 "
                                   "(else P may vanish and D~^-1 is undefined)",
                                   f"{degree} (certified eps {approximation.eps:.3g})")
    return approximation


@dataclass(frozen=True)
class LowRankFactors:
    """The factors of the LD8 chain: f~ = u v^T (rows of u already divided by D~), c~, h, r~ (for checks; O(L k))."""

    u: torch.Tensor  # [L, k1] = D~^-1 U1
    v: torch.Tensor  # [L, k1] = V1
    c: torch.Tensor  # [L, d] = f~ h - Y
    h: torch.Tensor  # [L, d] = A3^T W_OV^T
    r: torch.Tensor  # [L] = <f~_i, q~_i>

    def dense_f(self) -> torch.Tensor:
        """f~ as an L x L matrix (small L only: for checks)."""
        return self.u @ self.v.T


@dataclass(frozen=True)
class LowRankGradient:
    """Result of the LD8 chain: dL0/dW~, the ranks k1..k4, the polynomial's certified eps and the LD8 bound."""

    gradient: torch.Tensor
    loss: torch.Tensor  # 1/2 ||f~ h - Y||_F^2, the loss the chain's c~ belongs to
    ranks: tuple[int, int, int, int]
    degree: int
    radius: float
    eps: float
    bound: Any  # ditcheck.bounds.LowRankGradientBound; bound.gradient_error is the entry-wise bound
    factors: LowRankFactors
    timings: dict[str, float] = field(default_factory=dict)


def _chain(a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor, w: torch.Tensor, w_ov: torch.Tensor,
           y: torch.Tensor, scale: float, approximation: Any, timed: bool) -> tuple[LowRankFactors, dict[str, float]]:
    """Features and the O(L k d) vectors of the chain: u = D~^-1 U1, v = V1, c~, h, r~."""

    clock = time.perf_counter()
    # polynomial_features takes scale > 0: the sign of the logit scale goes into the queries.
    queries = (a1.T @ w) if scale > 0 else -(a1.T @ w)
    u1 = polynomial_features(queries.contiguous(), approximation, abs(scale), side="query")
    v1 = polynomial_features(a2.T.contiguous(), approximation, abs(scale), side="key")
    timings = {"features": time.perf_counter() - clock} if timed else {}
    h = a3.T @ w_ov.T
    normaliser = u1 @ v1.sum(0)
    u = u1 / normaliser[:, None]
    fh = u @ (v1.T @ h)
    c = fh - y
    r = (c * fh).sum(-1)
    return LowRankFactors(u, v1, c, h, r), timings


def _gradient_terms(a1: torch.Tensor, a2: torch.Tensor, factors: LowRankFactors
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A1 P, A2 Q (as [d, d, k1]: index [row, column of c~ or h, feature]), A1 diag(r~) u and A2 v."""
    d, length = a1.shape
    k1 = factors.u.shape[-1]
    # (A1 P)[m, l, a] = sum_i A1_mi c~_il u_ia: one GEMM of the d^2 x L matrix (A1_mi c~_il) with u.
    a1p = ((a1[:, None, :] * factors.c.T[None]).reshape(d * d, length) @ factors.u).reshape(d, d, k1)
    a2q = ((a2[:, None, :] * factors.h.T[None]).reshape(d * d, length) @ factors.v).reshape(d, d, k1)
    a1ru = a1 @ (factors.u * factors.r[:, None])
    a2v = a2 @ factors.v
    return a1p, a2q, a1ru, a2v


def attention_weight_gradient_lowrank(a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor, w: torch.Tensor,
                                      w_ov: torch.Tensor, y: torch.Tensor, *, scale: float = 1.0,
                                      eps: float | None = None, degree: int | None = None,
                                      radius: float | None = None, kind: str = "chebyshev",
                                      timed: bool = False) -> LowRankGradient:
    """LD8 (Alman & Song 2024; Hu et al. 2024, sec. 5): dL0/dW through rank-k1..k4 factors in O(L k d) time.

    Give exactly one of ``eps`` (target: the minimal degree reaching it is used) or
    ``degree``. ``radius`` is a bound R >= max |scale A1^T W A2|; by default the
    Cauchy-Schwarz bound ``logit_radius`` (O(L d^2)) rounded up to the grid 2^(k/16) (so
    certificates are reused across calls); a given radius below that bound is verified
    (O(L^2 d)) and rejected with InvalidArgumentError if a logit exceeds it. The returned
    ``bound.gradient_error`` bounds every entry of ``gradient - dL0/dW`` (exact arithmetic).
    """
    d, length = _check_inputs(a1, a2, a3, w, w_ov, y, scale)

    start = time.perf_counter()
    radius = _resolve_radius(a1, a2, w, scale, radius)
    approximation = _approximation(radius, eps, degree, kind, scale)
    setup = time.perf_counter()
    with torch.no_grad():  # a gradient, not a node of a graph: use the autograd Function for that
        factors, timings = _chain(a1, a2, a3, w, w_ov, y, scale, approximation, timed)
        chain = time.perf_counter()
        a1p, a2q, a1ru, a2v = _gradient_terms(a1, a2, factors)
        gradient = scale * (a1p.reshape(d, -1) @ a2q.reshape(d, -1).T - a1ru @ a2v.T)
    end = time.perf_counter()
    k1 = feature_rank(d, approximation.degree)
    if factors.u.shape[-1] != k1:
        raise RuntimeError(f"polynomial_features returned {factors.u.shape[-1]} features, expected C(d+g, g) = {k1}")
    bound = low_rank_gradient_bound(
        eps=approximation.eps, radius=radius, tokens=length, dim=d, scale=scale,
        a1_max=float(a1.abs().max()), a2_max=float(a2.abs().max()),
        h_max=float(factors.h.abs().max()), y_max=float(y.abs().max()))
    if timed:
        timings = {"setup": setup - start, **timings, "chain_vectors": chain - setup - timings["features"],
                   "khatri_rao": end - chain, "total": end - start}
    return LowRankGradient(gradient=gradient, loss=0.5 * (factors.c ** 2).sum(), ranks=(k1, d, k1 * d, k1),
                           degree=approximation.degree, radius=radius, eps=float(approximation.eps), bound=bound,
                           factors=factors, timings=timings)


class LowRankAttentionWeightLoss(torch.autograd.Function):
    """LD8 as an autograd Function: forward 1/2 ||f~ h - Y||_F^2, backward the low-rank gradients of L0.

    ``apply(a1, a2, a3, w, w_ov, y, scale, approximation)``. The backward is the chain's
    approximation of the *exact* loss's gradients (p~ in place of p), for every input that
    requires grad: dW = s A1 p~ A2^T, dA1 = s W A2 p~^T, dA2 = s W^T A1 p~,
    dA3 = W_OV^T c~^T f~, dW_OV = c~^T f~ A3^T, dY = -c~, all in O(L k d).
    """

    @staticmethod
    def forward(ctx: Any, a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor, w: torch.Tensor,
                w_ov: torch.Tensor, y: torch.Tensor, scale: float, approximation: Any) -> torch.Tensor:
        factors, _ = _chain(a1, a2, a3, w, w_ov, y, scale, approximation, False)
        ctx.save_for_backward(a1, a2, a3, w, w_ov, factors.u, factors.v, factors.c, factors.h, factors.r)
        ctx.scale = scale
        return 0.5 * (factors.c ** 2).sum()

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a1, a2, a3, w, w_ov, u, v, c, h, r = ctx.saved_tensors
        factors = LowRankFactors(u, v, c, h, r)
        scale = ctx.scale
        need = ctx.needs_input_grad
        grads: list[torch.Tensor | None] = [None] * 8
        if any(need[:4]):
            a1p, a2q, a1ru, a2v = _gradient_terms(a1, a2, factors)
            d = a1.shape[0]
            if need[3]:
                grads[3] = scale * (a1p.reshape(d, -1) @ a2q.reshape(d, -1).T - a1ru @ a2v.T)
            if need[0]:
                # A2 p~^T = (A2 Q) P^T - (A2 V1)(diag(r~) u)^T; (A2 Q) P^T [n, i] = sum_l c~_il (A2 Q)[n, l, :] . u_i
                a2_pt = torch.einsum("nla,ia,il->ni", a2q, u, c) - a2v @ (u * r[:, None]).T
                grads[0] = scale * (w @ a2_pt)
            if need[1]:
                a1_p = torch.einsum("mla,ja,jl->mj", a1p, v, h) - a1ru @ v.T
                grads[1] = scale * (w.T @ a1_p)
        if need[2] or need[4]:
            ct_f = (c.T @ u) @ v.T  # c~^T f~, [d, L]
            if need[2]:
                grads[2] = w_ov.T @ ct_f
            if need[4]:
                grads[4] = ct_f @ a3.T
        if need[5]:
            grads[5] = -c
        return tuple(None if g is None else g * grad_loss for g in grads)


def attention_weight_loss_lowrank(a1: torch.Tensor, a2: torch.Tensor, a3: torch.Tensor, w: torch.Tensor,
                                  w_ov: torch.Tensor, y: torch.Tensor, *, scale: float = 1.0,
                                  eps: float | None = None, degree: int | None = None, radius: float | None = None,
                                  kind: str = "chebyshev") -> torch.Tensor:
    """LD8 loss node: value 1/2 ||f~ h - Y||_F^2, and ``loss.backward()`` gives the O(L k d) low-rank gradients.

    Arguments as ``attention_weight_gradient_lowrank``; see LowRankAttentionWeightLoss.
    """
    _check_inputs(a1, a2, a3, w, w_ov, y, scale)
    approximation = _approximation(_resolve_radius(a1, a2, w, scale, radius), eps, degree, kind, scale)
    return LowRankAttentionWeightLoss.apply(a1, a2, a3, w, w_ov, y, scale, approximation)
