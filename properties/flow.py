"""Flow matching: properties of exact velocity fields, parameterisation conversions and flow samplers.

Each property takes the implementation under check so a test can plant a bug (tests/test_flow.py):

* Velocity (exact, certified): a velocity implementation ``velocity_fn(mixture, x, t, interpolant)`` agrees with the
  arb enclosure of reference.flow.velocity at drawn points to a float64 allowance: VELOCITY_BASELINE_FACTOR times the
  error of the float64 reference (a best-practice baseline: the same closed form in the same dtype) plus a floor of
  VELOCITY_ULP_FLOOR ulp of the terms' size times the conditioning of the per-component solves. A 1e-3 error is
  1e10 times that allowance.
* Tweedie-like identity (exact, certified): the closed-form velocity (posterior means by Gaussian conditioning, no
  score) equals the velocity converted from the exact score, alpha' (x + sigma^2 score)/alpha - sigma' sigma score,
  as arb balls that must overlap: an identity of the exact reals, no tolerance.
* Path derivative (Monte Carlo): v(x, t) = E[d x_t/dt | x_t = x] means the residual r = alpha' x_0 + sigma' eps -
  v(x_t, t) has E[r phi(x_t)] = 0 for every test function phi; here phi in {1, x_j}, per coordinate, z-scores against
  FLOW_Z (two-sided 5 sigma: false alarm ~5.7e-7 per statistic, 2 D statistics per case). This catches what
  agreeing with our own reference cannot: a convention bug shared by candidate and reference (t vs 1 - t).
* Conversions (exact): each of the 12 conversions between velocity, eps, x0 and score maps the exact source
  prediction to the exact target prediction (arb) within 16 u (|a p| + |b x|) + the input's own rounding (the
  map is y = a p + b x; a and b are read off the map itself, it being linear), and converting back returns the input.
* Samplers (statistical): a flow sampler driven by the exact velocity from N(0, I) at t = 1 reaches the data law: the
  per-coordinate mean and variance z-scores of its samples (:func:`moment_z_scores`) stay below FLOW_Z.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from ditcheck.diffusion import samplers
from ditcheck.diffusion.flow import FlowMixtureOracle
from ditcheck.diffusion.metrics import mixture_moments
from ditcheck.reference import flow, formats, mixtures
from ditcheck.reference.flow import FLOW_PARAMETERISATIONS, INTERPOLANTS
from ditcheck.reference.mixtures import LatentMixture
from ditcheck.reference.precision import FLOAT64

from .measurement import Measurement
from .samplers import SamplerMixtureCase, sampler_mixture_cases
from .strategies import seeds
from .violation import require

__all__ = ["FLOW_Z", "VELOCITY_BASELINE_FACTOR", "VELOCITY_ULP_FLOOR", "CONVERSION_ULPS", "FlowCase", "flow_cases",
           "oracle_velocity", "measure_velocity", "check_velocity", "check_tweedie_velocity",
           "check_velocity_is_path_derivative", "measure_conversions", "check_conversions", "moment_z_scores",
           "FlowSamplerCase", "flow_sampler_cases", "check_flow_sampler", "ORDER_REFERENCE_FACTOR", "flow_order_errors"]

FLOW_Z = 5.0  # two-sided normal threshold: false alarm ~5.7e-7 per statistic
VELOCITY_BASELINE_FACTOR = 16.0  # two float64 evaluations of one closed form differ in operation order only
VELOCITY_ULP_FLOOR = 64.0  # ulps of the largest term, times the solves' condition number (baseline error may be 0)
CONVERSION_ULPS = 16.0  # y = a p + b x: a, b from <= 6 rounded operations, then 2 products and a sum (gamma_9 < 16 u)
UNIT_ROUNDOFF = formats.FLOAT64.unit_roundoff

VelocityFunction = Callable[[LatentMixture, np.ndarray, float, str], np.ndarray]
ConvertFunction = Callable[..., Any]


@dataclass(frozen=True)
class FlowCase:
    """A mixture, an interpolant, a time and points_seed for the query points (x_t draws plus far points)."""

    target: SamplerMixtureCase
    interpolant: str
    time: float
    points_seed: int
    points: int = 16


@st.composite
def flow_cases(draw: st.DrawFn) -> FlowCase:
    interpolant = draw(st.sampled_from(INTERPOLANTS))
    high = 20.0 if interpolant == "variance-exploding" else 1.0
    time = draw(st.sampled_from([1e-3, 0.05, 0.3, 0.7, 0.999, 1.0, high]))
    return FlowCase(draw(sampler_mixture_cases()), interpolant, min(time, high), draw(seeds()))


def _points(case: FlowCase, mixture: LatentMixture) -> np.ndarray:
    """Draws of x_t (where the mass is) and a few wide points (where responsibilities saturate)."""
    rng = np.random.default_rng(case.points_seed)
    x0 = mixtures.sample(mixture, case.points, case.points_seed)
    eps = rng.standard_normal(x0.shape)
    xt = flow.interpolate(x0, eps, case.time, case.interpolant)
    return np.concatenate([xt, 4 * rng.standard_normal((2, mixture.ambient_dim))])


def oracle_velocity(mixture: LatentMixture, x: np.ndarray, t: float, interpolant: str) -> np.ndarray:
    """ditcheck.diffusion.flow.FlowMixtureOracle's velocity (float64 torch), the default implementation checked."""
    oracle = FlowMixtureOracle(mixture, interpolant)
    return oracle.velocity(torch.as_tensor(x), t).numpy()


