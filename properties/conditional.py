"""Class-conditional latent mixtures: strategies and the properties CFG (guidance convention), CF1 (the DSM loss
identity) and CF2 (score = Gaussian term + log-gradient of a Gaussian smoothing), Fu, Yang, Wang, Chen 2024.

Claims (docs/claims.md): CFG, CF1, CF2. Every property takes the implementation under check as an argument
(the reference by default); cases are frozen dataclasses whose repr rebuilds the input. Shared pieces (mixture
specs, points near p_t, row norms, the worst-row measurement) come from properties.mixtures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ditcheck.reference import mixtures
from ditcheck.reference.precision import UNIT_ROUNDOFF as U
from ditcheck.reference.schedules import get_schedule

from .measurement import Measurement
from .mixtures import (MixtureSpec, SamplerMixtureCase, ScoreFunction, diffused_points, mixture_specs, row_norms,
                       worst_row_measurement)
from .schedules import schedule_times
from .strategies import seeds, simplex_weights
from .violation import require

__all__ = [
    "ConditionalCase",
    "conditional_cases",
    "check_cfg",
    "CF1Case",
    "cf1_cases",
    "LossFunction",
    "STATISTICAL_Z",
    "measure_cf1",
    "check_cf1",
    "cf2_mixture",
    "CF2Case",
    "cf2_cases",
    "CF2_QUADRATURE_CAP",
    "cf2_tolerance",
    "measure_cf2",
    "check_cf2",
]


# ----------------------------------------------------------------------------------------
# Class-conditional mixtures: guidance and CF1


def _conditional_mixture(classes: tuple[MixtureSpec, ...], probability_seed: int) -> mixtures.ConditionalMixture:
    """The class-conditional mixture of ``classes`` with class probabilities drawn from ``probability_seed``."""
    rng = np.random.default_rng(probability_seed)
    return mixtures.ConditionalMixture(tuple(spec.build() for spec in classes), simplex_weights(len(classes), rng))


@dataclass(frozen=True)
class ConditionalCase:
    """Class-conditional mixtures sharing one basis, their class probabilities, points, a time and a guidance weight."""

    classes: tuple[MixtureSpec, ...]
    probability_seed: int
    points: int
    point_seed: int
    schedule: str
    time: float
    guidance: float = 1.0

    @cached_property
    def mixture(self) -> mixtures.ConditionalMixture:
        return _conditional_mixture(self.classes, self.probability_seed)

    @cached_property
    def labels(self) -> np.ndarray:
        return np.random.default_rng(self.point_seed ^ 0x1AB).integers(len(self.classes), size=self.points)

    @cached_property
    def x(self) -> np.ndarray:
        return diffused_points(self.mixture.classes[0], self.points, self.point_seed, self.schedule,
                                np.asarray(self.time), 1.5)


@st.composite
def _shared_basis_specs(draw: st.DrawFn, max_classes: int, max_ambient: int,
                        max_latent: int) -> tuple[MixtureSpec, ...]:
    first = draw(mixture_specs(max_ambient=max_ambient, max_latent=max_latent))
    others = [MixtureSpec(first.ambient, first.latent, draw(st.integers(1, 3)), draw(seeds()), first.basis_seed,
                          mean_scale=draw(st.sampled_from([0.5, 1.0, 3.0])))
              for _ in range(draw(st.integers(1, max_classes - 1)))]
    return (first, *others)


@st.composite
def conditional_cases(draw: st.DrawFn, max_classes: int = 3, max_points: int = 4, max_ambient: int = 5,
                      max_latent: int = 3) -> ConditionalCase:
    """ConditionalCases with 2..max_classes classes and guidance weights around DiT's (w = 3, i.e. scale 4)."""
    schedule, time = draw(schedule_times())
    return ConditionalCase(draw(_shared_basis_specs(max_classes, max_ambient, max_latent)), draw(seeds()),
                           draw(st.integers(1, max_points)), draw(seeds()), schedule, time,
                           draw(st.sampled_from([0.5, 1.0, 3.0, -0.5, 7.0])))


