"""LD7, LD8 and AS7: the attention-weight gradient, exact and low-rank, and the AS7 derivative lemma.

Each property takes the implementation under check (ditcheck.fast_attention.gradient's by default), so a
test can plant a bug and show the property catches it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis import target
from hypothesis.control import currently_in_test_context

from ditcheck.bounds import feature_rank, low_rank_gradient_bound, softmax_value_derivative_bound
from ditcheck.fast_attention.gradient import (attention_weight_gradient_exact, attention_weight_gradient_lowrank,
                                              attention_weight_loss)
from ditcheck.fast_attention.polynomial import exp_approximation
from ditcheck.reference import attention_weight_gradient
from ditcheck.reference.formats import FLOAT64 as FLOAT64_FORMAT

from .attention import WeightGradientCase
from .fast_attention import counted_flops
from .measurement import Measurement
from .strategies import seeds
from .violation import require

__all__ = [
    "LowRankGradientCase",
    "RADIUS_DEGREE_GRID",
    "SoftmaxDerivativeCase",
    "low_rank_gradient_cases",
    "softmax_derivative_cases",
    "rounding_budget",
    "measure_exact_gradient",
    "check_exact_gradient_matches_autograd",
    "measure_low_rank_gradient",
    "check_low_rank_gradient_within_bound",
    "low_rank_gradient_flops",
    "check_low_rank_ranks",
    "measure_softmax_derivative",
    "check_softmax_derivative_bound",
]

_UNIT_ROUNDOFF = FLOAT64_FORMAT.unit_roundoff


@dataclass(frozen=True)
class LowRankGradientCase(WeightGradientCase):
    """An LD7/LD8 problem: WeightGradientCase's arrays with W rescaled so the Cauchy-Schwarz logit range is ``radius``.

    The chain is called with this ``radius`` (verified against the actual logits) and the
    polynomial ``degree``; (radius, degree) come from a small grid so certificates are cached.
    ``build()`` (inherited) gives the arrays before the rescaling, ``arrays()`` after it.
    """

    radius: float = 0.5
    degree: int = 4

    def arrays(self) -> dict[str, np.ndarray]:
        """float64 arrays a1, a2, a3, w, w_ov, y with |scale| max_i ||W^T a1_i|| max_j ||a2_j|| just below radius."""
        arrays = self.build()
        current = abs(self.scale) * np.linalg.norm(arrays["w"].T @ arrays["a1"], axis=0).max() \
            * np.linalg.norm(arrays["a2"], axis=0).max()
        if current > 0:
            arrays["w"] = arrays["w"] * (self.radius / current * (1 - 1e-9))  # margin: logits stay <= radius
        return arrays

    def tensors(self, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
        return {name: torch.tensor(a, dtype=dtype) for name, a in self.arrays().items()}

    def call(self, gradient_fn: Callable[..., Any]) -> Any:
        """gradient_fn(**tensors, scale=, degree=, radius=): how the properties call the chain."""
        return gradient_fn(**self.tensors(), scale=self.scale, degree=self.degree, radius=self.radius)

    def reproducer(self) -> str:
        return (f"from ditcheck.properties.gradient import LowRankGradientCase\n"
                f"from ditcheck.fast_attention.gradient import attention_weight_gradient_lowrank\ncase = {self!r}\n"
                f"result = case.call(attention_weight_gradient_lowrank)")


#: (logit range R, degree g) pairs with certified eps < 1 whose certificates take well under a second.
RADIUS_DEGREE_GRID: tuple[tuple[float, int], ...] = (
    (0.25, 2), (0.25, 4), (0.5, 3), (0.5, 5), (1.0, 3), (1.0, 5), (2.0, 4), (2.0, 5))


def low_rank_gradient_cases(max_tokens: int = 24, max_dim: int = 4,
                            grid: tuple[tuple[float, int], ...] = RADIUS_DEGREE_GRID
                            ) -> st.SearchStrategy[LowRankGradientCase]:
    """LD8 problems: scale 1 (Hu et al.), 1/2 or 1/8; magnitudes 0.5..2; (R, g) from ``grid``."""
    return st.builds(lambda tokens, dim, seed, scale, magnitude, pair: LowRankGradientCase(
        tokens, dim, seed, scale, magnitude, pair[0], pair[1]),
        st.integers(1, max_tokens), st.integers(1, max_dim), seeds(), st.sampled_from([1.0, 0.5, 0.125]),
        st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from(grid))


def rounding_budget(case: LowRankGradientCase) -> Any:
    """The LD8 budget of a relative perturbation 64 L u of f: what float64 rounding of softmax and the sums can do.

    Used as the tolerance of LD7 (an identity): rounding acts like an AS1 perturbation of
    relative size about L u on each f_ij, so the LD8 propagation bounds its effect.
    """
    arrays = case.arrays()
    h = arrays["a3"].T @ arrays["w_ov"].T
    return low_rank_gradient_bound(
        eps=64 * case.tokens * _UNIT_ROUNDOFF, radius=case.radius * (1 + 1e-12), tokens=case.tokens, dim=case.dim,
        scale=case.scale, a1_max=float(np.abs(arrays["a1"]).max()), a2_max=float(np.abs(arrays["a2"]).max()),
        h_max=float(np.abs(h).max()), y_max=float(np.abs(arrays["y"]).max()))


def _exact_parts(arrays: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """f, c, q, r, p1, p2 of LD7 in float64 (dense; small L only)."""
    logits = scale * (arrays["a1"].T @ arrays["w"] @ arrays["a2"])
    f = np.exp(logits - logits.max(-1, keepdims=True))
    f /= f.sum(-1, keepdims=True)
    h = arrays["a3"].T @ arrays["w_ov"].T
    c = f @ h - arrays["y"]
    q = c @ h.T
    r = (f * q).sum(-1)
    return {"f": f, "c": c, "q": q, "r": r, "p1": f * q, "p2": r[:, None] * f}


def measure_exact_gradient(case: LowRankGradientCase, gradient_fn: Callable[..., torch.Tensor] | None = None,
                           tolerance_fn: Callable[[LowRankGradientCase], Any] = rounding_budget) -> Measurement:
    """LD7 (Hu et al. 2024, sec. 5): closed-form dL0/dW = scale A1 p A2^T vs autograd through SDPA and the reference.

    observed = max |closed - other| over both comparisons, limit = ``tolerance_fn(case).gradient_error``
    (the rounding budget), both divided by max |reference gradient| (relative; unchanged ratio)
    when it is nonzero. ``forms``: each comparison's own error / tolerance.
    """
    gradient_fn = attention_weight_gradient_exact if gradient_fn is None else gradient_fn
    tensors = case.tensors()
    closed = gradient_fn(**tensors, scale=case.scale).detach().numpy()
    w = tensors.pop("w").clone().requires_grad_(True)
    attention_weight_loss(**tensors, w=w, scale=case.scale).backward()
    reference = attention_weight_gradient(**case.arrays(), scale=case.scale)
    tolerance = float(tolerance_fn(case).gradient_error)
    errors = {name: float(np.abs(closed - other).max())
              for name, other in (("vs autograd (SDPA)", w.grad.numpy()), ("vs reference", reference))}
    size = float(np.abs(reference).max())
    unit = size if size > 0 else 1.0
    forms = {name: (error / tolerance if tolerance > 0 else (0.0 if error == 0 else math.inf))
             for name, error in errors.items()}
    return Measurement(max(errors.values()) / unit, tolerance / unit, case, forms=forms)


def check_exact_gradient_matches_autograd(case: LowRankGradientCase,
                                          gradient_fn: Callable[..., torch.Tensor] | None = None) -> None:
    """LD7: the torch closed form equals autograd through SDPA (float64) and the reference, to the rounding budget
    (measure_exact_gradient)."""
    m = measure_exact_gradient(case, gradient_fn)
    for name, ratio in m.forms.items():
        require(ratio <= 1, "LD7", f"closed-form dL0/dW differs from {name.removeprefix('vs ')}",
                error_over_tolerance=ratio, case=case)


def _ld8_bound(case: LowRankGradientCase) -> Any:
    """bounds.low_rank_gradient_bound for the case, computed here (not taken from the result under check):
    eps is the certificate of the degree-g polynomial on [-R, R] the chain is asked to use."""
    arrays = case.arrays()
    h = arrays["a3"].T @ arrays["w_ov"].T
    return low_rank_gradient_bound(
        eps=exp_approximation(case.radius, case.degree).eps, radius=case.radius, tokens=case.tokens, dim=case.dim,
        scale=case.scale, a1_max=float(np.abs(arrays["a1"]).max()), a2_max=float(np.abs(arrays["a2"]).max()),
        h_max=float(np.abs(h).max()), y_max=float(np.abs(arrays["y"]).max()))


def _stage_ratio(observed: np.ndarray, limit: np.ndarray | float) -> float:
    """max observed / limit entry-wise (0/0 = 0, x/0 = inf): a stage's tightness."""
    observed, limit = np.broadcast_arrays(np.asarray(observed, float), np.asarray(limit, float))
    safe = np.where(limit > 0, observed / np.where(limit > 0, limit, 1.0), np.where(observed > 0, math.inf, 0.0))
    return float(safe.max()) if safe.size else 0.0