def _conditioning(mixture: LatentMixture, case: FlowCase) -> float:
    """max_k cond(alpha^2 S_k + sigma^2 I): how much the Cholesky solves of the closed form amplify rounding."""
    path = flow.get_interpolant(case.interpolant)
    alpha = float(path.alpha(FLOAT64, np.float64(case.time)))
    sigma = float(path.sigma(FLOAT64, np.float64(case.time)))
    eig = np.linalg.eigvalsh(alpha * alpha * mixture.covariances + sigma * sigma * np.eye(mixture.latent_dim))
    return float(np.max(eig[:, -1] / eig[:, 0]))


def measure_velocity(case: FlowCase, velocity_fn: VelocityFunction = oracle_velocity) -> Measurement:
    """observed: max over entries of the distance from velocity_fn's value to the exact ball; limit: the allowance."""
    mixture = case.target.mixture()
    x = _points(case, mixture)
    exact = flow.velocity(mixture, x, case.time, case.interpolant, precision="arb")
    baseline = flow.velocity(mixture, x, case.time, case.interpolant)
    candidate = np.asarray(velocity_fn(mixture, x, case.time, case.interpolant), dtype=np.float64)
    if candidate.shape != x.shape or not np.all(np.isfinite(candidate)):
        return Measurement(math.inf, 0.0, case)
    x0_mean, eps_mean = flow.posterior_means(mixture, x, case.time, case.interpolant)
    path = flow.get_interpolant(case.interpolant)
    t = np.float64(case.time)
    scale = (abs(float(path.d_alpha(FLOAT64, t))) * np.max(np.abs(x0_mean))
             + abs(float(path.d_sigma(FLOAT64, t))) * np.max(np.abs(eps_mean)) + np.max(np.abs(x)))
    baseline_error = float(np.max(np.abs(baseline - exact.mid) + exact.rad))
    allowance = (VELOCITY_BASELINE_FACTOR * baseline_error
                 + VELOCITY_ULP_FLOOR * UNIT_ROUNDOFF * scale * _conditioning(mixture, case))
    observed = float(np.max(np.maximum(np.abs(candidate - exact.mid) - exact.rad, 0.0)))
    return Measurement(observed, allowance, case)


def check_velocity(case: FlowCase, velocity_fn: VelocityFunction = oracle_velocity) -> float:
    """Raise PropertyViolation unless velocity_fn is the exact velocity field to the derived float64 allowance."""
    m = measure_velocity(case, velocity_fn)
    require(m.observed <= m.limit, "flow-velocity", "velocity differs from the exact field beyond float64 rounding",
            observed=m.observed, allowance=m.limit, case=case)
    return m.ratio


def check_tweedie_velocity(case: FlowCase, velocity_fn: Callable[..., Any] = flow.velocity) -> None:
    """Certified: the closed-form velocity equals the one from the exact score by Tweedie (reference.flow.tweedie_velocity).

    Both as arb balls, which must overlap: an identity of exact reals, no tolerance. Needs alpha_t > 0 (skipped at
    alpha_t = 0, where Tweedie's x_0 is undefined). ``velocity_fn(mixture, x, t, interpolant, precision=...)`` is the
    implementation checked (the reference's by default).
    """
    if float(flow.get_interpolant(case.interpolant).alpha(FLOAT64, np.float64(case.time))) == 0:
        return
    mixture = case.target.mixture()
    x = _points(case, mixture)
    closed = velocity_fn(mixture, x, case.time, case.interpolant, precision="arb")
    expected = flow.tweedie_velocity(mixture, x, case.time, case.interpolant, precision="arb")
    require(bool(np.all(expected.overlaps(closed.balls))), "flow-tweedie",
            "the closed-form velocity differs from the one Tweedie's formula gives", case=case)


