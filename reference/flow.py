"""Flow matching: interpolant paths, exact velocity fields of latent Gaussian mixtures, parameterisation conversions.

The general interpolant (Albergo & Vanden-Eijnden 2023; Lipman et al. 2023; Liu et al. 2023) is

    x_t = alpha_t x_0 + sigma_t eps,   x_0 ~ p_data, eps ~ N(0, I) independent,

and its velocity field is the conditional expectation of the path's time derivative,

    v(x, t) = E[d x_t / dt | x_t = x] = alpha'_t E[x_0 | x_t = x] + sigma'_t E[eps | x_t = x].

The law of x_t is the ODE dx/dt = v(x, t) pushed forward (continuity equation), so integrating v from t = 1
(pure noise for the paths below) down to t ~ 0 samples the data. Interpolants (``INTERPOLANTS``):

* ``rectified-flow``: alpha_t = 1 - t, sigma_t = t, t in [0, 1] (SD3, Flux, Wan, Sana; diffusers'
  FlowMatch* schedulers with sigma = t): v = E[eps - x_0 | x_t].
* ``trigonometric``: alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2), t in [0, 1] (the GVP path of SiT; the cosine
  schedule in continuous time): variance preserving, alpha'_t = -pi/2 sigma_t, sigma'_t = pi/2 alpha_t.
* ``variance-exploding``: alpha_t = 1, sigma_t = t, t > 0 (Karras et al. 2022, EDM, with sigma(t) = t): v = E[eps | x_t],
  the EDM ODE dx/dt = (x - D(x; sigma)) / sigma with D = E[x_0 | x_t].

Exactness. For x = B h, h ~ sum_k w_k N(mu_k, S_k) (reference.mixtures.LatentMixture), x_t is the Gaussian mixture
of reference.mixtures with (alpha_t, sigma_t^2) of the interpolant, so both posterior means have closed forms:
E[x_0 | x] = B sum_k r_k(x) (mu_k + alpha_t S_k M_k^-1 (c - alpha_t mu_k)) by Gaussian conditioning per component
(reference.mixtures.posterior_mean_x0_closed_form) and E[eps | x] = -sigma_t grad log p_t(x) (Tweedie for the noise:
grad log p_t(x) = E[-eps/sigma_t | x_t = x]). :func:`velocity` combines the two; it uses no finite difference and no
Monte Carlo, and runs in float64, mp and arb (ball enclosures of the exact field) like the rest of reference/.
At t = 1 of the first two paths alpha_t = 0: x_t = eps, E[x_0 | x] = E[x_0] and v = x - E[x_0] (rectified flow),
which the closed form gives without dividing by alpha_t.

Conversions (:func:`convert`). The four parameterisations velocity, eps, x0, score are linear in (x0_hat, eps_hat):
x = alpha x0_hat + sigma eps_hat, v = alpha' x0_hat + sigma' eps_hat, score = -eps_hat / sigma. Solving the first two,
with det = alpha sigma' - sigma alpha' (1 for rectified flow, pi/2 trigonometric, 1 variance-exploding),
x0_hat = (sigma' x - sigma v) / det and eps_hat = (alpha v - alpha' x) / det.

Time shifts (:func:`time_shift`, :func:`exponential_time_shift`): SD3's resolution shift
t -> s t / (1 + (s - 1) t) (Esser et al. 2024, eq. 23; diffusers' ``shift``) and Flux's dynamic shift
t -> e^mu / (e^mu + (1/t - 1)^power) (diffusers' ``use_dynamic_shifting`` with ``mu``, ``time_shift_type="exponential"``);
the first with s = e^mu is the second with power 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import InvalidArgumentError, ShapeError, TimeOutOfRangeError
from .mixtures import LatentMixture, _ambient_terms, _check_mixture, _check_points, _components
from .precision import Precision, as_float64_array, reference_function, require_choice
from .schedules import _converted

__all__ = ["INTERPOLANTS", "FLOW_PARAMETERISATIONS", "Interpolant", "get_interpolant", "interpolate",
           "path_coefficients", "posterior_means", "velocity", "score", "tweedie_velocity", "convert", "time_shift", "exponential_time_shift"]

InterpolantName = Literal["rectified-flow", "trigonometric", "variance-exploding"]
INTERPOLANTS: tuple[InterpolantName, ...] = ("rectified-flow", "trigonometric", "variance-exploding")
FLOW_PARAMETERISATIONS = ("velocity", "eps", "x0", "score")


@dataclass(frozen=True)
class Interpolant:
    """One path x_t = alpha_t x_0 + sigma_t eps: its domain, alpha_t, sigma_t and their time derivatives in any precision."""

    name: InterpolantName

    @property
    def t_max(self) -> float:
        return math.inf if self.name == "variance-exploding" else 1.0

    def check_time(self, t: np.ndarray, argument: str = "t") -> None:
        """Raise TimeOutOfRangeError unless every t lies in (0, t_max] (sigma_t > 0: the law of x_t has a density)."""
        t = np.asarray(t, dtype=np.float64)
        if t.size and not np.all((t > 0) & (t <= self.t_max)):
            raise TimeOutOfRangeError(argument, f"times in (0, {self.t_max}] for interpolant {self.name!r}",
                                      f"values from {t.min()} to {t.max()}")

    def alpha(self, xp: Precision, t: Any) -> Any:
        if self.name == "rectified-flow":
            return 1 - t
        if self.name == "trigonometric":
            # cos(pi t / 2) as sin(pi (1 - t) / 2): 1 - t is exact near t = 1, so alpha_1 is exactly 0 (cos gives
            # 6.1e-17 in float64, which a conversion to x0 divides by) and relatively accurate just below 1
            return xp.sin(xp.pi() * (1 - t) / 2)
        return t * 0 + 1

    def sigma(self, xp: Precision, t: Any) -> Any:
        if self.name == "trigonometric":
            return xp.sin(xp.pi() * t / 2)
        return t

    def d_alpha(self, xp: Precision, t: Any) -> Any:
        """d alpha_t / dt."""
        if self.name == "rectified-flow":
            return t * 0 - 1
        if self.name == "trigonometric":
            return -xp.pi() / 2 * xp.sin(xp.pi() * t / 2)
        return t * 0

    def d_sigma(self, xp: Precision, t: Any) -> Any:
        """d sigma_t / dt."""
        if self.name == "trigonometric":
            return xp.pi() / 2 * xp.sin(xp.pi() * (1 - t) / 2)  # cos(pi t / 2), exactly 0 at t = 1 (see alpha)
        return t * 0 + 1


def get_interpolant(name: str | Interpolant) -> Interpolant:
    """The Interpolant named ``name`` (one of INTERPOLANTS)."""
    if isinstance(name, Interpolant):
        return name
    return Interpolant(require_choice(name, INTERPOLANTS, "interpolant"))  # type: ignore[arg-type]


def path_coefficients(xp: Precision, t: Any, interpolant: str | Interpolant, count: int,
                      argument: str = "t") -> tuple[Any, Any, Any, Any]:
    """(alpha_t, sigma_t, alpha'_t, sigma'_t), each of shape [T], T in {1, count}, for t > 0 in the path's domain.

    ``t`` is raw input (validated and converted here) or already in ``xp``'s number type (composition).
    """
    path = get_interpolant(interpolant)
    if np.ndim(t) > 1 or (np.ndim(t) == 1 and np.shape(t)[0] != count):
        raise ShapeError(argument, f"a scalar or shape [{count}] (one time per point)", str(np.shape(t)))
    if _converted(xp, t):
        times = np.reshape(np.asarray(t, dtype=object), (-1,))
        path.check_time(xp.to_float(times), argument)
    else:
        raw = np.reshape(as_float64_array(t, argument), (-1,))
        path.check_time(raw, argument)
        times = xp.asarray(raw)
    return path.alpha(xp, times), path.sigma(xp, times), path.d_alpha(xp, times), path.d_sigma(xp, times)


@reference_function(arrays=("x0", "eps"))
def interpolate(xp: Precision, x0: Any, eps: Any, t: Any, interpolant: str | Interpolant = "rectified-flow") -> Any:
    """x_t = alpha_t x0 + sigma_t eps for x0, eps [N, D] and t scalar or [N]."""
    if np.shape(x0) != np.shape(eps) or np.ndim(x0) != 2:
        raise ShapeError("eps", f"the shape of x0 {np.shape(x0)} (2-D [N, D])", str(np.shape(eps)))
    alpha, sigma, _, _ = path_coefficients(xp, t, interpolant, np.shape(x0)[0])
    return alpha[:, None] * x0 + sigma[:, None] * eps


def _posterior(xp: Precision, mixture: LatentMixture, x: Any, t: Any,
               interpolant: str | Interpolant) -> tuple[Any, Any, Any, Any, Any, Any]:
    """(E[x_0 | x], E[eps | x], alpha, sigma, alpha', sigma') in closed form (module docstring)."""
    _check_mixture(mixture)
    _check_points(x, mixture.ambient_dim)
    alpha, sigma, d_alpha, d_sigma = path_coefficients(xp, t, interpolant, np.shape(x)[0])
    components = _components(xp, mixture)
    terms = _ambient_terms(xp, mixture.basis, components, x, alpha, sigma * sigma)
    latent = terms.latent
    shrink = xp.sum(components.covariances[None] * latent.natural[:, :, None, :], axis=-1)  # S_k M_k^-1 (c - alpha mu_k)
    per_component = components.means[None] + alpha[:, None, None] * shrink
    latent_mean = xp.sum(latent.responsibilities[..., None] * per_component, axis=1)
    x0_mean = xp.matmul(latent_mean, xp.asarray(mixture.basis).T)
    eps_mean = -sigma[:, None] * terms.score
    return x0_mean, eps_mean, alpha, sigma, d_alpha, d_sigma


@reference_function(arrays=("x",))
def posterior_means(xp: Precision, mixture: LatentMixture, x: Any, t: Any,
                    interpolant: str | Interpolant = "rectified-flow") -> tuple[Any, Any]:
    """(E[x_0 | x_t = x], E[eps | x_t = x]) for the interpolant's path, in closed form; x [N, D], t scalar or [N]."""
    x0_mean, eps_mean, *_ = _posterior(xp, mixture, x, t, interpolant)
    return x0_mean, eps_mean