def measure_low_rank_gradient(case: LowRankGradientCase, gradient_fn: Callable[..., Any] | None = None,
                              bound_fn: Callable[[LowRankGradientCase], Any] = _ld8_bound) -> Measurement:
    """LD8 (Hu et al. 2024, sec. 5; Alman-Song 2024): |dW~ - dW|max <= L^2 |s| ||A1||max ||A2||max (||dp1|| + ||dp2||).

    observed = max |gradient - reference|, limit = ``bound_fn(case).gradient_error`` (the LD8 bound
    of ``bounds.low_rank_gradient_bound`` from the certified eps) + the LD7 rounding budget.
    ``forms``: each intermediate's max observed / its bound (f relative and row l1, c, q, r, p1, p2),
    each with the float64 comparison slack 64 L u.
    """
    gradient_fn = attention_weight_gradient_lowrank if gradient_fn is None else gradient_fn
    result = case.call(gradient_fn)
    bound = bound_fn(case)
    exact = _exact_parts(case.arrays(), case.scale)
    factors = result.factors
    f_approx = factors.dense_f().numpy()
    q_approx = factors.c.numpy() @ factors.h.numpy().T
    # Rounding of the float64 comparison itself (dense sums of L terms), far below any certified eps used.
    slack = 64 * case.tokens * _UNIT_ROUNDOFF
    wide = slack * (bound.q_max + 1)
    stages = {
        "f (relative)": (np.abs(f_approx - exact["f"]), (bound.f_relative + slack) * exact["f"]),
        "f (row l1)": (np.abs(f_approx - exact["f"]).sum(-1), bound.f_row_l1 + slack),
        "c": (np.abs(factors.c.numpy() - exact["c"]), bound.c_error + wide),
        "q": (np.abs(q_approx - exact["q"]), bound.q_error + wide),
        "r": (np.abs(factors.r.numpy() - exact["r"]), bound.r_error + wide),
        "p1": (np.abs(f_approx * q_approx - exact["p1"]), bound.p1_error + wide),
        "p2": (np.abs(factors.r.numpy()[:, None] * f_approx - exact["p2"]), bound.p2_error + wide),
    }
    reference = attention_weight_gradient(**case.arrays(), scale=case.scale)
    error = float(np.abs(result.gradient.detach().numpy() - reference).max())
    limit = float(bound.gradient_error + rounding_budget(case).gradient_error)
    return Measurement(error, limit, case,
                       forms={f"stage {name}": _stage_ratio(*pair) for name, pair in stages.items()})


