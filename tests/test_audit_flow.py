"""Audit claims FM1-FM3 (flow matching): each verdict shown to fail on a plausible wrong implementation."""

from __future__ import annotations

import dataclasses
import functools

import torch

from ditcheck.audit import registry, run_claim
from ditcheck.audit import claims_flow
from ditcheck.diffusion import samplers
from ditcheck.properties import flow as F
from ditcheck.reference import flow


def _velocity_off_by_1e3(mixture, x, t, interpolant):
    """Planted: a 1e-3 relative error in the velocity (a float32 island, a wrong constant)."""
    return F.oracle_velocity(mixture, x, t, interpolant) * (1 + 1e-3)


def test_fm1_holds_and_a_1e3_velocity_error_is_violated() -> None:
    claim = registry()["FM1"]
    assert run_claim(claim, "quick", 0).verdict == "exact to rounding"
    planted = dataclasses.replace(claim, measure=functools.partial(F.measure_velocity, velocity_fn=_velocity_off_by_1e3))
    result = run_claim(planted, "quick", 0)
    assert result.verdict == "VIOLATED" and result.failed


def _convert_with_sign_error(prediction, x, t, source, target, interpolant="rectified-flow"):
    """Planted: x0 from a velocity with sigma' x + sigma v (a sign error in one of the 12 conversions)."""
    if source == "velocity" and target == "x0":
        return -flow.convert(prediction, x, t, source, target, interpolant) + 2 * flow.convert(
            prediction * 0, x, t, source, target, interpolant)
    return flow.convert(prediction, x, t, source, target, interpolant)


def test_fm2_holds_and_a_conversion_sign_error_is_violated() -> None:
    claim = registry()["FM2"]
    assert run_claim(claim, "quick", 0).verdict == "exact to rounding"
    planted = dataclasses.replace(claim, measure=functools.partial(F.measure_conversions,
                                                                   convert_fn=_convert_with_sign_error))
    result = run_claim(planted, "quick", 0)
    assert result.verdict == "VIOLATED" and result.failed


def _heun_with_stale_corrector(oracle, x, times, *, generator=None):
    """Planted: Heun whose corrector re-uses the velocity at t (the guess's velocity never evaluated): Euler, order 1."""
    grid = torch.as_tensor(times, dtype=torch.float64)
    for t, s in zip(grid[:-1], grid[1:]):
        d_t = oracle.velocity(x, t)
        x = x + (s - t) * (d_t + d_t) / 2
    return samplers.SampleResult(x, 0, 0)


def test_fm3_orders_are_consistent_and_a_first_order_heun_is_not() -> None:
    result = run_claim(registry()["FM3"], "quick", 0)
    assert result.verdict == "consistent"
    assert [round(f.exponent) for f in result.fits] == [-1, -2]
    planted = dataclasses.replace(registry()["FM3"], rates=functools.partial(
        claims_flow.fm3_series, methods={"flow-heun": (_heun_with_stale_corrector, -2.0)}))
    bad = run_claim(planted, "quick", 0)
    assert bad.verdict == "inconsistent" and abs(bad.fits[0].exponent + 1) < 0.1
