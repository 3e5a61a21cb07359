"""FAVOR+ attention: positive orthogonal random features (Choromanski et al., ICLR 2021, arXiv 2009.14794).

For w ~ N(0, I_D), E[exp(w.x - |x|^2/2) exp(w.y - |y|^2/2)] = exp(x.y) (Gaussian moment
generating function: E exp(w.(x+y)) = exp(|x+y|^2/2)). So with m features
phi(x) = m^-1/2 exp(W x - |x|^2/2), W in R^{m x D}, phi(x).phi(y) is an unbiased estimate of
exp(x.y) (PF1), and softmax attention becomes linear in L:

    out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / phi(q_i) (sum_j phi(k_j)^T),  q, k -> sqrt(scale) q, sqrt(scale) k.

The rows of W are drawn in blocks of D mutually orthogonal directions with chi_D-distributed
lengths (the "orthogonal random features" of the paper), which keeps each row N(0, I_D)
and lowers the variance. Its relative error decays like m^-1/2 while its variance grows
like exp(|q + k|^2): measure it as a function of the logit range (docs/claims.md#pf1).
"""

from __future__ import annotations

import math

import torch

from ditcheck.reference.errors import DTypeError, InvalidArgumentError, NonFiniteError, ShapeError
from ditcheck.reference.precision import require_real

__all__ = ["random_projection", "positive_random_features", "favor_attention"]