@reference_function(arrays=("x",))
def velocity(xp: Precision, mixture: LatentMixture, x: Any, t: Any,
             interpolant: str | Interpolant = "rectified-flow") -> Any:
    """The exact velocity field v(x, t) = alpha'_t E[x_0 | x_t = x] + sigma'_t E[eps | x_t = x] (rectified flow: E[eps - x_0 | x_t])."""
    x0_mean, eps_mean, _, _, d_alpha, d_sigma = _posterior(xp, mixture, x, t, interpolant)
    return d_alpha[:, None] * x0_mean + d_sigma[:, None] * eps_mean


@reference_function(arrays=("x",))
def score(xp: Precision, mixture: LatentMixture, x: Any, t: Any, interpolant: str | Interpolant = "rectified-flow") -> Any:
    """grad log p_t(x) of x_t = alpha_t x_0 + sigma_t eps (reference.mixtures' closed form with the path's alpha_t, sigma_t^2)."""
    _check_mixture(mixture)
    _check_points(x, mixture.ambient_dim)
    alpha, sigma, _, _ = path_coefficients(xp, t, interpolant, np.shape(x)[0])
    return _ambient_terms(xp, mixture.basis, _components(xp, mixture), x, alpha, sigma * sigma).score


@reference_function(arrays=("x",))
def tweedie_velocity(xp: Precision, mixture: LatentMixture, x: Any, t: Any,
                     interpolant: str | Interpolant = "rectified-flow") -> Any:
    """The velocity from the score alone: alpha' (x + sigma^2 s) / alpha - sigma' sigma s (Tweedie for x_0 and for eps).

    Equal to :func:`velocity` as exact reals (an identity the properties check in arb); needs alpha_t > 0.
    """
    alpha, sigma, d_alpha, d_sigma = (c[:, None] for c in path_coefficients(xp, t, interpolant, np.shape(x)[0]))
    if np.any(xp.to_float(alpha) == 0):
        raise TimeOutOfRangeError("t", "times with alpha_t > 0 (Tweedie's x_0 divides by alpha_t)", "alpha_t = 0")
    s = score.generic(xp, mixture, x, t, interpolant)
    return d_alpha * (x + sigma * sigma * s) / alpha - d_sigma * sigma * s


