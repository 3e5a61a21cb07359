"""Certified polynomial approximations of exp and their symmetric monomial features (Alman-Song).

The polynomial method replaces exp(s) by a polynomial P(s) = sum_j c_j s^j on [-R, R]
(AS1). This module builds P (a Chebyshev interpolant, or Taylor as the baseline),
certifies sup_{|s| <= R} |P(s) e^-s - 1| rigorously with python-flint's arb balls for the
float64 coefficients actually used, and factors P(scale q.k) through symmetric monomial
features of degree <= g (rank C(D + g, g), AS4), so that
``polynomial_features(q, ..., side="query") @ polynomial_features(k, ..., side="key").mT``
equals P(scale q k^T) to rounding.

Monomial order. Degree-j monomials are grouped by their largest variable v, and inside
each group they are the degree-(j-1) monomials whose largest variable is <= v, in their
own order. Those form a *prefix* of the degree-(j-1) list, so the block of degree-j
features for variable v is one broadcast product ``previous[:count] * x_v`` of
contiguous slices: the whole feature map is g * D vectorised multiplications, with no
gathers and no Python loop over features.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import flint
import mpmath
import numpy as np
import torch

from ditcheck.reference.errors import DTypeError, InvalidArgumentError, ShapeError
from ditcheck.reference.precision import require_real

__all__ = [
    "require_radius",
    "require_kind",
    "monomial_coefficients",
    "KINDS",
    "MAX_DEGREE",
    "ExpApproximation",
    "exp_approximation",
    "certified_relative_error",
    "Certificate",
    "certify_relative_error",
    "sampled_relative_error",
    "MonomialLayout",
    "monomial_layout",
    "monomials",
    "MonomialWriter",
    "L2_CACHE_BYTES",
    "feature_weights",
    "polynomial_features",
]

Kind = Literal["chebyshev", "minimax", "taylor"]
KINDS: tuple[Kind, ...] = ("chebyshev", "minimax", "taylor")
#: Degrees above this are refused: the monomial basis in float64 cannot certify more anyway.
MAX_DEGREE = 64
_CERTIFY_BITS = 128


@dataclass(frozen=True)
class ExpApproximation:
    """P(s) = sum_j coefficients[j] s^j ~ e^s on [-radius, radius], with a certified relative error.

    ``eps`` is a rigorous upper bound of sup_{|s| <= radius} |P(s) e^-s - 1| for exactly these
    float64 ``coefficients`` (exact arithmetic; rounding while evaluating P is not included).
    """

    radius: float
    degree: int
    kind: Kind
    coefficients: tuple[float, ...]
    eps: float

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """P(s) in float64 by Horner's rule."""
        s = np.asarray(s, dtype=np.float64)
        result = np.zeros_like(s)
        for c in reversed(self.coefficients):
            result = result * s + c
        return result

    def abs_polynomial(self, t: np.ndarray | float) -> np.ndarray:
        """sum_j |c_j| t^j for t >= 0: the scale of P's terms, used by rounding bounds."""
        t = np.asarray(t, dtype=np.float64)
        result = np.zeros_like(t)
        for c in reversed(self.coefficients):
            result = result * t + abs(c)
        return result


def require_radius(radius: float) -> float:
    """``radius`` as a float after checking it is real, finite and > 0 (InvalidArgumentError naming ``radius``)."""
    return require_real(radius, "radius", low=0.0, low_inclusive=False)


def _require_degree(degree: int) -> int:
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)):
        raise InvalidArgumentError("degree", "an integer", type(degree).__name__)
    if not 0 <= int(degree) <= MAX_DEGREE:
        raise InvalidArgumentError("degree", f"an integer in [0, {MAX_DEGREE}]", repr(degree))
    return int(degree)


def require_kind(kind: str) -> Kind:
    """``kind`` after checking it is one of :data:`KINDS` (InvalidArgumentError naming ``kind``)."""
    if kind not in KINDS:
        raise InvalidArgumentError("kind", f"one of {KINDS}", repr(kind))
    return kind  # type: ignore[return-value]


