"""CF3 on a target where early stopping costs exactly sqrt(t0): a 1-D density with jumps (Fu, Yang, Wang, Chen 2024).

CF3 claims TV(P, P_t0) = O(sqrt(t0) polylog(1/t0)) (OU-half forward process). For a smooth density TV falls like t0,
so a fitted exponent "at least 1/2" cannot fail there. A density with a jump attains the rate: if p has jumps of
heights h_j, then p_t0 = law of alpha X + sigma Z (alpha = e^(-t0/2), sigma^2 = 1 - e^(-t0)) differs from p by
about h_j (Phi(u / sigma) - 1{u > 0}) around each jump, so

    TV(P, P_t0) = sigma sum_j h_j / sqrt(2 pi) + O(t0)        (int |Phi(v) - 1{v > 0}| dv = 2 / sqrt(2 pi)),

the O(t0) from the contraction alpha and the smooth parts. The exponent in t0 is exactly 1/2: a forward process
with the wrong noise scale shows another one (variance 1 - e^-t0 used as the standard deviation: 1; its square
root: 1/4). TV is computed by adaptive quadrature split at the jumps and at +-8 sigma around them, where all the
mass of |p - p_t0| lies, to an absolute accuracy 1e-12 (TV >= 1e-3 here). numpy and torch only (the audit runs
without scipy; tests/test_audit_diffusion.py checks the quadrature against scipy's QUADPACK).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ditcheck.reference.errors import InvalidArgumentError

__all__ = ["JumpTarget", "ForwardLaw", "ou_half", "jump_target_density", "early_stopped_density",
           "early_stopping_tv", "jump_tv_leading_term", "cf3_jump_curve", "adaptive_gauss_legendre",
           "sign_changes"]

#: (alpha, sigma) of the forward process at time t: X_t = alpha X_0 + sigma Z
ForwardLaw = Callable[[float], tuple[float, float]]


def ou_half(t: float) -> tuple[float, float]:
    """CF3's forward process (OU-half, dX = -X/2 dt + dW): alpha = e^(-t/2), sigma = sqrt(1 - e^(-t))."""
    return math.exp(-t / 2), math.sqrt(-math.expm1(-t))


@dataclass(frozen=True)
class JumpTarget:
    """p = w Uniform[low, high] + (1 - w) sum_k weights_k N(means_k, sds_k^2) on the real line (two jumps of w/(high-low))."""

    uniform_weight: float
    low: float
    high: float
    weights: tuple[float, ...] = (1.0,)
    means: tuple[float, ...] = (0.0,)
    sds: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not 0 < self.uniform_weight <= 1:
            raise InvalidArgumentError("uniform_weight", "a weight in (0, 1]", repr(self.uniform_weight))
        if not self.low < self.high:
            raise InvalidArgumentError("high", f"an interval end above low = {self.low!r}", repr(self.high))
        if not (len(self.weights) == len(self.means) == len(self.sds)) or min(self.sds) <= 0:
            raise InvalidArgumentError("sds", "positive standard deviations, one per weight and mean", repr(self.sds))
        if abs(math.fsum(self.weights) - 1) > 1e-12 or min(self.weights) < 0:
            raise InvalidArgumentError("weights", "non-negative weights summing to 1", repr(self.weights))

    @property
    def jump_height(self) -> float:
        return self.uniform_weight / (self.high - self.low)


