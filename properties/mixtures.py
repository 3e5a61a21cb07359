"""Latent Gaussian mixtures: strategies for mixtures, points and times, and the properties LD1, LD2, Tweedie,
score = gradient of the log density and the certified (arb) mixture functions.

Claims (docs/claims.md): LD1, LD2, Tweedie, score-gradient, REF-arb. Every property takes the implementation
under check as an argument (the reference by default), so a test can plant a bug and show that the property
catches it. Cases are small frozen dataclasses whose repr rebuilds the input (``case.build()`` / ``case.mixture``).

float64 tolerances are a-priori rounding bounds, written next to each check: u = 2^-53 times a
dimension factor, the conditioning of the matrices solved, and the magnitude of the terms that are
added (sums can cancel, so the bound uses the terms, not the result). Ball checks need no tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import mpmath
import numpy as np
from hypothesis import strategies as st

from ditcheck.reference import mixtures
from ditcheck.reference.latent import ld2_score
from ditcheck.reference.precision import UNIT_ROUNDOFF as U
from ditcheck.reference.precision import Arb, BallArray, Mp
from ditcheck.reference.schedules import SCHEDULES, get_schedule

from .certified import precision_bits, require_contains, require_narrow
from .measurement import Measurement
from .schedules import TIME_RANGES, schedule_times
from .strategies import exact_orthonormal_columns, gaussian_mixture_parameters, orthonormal_columns, seeds
from .violation import require

__all__ = [
    "MixtureSpec",
    "mixture_specs",
    "diffused_points",
    "MixtureCase",
    "mixture_cases",
    "SamplerMixtureCase",
    "sampler_mixture_cases",
    "row_norms",
    "mixture_tolerance",
    "ScoreFunction",
    "worst_row_measurement",
    "ld1_tolerance",
    "measure_ld1",
    "check_ld1",
    "DenoiserFactory",
    "ld2_tolerance",
    "measure_ld2",
    "check_ld2",
    "check_score_is_gradient",
    "check_tweedie",
    "CERTIFIED_FUNCTIONS",
    "check_certified_contains_mp",
]


# ----------------------------------------------------------------------------------------
# Latent mixtures


@dataclass(frozen=True)
class MixtureSpec:
    """A reproducible LatentMixture: sizes, seeds, whether B is exactly orthonormal, mean scale and condition."""

    ambient: int
    latent: int
    components: int
    seed: int
    basis_seed: int
    exact_basis: bool = False
    mean_scale: float = 1.0
    condition: float = 10.0

    def build(self) -> mixtures.LatentMixture:
        make_basis = exact_orthonormal_columns if self.exact_basis else orthonormal_columns
        basis = make_basis(self.ambient, self.latent, self.basis_seed)
        weights, means, covariances = gaussian_mixture_parameters(
            self.latent, self.components, np.random.default_rng(self.seed), self.mean_scale, self.condition, 0.3, 0.05)
        return mixtures.LatentMixture(basis, weights, means, covariances)


@st.composite
def mixture_specs(draw: st.DrawFn, exact_basis: bool = False, max_ambient: int = 6, max_latent: int = 3,
                  max_components: int = 3, basis_seed: int | None = None) -> MixtureSpec:
    """MixtureSpecs with d0 <= D (d0 = D included), 1..K components, means and conditioning varied."""
    ambient = draw(st.integers(1, max_ambient))
    return MixtureSpec(ambient, draw(st.integers(1, min(ambient, max_latent))), draw(st.integers(1, max_components)),
                       draw(seeds()), draw(seeds()) if basis_seed is None else basis_seed, exact_basis,
                       draw(st.sampled_from([0.5, 1.0, 3.0])), draw(st.sampled_from([1.0, 10.0, 100.0])))



def diffused_points(mixture: mixtures.LatentMixture, count: int, seed: int, schedule: str, t: np.ndarray,
                     spread: float) -> np.ndarray:
    """Points near p_t: alpha x_0 + spread sigma z (spread > 1 reaches into the tails)."""
    rng = np.random.default_rng(seed)
    sched = get_schedule(schedule)
    alpha = np.asarray(sched.alpha(mixtures.FLOAT64, t)).reshape(-1, 1)
    sigma = np.sqrt(np.asarray(sched.sigma2(mixtures.FLOAT64, t))).reshape(-1, 1)
    x0 = mixtures.sample(mixture, count, int(rng.integers(2**32)))
    return alpha * x0 + spread * sigma * rng.standard_normal(x0.shape)


@dataclass(frozen=True)
class MixtureCase:
    """A mixture, N points and their time(s): one shared t, or one per point (``per_point_times``)."""

    spec: MixtureSpec
    points: int
    point_seed: int
    schedule: str
    time: float
    per_point_times: bool = False
    spread: float = 1.0

    @cached_property
    def mixture(self) -> mixtures.LatentMixture:
        return self.spec.build()

    @cached_property
    def t(self) -> Any:
        """float (shared) or [N] array: per-point times spread around ``time`` within the domain."""
        if not self.per_point_times:
            return self.time
        low, high = TIME_RANGES[self.schedule]
        factors = np.random.default_rng(self.point_seed ^ 0x7157).uniform(0.5, 2.0, self.points)
        times = np.clip(self.time * factors, low, high)
        return np.round(times) if self.schedule == "ddpm" else times

    @cached_property
    def x(self) -> np.ndarray:
        return diffused_points(self.mixture, self.points, self.point_seed, self.schedule, np.asarray(self.t),
                                self.spread)

    def times_array(self) -> np.ndarray:
        """t as an [N] array (reference.latent.ld2_score with mp/arb needs 1-D times)."""
        return np.broadcast_to(np.asarray(self.t, dtype=np.float64), (self.points,)).copy()

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 (alpha_t, sigma_t^2), shape [N, 1]."""
        sched = get_schedule(self.schedule)
        times = self.times_array()
        return (np.asarray(sched.alpha(mixtures.FLOAT64, times)).reshape(-1, 1),
                np.asarray(sched.sigma2(mixtures.FLOAT64, times)).reshape(-1, 1))

    def condition(self) -> np.ndarray:
        """[N, 1]: max_k condition number of alpha^2 S_k + sigma^2 I, the matrices the reference factorises."""
        alpha, sigma2 = self.coefficients()
        values = np.linalg.eigvalsh(self.mixture.covariances)  # [K, d0]
        low = alpha**2 * values[:, 0] + sigma2
        high = alpha**2 * values[:, -1] + sigma2
        return np.max(high / low, axis=1, keepdims=True)


