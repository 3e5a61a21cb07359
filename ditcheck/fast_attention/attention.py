"""Attention backends behind one function: exact (SDPA), poly (certified Alman-Song), rf (FAVOR+), auto.

Layout [B, H, L, D]. ``attention(q, k, v, backend=...)`` returns an :class:`AttentionResult`
with the output and what the backend certifies:

* ``exact``: ``torch.nn.functional.scaled_dot_product_attention`` with an explicit scale.
* ``poly``: exp(scale q.k) is replaced by a polynomial P of the smallest degree g whose
  certified relative error on [-R, R] is <= eps (AS1, AS3), factored through the
  C(D + g, g) symmetric monomial features of ``ditcheck.fast_attention.polynomial`` (AS4). Keys are
  contracted first, phi(K)^T [V, 1] (r x (Dv + 1)), then each query chunk is multiplied
  by it, so time is O(L r Dv) and memory O(L r) with autograd, O(chunk r) without.
  The result carries the certified entry-wise ``eps`` and the AS2 output ``bound``
  eps/(1 - eps) ||V||_inf (exact arithmetic), and the derived floating-point ``rounding`` bound.
* ``rf``: FAVOR+ positive random features (``ditcheck.fast_attention.random_features.favor_attention``).
* ``auto``: ``poly`` when its predicted cost at this L is below exact's, else ``exact``.

The radius R. Measuring max |scale q.k| exactly costs O(L^2 D), as much as exact attention,
so by default R is the Cauchy-Schwarz bound |scale| max_i ||q_i|| max_j ||k_j|| (one pass over
q and k; it is attained when a query is parallel to a key). A caller who knows a tighter R
passes ``radius=``; with ``check_radius=True`` (default) it is accepted if the Cauchy-Schwarz
bound is below it, else verified by the exact O(L^2) maximum (chunked), and refused if
exceeded. The certificate is computed for R rounded up to the grid 2^(k/16) (a polynomial
certified on a larger interval is certified on the smaller one), so certificates are cached
and reused across calls whose R differs a little.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ditcheck.bounds import (UnreachableAccuracyError, format_of, as2_output_bound, feature_rank, minimal_degree,
                             poly_attention_rounding_bound, require_eps)
from ditcheck.fast_attention.polynomial import (L2_CACHE_BYTES, ExpApproximation, MonomialLayout, MonomialWriter,
                                                exp_approximation, feature_weights, monomial_layout, monomials)
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, NonFiniteError, ShapeError
from ditcheck.reference.formats import FLOAT64
from ditcheck.reference.precision import require_real

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_RANK",
    "AttentionResult",
    "attention",
    "poly_attention",
    "certified_radius",
    "logit_radius_bound",
    "exact_logit_radius",
    "predicted_cost",
]

Backend = Literal["exact", "poly", "rf", "auto"]
BACKENDS: tuple[Backend, ...] = ("exact", "poly", "rf", "auto")
#: Largest feature rank the poly backend accepts by default (a sane rank: r x chunk features stay in cache).
DEFAULT_MAX_RANK = 1 << 15
#: Cost of one exp per logit in the exact backend, counted in flops: a stated constant of the cost model
#: (predicted_cost; used by ``auto``, ``ditcheck criteria`` and the bench's crossover map), not a fit.
EXP_FLOPS = 10.0
_RADIUS_GRID = 16  # grid points per octave for certified radii


@dataclass(frozen=True)
class AttentionResult:
    """Output [B, H, Lq, Dv] and what the backend used and certifies (None where it does not apply).

    poly: ``radius`` the R used (measured or given), ``degree`` g, ``rank`` C(D+g, g), ``eps`` the
    certified entry-wise relative error of A~ (AS1), ``bound`` the AS2 bound eps/(1-eps)||V||_inf,
    ``rounding`` the derived floating-point bound, ``approximation`` the polynomial.
    rf: ``error_estimate`` as returned by ``favor_attention``.
    """

    output: torch.Tensor
    backend: str
    radius: float | None = None
    degree: int | None = None
    rank: int | None = None
    eps: float | None = None
    bound: float | None = None
    rounding: float | None = None
    approximation: ExpApproximation | None = None
    error_estimate: Any = None


def _check_inputs(q: Any, k: Any, v: Any) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(name, "a torch.Tensor [B, H, L, D]", type(x).__name__)
        if x.ndim != 4:
            raise ShapeError(name, "a 4-D tensor [B, H, L, D]", f"shape {tuple(x.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ShapeError("k", f"the same batch and head sizes as q {tuple(q.shape[:2])} and v",
                         f"k {tuple(k.shape[:2])}, v {tuple(v.shape[:2])}")
    if k.shape[-1] != q.shape[-1]:
        raise ShapeError("k", f"head dim {q.shape[-1]} (that of q)", str(k.shape[-1]))
    if v.shape[-2] != k.shape[-2]:
        raise ShapeError("v", f"{k.shape[-2]} tokens (those of k)", str(v.shape[-2]))
    if min(q.shape[-2], k.shape[-2], q.shape[-1]) < 1:
        raise ShapeError("q", "at least one query, one key and head dim >= 1", f"q {tuple(q.shape)}, k {tuple(k.shape)}")
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise DTypeError("k", f"the dtype of q ({q.dtype}) for k and v", f"k {k.dtype}, v {v.dtype}")
    if q.device != k.device or k.device != v.device:
        raise InvalidArgumentError("k", f"the device of q ({q.device}) for k and v", f"k {k.device}, v {v.device}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not _all_finite(x):
            raise NonFiniteError(name, "finite entries", "NaN or Inf")


def _all_finite(x: torch.Tensor) -> bool:
    # min and max propagate NaN and are +-Inf if any entry is: one pass with no L x D boolean temporary
    # (torch.isfinite(x).all() took 4 ms per input at L = 32768, H = 4, D = 8: a tenth of poly's time)
    if x.numel() == 0 or not x.is_floating_point():
        return x.numel() == 0 or not x.is_complex() or bool(torch.isfinite(x).all())
    low, high = torch.aminmax(x.detach())
    return math.isfinite(float(low)) and math.isfinite(float(high))


def _check_scale(scale: Any, dim: int) -> float:
    return 1.0 / math.sqrt(dim) if scale is None else require_real(scale, "scale", low=0.0, low_inclusive=False)


def logit_radius_bound(q: torch.Tensor, k: torch.Tensor, scale: float) -> float:
    """Cauchy-Schwarz bound scale * max_i ||q_i|| * max_j ||k_j|| >= max |scale q_i.k_j| over all heads (O(L D))."""
    with torch.no_grad():
        qmax = float(torch.linalg.vector_norm(q.double(), dim=-1).max())
        kmax = float(torch.linalg.vector_norm(k.double(), dim=-1).max())
    # float64 norms of float32/64 inputs are within a few ulps; one ulp-scale margin keeps it an upper bound
    return scale * qmax * kmax * (1 + 8 * FLOAT64.unit_roundoff * (q.shape[-1] + 2))


def exact_logit_radius(q: torch.Tensor, k: torch.Tensor, scale: float, chunk_size: int = 1024) -> float:
    """max |scale q_i.k_j| over all heads, in float64, chunked over queries (O(L^2 D) time, O(chunk L) memory), rounded up.

    A float64 dot product errs by at most gamma_D sum_d |q_d k_d| <= gamma_D ||q|| ||k|| (Higham
    Thm 3.1 and Cauchy-Schwarz), which may exceed any relative margin of the maximum when the
    logits cancel: that absolute margin is added (and the final products' rounding, relatively).
    """
    with torch.no_grad():
        kd = k.double()
        best = 0.0
        for start in range(0, q.shape[-2], chunk_size):
            logits = q[..., start:start + chunk_size, :].double() @ kd.mT
            best = max(best, float(logits.abs().max()))
        norms = float(torch.linalg.vector_norm(q.double(), dim=-1).max() * torch.linalg.vector_norm(kd, dim=-1).max())
    dim = q.shape[-1]
    return scale * (best + 2 * (dim + 2) * FLOAT64.unit_roundoff * norms) * (1 + 4 * FLOAT64.unit_roundoff)


def certified_radius(radius: float) -> float:
    """R rounded up to the grid 2^(k/16) (k integer) on which certificates are computed and cached."""
    if radius <= 2.0**-30:
        return 2.0**-30
    exponent = math.ceil(math.log2(radius) * _RADIUS_GRID)
    grid = 2.0 ** (exponent / _RADIUS_GRID)
    while grid < radius:  # guard against log2 rounding
        exponent += 1
        grid = 2.0 ** (exponent / _RADIUS_GRID)
    return grid


def predicted_cost(backend: str, query_length: int, key_length: int, dim: int, value_dim: int,
                   rank: int | None = None) -> float:
    """The one flop model of the package, per head: exact Lq Lk (2 D + 2 Dv + EXP_FLOPS); poly (Lq + Lk) r + 2 (Lq + Lk) r (Dv + 1).

    exact: Q K^T and A V at 2 flops per multiply-add plus one exp per logit; poly: one product per
    feature and token, then K'^T [V, 1] and Q' (K'^T [V, 1]) (the extra column is the normaliser).
    The certificate (cached per R, g) is not counted.
    """
    if backend == "exact":
        return query_length * key_length * (2 * dim + 2 * value_dim + EXP_FLOPS)
    if backend == "poly":
        if rank is None:
            raise InvalidArgumentError("rank", "the feature rank for the poly cost", "None")
        return (query_length + key_length) * rank * (1 + 2 * (value_dim + 1))
    raise InvalidArgumentError("backend", "'exact' or 'poly'", repr(backend))


def _chunks(length: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering range(length) in pieces of ``size``."""
    return [(start, min(start + size, length)) for start in range(0, length, size)]


_L2_BYTES = L2_CACHE_BYTES  # one head's (recording) or one pass's (no autograd) feature chunk is sized to it


def _default_chunk(rank: int, itemsize: int) -> int:
    # one head's r x chunk features fill the L2 cache: the two skinny GEMMs then read them from L2 (measured best at
    # r = 495 on the 2-core EPYC: chunk 512 = 1 MiB per head, 10% faster than 1024 and 2048, 15% faster than 256)
    size = _L2_BYTES // max(1, rank * itemsize)
    return int(min(4096, max(16, 1 << max(0, size.bit_length() - 1))))


def _folded_first(layout: MonomialLayout, width: int) -> int:
    """First variable of the suffix first..D - 1 whose degree-g blocks are contracted without being written (D: none).

    The degree-g block of v is x_v times the first count_v degree-(g - 1) monomials, so
    [V, 1]^T phi_block(K) = ([V, 1]^T diag(k_v)) phi_(g-1)(K)[:count_v] and the query side contracts
    phi_(g-1)(Q)[:count_v] and multiplies the partial sum by x_v: the same products and sums per term,
    but width (= Dv + 1) products per token on each side instead of count_v written features. Blocks with
    count_v >= 3 width are folded (smaller ones cost more in extra GEMM calls than their writing; D = 8,
    g = 4, Dv = 8: the blocks of v = 4..7, 35 + 56 + 84 + 120 features, and 200 of 495 are written).
    """
    if layout.degree < 1:
        return layout.dim
    counts = layout.prefix[layout.degree - 1]
    first = layout.dim
    while first > 0 and counts[first - 1] >= 3 * width:
        first -= 1
    return first


def _fold_tiles(counts: tuple[int, ...], first: int, side: Literal["key", "query"]) -> list[tuple[int, int, int, int]]:
    """(first variable a, last variable e, first column, stop column) of the GEMMs contracting the folded blocks:
    rows [V, 1]^T diag(k_v) for v = a..e times the degree-(g - 1) monomials [first column, stop column).

    The folded block of v needs the degree-(g - 1) monomials [0, count_v): a staircase, as counts grow with v.
    Its rows are stacked so that one GEMM has many of them (MKL's float32 GEMM vectorises over the rows of
    its left factor: 9 rows ran at 45-50 GFLOP/s on the 2-core EPYC, 18 at ~70, 36 at 80-90, at 512 tokens x 4
    heads), and it is cut into rectangles so that no product is padded (the counted flops stay the useful
    ones). Queries (the monomials are GEMM's K): for each v, rows v..D - 1 times columns [count_(v-1), count_v).
    Keys (the monomials are GEMM's N, where few columns ran slowly): pairs of variables from the top,
    rows {v - 1, v} times [0, count_(v-1)) and row v times [count_(v-1), count_v). D = 8, g = 4, Dv = 8, one
    thread, per 512-token chunk of 4 heads: queries 180 us (one GEMM per block 250 us), keys 233 us (252 us).
    """
    dim = len(counts)
    if side == "query":
        return [(v, dim - 1, counts[v - 1] if v > first else 0, counts[v]) for v in range(first, dim)]
    tiles, v = [], dim - 1
    while v >= first:
        if v - 1 >= first:
            tiles += [(v - 1, v, 0, counts[v - 1]), (v, v, counts[v - 1], counts[v])]
            v -= 2
        else:
            tiles.append((v, v, 0, counts[v]))
            v -= 1
    return tiles


def _chunk_plan(heads: int, written: int, itemsize: int, chunk_size: int | None) -> tuple[int, int]:
    """(tokens per chunk, heads per pass) so that the written features of one chunk of all heads of a pass,
    heads x written x chunk, fill about two L2 caches (one head's, which its GEMMs read, well inside one).

    Every elementwise product covers all heads of the pass, so they, not one head's features, must stay close:
    measured at H = 4, 235 written features (D = 8, g = 4), one thread, the monomials are written at 5.5
    Gfeatures/s with 512-token chunks (1.9 MB) and 4.9 with 1024 (3.8 MB); below 256 tokens the ~25 dispatches
    per chunk dominate (3.2 Gfeatures/s at 128). With 200 written features (1 MiB L2, CPU time, one thread, load
    ~16) poly attention at L = 32768 took 77 ms with 512-token chunks (1.6 MB), 83 ms with 256 and 80 ms with
    1024 (minimum of 5). So chunks stay >= 256 tokens and large head counts are split into passes.
    """
    fit = max(1, 2 * _L2_BYTES // max(1, written * itemsize))  # token x head pairs per two L2 caches
    if chunk_size is not None:
        return chunk_size, max(1, min(heads, fit // chunk_size))
    group = heads if heads * 256 <= fit else max(1, fit // 512)
    return int(min(4096, max(16, 1 << max(0, (fit // group).bit_length() - 1)))), group


def _poly_contract_no_grad(q_t: torch.Tensor, k_t: torch.Tensor, values_t: torch.Tensor, weights: torch.Tensor,
                           layout: MonomialLayout, chunk_size: int | None) -> torch.Tensor:
    """[b, Dv, Lq] outputs from q_t [b, D, Lq], k_t [b, D, Lk], values_t = [V, 1]^T [b, Dv + 1, Lk] (no autograd).

    Keys: kv_t = [V, 1]^T phi(K) (Dv + 1 x r) chunk by chunk into contiguous accumulators
    (baddbmm_); queries: kv_t phi(Q) chunk by chunk, divided by its last row at the end. Only the
    features not folded (``_folded_first``) are written, into one cache-sized buffer reused by
    every chunk. Folding reorders the same products and sums: per term, as many roundings as
    unfolded (the product with k_v moves from the feature into [V, 1]^T, on the query side from
    the feature onto the partial sum of its block, which ``_fold_tiles`` splits into consecutive
    pieces), so ``poly_attention_rounding_bound`` covers both. Every per-chunk tensor is a workspace
    reused by all chunks of one length.
    """
    b, dim, q_len = q_t.shape
    k_len, width = k_t.shape[-1], values_t.shape[-2]
    first = _folded_first(layout, width)
    counts = layout.prefix[layout.degree - 1] if first < dim else ()
    written = layout.rank - sum(counts[first:])
    chunk_size, group = _chunk_plan(b, written, q_t.element_size(), chunk_size)
    if group < b:
        return torch.cat([_poly_contract_no_grad(q_t[start:start + group], k_t[start:start + group],
                                                 values_t[start:start + group], weights, layout, chunk_size)
                          for start in range(0, b, group)])
    top = layout.offsets[layout.degree - 1] if first < dim else 0  # first degree-(g - 1) monomial
    chunk_size = min(chunk_size, max(q_len, k_len))
    folded = dim - first
    key_tiles = _fold_tiles(counts, first, "key") if folded else []
    query_tiles = _fold_tiles(counts, first, "query") if folded else []
    buffer = q_t.new_empty((b, written, chunk_size))
    workspaces: dict[int, tuple[MonomialWriter, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def workspace(n: int) -> tuple[MonomialWriter, torch.Tensor, torch.Tensor, torch.Tensor]:
        # per chunk length (all chunks but the last have one): the writer's views, the rows [V, 1]^T diag(k_v)
        # of the folded variables (v first), a query chunk's sums and the folded blocks' partial sums
        # (contiguous: GEMMs and addcmul_ into column slices of [b, Dv + 1, Lq] ran slower)
        if n not in workspaces:
            workspaces[n] = (MonomialWriter(buffer[:, :, :n], dim, layout.degree),
                             q_t.new_empty((b, folded * width, n)), q_t.new_empty((b, width, n)),
                             q_t.new_empty((b, folded * width, n)))
        return workspaces[n]

    # contiguous accumulators: baddbmm_ into a column slice of one kv matrix runs head by head
    kv_written = q_t.new_zeros((b, width, written))
    kv_tiles = [q_t.new_zeros((b, (e - a + 1) * width, high - low)) for a, e, low, high in key_tiles]
    for start, stop in _chunks(k_len, chunk_size):
        x, values = k_t[:, :, start:stop], values_t[:, :, start:stop]
        n = x.shape[-1]
        writer, scaled, _, _ = workspace(n)
        features = writer(x)
        kv_written.baddbmm_(values, features.mT)
        if folded:
            torch.mul(values.unsqueeze(1), x[:, first:, None, :], out=scaled.view(b, folded, width, n))
            for accumulator, (a, e, low, high) in zip(kv_tiles, key_tiles):
                accumulator.baddbmm_(scaled[:, (a - first) * width:(e - first + 1) * width],
                                     features[:, top + low:top + high].mT)
    kv_written *= weights[:written]
    # the folded blocks as one [b, folded (Dv + 1), count_(D-1)] matrix, weighted, zero beyond each block's count
    kv_folded = q_t.new_zeros((b, folded * width, counts[-1] if folded else 0))
    for accumulator, (a, e, low, high) in zip(kv_tiles, key_tiles):
        kv_folded[:, (a - first) * width:(e - first + 1) * width, low:high] = accumulator
    if folded:
        block_weights = weights.new_zeros((folded, counts[-1]))
        position = written
        for v in range(first, dim):
            block_weights[v - first, :counts[v]] = weights[position:position + counts[v]]
            position += counts[v]
        kv_folded.view(b, folded, width, counts[-1]).mul_(block_weights[:, None, :])
    sums = q_t.new_empty((b, width, q_len))
    for start, stop in _chunks(q_len, chunk_size):
        x, target = q_t[:, :, start:stop], sums[:, :, start:stop]
        n = x.shape[-1]
        writer, _, o, partial = workspace(n)
        features = writer(x)
        torch.bmm(kv_written, features, out=o)
        if folded:
            for a, _, low, high in query_tiles:  # rows a..D - 1: the first tile has them all
                rows = (a - first) * width
                if a == first:
                    torch.bmm(kv_folded[:, :, low:high], features[:, top + low:top + high], out=partial)
                else:
                    partial[:, rows:].baddbmm_(kv_folded[:, rows:, low:high], features[:, top + low:top + high])
            products = partial.view(b, folded, width, n).mul_(x[:, first:, None, :])
            o.add_(products.sum(1))
        target.copy_(o)
    return sums[:, :-1] / sums[:, -1:]


def _balanced_factors(q_norm: float, k_norm: float, scale: float) -> tuple[float, float]:
    """(sqrt(scale) b, sqrt(scale) / b) with b = sqrt(max||k|| / max||q||) (1 if a norm is 0 or not finite)."""
    finite = 0 < q_norm < math.inf and 0 < k_norm < math.inf
    balance = math.sqrt(k_norm / q_norm) if finite else 1.0
    return math.sqrt(scale) * balance, math.sqrt(scale) / balance


def poly_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, approximation: ExpApproximation,
                   scale: float, chunk_size: int | None = None) -> torch.Tensor:
    """D~^-1 A~ V with A~ = P(scale Q K^T) through monomial features, chunked over L (AS1, AS4).

    Inputs are checked by :func:`attention`; here R of ``approximation`` is trusted. Monomials are
    unweighted; the weights c_j multinomial(alpha) multiply the r x (Dv + 1) matrix phi(K)^T [V, 1]
    instead of the L x r features. q and k are scaled by sqrt(scale) times sqrt(max||k||/max||q||)
    and its inverse, so both sides' monomials stay below R^(j/2) in magnitude (no float32 overflow).
    """
    batch, heads, q_len, dim = q.shape
    k_len, value_dim = k.shape[-2], v.shape[-1]
    b = batch * heads
    degree = approximation.degree
    layout = monomial_layout(dim, degree)
    rank = layout.rank
    recording = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if recording:
        with torch.no_grad():
            q_norm = float(torch.linalg.vector_norm(q, dim=-1).max())
            k_norm = float(torch.linalg.vector_norm(k, dim=-1).max())
        q_factor, k_factor = _balanced_factors(q_norm, k_norm, scale)
        q_t = (q.reshape(b, q_len, dim) * q_factor).mT
        k_t = (k.reshape(b, k_len, dim) * k_factor).mT
    else:  # tokens last and contiguous, scaled in place: one copy each (clone: contiguous() may return q itself)
        with torch.no_grad():
            q_t = q.reshape(b, q_len, dim).mT.clone(memory_format=torch.contiguous_format)
            k_t = k.reshape(b, k_len, dim).mT.clone(memory_format=torch.contiguous_format)
            # squares summed over the D rows of the copies: 0.2 ms per input at L = 32768, H = 4, D = 8, where
            # vector_norm over the D entries of each token (the original layout) took 0.7 ms
            q_norm = math.sqrt(float(q_t.square().sum(-2).max()))
            k_norm = math.sqrt(float(k_t.square().sum(-2).max()))
            q_factor, k_factor = _balanced_factors(q_norm, k_norm, scale)
            q_t.mul_(q_factor)
            k_t.mul_(k_factor)
    # [V, 1]^T (Dv + 1 rows, tokens last) is the left factor of K'^T [V, 1] computed transposed, ([V, 1]^T K'):
    # the skinny dimension Dv + 1 is then GEMM's M, which MKL runs as fast unpadded as padded to 16 (it was N
    # before, where 9 columns ran ~3x slower than 16 and the padding cost 16/9 of the flops)
    values_t = torch.cat([v.reshape(b, k_len, value_dim).mT, v.new_ones(b, 1, k_len)], dim=-2)
    weights = torch.as_tensor(feature_weights(layout, approximation), dtype=q.dtype, device=q.device)

    if recording:
        chunk_size = chunk_size or _default_chunk(rank, q.element_size())
        kv_t = sum(values_t[:, :, start:stop] @ monomials(k_t[:, :, start:stop], degree).mT
                   for start, stop in _chunks(k_len, chunk_size))
        kv_t = kv_t * weights
        pieces = []
        for start, stop in _chunks(q_len, chunk_size):
            o = kv_t @ monomials(q_t[:, :, start:stop], degree)
            pieces.append(o[:, :value_dim] / o[:, value_dim:value_dim + 1])
        out_t = torch.cat(pieces, dim=-1)
    else:
        with torch.no_grad():
            out_t = _poly_contract_no_grad(q_t, k_t, values_t, weights, layout, chunk_size)
    return out_t.mT.reshape(batch, heads, q_len, value_dim)


def _poly_plan(q: torch.Tensor, k: torch.Tensor, scale: float, eps: float, radius: float | None, kind: str,
               check_radius: bool, max_rank: int) -> tuple[float, float, ExpApproximation]:
    """(R used, Cauchy-Schwarz R, certified approximation) or a typed error saying why poly cannot run."""
    bound = logit_radius_bound(q, k, scale)
    if radius is None:
        used = bound
    else:
        used = require_real(radius, "radius", low=0.0)
        if check_radius and bound > used:
            measured = exact_logit_radius(q, k, scale)
            if measured > used:
                raise InvalidArgumentError("radius", f">= max |scale q.k| = {measured:.6g} (measured)", repr(used))
    grid = certified_radius(used)
    dim = q.shape[-1]
    try:
        degree = minimal_degree(grid, eps, kind=kind)
    except UnreachableAccuracyError as error:
        raise UnreachableAccuracyError(
            "eps", f"a relative error certifiable on [-R, R] with R = {used:.4g} (head dim D = {dim}): {error.expected}",
            repr(eps)) from None
    rank = feature_rank(dim, degree)
    if rank > max_rank:
        raise UnreachableAccuracyError(
            "eps", f"a rank <= max_rank = {max_rank}: R = {used:.4g} and D = {dim} need degree {degree}, "
            f"rank C({dim}+{degree}, {degree}) = {rank}", repr(eps))
    return used, bound, exp_approximation(grid, degree, kind)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: Backend = "exact",
              scale: float | None = None, eps: float = 1e-4, radius: float | None = None,
              kind: Literal["chebyshev", "minimax", "taylor"] = "chebyshev", num_features: int = 256, seed: int = 0,
              chunk_size: int | None = None, check_radius: bool = True,
              max_rank: int = DEFAULT_MAX_RANK) -> AttentionResult:
    """softmax(scale Q K^T) V by the chosen backend, [B, H, L, D] layout (AS1-AS5; Alman-Song 2023, Thm 1.4).

    ``eps``, ``radius``, ``kind``, ``check_radius`` and ``max_rank`` concern ``poly`` (and ``auto``);
    ``num_features`` and ``seed`` concern ``rf``; ``chunk_size`` is the token chunk of ``poly`` and ``rf``.
    bfloat16 is accepted by ``exact`` only.
    """
    if backend not in BACKENDS:
        raise InvalidArgumentError("backend", f"one of {BACKENDS}", repr(backend))
    _check_inputs(q, k, v)
    scale = _check_scale(scale, q.shape[-1])
    if q.dtype not in (torch.float32, torch.float64):
        if q.dtype == torch.bfloat16 and backend in ("exact", "auto"):
            backend = "exact"
        else:
            raise DTypeError("q", "float32 or float64 (bfloat16 only with backend='exact')", str(q.dtype))
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise InvalidArgumentError("chunk_size", "None or an integer >= 1", repr(chunk_size))
    if backend == "exact":
        return AttentionResult(F.scaled_dot_product_attention(q, k, v, scale=scale), "exact")
    if backend == "rf":
        favor_attention = importlib.import_module("ditcheck.fast_attention.random_features").favor_attention
        extra = {} if chunk_size is None else {"chunk_size": chunk_size}
        output, estimate = favor_attention(q, k, v, num_features=num_features, seed=seed, scale=scale, **extra)
        return AttentionResult(output, "rf", error_estimate=estimate)
    eps = require_eps(eps)
    if backend == "auto":
        try:
            plan = _poly_plan(q, k, scale, eps, radius, kind, check_radius, max_rank)
        except UnreachableAccuracyError:
            return AttentionResult(F.scaled_dot_product_attention(q, k, v, scale=scale), "exact")
        rank = feature_rank(q.shape[-1], plan[2].degree)
        costs = [predicted_cost(name, q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1], rank)
                 for name in ("exact", "poly")]
        if costs[1] >= costs[0]:
            return AttentionResult(F.scaled_dot_product_attention(q, k, v, scale=scale), "exact")
    else:
        plan = _poly_plan(q, k, scale, eps, radius, kind, check_radius, max_rank)
    used, bound, approximation = plan
    output = poly_attention(q, k, v, approximation, scale, chunk_size)
    v_inf = float(v.detach().abs().max())
    rank = feature_rank(q.shape[-1], approximation.degree)
    unit = format_of(q.dtype, "q").unit_roundoff
    rounding = poly_attention_rounding_bound(float(approximation.abs_polynomial(bound)), bound, approximation.eps,
                                             k.shape[-2], rank, approximation.degree, v_inf, unit)
    return AttentionResult(output, "poly", radius=used, degree=approximation.degree, rank=rank,
                           eps=approximation.eps, bound=as2_output_bound(approximation.eps, v_inf),
                           rounding=rounding, approximation=approximation)