def check_low_rank_gradient_within_bound(case: LowRankGradientCase,
                                         gradient_fn: Callable[..., Any] | None = None) -> None:
    """LD8: every intermediate of the chain and the gradient lie within bounds.low_rank_gradient_bound
    (measure_low_rank_gradient)."""
    m = measure_low_rank_gradient(case, gradient_fn)
    for stage, ratio in m.forms.items():
        require(ratio <= 1, "LD8", f"intermediate {stage.removeprefix('stage ')} exceeds its bound",
                observed_over_bound=ratio, case=case)
    if currently_in_test_context():
        target(m.ratio, label="LD8 gradient error / bound")
    require(m.ratio <= 1, "LD8", "low-rank gradient error exceeds the LD8 bound",
            error=m.observed, bound=m.limit, case=case)


def low_rank_gradient_flops(tokens: int, dim: int = 3, radius: float = 1.0, degree: int = 5, seed: int = 0,
                            gradient_fn: Callable[..., Any] | None = None) -> int:
    """LD8 rate: counted FLOPs (torch.utils.flop_counter, matrix products) of the chain at fixed (d, R, g): O(L k d)."""
    gradient_fn = attention_weight_gradient_lowrank if gradient_fn is None else gradient_fn
    tensors = LowRankGradientCase(tokens, dim, seed, 1.0, 1.0, radius, degree).tensors()
    return counted_flops(lambda: gradient_fn(**tensors, scale=1.0, degree=degree, radius=radius))