def monomial_coefficients(radius: float, degree: int, kind: Kind) -> tuple[float, ...]:
    """Float64 monomial coefficients of the Chebyshev interpolant (first-kind nodes) or Taylor polynomial of e^s."""
    with mpmath.workdps(40 + 2 * degree):
        if kind == "taylor":
            exact = [1 / mpmath.factorial(j) for j in range(degree + 1)]
        elif kind == "minimax":
            exact = _remez_relative(radius, degree)
        else:
            n = degree + 1
            nodes = [mpmath.cos(mpmath.pi * (i + mpmath.mpf(1) / 2) / n) for i in range(n)]
            values = [mpmath.exp(radius * x) for x in nodes]
            # Chebyshev coefficients a_k of the interpolant in t = s / R (discrete orthogonality)
            a = [mpmath.mpf(0)] * n
            for f, x in zip(values, nodes):  # T_k(x) by the three-term recurrence
                t_prev, t_cur = mpmath.mpf(1), x
                for kk in range(n):
                    a[kk] += f * t_prev
                    t_prev, t_cur = t_cur, 2 * x * t_cur - t_prev
            a = [2 * ak / n for ak in a]
            a[0] /= 2
            # T_k(t) in monomials of t: T_0 = 1, T_1 = t, T_{k+1} = 2 t T_k - T_{k-1}
            t_prev, t_cur = [1], [0, 1]
            basis = [t_prev, t_cur][:n]
            for _ in range(2, n):
                t_next = [0] + [2 * c for c in t_cur]
                for i, c in enumerate(t_prev):
                    t_next[i] -= c
                t_prev, t_cur = t_cur, t_next
                basis.append(t_cur)
            in_t = [mpmath.mpf(0)] * n
            for ak, tk in zip(a, basis):
                for j, c in enumerate(tk):
                    in_t[j] += ak * c
            exact = [c / mpmath.mpf(radius) ** j for j, c in enumerate(in_t)]
        return tuple(float(c) for c in exact)


def _remez_relative(radius: float, degree: int, iterations: int = 30) -> list[mpmath.mpf]:
    """Monomial coefficients of the degree-g polynomial minimising sup |P(s) e^-s - 1| on [-R, R] (Remez exchange).

    Works in t = s / R. Each step solves P(t_i) - (-1)^i E e^{R t_i} = e^{R t_i} on g + 2
    reference points, then moves them to the extrema of the relative error found on a dense
    grid, until the extrema agree with |E| to 1e-6. Runs in the caller's mpmath precision; the
    result is certified afterwards like any other polynomial, so a poor exchange only costs
    accuracy, never rigour.
    """
    n = degree + 2
    reference = [-mpmath.cos(mpmath.pi * i / (n - 1)) for i in range(n)]
    grid = [-mpmath.cos(mpmath.pi * i / (60 * n)) for i in range(60 * n + 1)]
    coefficients = [mpmath.mpf(0)] * (degree + 1)
    for _ in range(iterations):
        matrix = mpmath.matrix(n, n)
        rhs = mpmath.matrix(n, 1)
        for i, t in enumerate(reference):
            for j in range(degree + 1):
                matrix[i, j] = t**j
            e = mpmath.exp(radius * t)
            matrix[i, degree + 1] = -(-1) ** i * e
            rhs[i] = e
        solution = mpmath.lu_solve(matrix, rhs)
        coefficients = [solution[j] for j in range(degree + 1)]
        level = abs(solution[degree + 1])

        def error(t: mpmath.mpf) -> mpmath.mpf:
            return mpmath.polyval(coefficients[::-1], t) * mpmath.exp(-radius * t) - 1

        values = [error(t) for t in grid]
        # one extremum per run of constant sign, then keep g + 2 alternating ones around the largest
        extrema: list[tuple[mpmath.mpf, mpmath.mpf]] = []
        for t, r in zip(grid, values):
            if extrema and mpmath.sign(r) == mpmath.sign(extrema[-1][1]):
                if abs(r) > abs(extrema[-1][1]):
                    extrema[-1] = (t, r)
            else:
                extrema.append((t, r))
        while len(extrema) > n:  # drop the smaller end
            extrema.pop(0 if abs(extrema[0][1]) < abs(extrema[-1][1]) else -1)
        if len(extrema) < n:
            break
        reference = [t for t, _ in extrema]
        largest = max(abs(r) for r in values)
        if largest <= level * (1 + mpmath.mpf("1e-6")):
            break
    return [c / mpmath.mpf(radius) ** j for j, c in enumerate(coefficients)]


@dataclass(frozen=True)
class Certificate:
    """A rigorous ``bound`` of sup |P(s) e^-s - 1| on [-radius, radius], the rigorous lower bound
    ``sampled`` (at the piece midpoints; the true sup lies in [sampled, bound]) and the piece count."""

    bound: float
    sampled: float
    pieces: int


def _float_up(value: flint.arb) -> float:
    """Smallest float64 >= every point of the ball."""
    upper = value.upper()
    f = float(upper)
    if flint.arb(f) < upper:
        f = float(np.nextafter(f, np.inf))
    return f