@reference_function(arrays=("prediction", "x"))
def convert(xp: Precision, prediction: Any, x: Any, t: Any, source: str, target: str,
            interpolant: str | Interpolant = "rectified-flow") -> Any:
    """Convert a model output at (x_t, t) between "velocity", "eps", "x0" and "score" for the interpolant (module docstring).

    At a time where alpha_t = 0 (t = 1 of rectified flow) x_t carries no x_0: converting *to* x0 from eps or score
    divides by alpha_t and is refused (TimeOutOfRangeError); from velocity it is exact.
    """
    for name, value in (("source", source), ("target", target)):
        require_choice(value, FLOW_PARAMETERISATIONS, name)
    if np.shape(prediction) != np.shape(x) or np.ndim(x) != 2:
        raise ShapeError("prediction", f"the shape of x {np.shape(x)} (2-D [N, D])", str(np.shape(prediction)))
    alpha, sigma, d_alpha, d_sigma = (c[:, None] for c in path_coefficients(xp, t, interpolant, np.shape(x)[0]))
    if source == target:
        return prediction
    x0 = None
    if source == "velocity":
        det = alpha * d_sigma - sigma * d_alpha
        x0 = (d_sigma * x - sigma * prediction) / det
        eps = (alpha * prediction - d_alpha * x) / det
    elif source == "x0":
        x0 = prediction
        eps = (x - alpha * prediction) / sigma
    else:
        eps = prediction if source == "eps" else -sigma * prediction
    if target == "eps":
        return eps
    if target == "score":
        return -eps / sigma
    if x0 is None:
        if np.any(xp.to_float(alpha) == 0):
            raise TimeOutOfRangeError("t", f"times with alpha_t > 0 to convert {source} to {target}",
                                      "a time with alpha_t = 0")
        x0 = (x - sigma * eps) / alpha
    if target == "x0":
        return x0
    return d_alpha * x0 + d_sigma * eps