@st.composite
def mixture_cases(draw: st.DrawFn, exact_basis: bool = False, max_points: int = 4, max_ambient: int = 6,
                  max_latent: int = 3, max_components: int = 3,
                  schedules: tuple[str, ...] = SCHEDULES) -> MixtureCase:
    """MixtureCases over every schedule, shared and per-point times, points near p_t and in its tails."""
    spec = draw(mixture_specs(exact_basis, max_ambient, max_latent, max_components))
    schedule, time = draw(schedule_times(schedules))
    return MixtureCase(spec, draw(st.integers(1, max_points)), draw(seeds()), schedule, time,
                       draw(st.booleans()), draw(st.sampled_from([1.0, 1.0, 3.0])))


@dataclass(frozen=True)
class SamplerMixtureCase:
    """A full-rank Gaussian mixture in R^dim (rebuild with ``mixture()``), drawn by
    strategies.gaussian_mixture_parameters from ``seed``: the samplers' and flows' targets, CF2's p(x | y).
    Lives here (NumPy only) so properties.conditional need not import torch; properties.samplers re-exports it."""

    dim: int
    components: int
    seed: int
    mean_scale: float = 1.0
    condition: float = 4.0
    scale: float = 0.5
    weight_floor: float = 0.2

    def mixture(self) -> mixtures.LatentMixture:
        return mixtures.gaussian_mixture(*gaussian_mixture_parameters(self.dim, self.components,
                                                                      np.random.default_rng(self.seed),
                                                                      self.mean_scale, self.condition, self.scale,
                                                                      self.weight_floor))


@st.composite
def sampler_mixture_cases(draw: st.DrawFn, max_dim: int = 3, max_components: int = 3) -> SamplerMixtureCase:
    return SamplerMixtureCase(draw(st.integers(1, max_dim)), draw(st.integers(1, max_components)), draw(seeds()),
                              draw(st.sampled_from([0.5, 1.0, 2.0])), draw(st.sampled_from([1.0, 4.0])),
                              draw(st.sampled_from([0.2, 0.5, 1.0])))


def row_norms(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(a, dtype=np.float64), axis=-1, keepdims=True)


def mixture_tolerance(case: MixtureCase, *terms: np.ndarray) -> np.ndarray:
    """[N, 1] a-priori bound for float64 mixture scores: c u kappa (1 + |log p_t(x)|) sum ||term||.

    The reference factorises alpha^2 S_k + sigma^2 I (condition kappa) and solves with it (relative error
    ~ d0 kappa u per solve); responsibilities come from exp of log-component values, whose absolute
    rounding ~ u |log p| becomes a relative error of the same size; projections by B add D u. The
    factor c = 32 (D + d0 + K) covers the operation counts with margin.
    """
    spec = case.spec
    log_p = np.asarray(mixtures.log_density(case.mixture, case.x, case.t, case.schedule)).reshape(-1, 1)
    factor = 32 * (spec.ambient + spec.latent + spec.components) * U
    return factor * case.condition() * (1 + np.abs(log_p)) * sum(row_norms(term) for term in terms)


