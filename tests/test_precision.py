"""The three precisions and BallArray: exact conversions, rigorous float64 conversion, typed errors."""

from __future__ import annotations

import flint
import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ditcheck.properties.strategies import array_specs
from ditcheck.reference import BallArray, DTypeError, NonFiniteError, PrecisionError, softmax
from ditcheck.reference.precision import Arb, Float64, Mp, arb_from_mpf, as_float64_array, resolve_precision


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(60, 300))
def test_arb_from_mpf_is_exact(value: float, digits: int) -> None:
    with mpmath.workdps(digits):
        x = mpmath.mpf(value) / 3
    ball = arb_from_mpf(x)
    assert ball.rad() == 0
    with mpmath.workdps(digits + 20):
        back = mpmath.mpf(ball.mid().str(digits + 40, radius=False))
        assert abs(back - x) <= abs(x) * mpmath.mpf(10) ** -(digits + 15)


@given(array_specs((4, 7)))
def test_to_float64_error_bound_contains_the_exact_value(spec) -> None:
    balls = softmax(spec.build(), precision="arb:80")
    values, error = balls.to_float64()
    assert balls.within(values, error).all()
    saved = flint.ctx.prec
    flint.ctx.prec = 600  # exact differences of the endpoints and the floats
    try:
        for ball, value, bound in zip(balls.balls.ravel(), values.ravel(), error.ravel()):
            for end in (ball.lower(), ball.upper()):
                assert abs(end - flint.arb(value)) <= flint.arb(bound)
    finally:
        flint.ctx.prec = saved
    assert np.all(error >= balls.rad)
    # the float is the nearest double to the midpoint, so the error is at most rad + half an ulp
    assert np.all(error <= balls.rad + np.spacing(np.abs(values)))


def test_contains_and_overlaps_are_exact_comparisons() -> None:
    with Arb(64).context():
        third = BallArray(np.array([flint.arb(1) / 3]))
    assert third.rad[0] < 1e-18  # so the double nearest 1/3 (off by 1.9e-17) lies outside
    assert not third.contains(np.array([1 / 3])).any()
    assert third.overlaps(third).all()
    assert not third.contains(np.array([0.3])).any()
    assert third.within(np.array([0.3]), np.array([0.034])).all()
    assert not third.within(np.array([0.3]), np.array([0.03])).any()
    with mpmath.workdps(60):
        assert third.contains(np.array([mpmath.mpf(1) / 3], dtype=object)).all()


def test_ball_array_views() -> None:
    balls = softmax(np.zeros((2, 3)), precision="arb")
    assert balls.shape == (2, 3) and balls.ndim == 2 and balls.size == 6 and len(balls) == 2
    assert isinstance(balls[0], BallArray) and balls[0].shape == (3,)
    assert balls.max_rad() < 1e-30 and np.allclose(balls.mid, 1 / 3)
    assert "BallArray" in repr(balls)
    assert np.all(balls.rel_rad() < 1e-30)


@pytest.mark.parametrize("name, kind, size", [("float64", Float64, None), ("mp", Mp, 40), ("mp:70", Mp, 70),
                                              ("arb", Arb, 128), ("arb:256", Arb, 256)])
def test_resolve_precision(name, kind, size) -> None:
    precision = resolve_precision(name)
    assert isinstance(precision, kind)
    if size is not None:
        assert getattr(precision, "digits", getattr(precision, "bits", None)) == size


def test_precision_context_restores_global_state() -> None:
    before_prec, before_dps = flint.ctx.prec, mpmath.mp.dps
    softmax(np.ones(3), precision="arb:300")
    softmax(np.ones(3), precision="mp:90")
    assert (flint.ctx.prec, mpmath.mp.dps) == (before_prec, before_dps)


@pytest.mark.parametrize("bad", ["float32", "arb:0", "mp:9", "mp:-3", "float64:2", None])
def test_bad_precision_names(bad) -> None:
    with pytest.raises(PrecisionError) as info:
        resolve_precision(bad)
    assert info.value.argument in ("precision", "digits", "bits")


def test_input_validation_names_the_argument() -> None:
    with pytest.raises(NonFiniteError, match="'x'.*index"):
        as_float64_array([1.0, np.nan], "x")
    with pytest.raises(DTypeError, match="'w'"):
        as_float64_array(np.array(["a"]), "w")
    with pytest.raises(DTypeError):
        as_float64_array(True, "flag")
    assert as_float64_array(np.float32([0.1]), "x")[0] == np.float64(np.float32(0.1))
    assert np.isneginf(as_float64_array([-np.inf], "mask", allow_neg_inf=True)[0])
