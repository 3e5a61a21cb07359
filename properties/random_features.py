"""PF1: FAVOR+ positive random features (Choromanski et al. 2021), measured as a function of the logit range.

The relative error of A~ = phi(q) phi(k)^T against A = exp(scale q k^T) decays like m^-1/2;
at small logit range R the fitted log-log slope is asserted to lie near -1/2, at large R it
is only reported (the variance grows like exp(|q + k|^2), so the asymptotic regime starts
at impractically large m). Each property takes the implementation under check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from ditcheck.fast_attention.random_features import favor_attention, positive_random_features, random_projection
from ditcheck.reference import attention

from .strategies import seeds
from .violation import require

__all__ = [
    "FavorCase",
    "favor_cases",
    "FEATURE_GRID",
    "SLOPE_INTERVAL",
    "relative_errors",
    "fitted_slope",
    "error_profile",
    "check_favor_rate",
    "check_favor_error_estimate",
    "VARIANCE_LAW_SPREADS",
    "relative_variance_law",
]

#: Feature counts m of the slope fit (16 .. 1024).
FEATURE_GRID: tuple[int, ...] = (16, 64, 256, 1024)
#: Accepted interval of the fitted slope of log(relative error) vs log(m) at small R: -1/2 +- 0.15.
#: Stated, with this margin: each point is an RMS over 64 independent draws (relative standard error
#: about 1/sqrt(2 * 64) = 9%), so the slope over m = 16..1024 wobbles by about 0.03; 0.15 is 5 such
#: standard deviations (the rest of the margin is for the finite-m variance reduction of orthogonal
#: features, not modelled), while a wrong rate (m^-1/4, m^-1, or no decay) lands outside.
SLOPE_INTERVAL: tuple[float, float] = (-0.65, -0.35)


@dataclass(frozen=True)
class FavorCase:
    """q, k, v [L, D] (Gaussian), scale 1/sqrt(D), a base seed for features.

    q and k are rescaled so that scale max_i |q_i|^2 = scale max_j |k_j|^2 = radius: then every
    logit is in [-radius, radius] and |q + k|^2 scale <= 4 radius, which is what governs the
    variance (a small logit range alone allows |q| >> |k| and heavy lognormal tails).
    """

    tokens: int
    dim: int
    radius: float
    seed: int
    orthogonal: bool = True
    repeats: int = 64

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        q, k, v = (rng.standard_normal((self.tokens, self.dim)) for _ in range(3))
        root = math.sqrt(self.radius / self.scale)
        q = q * (root / np.linalg.norm(q, axis=-1).max())
        k = k * (root / np.linalg.norm(k, axis=-1).max())
        return q, k, v

    @property
    def scale(self) -> float:
        return 1 / math.sqrt(self.dim)


def favor_cases(max_tokens: int = 32, max_dim: int = 8,
                radii: Sequence[float] = (0.05, 0.1, 0.25, 0.5)) -> st.SearchStrategy[FavorCase]:
    """Small-R FAVOR+ problems (where PF1's m^-1/2 rate is asserted), iid or orthogonal features."""
    return st.builds(FavorCase, st.integers(2, max_tokens), st.integers(1, max_dim), st.sampled_from(tuple(radii)),
                     seeds(), st.booleans())


def relative_errors(case: FavorCase, grid: Sequence[int] = FEATURE_GRID,
                    feature_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """RMS over ``case.repeats`` feature draws of ||A~ - A||_F / ||A||_F for each m in ``grid`` (float64)."""
    feature_fn = positive_random_features if feature_fn is None else feature_fn
    q, k, _ = case.build()
    root = math.sqrt(case.scale)
    qt, kt = torch.tensor(q * root), torch.tensor(k * root)
    exact = torch.exp(qt @ kt.T)
    errors = []
    for m in grid:
        # all repeats in one draw: each repeat gets whole blocks of D orthogonal rows
        padded = math.ceil(m / case.dim) * case.dim
        w = random_projection(padded * case.repeats, case.dim, seed=(case.seed * 7919 + m) % 2**63,
                              orthogonal=case.orthogonal).reshape(case.repeats, padded, case.dim)[:, :m]
        approx = feature_fn(qt, w) @ feature_fn(kt, w).mT  # [repeats, L, L]
        squares = ((approx - exact) ** 2).sum((-2, -1)) / (exact ** 2).sum()
        errors.append(math.sqrt(float(squares.mean())))
    return np.array(errors)


def fitted_slope(grid: Sequence[int], errors: np.ndarray) -> float:
    """Least-squares slope of log(error) against log(m)."""
    return float(np.polyfit(np.log(np.asarray(grid, dtype=float)), np.log(errors), 1)[0])


def error_profile(radii: Sequence[float], *, tokens: int = 32, dim: int = 8, seed: int = 0,
                  grid: Sequence[int] = FEATURE_GRID, orthogonal: bool = True) -> list[dict[str, float]]:
    """PF1 report: per logit range R, the relative error of A~ at the smallest and largest m and the fitted slope."""
    rows = []
    for radius in radii:
        case = FavorCase(tokens, dim, radius, seed, orthogonal)
        errors = relative_errors(case, grid)
        rows.append({"radius": float(radius), f"rel_error_m{grid[0]}": float(errors[0]),
                     f"rel_error_m{grid[-1]}": float(errors[-1]), "slope": fitted_slope(grid, errors)})
    return rows


def check_favor_rate(case: FavorCase, feature_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     grid: Sequence[int] = FEATURE_GRID) -> None:
    """PF1 (Choromanski et al. 2021, Lemma 1): at small R the relative error of A~ decays like m^-1/2.

    Asserted: the fitted log-log slope over ``grid`` lies in SLOPE_INTERVAL.
    """
    errors = relative_errors(case, grid, feature_fn)
    slope = fitted_slope(grid, errors)
    require(SLOPE_INTERVAL[0] <= slope <= SLOPE_INTERVAL[1], "PF1",
            "relative error of A~ does not decay like m^-1/2", slope=slope, interval=SLOPE_INTERVAL,
            errors=errors.tolist(), case=case)


def check_favor_error_estimate(case: FavorCase, attention_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]
                               | None = None, num_features: int = 256, factor: float = 3.0, repeats: int = 6) -> None:
    """PF1 estimate: at small R, RMS |out - exact| over ``repeats`` seeds is within ``factor`` of the RMS estimate.

    (Measured calibration, D = 8, L = 64, m = 256: ratio 0.92-0.95 at R = 0.5, 1.2 at R = 2,
    2.0 at R = 6, where heavy tails make the delta-method estimate optimistic.)
    """
    attention_fn = favor_attention if attention_fn is None else attention_fn
    q, k, v = case.build()
    exact = attention(q, k, v, scale=case.scale)
    errors, estimates = [], []
    for r in range(repeats):
        out, estimate = attention_fn(torch.tensor(q), torch.tensor(k), torch.tensor(v), num_features=num_features,
                                     seed=case.seed + r, scale=case.scale, orthogonal=case.orthogonal)
        errors.append(float(((out.detach().numpy() - exact) ** 2).mean()))
        estimates.append(float((estimate.numpy() ** 2).mean()))
    ratio = math.sqrt(np.mean(errors) / np.mean(estimates)) if np.mean(estimates) > 0 else math.inf
    require(1 / factor <= ratio <= factor, "PF1", "FAVOR+ error estimate is off by more than the stated factor",
            ratio=ratio, factor=factor, case=case)


#: PF1's variance law: ||q + k||^2 values (scale folded into q, k) at which the per-entry relative variance is measured.
VARIANCE_LAW_SPREADS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5)