def check_velocity_is_path_derivative(case: FlowCase, velocity_fn: VelocityFunction = oracle_velocity,
                                      samples: int = 20000) -> float:
    """Monte Carlo: E[(alpha' x_0 + sigma' eps - v(x_t, t)) phi(x_t)] = 0 for phi in {1, x_j}; returns the largest |z|."""
    mixture = case.target.mixture()
    rng = np.random.default_rng(case.points_seed)
    x0 = mixtures.sample(mixture, samples, case.points_seed)
    eps = rng.standard_normal(x0.shape)
    xt = flow.interpolate(x0, eps, case.time, case.interpolant)
    path = flow.get_interpolant(case.interpolant)
    t = np.float64(case.time)
    derivative = float(path.d_alpha(FLOAT64, t)) * x0 + float(path.d_sigma(FLOAT64, t)) * eps
    residual = derivative - np.asarray(velocity_fn(mixture, xt, case.time, case.interpolant), dtype=np.float64)
    worst = 0.0
    for statistic in (residual, residual * xt):
        sd = statistic.std(0, ddof=1)
        z = np.abs(statistic.mean(0)) / np.where(sd > 0, sd / math.sqrt(samples), np.inf)
        worst = max(worst, float(np.max(np.where(np.isfinite(statistic.mean(0)), z, np.inf))))
    require(worst <= FLOW_Z, "flow-path-derivative",
            "the velocity is not the conditional expectation of the path's derivative", z=worst, case=case)
    return worst


def measure_conversions(case: FlowCase, convert_fn: ConvertFunction = flow.convert) -> Measurement:
    """The worst entry over all conversions and round trips, as error and allowance relative to the largest value of
    that comparison (so observed / limit is that entry's error / allowance), at the case's points and time."""
    mixture = case.target.mixture()
    x = _points(case, mixture)
    alpha = float(flow.get_interpolant(case.interpolant).alpha(FLOAT64, np.float64(case.time)))
    exact = {name: flow.convert(flow.velocity(mixture, x, case.time, case.interpolant, precision="arb").mid, x,
                                case.time, "velocity", name, case.interpolant) for name in FLOW_PARAMETERISATIONS}
    zeros, ones = np.zeros_like(x), np.ones_like(x)
    worst = Measurement(0.0, 1.0, case)
    for source in FLOW_PARAMETERISATIONS:
        for target in FLOW_PARAMETERISATIONS:
            if source == target or (alpha == 0 and source in ("eps", "score")):
                continue
            p = exact[source]
            a = np.abs(flow.convert(ones, zeros, case.time, source, target, case.interpolant))
            b = np.abs(flow.convert(zeros, ones, case.time, source, target, case.interpolant))
            truth = flow.convert(p, x, case.time, source, target, case.interpolant, precision="arb")
            allowance = CONVERSION_ULPS * UNIT_ROUNDOFF * (a * np.abs(p) + b * np.abs(x)) + truth.rad
            got = np.asarray(convert_fn(p, x, case.time, source, target, case.interpolant), dtype=np.float64)
            error = np.abs(got - truth.mid)
            comparisons = [(error, allowance, float(np.max(np.abs(truth.mid))))]
            if not (alpha == 0 and target in ("eps", "score")):  # at alpha_t = 0 eps (= x) cannot be converted back
                back = np.asarray(convert_fn(got, x, case.time, target, source, case.interpolant), dtype=np.float64)
                a_back = np.abs(flow.convert(ones, zeros, case.time, target, source, case.interpolant))
                b_back = np.abs(flow.convert(zeros, ones, case.time, target, source, case.interpolant))
                back_allowance = (a_back * (allowance + error)
                                  + CONVERSION_ULPS * UNIT_ROUNDOFF * (a_back * np.abs(got) + b_back * np.abs(x)))
                comparisons.append((np.abs(back - p), back_allowance, float(np.max(np.abs(p)))))
            for errors, allowances, scale in comparisons:
                ratios = np.ravel(errors / allowances)
                ratios = np.where(np.isnan(ratios), math.inf, ratios)
                at = int(np.argmax(ratios))
                if ratios[at] > worst.ratio:
                    scale = scale if scale > 0 else 1.0
                    observed = float(np.ravel(errors)[at]) / scale if math.isfinite(ratios[at]) else math.inf
                    worst = Measurement(observed, float(np.ravel(allowances)[at]) / scale, case,
                                        {f"{source}->{target}": float(ratios[at])})  # the worst conversion
    return worst


def check_conversions(case: FlowCase, convert_fn: ConvertFunction = flow.convert) -> float:
    """Raise PropertyViolation unless every conversion maps exact predictions to exact predictions and round-trips."""
    m = measure_conversions(case, convert_fn)
    require(m.observed <= m.limit, "flow-conversion", "a parameterisation conversion is wrong", ratio=m.observed,
            worst=dict(m.forms), case=case)
    return m.ratio