def _check_unit_times(t: Any, argument: str) -> np.ndarray:
    times = as_float64_array(t, argument)
    if not np.all((times >= 0) & (times <= 1)):
        raise TimeOutOfRangeError(argument, "times in [0, 1]", f"values from {times.min()} to {times.max()}")
    return times


def time_shift(t: Any, shift: float) -> np.ndarray:
    """SD3's shift (Esser et al. 2024, eq. 23; diffusers FlowMatchEulerDiscreteScheduler ``shift``): s t / (1 + (s - 1) t).

    Float64 (a schedule formula, not a certified quantity); t in [0, 1], s > 0. time_shift(time_shift(t, a), b)
    = time_shift(t, a b): a shift applied twice is a shift by its square.
    """
    times = _check_unit_times(t, "t")
    if isinstance(shift, bool) or not isinstance(shift, (int, float, np.floating)) or not (math.isfinite(shift)
                                                                                          and shift > 0):
        raise InvalidArgumentError("shift", "a positive finite number", repr(shift))
    return shift * times / (1 + (shift - 1) * times)


def exponential_time_shift(t: Any, mu: float, power: float = 1.0) -> np.ndarray:
    """Flux's dynamic shift (diffusers ``time_shift_type="exponential"``): e^mu / (e^mu + (1/t - 1)^power); 0 at t = 0."""
    times = _check_unit_times(t, "t")
    for name, value in (("mu", mu), ("power", power)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
            raise InvalidArgumentError(name, "a finite number", repr(value))
    out = np.zeros_like(times)
    positive = times > 0
    out[positive] = math.exp(mu) / (math.exp(mu) + (1 / times[positive] - 1) ** power)
    return out