def check_low_rank_ranks(case: LowRankGradientCase, gradient_fn: Callable[..., Any] | None = None) -> None:
    """LD8 ranks: k1 = C(d+g, g), k2 = d (q = c h^T), k3 = k1 k2 (Khatri-Rao), k4 = k1, matching the factors."""
    gradient_fn = attention_weight_gradient_lowrank if gradient_fn is None else gradient_fn
    result = case.call(gradient_fn)
    k1 = feature_rank(case.dim, result.degree)
    expected = (k1, case.dim, k1 * case.dim, k1)
    factors = result.factors
    shapes = (factors.u.shape[-1], factors.v.shape[-1], factors.c.shape[-1], factors.h.shape[-1])
    require(tuple(result.ranks) == expected and shapes == (k1, k1, case.dim, case.dim), "LD8",
            "ranks k1..k4 or factor widths differ from C(d+g, g), d, k1 d, k1",
            ranks=result.ranks, expected=expected, factor_widths=shapes, case=case)


@dataclass(frozen=True)
class SoftmaxDerivativeCase:
    """An AS7 problem: S in [-B, B]^{n x n}, V in [-v_max, v_max]^{n x d}, lambda in [0, 1].

    ``family="aligned"`` is the near-extremal one: S_ij = B sigma_j, V_jl = v_max sigma_j
    with random signs sigma, so every row of diag(M 1)^-1 M V moves as fast as it can.
    """

    tokens: int
    dim: int
    logit_bound: float
    lam: float
    seed: int
    v_max: float = 1.0
    family: Literal["uniform", "aligned"] = "uniform"

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        n, d = self.tokens, self.dim
        if self.family == "aligned":
            sigma = rng.choice([-1.0, 1.0], size=n)
            return (np.broadcast_to(self.logit_bound * sigma, (n, n)).copy(),
                    np.broadcast_to(self.v_max * sigma[:, None], (n, d)).copy())
        return (rng.uniform(-self.logit_bound, self.logit_bound, (n, n)),
                rng.uniform(-self.v_max, self.v_max, (n, d)))


def softmax_derivative_cases(max_tokens: int = 16, max_dim: int = 16) -> st.SearchStrategy[SoftmaxDerivativeCase]:
    """AS7 problems over n, d, B in [0.01, 8], lambda in [0, 1], v_max in {0.5, 1, 3}, uniform or aligned families."""
    return st.builds(SoftmaxDerivativeCase, st.integers(1, max_tokens), st.integers(1, max_dim),
                     st.floats(0.01, 8.0), st.floats(0.0, 1.0), seeds(), st.sampled_from([0.5, 1.0, 3.0]),
                     st.sampled_from(["uniform", "aligned"]))


def _softmax_value_norm(s: torch.Tensor, v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """f(lambda) = ||diag(M 1)^-1 M V||_F^2, M = exp(lambda S) (AS 2024, Lemma E.3)."""
    return (torch.softmax(lam * s, dim=-1) @ v).pow(2).sum()


def measure_softmax_derivative(case: SoftmaxDerivativeCase,
                               bound_fn: Callable[..., float] | None = None) -> Measurement:
    """AS7 (Alman-Song 2024, Lemma E.3, with the factor d): |f'(lambda)| held to 8 B n d v_max^2.

    f'(lambda) by autograd in float64, confirmed by a central difference (a disagreement raises:
    the measurement itself would be wrong). observed = |f'(lambda)|, limit = ``bound_fn(B, n, d, v_max)``.
    """
    bound_fn = softmax_value_derivative_bound if bound_fn is None else bound_fn
    s_np, v_np = case.build()
    s, v = torch.tensor(s_np), torch.tensor(v_np)
    lam = torch.tensor(case.lam, dtype=torch.float64, requires_grad=True)
    (derivative,) = torch.autograd.grad(_softmax_value_norm(s, v, lam), lam)
    derivative = float(derivative)
    step = 1e-5
    with torch.no_grad():
        central = float(_softmax_value_norm(s, v, lam + step) - _softmax_value_norm(s, v, lam - step)) / (2 * step)
    scale = case.tokens * case.dim * case.v_max ** 2 * max(case.logit_bound, 1e-3)
    require(abs(central - derivative) <= 1e-6 * scale, "AS7", "autograd f'(lambda) disagrees with a central difference",
            autograd=derivative, central=central, case=case)
    return Measurement(abs(derivative), float(bound_fn(case.logit_bound, case.tokens, case.dim, case.v_max)), case)


def check_softmax_derivative_bound(case: SoftmaxDerivativeCase,
                                   bound_fn: Callable[..., float] | None = None) -> None:
    """AS7: |f'(lambda)| <= 8 B n d v_max^2 (measure_softmax_derivative)."""
    m = measure_softmax_derivative(case, bound_fn)
    if currently_in_test_context():
        target(m.ratio, label="AS7 |f'| / bound")
    require(m.ratio <= 1, "AS7", "|f'(lambda)| exceeds 8 B n d v_max^2",
            derivative=m.observed, bound=m.limit, case=case)
