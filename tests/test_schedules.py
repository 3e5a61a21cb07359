"""Forward schedules (reference/schedules.py): identities, conventions, conversions, planted bugs, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ditcheck.properties.schedules import (check_ddpm_cumulative_product, check_ou_time_doubling,
                                           check_prediction_conversions, check_variance_preserving, check_vp_integral,
                                           schedule_times)
from ditcheck.properties.strategies import seeds
from ditcheck.reference import schedules
from ditcheck.reference.errors import InvalidArgumentError, NonFiniteError, TimeOutOfRangeError
from ditcheck.reference.precision import UNIT_ROUNDOFF as U
from ditcheck.reference.schedules import SCHEDULES, alpha, check_times, convert_prediction, get_schedule, sigma, sigma2

from helpers import expect_caught

ou_times = st.floats(1e-6, 40.0)


@given(schedule_times())
def test_variance_preserving_float64(case: tuple[str, float]) -> None:
    check_variance_preserving(*case)


@given(schedule_times())
def test_variance_preserving_arb(case: tuple[str, float]) -> None:
    check_variance_preserving(*case, precision="arb:128")


@given(ou_times)
def test_ou_unit_is_ou_half_at_double_time(t: float) -> None:
    check_ou_time_doubling(t)


@given(st.floats(0.0, 1.0))
def test_vp_linear_matches_integrated_beta(t: float) -> None:
    check_vp_integral(t)


@given(st.integers(0, 999))
def test_ddpm_alpha_bar_is_the_cumulative_product(step: int) -> None:
    check_ddpm_cumulative_product(step)


@given(schedule_times(), seeds())
def test_prediction_conversions_are_consistent(case: tuple[str, float], seed: int) -> None:
    check_prediction_conversions(*case, seed)


def test_time_zero_is_noiseless_and_small_times_keep_relative_accuracy() -> None:
    for name in ("ou-half", "ou-unit", "vp-linear"):
        assert alpha(np.array([0.0]), name)[0] == 1.0 and sigma2(np.array([0.0]), name)[0] == 0.0
    # sigma^2 = -expm1(-t) keeps full relative accuracy where 1 - exp(-t) would lose it all
    assert abs(sigma2(np.array([1e-12]), "ou-half")[0] / (1e-12 - 5e-25) - 1) <= 4 * U
    assert sigma(np.array([4.0]), "ou-unit")[0] == pytest.approx(np.sqrt(1 - np.exp(-8.0)), rel=4 * U)


# ---- planted bugs -------------------------------------------------------------------------------


def test_planted_sigma2_without_square_is_caught() -> None:
    def wrong_sigma2(t, schedule, precision="float64"):
        return 1 - alpha(t, schedule, precision=precision)  # 1 - alpha instead of 1 - alpha^2

    expect_caught(lambda case: check_variance_preserving(*case, sigma2=wrong_sigma2), schedule_times(), claim="SCHED")


def test_planted_ou_time_convention_swap_is_caught() -> None:
    def swapped(t, schedule, precision="float64"):
        return alpha(t, {"ou-unit": "ou-half", "ou-half": "ou-unit"}.get(schedule, schedule), precision=precision)

    expect_caught(lambda t: check_ou_time_doubling(t, alpha=swapped), ou_times, claim="SCHED")


def test_planted_vp_exponent_without_half_is_caught() -> None:
    def doubled(t, schedule, precision="float64"):
        return alpha(t, schedule) ** 2  # exp(-int beta) instead of exp(-1/2 int beta)

    expect_caught(lambda t: check_vp_integral(t, alpha=doubled), st.floats(0.01, 1.0), claim="SCHED")


def test_planted_ddpm_off_by_one_is_caught() -> None:
    def previous_step(t, schedule, precision="float64"):
        return alpha(np.maximum(np.asarray(t) - 1, 0) if schedule == "ddpm" else t, schedule, precision=precision)

    expect_caught(lambda n: check_ddpm_cumulative_product(n, alpha=previous_step), st.integers(1, 999),
                  claim="SCHED", max_examples=5)


def test_planted_score_conversion_with_sigma_squared_is_caught() -> None:
    def wrong(xp, prediction, x, t, source, target, schedule="ou-half"):
        out = convert_prediction.generic(xp, prediction, x, t, source, target, schedule)
        if target == "score" and source != "score":
            return out / xp.sqrt(get_schedule(schedule).sigma2(xp, t))  # -eps / sigma^2
        return out

    wrong.generic = wrong  # type: ignore[attr-defined]
    expect_caught(lambda c: check_prediction_conversions(*c[0], c[1], convert=wrong),
                  st.tuples(schedule_times(), seeds()), claim="SCHED", max_examples=5)


def test_prediction_conversion_property_refuses_an_implementation_it_cannot_run() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_prediction_conversions("ou-half", 0.5, 1, convert=lambda *args, **kwargs: "not even a number")
    assert info.value.argument == "convert"


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, t", [("ou-half", -1e-3), ("ou-unit", -5.0), ("vp-linear", 1.5), ("vp-linear", -0.1),
                                     ("ddpm", 1000.0), ("ddpm", 2.5), ("ddpm", -1.0)])
def test_times_outside_the_domain_raise(name: str, t: float) -> None:
    with pytest.raises(TimeOutOfRangeError) as info:
        alpha(np.array([t]), name)
    assert info.value.argument == "t"


def test_conversion_needs_positive_time_and_known_names() -> None:
    x = np.ones(3)
    with pytest.raises(TimeOutOfRangeError):
        convert_prediction(x, x, np.zeros(1), "eps", "x0")
    with pytest.raises(InvalidArgumentError, match="source"):
        convert_prediction(x, x, np.ones(1), "noise", "x0")
    with pytest.raises(InvalidArgumentError, match="prediction"):
        convert_prediction(np.ones(2), x, np.ones(1), "eps", "x0")
    with pytest.raises(NonFiniteError):
        convert_prediction(x, x, np.array([np.nan]), "eps", "x0")


def test_unknown_schedule_and_check_times() -> None:
    with pytest.raises(InvalidArgumentError, match="schedule"):
        get_schedule("cosine")
    assert check_times([0.5, 1.0], "vp-linear").shape == (2,)
    with pytest.raises(TimeOutOfRangeError):
        check_times([0.0], "ou-half")  # positive by default
    assert set(SCHEDULES) == {"ou-half", "ou-unit", "vp-linear", "ddpm"}
    assert schedules.DDPM_BETAS.size == 1000


def test_vp_linear_arb_contains_the_exact_decimal_schedule() -> None:
    """b0 = 1/10 exactly: built here independently from rationals with flint at 256 bits."""
    import flint

    from ditcheck.reference.schedules import alpha as alpha_of

    t = 0.75
    ball = alpha_of(np.array([t]), schedule="vp-linear", precision="arb:128").balls[0]
    saved = flint.ctx.prec
    flint.ctx.prec = 256
    try:
        b0, b1, time = flint.arb(1) / 10, flint.arb(20), flint.arb(t)
        exact = (-(time * time) * (b1 - b0) / 4 - time * b0 / 2).exp()
        assert ball.contains(exact)
        assert not ball.contains((-(time * time) * (b1 - flint.arb(0.1)) / 4 - time * flint.arb(0.1) / 2).exp())
    finally:
        flint.ctx.prec = saved