def _precision_kind(precision: str) -> str:
    return precision.partition(":")[0]


def _overlap_or_close(left: Any, right: Any, tolerance: np.ndarray | None, claim: str, message: str,
                      case: Any) -> None:
    """Balls (arb): must overlap. mp: must agree to 10^-(digits - 8) relative. float64: within ``tolerance``."""
    if isinstance(left, BallArray):
        require_narrow(left, claim, case=case)
        require_narrow(right, claim, case=case)
        overlap = left.overlaps(right)
        require(overlap.all(), claim, message + " (balls disjoint)", disjoint=int((~overlap).sum()),
                worst=float(np.max(np.abs(left.mid - right.mid))), case=case)
        return
    left_f, right_f = (np.asarray(np.frompyfunc(float, 1, 1)(v), dtype=np.float64) for v in (left, right))
    if np.asarray(left).dtype == object:  # mpmath: agreement to the working precision, with margin
        diff = np.asarray(np.frompyfunc(lambda a, b: float(abs(a - b)), 2, 1)(left, right), dtype=np.float64)
        tolerance = 10.0 ** (-(mpmath.mp.dps - 8)) * (1 + np.abs(left_f) + np.abs(right_f))
    else:
        diff = np.abs(left_f - right_f)
    require(np.all(diff <= tolerance), claim, message, worst=float(np.max(diff)),
            worst_ratio=float(np.max(diff / tolerance)), case=case)


ScoreFunction = Callable[..., Any]


def worst_row_measurement(got: Any, expected: np.ndarray, tolerance: np.ndarray, case: Any) -> Measurement:
    """The worst row of a float64 comparison: observed = its max |got - expected| / max |expected| (relative error),
    limit = its tolerance on the same scale, so observed/limit is the row's max |got - expected| / tolerance."""
    diff = np.max(np.abs(np.asarray(got, dtype=np.float64) - expected), axis=-1)
    tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64).reshape(-1), diff.shape)
    ratios = np.divide(diff, tol, out=np.where(diff > 0, np.inf, 0.0), where=tol > 0)
    worst = int(np.argmax(ratios))
    scale = max(float(np.max(np.abs(expected[worst]))), 1e-300)
    return Measurement(float(diff[worst] / scale), float(tol[worst] / scale), case)


def ld1_tolerance(case: MixtureCase, on: np.ndarray, orth: np.ndarray, full: np.ndarray) -> np.ndarray:
    """[N, 1] float64 allowance for LD1: mixture_tolerance of the two terms, the score and x / sigma^2
    (x - B B^T x is formed with error ~ u ||x||, then divided by sigma^2: present even when the terms are ~0)."""
    _, sigma2 = case.coefficients()
    return mixture_tolerance(case, on, orth, full, case.x / sigma2)


def measure_ld1(case: MixtureCase, decomposition: ScoreFunction = mixtures.ld1_decomposition,
                score: ScoreFunction = mixtures.score,
                tolerance: Callable[..., np.ndarray] = ld1_tolerance) -> Measurement:
    """LD1 (Hu et al. 2024, sec. 3, score decomposition): float64 relative error of on + orth vs the score, held to its rounding tolerance.

    ``tolerance(case, on, orth, full)`` -> [N, 1] absolute allowance (ld1_tolerance). The worst point is reported.
    """
    on, orth = decomposition(case.mixture, case.x, case.t, case.schedule)
    full = np.asarray(score(case.mixture, case.x, case.t, case.schedule), dtype=np.float64)
    return worst_row_measurement(np.asarray(on) + np.asarray(orth), full, tolerance(case, on, orth, full), case)