def _require_count(value: int, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(argument, "a positive integer", repr(value))
    return value


def random_projection(num_features: int, dim: int, *, seed: int, orthogonal: bool = True,
                      dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """W in R^{m x D}, rows N(0, I_D); orthogonal: blocks of D orthogonal rows (Choromanski et al. 2021, sec. 2.4).

    Drawn in float64 on the CPU from ``torch.Generator().manual_seed(seed)`` and then moved,
    so the same seed gives the same W on every device and in every dtype (up to rounding).
    """
    _require_count(num_features, "num_features")
    _require_count(dim, "dim")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError("seed", "an integer", repr(seed))
    generator = torch.Generator().manual_seed(seed)
    if not orthogonal:
        w = torch.randn(num_features, dim, generator=generator, dtype=torch.float64)
    else:
        gaussian = torch.randn(math.ceil(num_features / dim), dim, dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # sign fix makes each block Haar distributed; rows of q^T are the orthogonal directions
        blocks = (q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]).mT
        directions = blocks.reshape(-1, dim)[:num_features]
        lengths = torch.linalg.vector_norm(torch.randn(num_features, dim, generator=generator, dtype=torch.float64),
                                           dim=-1)
        w = directions * lengths[:, None]
    return w.to(dtype=dtype, device=device)


def positive_random_features(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """phi(x) = m^-1/2 exp(W x - |x|^2/2) [..., L, m] (Choromanski et al. 2021, Lemma 1): E phi(x).phi(y) = exp(x.y).

    ``projection`` is [..., m, D] (leading axes broadcast against x's). Unstabilised (can
    overflow for large |W x|): favor_attention subtracts maxima instead.
    """
    logits = x @ projection.mT - 0.5 * (x * x).sum(-1, keepdim=True)
    return torch.exp(logits) / math.sqrt(projection.shape[-2])


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim < 2:
            raise ShapeError(name, "a tensor [..., L, D]", type(t).__name__ if not isinstance(t, torch.Tensor)
                             else f"shape {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float64) or t.dtype != q.dtype or t.device != q.device:
            raise DTypeError(name, f"float32 or float64, the dtype and device of q ({q.dtype}, {q.device})",
                             f"{t.dtype} on {t.device}")
    if k.shape[-1] != q.shape[-1]:
        raise ShapeError("k", f"head dim equal to q's ({q.shape[-1]})", str(tuple(k.shape)))
    if v.shape[-2] != k.shape[-2]:
        raise ShapeError("v", f"as many tokens as k ({k.shape[-2]})", str(tuple(v.shape)))
    if k.shape[-2] < 1 or q.shape[-1] < 1:
        raise ShapeError("k", "at least one key and head dim >= 1 (else the softmax is 0/0)", str(tuple(k.shape)))
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(name, "finite entries", "NaN or Inf")


def favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, num_features: int, seed: int,
                    scale: float | None = None, orthogonal: bool = True,
                    chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FAVOR+ softmax(scale q k^T) v in O(L m D) time and memory (Choromanski et al. 2021, sec. 2, positive features).

    Layout [..., L, D] (e.g. [B, H, L, D]); ``scale`` defaults to 1/sqrt(D) and is split as
    sqrt(scale) on q and on k. Returns ``(output, error_estimate)``; the output is differentiable.

    Stabilisation (exact): with a_is, b_js the feature logits of query i and key j, FAVOR+ is
    out_i = sum_s pi_is vbar_s, pi_is = softmax_s(a_is + beta_s), beta_s = logsumexp_j b_js,
    vbar_s = sum_j softmax_j(b_js) v_j: the same number as the plain formula (the shifts cancel
    in the ratio), but computed from two softmaxes, so nothing overflows and no row becomes
    0/0 even when the logits exceed the dtype's exp range; terms below the largest by more
    than that range (e^-87 in float32) are dropped as they would be in any softmax.

    ``error_estimate`` (same shape, detached) is the delta-method standard error of each
    output entry from the spread of the m per-feature estimates (N_s, D_s) of numerator and
    denominator: se_i = sqrt(sum_s (N_s - out_i D_s)^2 / (m (m - 1))) / mean_s D_s
    = sqrt(m/(m - 1) sum_s pi_is^2 (vbar_s - out_i)^2). It estimates the standard deviation
    of out_i over draws of *iid* features (m = 1: inf). Measured calibration (D = 8, L = 64,
    m = 256, RMS actual / RMS estimate): about 0.95 at R = 0.5, 1.2 at R = 2, 2.0 at R = 6,
    where heavy-tailed feature products make the estimate optimistic.
    """
    _check_qkv(q, k, v)
    _require_count(num_features, "num_features")
    dim = q.shape[-1]
    # split as sqrt(scale) on q and k, so it must be > 0
    scale = 1.0 / math.sqrt(dim) if scale is None else require_real(scale, "scale", low=0.0, low_inclusive=False)
    m = num_features
    projection = random_projection(m, dim, seed=seed, orthogonal=orthogonal, dtype=q.dtype, device=q.device)
    root = math.sqrt(scale)
    qs, ks = q * root, k * root

    key_logits = ks @ projection.mT - 0.5 * (ks * ks).sum(-1, keepdim=True)  # [..., Lk, m]
    beta = torch.logsumexp(key_logits, dim=-2)  # [..., m]
    vbar = torch.softmax(key_logits, dim=-2).mT @ v  # [..., m, Dv]

    length = q.shape[-2]
    chunk = max(1, (1 << 22) // m) if chunk_size is None else _require_count(chunk_size, "chunk_size")
    outputs, estimates = [], []
    for start in range(0, length, chunk):
        qc = qs[..., start:start + chunk, :]
        query_logits = qc @ projection.mT - 0.5 * (qc * qc).sum(-1, keepdim=True)
        pi = torch.softmax(query_logits + beta[..., None, :], dim=-1)  # [..., c, m]
        out = pi @ vbar
        outputs.append(out)
        with torch.no_grad():
            # sum_s pi_s^2 (vbar_s - out)^2, expanded into matmuls (no [c, m, Dv] tensor)
            p2, o = pi * pi, out.detach()
            spread = p2 @ (vbar * vbar) - 2 * o * (p2 @ vbar) + o * o * p2.sum(-1, keepdim=True)
            estimates.append((spread.clamp_min(0) * (m / (m - 1))).sqrt() if m > 1
                             else torch.full_like(o, math.inf))
    if not outputs:  # no queries
        empty = q.new_empty(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]) + (0, v.shape[-1]))
        return empty, empty
    return torch.cat(outputs, dim=-2), torch.cat(estimates, dim=-2)