def _gaussians(target: JumpTarget, x: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    means = alpha * np.asarray(target.means)
    sds = np.sqrt((alpha * np.asarray(target.sds)) ** 2 + sigma**2)
    z = (x[:, None] - means) / sds
    return (np.exp(-z * z / 2) / (sds * math.sqrt(2 * math.pi))) @ np.asarray(target.weights)


def jump_target_density(target: JumpTarget, x: np.ndarray) -> np.ndarray:
    """p(x) (the uniform part is 0 outside [low, high] and w/(high - low) inside)."""
    x = np.asarray(x, dtype=np.float64)
    inside = (x >= target.low) & (x <= target.high)
    smooth = (1 - target.uniform_weight) * _gaussians(target, x, 1.0, 0.0) if target.uniform_weight < 1 else 0.0
    return target.jump_height * inside + smooth


def early_stopped_density(target: JumpTarget, t0: float, x: np.ndarray, law: ForwardLaw = ou_half) -> np.ndarray:
    """p_t0(x), the law of alpha X + sigma Z: the uniform part is (w / (alpha (high - low))) [Phi((x - alpha low)/sigma)
    - Phi((x - alpha high)/sigma)] (erfc differences, accurate in the tails), the Gaussians stay Gaussian."""
    alpha, sigma = law(t0)
    x = np.asarray(x, dtype=np.float64)
    ndtr = torch.special.ndtr
    upper = (ndtr(torch.from_numpy((x - alpha * target.low) / sigma))
             - ndtr(torch.from_numpy((x - alpha * target.high) / sigma))).numpy()
    uniform = target.uniform_weight / (alpha * (target.high - target.low)) * upper
    smooth = (1 - target.uniform_weight) * _gaussians(target, x, alpha, sigma) if target.uniform_weight < 1 else 0.0
    return uniform + smooth


def early_stopping_tv(target: JumpTarget, t0: float, law: ForwardLaw = ou_half) -> float:
    """TV(P, P_t0) = 1/2 int |p - p_t0| by adaptive quadrature, split at the jumps, +-8 sigma around them and the
    Gaussians' +-12 sd; absolute accuracy ~1e-12."""
    if not (math.isfinite(t0) and t0 > 0):
        raise InvalidArgumentError("t0", "a positive early-stopping time", repr(t0))
    alpha, sigma = law(t0)
    spread = max([target.high - target.low, *target.sds, sigma])
    centres = [target.low, target.high, alpha * target.low, alpha * target.high]
    points = sorted({c + k * sigma for c in centres for k in (-8, -2, -0.5, 0, 0.5, 2, 8)}
                    | {m + k * s for m, s in zip(target.means, target.sds) for k in (-12, -4, 0, 4, 12)})
    left, right = points[0] - 20 * spread, points[-1] + 20 * spread
    edges = [left, *points, right]

    def difference(x: np.ndarray) -> np.ndarray:
        return jump_target_density(target, x) - early_stopped_density(target, t0, x, law)

    # |p - p_t0| has a kink wherever p and p_t0 cross: a kink in a panel's first or last node gap is missed alike by
    # the rule on the panel and on its halves (measured: a 1.4e-6 error on [1.6, 2.2] at t0 = 1), so the crossings
    # become edges and the integrand is smooth on every panel
    crossings = sign_changes(difference, edges)
    return adaptive_gauss_legendre(lambda x: np.abs(difference(x)), sorted([*edges, *crossings])) / 2


def sign_changes(function: Callable[[np.ndarray], np.ndarray], edges: Sequence[float], per_panel: int = 512,
                 bisections: int = 60) -> list[float]:
    """Points where ``function`` (vectorised) changes sign: located on ``per_panel`` equal steps between consecutive
    edges, then bisected ``bisections`` times (to the last bit of the bracket). Two crossings closer than a step are
    not seen; here that leaves a sliver of width < step with |p - p_t0| below its values at the step's ends."""
    ends = np.asarray(edges, dtype=np.float64)
    lows, highs = ends[:-1][ends[1:] > ends[:-1]], ends[1:][ends[1:] > ends[:-1]]
    fractions = np.linspace(0.0, 1.0, per_panel + 1)
    points = (lows[:, None] + (highs - lows)[:, None] * fractions[None]).ravel()
    values = function(points)
    changes = np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)
    left, right, left_sign = points[changes], points[changes + 1], np.sign(values[changes])
    for _ in range(bisections):
        middle = (left + right) / 2
        same = np.sign(function(middle)) == left_sign
        left, right = np.where(same, middle, left), np.where(same, right, middle)
    return sorted(((left + right) / 2).tolist())


#: Gauss-Legendre order per panel of adaptive_gauss_legendre and its acceptance tolerances
QUADRATURE_NODES, QUADRATURE_EPSABS, QUADRATURE_EPSREL, QUADRATURE_MAX_PANELS = 10, 1e-14, 1e-12, 200_000


def adaptive_gauss_legendre(integrand: Callable[[np.ndarray], np.ndarray], edges: Sequence[float]) -> float:
    """int of ``integrand`` (vectorised) over [edges[0], edges[-1]], panels between consecutive edges bisected until
    the 10-point Gauss-Legendre rule on a panel and on its two halves agree.

    A panel is accepted when |whole - halves| <= max(EPSABS (width / total width), EPSREL |halves|) (its halves'
    sum is kept: the error estimate of the coarser rule is pessimistic for the finer one), so the accepted errors sum
    to about EPSABS + EPSREL |integral|. Kinks inside a panel (where p crosses p_t0) only slow the convergence to
    first order in the width: bisection localises them. More than MAX_PANELS live panels: RuntimeError (no silent
    inaccuracy).
    """
    nodes, weights = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
    ends = np.asarray(edges, dtype=np.float64)
    lows, highs = ends[:-1][ends[1:] > ends[:-1]], ends[1:][ends[1:] > ends[:-1]]
    total_width = float(ends[-1] - ends[0])

    def rule(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        half, centre = (b - a) / 2, (a + b) / 2
        values = integrand((centre[:, None] + half[:, None] * nodes[None]).ravel()).reshape(a.size, nodes.size)
        return half * (values @ weights)

    accepted: list[float] = []
    whole = rule(lows, highs)
    while lows.size:
        if lows.size > QUADRATURE_MAX_PANELS:
            raise RuntimeError(f"adaptive_gauss_legendre: more than {QUADRATURE_MAX_PANELS} panels")
        middle = (lows + highs) / 2
        left, right = rule(lows, middle), rule(middle, highs)
        halves = left + right
        done = np.abs(whole - halves) <= np.maximum(QUADRATURE_EPSABS * (highs - lows) / total_width,
                                                    QUADRATURE_EPSREL * np.abs(halves))
        accepted.extend(halves[done].tolist())
        keep = ~done
        lows, highs = np.concatenate([lows[keep], middle[keep]]), np.concatenate([middle[keep], highs[keep]])
        whole = np.concatenate([left[keep], right[keep]])
    return math.fsum(accepted)


def jump_tv_leading_term(target: JumpTarget, t0: float) -> float:
    """sigma (sum of jump heights) / sqrt(2 pi): the sqrt(t0) term of TV(P, P_t0) (module docstring)."""
    return math.sqrt(-math.expm1(-t0)) * 2 * target.jump_height / math.sqrt(2 * math.pi)


def cf3_jump_curve(target: JumpTarget, times: Sequence[float], law: ForwardLaw = ou_half) -> np.ndarray:
    """TV(P, P_t0) at each t0 in ``times``."""
    return np.array([early_stopping_tv(target, float(t), law) for t in times])
