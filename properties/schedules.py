"""Diffusion schedules: the (schedule, t) strategy and the schedule identities (claim SCHED in docs/claims.md):
variance preservation, OU time doubling, the VP integral, DDPM's cumulative product and the prediction
conversions. Each check takes the implementation under check as an argument (the reference by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
from hypothesis import strategies as st

from ditcheck.reference import schedules
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.precision import UNIT_ROUNDOFF as U
from ditcheck.reference.precision import Arb, BallArray
from ditcheck.reference.schedules import SCHEDULES, get_schedule

from .certified import precision_bits, require_narrow
from .violation import require

__all__ = [
    "TIME_RANGES",
    "schedule_times",
    "check_variance_preserving",
    "check_ou_time_doubling",
    "check_vp_integral",
    "check_ddpm_cumulative_product",
    "check_prediction_conversions",
]


TIME_RANGES = {"ou-half": (0.01, 8.0), "ou-unit": (0.005, 4.0), "vp-linear": (0.01, 1.0), "ddpm": (1, 999)}


@st.composite
def schedule_times(draw: st.DrawFn, schedules: tuple[str, ...] = SCHEDULES) -> tuple[str, float]:
    """(schedule, t) with t > 0 inside the schedule's domain, log-uniform over its useful range (ddpm: integer steps)."""
    schedule = draw(st.sampled_from(schedules))
    low, high = TIME_RANGES[schedule]
    if schedule == "ddpm":
        return schedule, float(draw(st.integers(low, high)))
    return schedule, float(math.exp(draw(st.floats(math.log(low), math.log(high)))))


# ----------------------------------------------------------------------------------------
# Schedules (times are passed as 1-element arrays: Mp/Arb.asarray return bare scalars for 0-d input)


def check_variance_preserving(schedule: str, t: float, alpha: Callable[..., Any] = schedules.alpha,
                              sigma2: Callable[..., Any] = schedules.sigma2, precision: str = "float64") -> None:
    """alpha_t^2 + sigma_t^2 = 1. float64: within 8 u (exp and expm1 within 1 ulp, one square, one sum of terms <= 1);
    arb: the ball of the sum contains 1."""
    a = alpha(np.array([t]), schedule, precision=precision)
    s2 = sigma2(np.array([t]), schedule, precision=precision)
    if isinstance(a, BallArray):
        with Arb(precision_bits(precision)).context():
            total = BallArray(a.balls * a.balls + s2.balls)
        require_narrow(total, "SCHED", case=(schedule, t))
        require(total.contains(np.ones(1)).all(), "SCHED", "alpha^2 + sigma^2 != 1 (ball misses 1)",
                schedule=schedule, t=t)
        return
    total = float(a[0]) ** 2 + float(s2[0])
    require(abs(total - 1.0) <= 8 * U, "SCHED", "alpha^2 + sigma^2 != 1", total=total, schedule=schedule, t=t)


def check_ou_time_doubling(t: float, alpha: Callable[..., Any] = schedules.alpha,
                           sigma2: Callable[..., Any] = schedules.sigma2) -> None:
    """OU-unit at t is OU-half at 2t (docs/conventions.md#diffusion-schedules): both give log alpha = -t exactly, so float64 values are identical."""
    for name, fn in (("alpha", alpha), ("sigma2", sigma2)):
        unit, half = float(fn(np.array([t]), "ou-unit")[0]), float(fn(np.array([2 * t]), "ou-half")[0])
        require(unit == half, "SCHED", f"OU-unit {name}(t) != OU-half {name}(2t)", unit=unit, half=half, t=t)