def _float_down(value: flint.arb) -> float:
    lower = value.lower()
    f = float(lower)
    if flint.arb(f) > lower:
        f = float(np.nextafter(f, -np.inf))
    return max(f, 0.0)


def certify_relative_error(coefficients: Sequence[float], radius: float, *, rel_tol: float = 0.05,
                           max_pieces: int = 2**15) -> Certificate:
    """Rigorous enclosure of sup_{|s| <= R} |E(s)|, E(s) = P(s) e^-s - 1 (AS1), by arb over a subdivision.

    [-R, R] is cut into N pieces I_i = [m_i - h, m_i + h] (N a power of two, so m_i and h are
    exact). By the mean value theorem, for s in I_i, E(s) = E(m_i) + E'(xi)(s - m_i) with xi in I_i,
    and E'(s) = Q(s) e^-s with Q = P' - P. So |E(s)| <= |E(m_i)| + h e^{h - m_i} sup_{I_i} |Q|, where
    E(m_i) is a narrow ball at an exact point and sup |Q| <= sum_k |Q^(k)(m_i)/k!| h^k (Q's Taylor
    coefficients at m_i, computed exactly in arb by composing Q with x + m_i). Q is small
    exactly when P approximates e^s (|Q| = |E'| e^s), and the centred form does not suffer the
    cancellation that a plain interval Horner evaluation would (its width grows with
    sum |q_j| R^j, large for R >= 4), so the second term is about h |E'| ~ eps g / N. N doubles until the bound is within ``rel_tol`` of the midpoint maximum (a rigorous
    lower bound of the sup), or reaches ``max_pieces``; either way the bound is rigorous.
    """
    radius = require_radius(radius)
    coefficients = [float(c) for c in coefficients]
    if not coefficients or not all(math.isfinite(c) for c in coefficients):
        raise InvalidArgumentError("coefficients", "a non-empty sequence of finite floats", repr(coefficients))
    saved = flint.ctx.prec
    flint.ctx.prec = _CERTIFY_BITS
    try:
        p = flint.arb_poly([flint.arb(c) for c in coefficients])
        q = p.derivative() - p
        r = flint.arb(radius)
        pieces = 1 << max(4, math.ceil(math.log2(32 * len(coefficients))))
        while True:
            h = r / pieces  # exact: pieces is a power of two
            mids = [r * (2 * i + 1 - pieces) / pieces for i in range(pieces)]  # exact at 128 bits
            values = [p(m) for m in mids]
            upper = lower = 0.0
            for m, pm in zip(mids, values):
                e_mid = abs(pm * (-m).exp() - 1)
                # |Q| on the piece from Q's Taylor coefficients at m (centred form): no dependency blow-up
                shifted = q(flint.arb_poly([m, 1])).coeffs()
                q_abs = sum((abs(c) * h**k for k, c in enumerate(shifted)), flint.arb(0))
                upper = max(upper, _float_up(e_mid + q_abs * (-(m - h)).exp() * h))
                lower = max(lower, _float_down(e_mid))
            if upper <= (1 + rel_tol) * lower or pieces >= max_pieces:
                return Certificate(upper, lower, pieces)
            pieces *= 2
    finally:
        flint.ctx.prec = saved


def certified_relative_error(coefficients: Sequence[float], radius: float) -> float:
    """Certified upper bound of sup_{|s| <= R} |P(s) e^-s - 1| (AS1; Alman-Song 2023, Lemma 3.1 setting)."""
    return certify_relative_error(coefficients, radius).bound


def exp_approximation(radius: float, degree: int, kind: Kind = "chebyshev") -> ExpApproximation:
    """Degree-g approximation of e^s on [-R, R] with its certified relative error (AS1, AS3); cached per (R, g, kind)."""
    return _exp_approximation(require_radius(radius), _require_degree(degree), require_kind(kind))


@functools.lru_cache(maxsize=1024)
def _exp_approximation(radius: float, degree: int, kind: Kind) -> ExpApproximation:
    coefficients = monomial_coefficients(radius, degree, kind)
    return ExpApproximation(radius, degree, kind, coefficients, certified_relative_error(coefficients, radius))


@functools.lru_cache(maxsize=4096)
def sampled_relative_error(radius: float, degree: int, kind: Kind, points: int = 64) -> float:
    """A rigorous *lower* bound of sup |P(s) e^-s - 1| from arb values at ``points`` exact points.

    Used to skip degrees that certainly fail before paying for a certificate.
    """
    coefficients = monomial_coefficients(radius, degree, kind)
    saved = flint.ctx.prec
    flint.ctx.prec = _CERTIFY_BITS
    try:
        p = flint.arb_poly([flint.arb(c) for c in coefficients])
        r = flint.arb(radius)
        xs = [r * (2 * i - points) / points for i in range(points + 1)]
        best = 0.0
        for x, px in zip(xs, (p(x) for x in xs)):
            best = max(best, _float_down(abs(px * (-x).exp() - 1)))
        return best
    finally:
        flint.ctx.prec = saved