def check_ld1(case: MixtureCase, decomposition: ScoreFunction = mixtures.ld1_decomposition,
              score: ScoreFunction = mixtures.score, precision: str = "float64") -> None:
    """LD1: B grad log p^h_t(B^T x) - (I - B B^T) x / sigma_t^2 equals grad log p_t(x).

    arb: the balls overlap; mp: agreement to the working precision. Both need an exactly orthonormal B
    (exact_orthonormal_columns): with B^T B != I the two sides differ by terms in B^T B - I, which the
    score keeps and LD1 drops. float64: within mixture_tolerance (measure_ld1).
    """
    if _precision_kind(precision) == "float64":
        m = measure_ld1(case, decomposition, score)
        require(m.ratio <= 1, "LD1", "on-subspace + orthogonal terms != score", relative_error=m.observed,
                tolerance=m.limit, worst_ratio=m.ratio, case=case)
        return
    with mpmath.workdps(60):
        on, orth = decomposition(case.mixture, case.x, case.t, case.schedule, precision=precision)
        full = score(case.mixture, case.x, case.t, case.schedule, precision=precision)
        if isinstance(on, BallArray):
            with Arb(precision_bits(precision)).context():  # ball sums round at flint's working precision
                total = BallArray(on.balls + orth.balls)
            _overlap_or_close(total, full, None, "LD1", "on-subspace + orthogonal terms != score", case)
            return
        _overlap_or_close(on + orth, full, None, "LD1", "on-subspace + orthogonal terms != score", case)


DenoiserFactory = Callable[[mixtures.LatentMixture, str], Callable[..., Any]]


def ld2_tolerance(case: MixtureCase, network: np.ndarray, full: np.ndarray) -> np.ndarray:
    """[N, 1] float64 allowance for LD2: mixture_tolerance of the score and of 2 x / sigma^2 (the network form
    adds B f / sigma^2 and -x / sigma^2, each far larger than the score when sigma is small)."""
    _, sigma2 = case.coefficients()
    return mixture_tolerance(case, full, 2 * case.x / sigma2)


def measure_ld2(case: MixtureCase, denoiser: DenoiserFactory = mixtures.denoiser_q_function,
                network_score: ScoreFunction = ld2_score, score: ScoreFunction = mixtures.score,
                tolerance: Callable[..., np.ndarray] = ld2_tolerance) -> Measurement:
    """LD2 (Hu et al. 2024, sec. 3, score-network form): float64 relative error of B q(B^T x)/sigma^2 - x/sigma^2 vs the score.

    ``network_score`` has reference.latent.ld2_score's signature (properties.torch_dit.torch_ld2_score
    puts ditcheck's torch LatentScoreNetwork there). ``tolerance(case, network, full)`` -> [N, 1] (ld2_tolerance).
    """
    times = case.times_array()
    f = denoiser(case.mixture, case.schedule)
    network = np.asarray(network_score(case.x, times, case.mixture.basis, f, case.schedule), dtype=np.float64)
    full = np.asarray(score(case.mixture, case.x, case.t, case.schedule), dtype=np.float64)
    return worst_row_measurement(network, full, tolerance(case, network, full), case)


def check_ld2(case: MixtureCase, denoiser: DenoiserFactory = mixtures.denoiser_q_function,
              network_score: ScoreFunction = ld2_score, score: ScoreFunction = mixtures.score,
              precision: str = "float64") -> None:
    """LD2: with W_B = B and f = q (q = sigma^2 grad log p^h_t + h), s(x, t) = B f(B^T x)/sigma^2 - x/sigma^2 is the score.

    Same exact-basis remark as LD1 for arb. float64: measure_ld2.
    """
    if _precision_kind(precision) == "float64":
        m = measure_ld2(case, denoiser, network_score, score)
        require(m.ratio <= 1, "LD2", "ld2_score with f = q != score", relative_error=m.observed, tolerance=m.limit,
                worst_ratio=m.ratio, case=case)
        return
    with mpmath.workdps(60):
        times = case.times_array()
        f = denoiser(case.mixture, case.schedule)
        network = network_score(case.x, times, case.mixture.basis, f, case.schedule, precision=precision)
        full = score(case.mixture, case.x, case.t, case.schedule, precision=precision)
        _overlap_or_close(network, full, None, "LD2", "ld2_score with f = q != score", case)