def check_vp_integral(t: float, alpha: Callable[..., Any] = schedules.alpha) -> None:
    """VP-linear: alpha_t = exp(-1/2 int_0^t beta(s) ds), beta(s) = b0 + s (b1 - b0), the integral by mpmath.quad at 30 digits.

    float64 tolerance 32 u relative: the exponent (<= 5.05) is a 3-operation polynomial, so its absolute error
    is a few u times 5, plus exp's ulp.
    """
    with mpmath.workdps(30):
        low, high = mpmath.mpf(1) / 10, mpmath.mpf(20)  # score_sde's b0 = 0.1, b1 = 20 as exact decimals
        integral = mpmath.quad(lambda u: low + u * (high - low), [0, mpmath.mpf(t)])
        expected = float(mpmath.exp(-integral / 2))
    actual = float(alpha(np.array([t]), "vp-linear")[0])
    require(abs(actual - expected) <= 32 * U * expected, "SCHED", "VP alpha != exp(-1/2 int beta)",
            actual=actual, expected=expected, t=t)


def check_ddpm_cumulative_product(step: int, alpha: Callable[..., Any] = schedules.alpha, bits: int = 256) -> None:
    """DDPM: alpha_n^2 = prod_{i <= n} (1 - beta_i). arb: the reference's ball overlaps a direct ball product.
    float64: alpha_n^2 within (n + 1)(|log alpha_bar| + 2) 2u relative of np.cumprod (both accumulate n roundings)."""
    balls = alpha(np.array([float(step)]), "ddpm", precision=f"arb:{bits}")
    xp = Arb(bits)
    with xp.context():
        product = np.prod(1 - xp.asarray(schedules.DDPM_BETAS[:step + 1]))
        squared = BallArray(balls.balls * balls.balls)
        require(squared.overlaps(BallArray(product)).all(), "SCHED", "alpha_n^2 != prod (1 - beta_i) (balls disjoint)",
                step=step)
    cumulative = float(np.cumprod(1 - schedules.DDPM_BETAS)[step])
    actual = float(alpha(np.array([float(step)]), "ddpm")[0]) ** 2
    tolerance = (step + 1) * (abs(math.log(cumulative)) + 2) * 2 * U * cumulative
    require(abs(actual - cumulative) <= tolerance, "SCHED", "alpha_n^2 != np.cumprod(1 - betas)[n]",
            actual=actual, expected=cumulative, step=step)


def check_prediction_conversions(schedule: str, t: float, seed: int,
                                 convert: Callable[..., Any] = schedules.convert_prediction, bits: int = 128) -> None:
    """Parameterisations (docs/conventions.md#parameterisations), in arb from exact x_0 and eps with x = alpha x_0 + sigma eps:
    eps -> x0 gives x_0, eps -> v gives alpha eps - sigma x_0, eps -> score gives -eps / sigma, and every
    conversion followed by its inverse returns the input (balls overlap)."""
    rng = np.random.default_rng(seed)
    x0, eps = rng.standard_normal(4), rng.standard_normal(4)
    xp = Arb(bits)
    generic = getattr(convert, "generic", None)
    if generic is None:
        raise InvalidArgumentError("convert", "a reference function with a generic (precision-independent) form",
                                   type(convert).__name__)
    with xp.context():
        times = xp.asarray(np.array([t]))
        sched = get_schedule(schedule)
        a, s = sched.alpha(xp, times), xp.sqrt(sched.sigma2(xp, times))
        x0_b, eps_b = xp.asarray(x0), xp.asarray(eps)
        x = a * x0_b + s * eps_b
        values = {"eps": eps_b, "x0": x0_b, "v": a * eps_b - s * x0_b, "score": -eps_b / s}
        for source, value in values.items():
            for target, expected in values.items():
                got = generic(xp, value, x, times, source, target, schedule)
                back = generic(xp, got, x, times, target, source, schedule)
                for label, left, right in ((f"{source} -> {target}", got, expected),
                                           (f"{source} -> {target} -> {source}", back, value)):
                    left_balls = BallArray(np.asarray(left, dtype=object))
                    require_narrow(left_balls, "SCHED", case=(schedule, t, seed, label))
                    ok = left_balls.overlaps(np.asarray(right, dtype=object))
                    require(ok.all(), "SCHED", f"prediction conversion {label} is wrong", schedule=schedule, t=t,
                            seed=seed)