# ---------------------------------------------------------------------------------------------
# symmetric monomial features


def _l2_cache_bytes() -> int:
    """Per-core L2 cache size from sysfs (Linux), else 1 MiB: feature chunks are sized to it."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as handle:
            text = handle.read().strip().upper()
        factor = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * factor
    except (OSError, ValueError):
        return 1 << 20


#: Per-core L2 cache of this machine (sysfs; 1 MiB if unknown): the token chunks of the feature code fit in it.
L2_CACHE_BYTES = _l2_cache_bytes()


@dataclass(frozen=True)
class MonomialLayout:
    """Order and weights of the C(D + g, g) monomials of degree <= g in D variables.

    ``prefix[j][v]`` is the number of degree-j monomials whose largest variable is <= v (for
    j = 0 it is 1); ``offsets[j]`` is where degree j starts; ``degrees`` and ``multinomial``
    (j! / prod alpha_i!) are per feature, as float64 arrays.
    """

    dim: int
    degree: int
    prefix: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    degrees: np.ndarray
    multinomial: np.ndarray

    @property
    def rank(self) -> int:
        return self.offsets[-1]


@functools.lru_cache(maxsize=256)
def monomial_layout(dim: int, degree: int) -> MonomialLayout:
    """The monomial order used by :func:`monomials` (see the module docstring)."""
    exponents = [np.zeros((1, dim), dtype=np.int64)]
    prefix = [tuple([1] * dim)]
    for j in range(1, degree + 1):
        blocks = []
        for v in range(dim):
            block = exponents[j - 1][:prefix[j - 1][v]].copy()
            block[:, v] += 1
            blocks.append(block)
        exponents.append(np.concatenate(blocks))
        prefix.append(tuple(itertools.accumulate(len(b) for b in blocks)))
    offsets = tuple(itertools.accumulate([0] + [len(e) for e in exponents]))
    all_exponents = np.concatenate(exponents)
    degrees = all_exponents.sum(axis=1)
    multinomial = np.array([math.factorial(int(d)) // math.prod(math.factorial(int(a)) for a in row)
                            for d, row in zip(degrees, all_exponents)], dtype=np.float64)
    return MonomialLayout(dim, degree, tuple(prefix), offsets, degrees.astype(np.float64), multinomial)


def monomials(x_t: torch.Tensor, degree: int, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """All monomials of degree <= g of the columns of ``x_t`` [..., D, n]: a tensor [..., C(D+g, g), n].

    Transposed layout (tokens last) so every product is a contiguous row block. Differentiable
    when autograd is recording (``out`` is then ignored); otherwise written in place into
    ``out`` (or a new tensor), g * D multiplications in all.
    """
    dim = x_t.shape[-2]
    layout = monomial_layout(dim, degree)
    if torch.is_grad_enabled() and x_t.requires_grad:
        levels = [torch.ones_like(x_t[..., :1, :])]
        for j in range(1, degree + 1):
            previous = levels[-1]
            levels.append(torch.cat([previous[..., :layout.prefix[j - 1][v], :] * x_t[..., v:v + 1, :]
                                     for v in range(dim)], dim=-2))
        return torch.cat(levels, dim=-2)
    if out is None:
        out = x_t.new_empty(x_t.shape[:-2] + (layout.rank, x_t.shape[-1]))
    out[..., 0, :] = 1
    for j in range(1, degree + 1):
        start, position = layout.offsets[j - 1], layout.offsets[j]
        for v in range(dim):
            count = layout.prefix[j - 1][v]
            torch.mul(out[..., start:start + count, :], x_t[..., v:v + 1, :],
                      out=out[..., position:position + count, :])
            position += count
    return out


class MonomialWriter:
    """Writes the monomials of chunk after chunk into one buffer ``out`` [..., m, n] (no autograd).

    ``out`` holds the first m <= r monomials of the layout: every product reads only earlier rows,
    so any prefix is computable alone (poly attention contracts the last degree-g blocks without
    writing them). The views of ``out`` that every product reads and writes are built once, and
    row 0 (the constant monomial) is filled once, so a chunk costs one copy and at most (g - 1) D
    multiplications with no per-product slicing: the Python overhead matters at cache-sized chunks.
    """

    def __init__(self, out: torch.Tensor, dim: int, degree: int):
        layout = monomial_layout(dim, degree)
        rows = out.shape[-2]
        if not min(1 + dim, layout.rank) <= rows <= layout.rank:
            raise ShapeError("out", f"between {min(1 + dim, layout.rank)} and {layout.rank} rows (C(D+g, g))",
                             str(rows))
        self.out, self.dim, self.degree = out, dim, degree
        out[..., 0, :] = 1
        self.first = out[..., 1:1 + dim, :] if degree >= 1 else None
        # (source, factor, target): the factor x_v is read from the buffer's own degree-1 row, so no view of the
        # chunk is made per call
        self.steps = []
        for j in range(2, degree + 1):
            start, position = layout.offsets[j - 1], layout.offsets[j]
            for v in range(dim):
                count = min(layout.prefix[j - 1][v], rows - position)
                if count <= 0:
                    break
                self.steps.append((out[..., start:start + count, :], out[..., 1 + v:2 + v, :],
                                   out[..., position:position + count, :]))
                position += count

    def __call__(self, x_t: torch.Tensor) -> torch.Tensor:
        """Monomials of x_t [..., D, n] (same leading shape and n as the buffer): the buffer itself."""
        if self.first is not None:
            self.first.copy_(x_t)
            for source, factor, target in self.steps:
                torch.mul(source, factor, out=target)
        return self.out


def feature_weights(layout: MonomialLayout, approximation: ExpApproximation) -> np.ndarray:
    """w_alpha = c_|alpha| * multinomial(alpha), so sum_alpha w_alpha q^alpha k^alpha = P(q.k)."""
    coefficients = np.asarray(approximation.coefficients, dtype=np.float64)
    return coefficients[layout.degrees.astype(np.int64)] * layout.multinomial


def polynomial_features(x: torch.Tensor, approximation: ExpApproximation, scale: float, *,
                        side: Literal["query", "key"]) -> torch.Tensor:
    """Symmetric monomial features phi(x) [..., L, C(D+g, g)] with phi_Q(q) . phi_K(k) = P(scale q.k) (AS4).

    Both sides get x * sqrt(scale) and sqrt(|w_alpha|) (w_alpha = c_j multinomial(alpha)); the
    query side also carries sign(w_alpha). Splitting by square roots keeps the two factors of
    every term of the same magnitude, about sqrt(R^j multinomial / j!), so neither side
    overflows or underflows in float32 before the other would; the rounding error of each
    product is the same either way.
    """
    if side not in ("query", "key"):
        raise InvalidArgumentError("side", "'query' or 'key'", repr(side))
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ShapeError("x", "a tensor [..., L, D]", type(x).__name__ if not isinstance(x, torch.Tensor)
                         else f"shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise DTypeError("x", "float32 or float64", str(x.dtype))
    if not isinstance(approximation, ExpApproximation):
        raise InvalidArgumentError("approximation", "an ExpApproximation", type(approximation).__name__)
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidArgumentError("scale", "a finite real number > 0", repr(scale))
    layout = monomial_layout(x.shape[-1], approximation.degree)
    weights = feature_weights(layout, approximation)
    root = np.sqrt(np.abs(weights))
    if side == "query":
        root = np.where(weights < 0, -root, root)
    root_t = torch.as_tensor(root, dtype=x.dtype, device=x.device)
    if torch.is_grad_enabled() and x.requires_grad:
        return monomials((x * math.sqrt(scale)).mT, approximation.degree).mT * root_t
    # Without autograd, the same products chunk by chunk in an L2-sized buffer, weighted on the way out: the
    # full-length rows read strided columns of x and left L2 at every degree (13 ms for L = 32768, D = 4, g = 4,
    # one thread; chunked: bit-identical values).
    x_t = (x * math.sqrt(scale)).mT.contiguous()
    length, rank = x.shape[-2], layout.rank
    lead = x.shape[:-2]
    per_token = max(1, math.prod(lead) * rank * x.element_size())
    chunk = max(1, min(length, 4096, 1 << max(0, (L2_CACHE_BYTES // per_token).bit_length() - 1)))
    out_t = x.new_empty(lead + (rank, length))
    buffer = x.new_empty(lead + (rank, chunk))
    writers: dict[int, MonomialWriter] = {}
    for start in range(0, length, chunk):
        n = min(chunk, length - start)
        if n not in writers:
            writers[n] = MonomialWriter(buffer[..., :n], x.shape[-1], approximation.degree)
        torch.mul(writers[n](x_t[..., start:start + n]), root_t[:, None], out=out_t[..., start:start + n])
    return out_t.mT