def check_cfg(case: ConditionalCase, cfg: ScoreFunction = mixtures.cfg_score,
              conditional: ScoreFunction = mixtures.conditional_score,
              marginal: ScoreFunction = mixtures.marginal_score) -> None:
    """Guidance convention: cfg(w) = (1 + w) s(x|y) - w s(x) = diffusers' uncond + s (cond - uncond) with s = 1 + w.

    Also cfg(0) is the conditional score and cfg(-1) the unconditional one. float64 tolerance:
    the combination of two scores, each within its own rounding, magnified by |1 + w| + |w|.
    """
    m, x, labels, t, w = case.mixture, case.x, case.labels, case.time, case.guidance
    cond = conditional(m, x, labels, t, case.schedule)
    uncond = marginal(m, x, t, case.schedule)
    magnitude = row_norms(cond) + row_norms(uncond)
    tolerance = 64 * x.shape[1] * U * (2 + 2 * abs(w)) * magnitude
    scale = mixtures.diffusers_scale_from_guidance(w)
    converted = mixtures.guidance_from_diffusers_scale(scale)
    expectations = {
        "(1 + w) cond - w uncond": ((1 + w) * cond - w * uncond, cfg(m, x, labels, t, w, case.schedule)),
        "diffusers form uncond + s (cond - uncond)": (uncond + scale * (cond - uncond),
                                                      cfg(m, x, labels, t, converted, case.schedule)),
        "w = 0 is the conditional score": (cond, cfg(m, x, labels, t, 0.0, case.schedule)),
        "w = -1 is the unconditional score": (uncond, cfg(m, x, labels, t, -1.0, case.schedule)),
    }
    for name, (expected, actual) in expectations.items():
        gap = np.abs(np.asarray(actual, dtype=np.float64) - expected)
        require(np.all(gap <= tolerance), "CFG", f"guidance convention broken: {name}",
                worst=float(gap.max()), case=case)


@dataclass(frozen=True)
class CF1Case:
    """CF1 problem: class-conditional mixtures, an affine perturbation delta(x) = A x + c, a time grid and a Monte Carlo size."""

    classes: tuple[MixtureSpec, ...]
    probability_seed: int
    perturbation_seed: int
    perturbation_scale: float
    times: tuple[float, ...]
    draws: int
    seed: int
    schedule: str = "ou-half"

    @cached_property
    def mixture(self) -> mixtures.ConditionalMixture:
        return _conditional_mixture(self.classes, self.probability_seed)

    @cached_property
    def perturbation(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.perturbation_seed)
        dim = self.classes[0].ambient
        return (self.perturbation_scale * rng.standard_normal((dim, dim)),
                self.perturbation_scale * rng.standard_normal(dim))


@st.composite
def cf1_cases(draw: st.DrawFn, draws: int = 4000, max_classes: int = 3) -> CF1Case:
    """CF1Cases on OU-half (the paper's process) with 1..3 grid times in [0.05, 2]."""
    times = tuple(sorted(draw(st.lists(st.floats(0.05, 2.0), min_size=1, max_size=3))))
    return CF1Case(draw(_shared_basis_specs(max_classes, 4, 2)), draw(seeds()), draw(seeds()),
                   draw(st.sampled_from([0.1, 0.3, 1.0])), times, draws, draw(seeds()))


LossFunction = Callable[..., mixtures.MonteCarloEstimate]
STATISTICAL_Z = 5.0  # two-sided false-alarm probability 5.7e-7 per case under the CLT