def moment_z_scores(samples: np.ndarray, mixture: LatentMixture) -> tuple[float, float]:
    """(max_j |mean z|, max_j |variance z|) of samples against the mixture's exact moments.

    mean z = (sample mean_j - mean_j) / (sd_j / sqrt n); variance about the exact mean, whose standard error is
    sqrt((mu4_j - var_j^2) / n) with the exact fourth central moment mu4_j = sum_k w_k (d^4 + 6 d^2 s^2 + 3 s^4),
    d = m_kj - mean_j, s^2 = S_kjj. Non-finite samples give (inf, inf).
    """
    xs = np.asarray(samples, dtype=np.float64)
    if not np.all(np.isfinite(xs)):
        return math.inf, math.inf
    mean, covariance = mixture_moments(mixture)
    variance = np.diag(covariance)
    weights = mixture.weights / mixture.weights.sum()
    d = mixture.means @ mixture.basis.T - mean[None]
    s2 = np.diagonal(mixture.basis @ mixture.covariances @ mixture.basis.T, axis1=-2, axis2=-1)
    mu4 = weights @ (d**4 + 6 * d * d * s2 + 3 * s2 * s2)
    n = xs.shape[0]
    mean_z = float(np.max(np.abs(xs.mean(0) - mean) / np.sqrt(variance / n)))
    variance_z = float(np.max(np.abs(((xs - mean) ** 2).mean(0) - variance) / np.sqrt((mu4 - variance**2) / n)))
    return mean_z, variance_z


@dataclass(frozen=True)
class FlowSamplerCase:
    """A mixture, an interpolant (rectified-flow or trigonometric: both start from N(0, I) at t = 1), steps, seed."""

    target: SamplerMixtureCase
    interpolant: str
    steps: int
    seed: int
    samples: int = 4000


@st.composite
def flow_sampler_cases(draw: st.DrawFn) -> FlowSamplerCase:
    return FlowSamplerCase(draw(sampler_mixture_cases(max_dim=2, max_components=2)),
                           draw(st.sampled_from(["rectified-flow", "trigonometric"])), 200, draw(seeds()))


def check_flow_sampler(case: FlowSamplerCase, sampler: Callable[..., Any] = samplers.flow_heun) -> float:
    """The sampler with the exact velocity, N(0, I) at t = 1 to t = 0 in ``steps`` uniform steps, reaches the data law.

    Returns the largest |z|; raises PropertyViolation above FLOW_Z. At 200 steps the discretisation bias of Euler
    (O(1/steps)) and Heun (O(1/steps^2)) is far below the statistical resolution of 4000 samples.
    """
    mixture = case.target.mixture()
    oracle = FlowMixtureOracle(mixture, case.interpolant)
    generator = torch.Generator().manual_seed(case.seed % 2**63)
    x = torch.randn((case.samples, mixture.ambient_dim), generator=generator, dtype=torch.float64)
    result = sampler(oracle, x, samplers.flow_grid(case.steps), generator=generator)
    mean_z, variance_z = moment_z_scores(result.x.numpy(), mixture)
    worst = max(mean_z, variance_z)
    require(worst <= FLOW_Z, "flow-sampler", "the flow sampler with the exact velocity misses the target",
            mean_z=mean_z, variance_z=variance_z, case=case)
    return worst


#: The reference solution takes this many times the largest step count: flow_heun's own error is then (1/16)^2 = 0.4%
#: of Heun's error at that count (less at the others), which moves a fitted exponent by < 0.01
ORDER_REFERENCE_FACTOR = 16


def flow_order_errors(target: SamplerMixtureCase, interpolant: str, steps: Any,
                      methods: Mapping[str, Callable[..., Any]], points: int = 256, seed: int = 0,
                      reference: Callable[..., Any] = samplers.flow_heun) -> dict[str, list[float]]:
    """Per method: the RMS distance, over ``points`` starts x_1 ~ N(0, I), between its endpoint at t = 0 after n uniform
    steps (each n in ``steps``) and the flow ODE's solution (``reference`` with ORDER_REFERENCE_FACTOR max(steps)
    steps, shared by the methods), with the exact velocity.

    The global error of a one-step method of order p is C n^-p + O(n^-(p+1)): Euler's exponent is -1, Heun's -2
    (flow_heun's last step to t = 0 is an Euler step, a local error O(n^-2): order 2 is kept).
    """
    mixture = target.mixture()
    oracle = FlowMixtureOracle(mixture, interpolant)
    generator = torch.Generator().manual_seed(seed % 2**63)
    x = torch.randn((points, mixture.ambient_dim), generator=generator, dtype=torch.float64)
    exact = reference(oracle, x, samplers.flow_grid(ORDER_REFERENCE_FACTOR * max(int(n) for n in steps))).x
    return {name: [float((method(oracle, x, samplers.flow_grid(int(n))).x - exact).pow(2).sum(-1).mean().sqrt())
                   for n in steps] for name, method in methods.items()}
