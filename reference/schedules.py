"""Forward diffusion schedules x_t = alpha_t x_0 + sigma_t z and prediction conversions.

Schedules (docs/conventions.md#diffusion-schedules):

* ``ou-half``: dX = -X/2 dt + dW; alpha_t = exp(-t/2), sigma_t^2 = 1 - exp(-t), t >= 0 (Hu et al.; Fu et al.).
* ``ou-unit``: dX = -X dt + sqrt(2) dB; alpha_t = exp(-t), sigma_t^2 = 1 - exp(-2t), t >= 0 (RTK paper).
* ``vp-linear``: beta(t) = b0 + t (b1 - b0), t in [0, 1], b0 = 1/10, b1 = 20 (exact decimals);
  alpha_t = exp(-t^2 (b1 - b0)/4 - t b0/2), sigma_t^2 = 1 - alpha_t^2 (Song et al. 2021, score_sde).
* ``ddpm``: betas = linspace(1e-4, 0.02, 1000) as float64 values (read exactly), alpha_bar_n =
  prod_{i<=n} (1 - beta_i), alpha = sqrt(alpha_bar), sigma^2 = 1 - alpha_bar; t is the integer index n.

sigma^2 is computed as -expm1(2 log alpha) so it keeps full relative accuracy near t = 0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import InvalidArgumentError, ShapeError, TimeOutOfRangeError
from .precision import Float64, Precision, as_float64_array, reference_function, require_choice

__all__ = ["SCHEDULES", "Schedule", "get_schedule", "alpha", "sigma2", "sigma", "convert_prediction",
           "PARAMETERISATIONS", "check_times", "coefficients"]

ScheduleName = Literal["ou-half", "ou-unit", "vp-linear", "ddpm"]
SCHEDULES: tuple[ScheduleName, ...] = ("ou-half", "ou-unit", "vp-linear", "ddpm")
PARAMETERISATIONS = ("eps", "x0", "v", "score")

DDPM_BETAS = np.linspace(1e-4, 0.02, 1000)


@dataclass(frozen=True)
class Schedule:
    """One forward schedule: its domain and log alpha_t in any precision."""

    name: ScheduleName

    @property
    def t_max(self) -> float:
        return {"ou-half": np.inf, "ou-unit": np.inf, "vp-linear": 1.0, "ddpm": len(DDPM_BETAS) - 1}[self.name]

    def check_time(self, t: np.ndarray, argument: str = "t", *, positive: bool = False) -> None:
        """Raise TimeOutOfRangeError unless every t lies in the domain (t > 0 where ``positive``)."""
        t = np.asarray(t, dtype=np.float64)
        low_ok = t > 0 if positive else t >= 0
        if not np.all(low_ok & (t <= self.t_max)):
            low = "(0" if positive else "[0"
            raise TimeOutOfRangeError(argument, f"times in {low}, {self.t_max}] for schedule {self.name!r}",
                                      f"values from {t.min()} to {t.max()}")
        if self.name == "ddpm" and not np.all(t == np.round(t)):
            raise TimeOutOfRangeError(argument, "integer step indices 0..999 for schedule 'ddpm'",
                                      f"non-integer values such as {t[t != np.round(t)][0]}")

    def log_alpha(self, xp: Precision, t: Any) -> Any:
        if self.name == "ou-half":
            return -t / 2
        if self.name == "ou-unit":
            return -t
        if self.name == "vp-linear":
            # b0 = 1/10 and b1 = 20 are the exact decimals of score_sde (not the double nearest 0.1)
            beta_min, beta_max = xp.const(1) / 10, xp.const(20)
            return -t * t * (beta_max - beta_min) / 4 - t * beta_min / 2
        # ddpm: log alpha_n = 1/2 sum_{i<=n} log(1 - beta_i)
        index = np.asarray(xp.to_float(t), dtype=np.int64)
        if isinstance(xp, Float64):
            return _ddpm_log_alpha_bar_float64()[index] / 2
        return np.cumsum(xp.log1p(-xp.asarray(DDPM_BETAS)))[index] / 2

    def alpha(self, xp: Precision, t: Any) -> Any:
        return xp.exp(self.log_alpha(xp, t))

    def sigma2(self, xp: Precision, t: Any) -> Any:
        return -xp.expm1(2 * self.log_alpha(xp, t))


@functools.cache
def _ddpm_log_alpha_bar_float64() -> np.ndarray:
    """log alpha_bar_n for every n, each prefix sum correctly rounded (math.fsum).

    A running float64 sum would err by up to n u |log alpha_bar_n| (6e-14 relative at n = 327);
    with fsum the only error left is log1p's (<= 1 ulp per term, all terms of one sign).
    """
    logs = np.log1p(-DDPM_BETAS)
    return np.array([math.fsum(logs[:n + 1]) for n in range(len(logs))])


def get_schedule(name: str | Schedule) -> Schedule:
    """The Schedule named ``name`` (one of SCHEDULES)."""
    if isinstance(name, Schedule):
        return name
    return Schedule(require_choice(name, SCHEDULES, "schedule"))  # type: ignore[arg-type]


def _time(xp: Precision, t: Any, schedule: str | Schedule) -> tuple[Schedule, Any]:
    sched = get_schedule(schedule)
    sched.check_time(xp.to_float(t))
    return sched, t


@reference_function(arrays=("t",))
def alpha(xp: Precision, t: Any, schedule: str | Schedule = "ou-half") -> Any:
    """Signal coefficient alpha_t of the forward process x_t = alpha_t x_0 + sigma_t z."""
    sched, t = _time(xp, t, schedule)
    return sched.alpha(xp, t)


@reference_function(arrays=("t",))
def sigma2(xp: Precision, t: Any, schedule: str | Schedule = "ou-half") -> Any:
    """Noise variance sigma_t^2 = 1 - alpha_t^2 of the forward process (variance-preserving)."""
    sched, t = _time(xp, t, schedule)
    return sched.sigma2(xp, t)


@reference_function(arrays=("t",))
def sigma(xp: Precision, t: Any, schedule: str | Schedule = "ou-half") -> Any:
    """Noise standard deviation sigma_t = sqrt(1 - alpha_t^2)."""
    sched, t = _time(xp, t, schedule)
    return xp.sqrt(sched.sigma2(xp, t))


@reference_function(arrays=("prediction", "x", "t"))
def convert_prediction(xp: Precision, prediction: Any, x: Any, t: Any, source: str, target: str,
                       schedule: str | Schedule = "ou-half") -> Any:
    """Convert a model output between parameterisations at (x_t, t) (docs/conventions.md#parameterisations).

    eps: the noise z; x0: (x - sigma eps)/alpha; v: alpha eps - sigma x0 (Salimans & Ho 2022);
    score: -eps/sigma. ``t`` broadcasts against ``x`` (pass shape [N, 1, ...] for per-sample t).
    """
    for name, value in (("source", source), ("target", target)):
        require_choice(value, PARAMETERISATIONS, name)
    sched = get_schedule(schedule)
    sched.check_time(xp.to_float(t), positive=True)
    if np.shape(prediction) != np.shape(x):
        raise InvalidArgumentError("prediction", f"the shape of x {np.shape(x)}", str(np.shape(prediction)))
    a, s = sched.alpha(xp, t), xp.sqrt(sched.sigma2(xp, t))
    # to eps first (alpha^2 + sigma^2 = 1 throughout)
    if source == "eps":
        eps = prediction
    elif source == "x0":
        eps = (x - a * prediction) / s
    elif source == "v":
        eps = a * prediction + s * x
    else:
        eps = -s * prediction
    if target == "eps":
        return eps
    if target == "x0":
        return (x - s * eps) / a
    if target == "v":
        return a * eps - s * (x - s * eps) / a
    return -eps / s


def check_times(t: Any, schedule: str | Schedule, argument: str = "t", *, positive: bool = True) -> np.ndarray:
    """Validate times for a schedule; returns them as a float64 array."""
    arr = as_float64_array(t, argument)
    get_schedule(schedule).check_time(arr, argument, positive=positive)
    return arr


def coefficients(xp: Precision, t: Any, schedule: str | Schedule, count: int,
                 argument: str = "t") -> tuple[Schedule, Any, Any]:
    """(schedule, alpha_t, sigma_t^2) with t > 0 in the schedule's domain; alpha, sigma^2 have shape [T], T in {1, count}.

    ``t`` may be raw input (validated and converted here) or an array already in ``xp``'s number type
    (when a generic function is composed inside another). Raw times are converted as a 1-D array:
    Mp/Arb.asarray return a bare scalar for 0-d input.
    """
    sched = get_schedule(schedule)
    if np.ndim(t) > 1 or (np.ndim(t) == 1 and np.shape(t)[0] != count):
        raise ShapeError(argument, f"a scalar or shape [{count}] (one time per point)", str(np.shape(t)))
    if _converted(xp, t):
        times = np.reshape(np.asarray(t, dtype=object), (-1,))
        sched.check_time(xp.to_float(times), argument, positive=True)
    else:
        raw = np.reshape(as_float64_array(t, argument), (-1,))
        sched.check_time(raw, argument, positive=True)
        times = xp.asarray(raw)
    return sched, sched.alpha(xp, times), sched.sigma2(xp, times)


def _converted(xp: Precision, t: Any) -> bool:
    """Already in xp's number type? (object arrays or mpf/arb scalars for mp and arb; float64 is its own type)."""
    return not isinstance(t, (float, int, np.ndarray, np.generic, list, tuple)) or np.asarray(t).dtype == object
