"""GP2 (unrolled gradient-descent transformer) and GP4 (attention learns the kernel) properties.

GP1 and GP3 (and GP2's kappa formula) live in properties/distributions.py; this module reuses its cases.
GP2 binds three implementations: the torch transformer (ditcheck.gp_transformer), the reference iteration
(reference.gp.gradient_descent) and the exact score (reference.gp.gp_score), with the rate and the derived
rounding floor of ditcheck.bounds (gp2_rate, gp2_rounding_floor, gp2_condition_upper).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from ditcheck.bounds import gp2_condition_upper, gp2_rate, gp2_rounding_floor
from ditcheck.gp_training import kernel_correlation, lag_contrast
from ditcheck.gp_transformer import ENCODINGS, UnrolledGPTransformer
from ditcheck.reference import gp
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.linalg import eigenvalue_error_bound
from ditcheck.reference.rounding import BOUND_INFLATION

from .distributions import U, GPCase, gp_cases
from .violation import require

__all__ = [
    "UnrolledCase",
    "unrolled_cases",
    "check_gp2_step_size",
    "check_gp2_attention_weights",
    "check_gp2_unrolled",
    "check_gp4_attention",
]

_UNIT = {torch.float64: 2.0**-53, torch.float32: 2.0**-24}


@dataclass(frozen=True)
class UnrolledCase:
    """A GP problem (GPCase), a number of blocks K and the positional encoding of the GP2 transformer."""

    problem: GPCase
    steps: int
    encoding: str

    @cached_property
    def kappa_upper(self) -> np.ndarray:
        p = self.problem
        return np.reshape(gp2_condition_upper(p.time, p.gamma, p.sigma_matrix, p.schedule), (-1,))


@st.composite
def unrolled_cases(draw: st.DrawFn, max_steps: int = 60) -> UnrolledCase:
    """GP2 cases: every kernel kind, schedule and encoding; K from 0 to max_steps."""
    return UnrolledCase(draw(gp_cases()), draw(st.integers(0, max_steps)), draw(st.sampled_from(ENCODINGS)))


def check_gp2_step_size(case: GPCase, step_size: Callable[..., Any] = gp.gradient_descent_step_size) -> None:
    """GP2's step h = 1 / lambda_max(A_t): h times lambda_max of the dense A_t is 1 to rounding.

    h comes from eigvalsh of Gamma and Sigma, the check from eigvalsh of the dense A_t; each top eigenvalue errs by
    at most reference.linalg.eigenvalue_error_bound of its matrix. h's denominator alpha^2 g s + sigma^2 has
    relative error <= e_G / g + e_S / s + 3 u and the division one more u, so (first order; BOUND_INFLATION)
    |h lmax(A_t) - 1| <= e_G / lmax(Gamma) + e_S / lmax(Sigma) + e_A / lmax(A_t) + 5 u.
    """
    operator = case.operator()
    top = np.linalg.eigvalsh(operator)[-1]
    h = float(np.asarray(step_size(case.time, case.gamma, case.sigma_matrix, case.schedule)))
    allowed = sum(float(eigenvalue_error_bound(m)) / np.linalg.eigvalsh(m)[-1]
                  for m in (case.gamma, case.sigma_matrix, operator)) + 5 * U
    gap = abs(h * top - 1)
    require(gap <= allowed * BOUND_INFLATION, "GP2", "step size != 1 / lambda_max(A_t)", h=h, lambda_max=float(top),
            gap=gap, allowed=allowed, case=case)


def _rows(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)


def _unit(dtype: torch.dtype) -> float:
    if dtype not in _UNIT:
        raise InvalidArgumentError("dtype", f"one of {tuple(_UNIT)} (the GP2 floor needs a unit roundoff)", str(dtype))
    return _UNIT[dtype]


def _weight_tolerance(gamma: np.ndarray, unit: float) -> float:
    """||W - Gamma||_F allowed: eigh-level 8 n u ||Gamma||_F (the 'factor' encoding) plus the cast to the dtype."""
    return float(eigenvalue_error_bound(gamma)) * unit / U + gamma.shape[0] * unit * float(np.linalg.norm(gamma))


def check_gp2_attention_weights(case: UnrolledCase, build: Callable[..., Any] = UnrolledGPTransformer,
                                dtype: torch.dtype = torch.float64) -> float:
    """GP2: the transformer's attention weights are gamma(i, j) to rounding; returns ||W - Gamma||_F / ||Gamma||_2."""
    p = case.problem
    model = build(p.gamma, p.sigma_matrix, case.steps, encoding=case.encoding, schedule=p.schedule, dtype=dtype)
    weights = model.attention_weights().detach().to(torch.float64).cpu().numpy()
    gap = float(np.linalg.norm(weights - p.gamma))
    tolerance = _weight_tolerance(p.gamma, _unit(dtype))
    require(gap <= tolerance, "GP2", "attention weights != gamma(i, j)", gap=gap, tolerance=tolerance, case=case)
    return gap / float(np.linalg.norm(p.gamma, 2))