def relative_variance_law(spreads: Sequence[float] = VARIANCE_LAW_SPREADS, *, features: int = 64, repeats: int = 256,
                          dim: int = 8, pairs: int = 4, seed: int = 0,
                          feature_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """PF1's variance law, measured: (exp(s) - 1, m Var[A~_ij / A_ij]) per s = ||q + k||^2 in ``spreads``.

    With m iid features w ~ N(0, I), one feature's estimate exp(w.(q + k) - (||q||^2 + ||k||^2)/2) has mean exp(q.k)
    and second moment exp(2 q.k) exp(||q + k||^2), so m Var[A~/A] = exp(||q + k||^2) - 1 exactly (Choromanski et al.
    2021, Lemma 2): a log-log slope 1 against exp(s) - 1, with coefficient 1. For each s, ``pairs`` random (q, k)
    with ||q + k||^2 = s and ||q|| = ||k|| (q.k = (s - h^2)/4, h = ||q - k|| uniform in [0, 1)) are drawn; the variance is the mean
    of (A~/A - 1)^2 over ``repeats`` independent draws of m iid features (the mean 1 is known: unbiased), averaged
    over the pairs.
    """
    feature_fn = positive_random_features if feature_fn is None else feature_fn
    rng = np.random.default_rng(seed)
    x, y = [], []
    for index, spread in enumerate(spreads):
        estimates = []
        for pair in range(pairs):
            # q + k = r u and q - k = h v with u orthogonal to v: ||q|| = ||k||, ||q + k||^2 = r^2 = s
            u, v = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T
            half = rng.uniform(0.0, 1.0)
            q = (math.sqrt(spread) * u + half * v) / 2
            k = (math.sqrt(spread) * u - half * v) / 2
            w = random_projection(features * repeats, dim, seed=(seed * 7919 + 31 * index + pair) % 2**63,
                                  orthogonal=False).reshape(repeats, features, dim)
            qt, kt = torch.tensor(q)[None, None], torch.tensor(k)[None, None]
            approx = (feature_fn(qt, w) * feature_fn(kt, w)).sum(-1).reshape(-1)
            ratio = approx / math.exp(float(q @ k))
            estimates.append(float((features * (ratio - 1) ** 2).mean()))
        x.append(math.expm1(spread))
        y.append(float(np.mean(estimates)))
    return np.array(x), np.array(y)