def measure_cf1(case: CF1Case, loss: LossFunction = mixtures.dsm_loss,
                optimal: Callable[..., Any] = mixtures.optimal_score_function,
                energy: Callable[..., float] = mixtures.affine_perturbation_energy,
                z: float = STATISTICAL_Z) -> Measurement:
    """CF1 (Fu, Yang, Wang, Chen 2024, DSM identity): |L(s* + delta) - L(s*) - E||delta||^2| held to STATISTICAL_Z standard errors.

    delta(x) = A x + c; the left side is a paired Monte Carlo estimate (same seed, so the draws are
    shared), the right side exact (affine_perturbation_energy). The identity holds only if s* is the
    conditional expectation of the loss target, so a wrong target, a wrong alpha or an unmasked s* all
    leave a bias 2 E[delta . (s* - target)]. limit = z se + 1e-12 E||delta||^2 (rounding), z = STATISTICAL_Z.
    """
    a, c = case.perturbation
    best = optimal(case.mixture, case.schedule)

    def perturbed(x: np.ndarray, t: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return best(x, t, labels) + x @ a.T + c

    difference = (loss(perturbed, case.mixture, case.times, case.draws, case.seed, case.schedule)
                  - loss(best, case.mixture, case.times, case.draws, case.seed, case.schedule))
    expected = energy(case.mixture, a, c, case.times, case.schedule)
    return Measurement(abs(difference.mean - expected), z * difference.standard_error + 1e-12 * expected, case)


def check_cf1(case: CF1Case, loss: LossFunction = mixtures.dsm_loss,
              optimal: Callable[..., Any] = mixtures.optimal_score_function,
              energy: Callable[..., float] = mixtures.affine_perturbation_energy) -> None:
    """CF1: L(s* + delta) - L(s*) = E ||delta||^2 for delta(x) = A x + c, with dsm_loss's time and mask averaging.

    Tolerance: STATISTICAL_Z standard errors of the paired estimate (measure_cf1).
    """
    m = measure_cf1(case, loss, optimal, energy)
    require(m.ratio <= 1, "CF1", "L(s* + delta) - L(s*) differs from E||delta||^2 beyond the statistical tolerance",
            gap=m.observed, tolerance=m.limit, z=STATISTICAL_Z, case=case)


# ----------------------------------------------------------------------------------------
# CF2: score = Gaussian term + log-gradient of a Gaussian smoothing


def cf2_mixture(dim: int, components: int, seed: int, mean_scale: float = 1.0,
                condition: float = 4.0) -> SamplerMixtureCase:
    """CF2's p(x | y): a full-rank mixture with covariance eigenvalues in 0.3 [1, condition] and weight floor 0.05."""
    return SamplerMixtureCase(dim, components, seed, mean_scale, condition, scale=0.3, weight_floor=0.05)


@dataclass(frozen=True)
class CF2Case:
    """CF2 problem: a full-rank Gaussian mixture (``target``, dim 1 or 2) read as p(x | y) for one label y,
    C2 = c2_fraction / lambda_max(S_k), points near p_t (``spread`` > 1: tails) at one OU-half time."""

    target: SamplerMixtureCase
    c2_fraction: float
    time: float
    points: int
    point_seed: int
    spread: float = 1.0

    @cached_property
    def mixture(self) -> mixtures.LatentMixture:
        return self.target.mixture()

    @property
    def c2(self) -> float:
        return self.c2_fraction / float(np.max(np.linalg.eigvalsh(self.mixture.covariances)))

    @cached_property
    def x(self) -> np.ndarray:
        return diffused_points(self.mixture, self.points, self.point_seed, "ou-half", np.asarray(self.time),
                                self.spread)


@st.composite
def cf2_cases(draw: st.DrawFn, max_points: int = 3) -> CF2Case:
    """CF2Cases: 1-2 dimensions, 1-3 components, C2 from far below to just below 1/lambda_max, t in [1e-3, 8]."""
    dim, components, seed = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(seeds())
    c2_fraction = draw(st.sampled_from([0.05, 0.5, 0.9, 0.99]))
    time = float(math.exp(draw(st.floats(math.log(1e-3), math.log(8.0)))))
    points, point_seed, spread = draw(st.integers(1, max_points)), draw(seeds()), draw(st.sampled_from([1.0, 1.0, 3.0]))
    target = cf2_mixture(dim, components, seed, draw(st.sampled_from([0.5, 1.0, 3.0])),
                         draw(st.sampled_from([1.0, 4.0, 10.0])))
    return CF2Case(target, c2_fraction, time, points, point_seed, spread)


#: the most CF2's quadrature may claim for itself, relative to the size of the score terms
CF2_QUADRATURE_CAP = 1e-10


def cf2_tolerance(case: CF2Case, terms: mixtures.CF2Terms, full: np.ndarray) -> np.ndarray:
    """[N] allowance for CF2: 2 x the quadrature error estimate (|fine - coarse|, itself an overestimate of the
    fine rule's error) + the quadrature's a-priori rounding bound, together at most CF2_QUADRATURE_CAP times
    the terms' size, + the rounding of the closed-form score and of
    the sum, 32 (2 d + K) u kappa (1 + |log p_t|) (||s|| + ||gaussian|| + ||x||/lambda_min) as in
    mixture_tolerance (kappa, lambda_min: condition and smallest eigenvalue of alpha^2 S_k + sigma^2 I, the
    matrices the closed form solves with)."""
    mixture, x, t = case.mixture, case.x, case.time
    sched = get_schedule("ou-half")
    alpha = float(sched.alpha(mixtures.FLOAT64, np.float64(t)))
    sigma2 = float(sched.sigma2(mixtures.FLOAT64, np.float64(t)))
    values = np.linalg.eigvalsh(mixture.covariances)
    low, high = alpha**2 * values[:, 0] + sigma2, alpha**2 * values[:, -1] + sigma2
    condition = float(np.max(high / low))
    log_p = np.abs(np.asarray(mixtures.log_density(mixture, x, t, "ou-half"), dtype=np.float64))
    magnitude = row_norms(full)[:, 0] + row_norms(terms.gaussian)[:, 0] + row_norms(x)[:, 0] / float(np.min(low))
    score_rounding = 32 * (2 * case.target.dim + case.target.components) * U * condition * (1 + log_p) * magnitude
    # the quadrature's own error estimate comes from the code under check: capped, so a coarse or broken rule
    # cannot widen its own tolerance
    reported = np.minimum(2 * terms.quadrature_error + terms.rounding, CF2_QUADRATURE_CAP * magnitude)
    return reported + score_rounding


def measure_cf2(case: CF2Case, decomposition: Callable[..., mixtures.CF2Terms] = mixtures.cf2_decomposition,
                score: ScoreFunction = mixtures.score,
                tolerance: Callable[..., np.ndarray] = cf2_tolerance) -> Measurement:
    """CF2 (Fu, Yang, Wang, Chen 2024, score decomposition): -C2 x/(alpha^2 + C2 sigma^2) + grad h/h vs the score.

    Relative error of the decomposition (grad h/h by quadrature, reference.mixtures.cf2_decomposition) against
    the closed-form mixture score, held to cf2_tolerance. The worst point (largest error / tolerance) is reported, both relative to max |score| there.
    """
    terms = decomposition(case.mixture, case.x, case.time, case.c2)
    full = np.asarray(score(case.mixture, case.x, case.time, "ou-half"), dtype=np.float64)
    return worst_row_measurement(terms.gaussian + terms.smoothing, full, tolerance(case, terms, full), case)


def check_cf2(case: CF2Case, decomposition: Callable[..., mixtures.CF2Terms] = mixtures.cf2_decomposition,
              score: ScoreFunction = mixtures.score) -> None:
    """CF2: grad log p_t = -C2 x/(alpha^2 + C2 sigma^2) + grad h/h, h the N(alpha x/(alpha^2 + C2 sigma^2),
    sigma^2/(alpha^2 + C2 sigma^2)) smoothing of f = p e^(C2|x|^2/2), within quadrature and rounding (measure_cf2)."""
    m = measure_cf2(case, decomposition, score)
    require(m.ratio <= 1, "CF2", "Gaussian term + grad h/h != score", relative_error=m.observed, tolerance=m.limit,
            worst_ratio=m.ratio, case=case)