def check_gp2_unrolled(case: UnrolledCase, build: Callable[..., Any] = UnrolledGPTransformer,
                       iterate: Callable[..., Any] = gp.gradient_descent, dtype: torch.dtype = torch.float64) -> None:
    """GP2: block k of the transformer outputs the k-th gradient-descent iterate, and its error obeys the rate.

    For every k <= K, with kappa^ >= kappa_t (gp2_condition_upper), floor_k = gp2_rounding_floor and
    e1 = 16 n u kappa^ the relative error of the float64 exact score (GP1's tolerance):
      ||T_k - R_k|| <= (floor_k(T) + floor_k(R)) ||s*||                  (transformer vs reference iteration)
      ||T_k - s*|| / ||s*|| <= ((1 - 1/kappa^)^k + floor_k(T) + e1) / (1 - e1)      (the GP2 bound)
    with ||s*|| <= ||s*_computed|| / (1 - e1). x is rounded through ``dtype`` first, so both see the same input.
    """
    p = case.problem
    unit = _unit(dtype)
    weight_error = check_gp2_attention_weights(case, build, dtype)
    model = build(p.gamma, p.sigma_matrix, case.steps, encoding=case.encoding, schedule=p.schedule, dtype=dtype)
    x = torch.as_tensor(p.x, dtype=dtype)
    x64 = x.to(torch.float64).numpy()
    with torch.no_grad():
        out = model(x, p.time, return_iterates=True).to(torch.float64).numpy()
    exact = gp.gp_score(x64, p.time, p.gamma, p.sigma_matrix, p.schedule)
    kappa = case.kappa_upper
    e1 = np.minimum(16 * p.gamma.shape[0] * p.sigma_matrix.shape[0] * U * kappa, 0.5)
    size = _rows(exact) / (1 - e1)
    for k in range(case.steps + 1):
        floor_t = gp2_rounding_floor(k, kappa, p.frames, p.dim, unit, weight_error)
        if k in (1, case.steps // 2, case.steps):  # the reference costs O(k): three blocks suffice
            floor_r = gp2_rounding_floor(k, kappa, p.frames, p.dim, U)
            reference = np.asarray(iterate(x64, p.time, p.gamma, p.sigma_matrix, k, p.schedule))
            gap = _rows(out[k] - reference)
            require(np.all(gap <= (floor_t + floor_r) * size), "GP2",
                    "transformer block output != gradient-descent iterate", block=k, gap=gap.tolist(),
                    allowed=((floor_t + floor_r) * size).tolist(), case=case)
        error = _rows(out[k] - exact) / _rows(exact)
        bound = (gp2_rate(kappa, k) + floor_t + e1) / (1 - e1)
        require(np.all(error <= bound), "GP2", "||s^K - s*|| / ||s*|| exceeds (1 - 1/kappa_t)^K + rounding floor",
                block=k, error=error.tolist(), bound=bound.tolist(), case=case)


def check_gp4_attention(result: Any, min_correlation: float = 0.8, min_contrast: float = 0.5) -> None:
    """GP4 (empirical; Fu et al. 2025): a trained DiT's head-averaged attention by lag follows gamma(lag).

    ``result`` is a ditcheck.gp_training.GPTrainingResult; both statistics are recomputed here from its
    ``attention_profile`` and ``gamma_profile`` (not read from the stored numbers). Over lags >= 1 (the
    diagonal is self-attention) the Pearson correlation with gamma must reach ``min_correlation`` (it fails
    for attention that grows or oscillates with the lag), and the profile must vary at all: contrast
    (max - min) / mean >= ``min_contrast``. Correlation alone is blind to scale: content-only attention (the
    position embedding zeroed) still decays weakly with the lag on GP data, because neighbours look alike.
    The paper states no constant; the defaults come from the tiny test run (8 frames, exponential kernel,
    seeds 0-3, measured 2026-11): trained correlation 0.984-0.997 and contrast 1.00-1.39; content-only
    correlation 0.88-0.99 (so correlation does not separate them) and contrast 0.095-0.17. The contrast
    threshold 0.5 sits 2x below the worst trained run and 3x above the worst content-only one.
    """
    kind = result.config.kind
    profile, gamma_profile = np.asarray(result.attention_profile), np.asarray(result.gamma_profile)
    correlation = kernel_correlation(profile[1:], gamma_profile[1:])
    require(np.isfinite(correlation) and correlation >= min_correlation,
            "GP4", "attention by lag does not correlate with gamma(lag)", correlation=correlation,
            threshold=min_correlation, kind=kind)
    contrast = lag_contrast(profile)
    require(contrast >= min_contrast, "GP4", "attention hardly varies with the lag (flat profile)",
            contrast=contrast, threshold=min_contrast, kind=kind)