def check_score_is_gradient(case: MixtureCase, score: ScoreFunction = mixtures.score,
                            log_density: ScoreFunction = mixtures.log_density, digits: int = 50) -> None:
    """The score is the gradient of the log density: <s(x), d> vs the mp central difference of log p_t along d.

    ``log_density`` must be a reference function (its ``.generic`` runs on mp objects); ``score`` is any
    function with the reference signature returning float64 or mp values.

    At ``digits`` digits with steps h = 1e-12 and h/2 the difference D(h/2) has truncation error
    ~ |D(h) - D(h/2)| / 3 and rounding ~ 10^-digits |log p| / h; the tolerance is 4 |D(h) - D(h/2)|
    plus 10^-(digits - 14) (1 + |log p|) (rounding with margin) plus the float64 rounding of the score
    (mixture_tolerance, times ||d||) when the score under check returns float64.
    """
    direction = np.random.default_rng(case.point_seed ^ 0xD1DE).standard_normal(case.x.shape)
    with mpmath.workdps(digits):
        xp = Mp(digits)
        x_mp = xp.asarray(case.x)
        d_mp = xp.asarray(direction)

        def central(step: mpmath.mpf) -> np.ndarray:
            # perturbed points are not float64 numbers: evaluate the generic function on mp objects
            ahead = log_density.generic(xp, case.mixture, x_mp + step * d_mp, case.t, case.schedule)
            behind = log_density.generic(xp, case.mixture, x_mp - step * d_mp, case.t, case.schedule)
            return (ahead - behind) / (2 * step)

        h = mpmath.mpf("1e-12")
        coarse, fine = central(h), central(h / 2)
        values = score(case.mixture, case.x, case.t, case.schedule)
        log_p = np.asarray(np.frompyfunc(float, 1, 1)(log_density.generic(xp, case.mixture, x_mp, case.t,
                                                                            case.schedule)), dtype=np.float64)
        if np.asarray(values).dtype == object:
            predicted = np.sum(values * d_mp, axis=-1)
            float64_rounding = 0.0
        else:
            predicted = np.sum(np.asarray(values, dtype=np.float64) * direction, axis=-1)
            _, sigma2 = case.coefficients()
            # |<s_float64 - s, d>| <= ||s_float64 - s|| ||d||, the score's rounding as in mixture_tolerance
            float64_rounding = (mixture_tolerance(case, values, case.x / sigma2) * row_norms(direction))[:, 0]
        gap = np.asarray(np.frompyfunc(lambda a, b: float(abs(a - b)), 2, 1)(predicted, fine), dtype=np.float64)
        truncation = np.asarray(np.frompyfunc(lambda a, b: float(abs(a - b)), 2, 1)(coarse, fine), dtype=np.float64)
    tolerance = 4 * truncation + 10.0 ** (-(digits - 14)) * (1 + np.abs(log_p)) + float64_rounding
    require(np.all(gap <= tolerance), "score-gradient", "score is not the gradient of log_density",
            worst=float(np.max(gap)), tolerance=float(np.max(tolerance)), case=case)


def check_tweedie(case: MixtureCase, from_score: ScoreFunction = mixtures.posterior_mean_x0,
                  closed_form: ScoreFunction = mixtures.posterior_mean_x0_closed_form,
                  precision: str = "float64") -> None:
    """Tweedie: (x + sigma_t^2 grad log p_t(x)) / alpha_t equals E[x_0 | x_t = x] from per-component Gaussian conditioning.

    Holds for the exact given B (no orthonormality needed), so arb balls must overlap for QR bases too.
    float64: the Tweedie side adds x and sigma^2 s (each up to |x|) then divides by alpha.
    """
    with mpmath.workdps(60):
        tweedie = from_score(case.mixture, case.x, case.t, case.schedule, precision=precision)
        direct = closed_form(case.mixture, case.x, case.t, case.schedule, precision=precision)
        if isinstance(tweedie, BallArray):
            _overlap_or_close(tweedie, direct, None, "Tweedie", "Tweedie posterior mean != closed form", case)
            return
        alpha, _ = case.coefficients()
        tolerance = None if _precision_kind(precision) != "float64" else mixture_tolerance(
            case, case.x / alpha, tweedie, direct)
        _overlap_or_close(tweedie, direct, tolerance, "Tweedie", "Tweedie posterior mean != closed form", case)


CERTIFIED_FUNCTIONS = ("log_density", "score", "latent_score", "ld1_decomposition")


def check_certified_contains_mp(case: MixtureCase, name: str, fn: ScoreFunction | None = None, bits: int = 128,
                                digits: int = 60) -> None:
    """arb:bits balls of a certified mixture function contain the mp:digits reference values.

    mp at 60 digits errs by ~1e-58 relative, far inside a 128-bit ball (~1e-36), so a miss means the arb
    path is wrong (e.g. something computed in float64). The balls must also be narrow.
    ``fn`` is the implementation checked (default: the reference function ``name``); mp always comes
    from the reference.
    """
    reference = getattr(mixtures, name)
    fn = fn or reference
    argument = case.x @ case.mixture.basis if name == "latent_score" else case.x
    with mpmath.workdps(digits):
        balls = fn(case.mixture, argument, case.t, case.schedule, precision=f"arb:{bits}")
        values = reference(case.mixture, argument, case.t, case.schedule, precision=f"mp:{digits}")
    for ball, value in zip(balls if isinstance(balls, tuple) else (balls,),
                           values if isinstance(values, tuple) else (values,)):
        require_contains(ball, value, "REF-arb", f"arb {name}", case=case)
