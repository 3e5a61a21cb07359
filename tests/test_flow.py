"""Flow matching: reference velocities and conversions (reference.flow), torch oracles and samplers, properties.flow.

Each property is shown to catch planted bugs: a t vs 1 - t convention, a shift applied twice, a 1e-3 velocity error,
a sign error in a conversion, a sampler that evaluates the velocity at the wrong time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from ditcheck.diffusion import samplers
from ditcheck.diffusion.flow import FlowMixtureOracle, FlowModelOracle, TorchInterpolant
from ditcheck.diffusion.oracles import MixtureOracle
from ditcheck.properties import flow as flow_properties
from ditcheck.properties.flow import FlowCase, FlowSamplerCase
from ditcheck.properties.samplers import SamplerMixtureCase
from ditcheck.properties.violation import PropertyViolation
from ditcheck.reference import flow, mixtures
from ditcheck.reference.errors import InvalidArgumentError, TimeOutOfRangeError

TARGET = SamplerMixtureCase(2, 2, 3)
MIXTURE = mixtures.gaussian_mixture([0.4, 0.6], [[-1.5, 0.5], [1.2, -0.8]],
                                    [[[0.3, 0.1], [0.1, 0.2]], [[0.25, -0.05], [-0.05, 0.4]]])


def test_rectified_flow_velocity_at_the_ends():
    x = np.random.default_rng(0).standard_normal((4, 2))
    # t = 1: x_1 = eps, so E[x_0 | x] = E[x_0] and v = x - E[x_0]
    np.testing.assert_allclose(flow.velocity(MIXTURE, x, 1.0), x - MIXTURE.weights @ MIXTURE.means, atol=1e-15)
    # one Gaussian N(m, s^2 I), rectified flow: v = E[eps - x0 | x] is linear in x, computed by hand
    gauss = mixtures.gaussian_mixture([1.0], [[0.5, -1.0]], [np.eye(2) * 0.25])
    t = 0.3
    a, s = 1 - t, t
    var = a * a * 0.25 + s * s
    x0 = np.array([0.5, -1.0]) + a * 0.25 / var * (x - a * np.array([0.5, -1.0]))
    eps = s / var * (x - a * np.array([0.5, -1.0]))
    np.testing.assert_allclose(flow.velocity(gauss, x, t), eps - x0, rtol=1e-13, atol=1e-14)


def test_velocity_is_certified_in_arb_and_mp():
    x = np.random.default_rng(1).standard_normal((3, 2))
    for interpolant in flow.INTERPOLANTS:
        balls = flow.velocity(MIXTURE, x, 0.4, interpolant, precision="arb")
        assert balls.max_rad() < 1e-30
        assert np.all(balls.within(flow.velocity(MIXTURE, x, 0.4, interpolant), 1e-13))
        mp = flow.velocity(MIXTURE, x, 0.4, interpolant, precision="mp")
        assert np.all(balls.within(np.asarray(mp, dtype=np.float64), 1e-15))


def test_bad_inputs_are_typed_errors():
    x = np.zeros((2, 2))
    with pytest.raises(TimeOutOfRangeError):
        flow.velocity(MIXTURE, x, 0.0)
    with pytest.raises(TimeOutOfRangeError):
        flow.velocity(MIXTURE, x, 1.5)
    with pytest.raises(InvalidArgumentError) as info:
        flow.velocity(MIXTURE, x, 0.5, "linear")
    assert info.value.argument == "interpolant"
    with pytest.raises(InvalidArgumentError) as info:
        flow.convert(x, x, 0.5, "v", "eps")
    assert info.value.argument == "source"
    with pytest.raises(TimeOutOfRangeError):
        flow.convert(x, x, 1.0, "eps", "x0")
    with pytest.raises(InvalidArgumentError):
        flow.time_shift(0.5, -1.0)
    with pytest.raises(InvalidArgumentError):
        samplers.flow_euler(FlowMixtureOracle(MIXTURE), torch.zeros(2, 2, dtype=torch.float64),
                            torch.tensor([0.5, 0.7]))


@pytest.mark.parametrize("vp_sampler", sorted(samplers.SAMPLERS))
def test_samplers_refuse_the_other_family_s_oracle(vp_sampler):
    """A flow oracle also answers score(), on its interpolant (sigma^2 != 1 - alpha^2): a VP sampler given one would
    run its formulas on the wrong path without a word, so it refuses it; the flow samplers refuse a VP oracle."""
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError) as info:
        samplers.SAMPLERS[vp_sampler](FlowMixtureOracle(MIXTURE), x, torch.tensor([0.7, 0.5]))
    assert info.value.argument == "oracle" and "flow_euler" in str(info.value)
    for flow_sampler in samplers.FLOW_SAMPLERS.values():
        with pytest.raises(InvalidArgumentError) as info:
            flow_sampler(MixtureOracle(MIXTURE, "ou-unit"), x, samplers.flow_grid(2))
        assert info.value.argument == "oracle"


def test_time_shifts():
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(flow.time_shift(flow.time_shift(t, 3.0), 3.0), flow.time_shift(t, 9.0), rtol=1e-15)
    np.testing.assert_allclose(flow.exponential_time_shift(t, math.log(3.0)), flow.time_shift(t, 3.0), rtol=1e-14)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow_properties.flow_cases())
def test_oracle_velocity_is_exact(case):
    flow_properties.check_velocity(case)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow_properties.flow_cases())
def test_tweedie_identity_and_conversions(case):
    flow_properties.check_tweedie_velocity(case)
    flow_properties.check_conversions(case)


CASE = FlowCase(TARGET, "rectified-flow", 0.4, 7)


def _flipped_time(mixture, x, t, interpolant):
    """Planted: the x_t = t x_0 + (1 - t) eps convention (SD3's sigma read as 1 - sigma): v(x, 1 - t), sign flipped."""
    return -flow.velocity(mixture, x, 1 - t, interpolant)


def _off_by_1e3(mixture, x, t, interpolant):
    return flow.velocity(mixture, x, t, interpolant) * (1 + 1e-3)


@pytest.mark.parametrize("interpolant", ["rectified-flow", "trigonometric"])
def test_conversions_at_t_1_where_x_t_is_pure_noise(interpolant):
    """At t = 1 alpha_t = 0 exactly for both paths (the trigonometric one as sin(pi (1 - t) / 2): cos(pi t / 2) gave
    6.1e-17, and eps -> velocity divided by it: an infinite ratio); conversions that need x_0 from eps are refused,
    the others hold, and the round trip is not asked of eps at alpha_t = 0."""
    from ditcheck.reference.precision import FLOAT64

    assert float(flow.get_interpolant(interpolant).alpha(FLOAT64, np.float64(1.0))) == 0.0
    assert float(TorchInterpolant(interpolant).alpha(torch.tensor(1.0, dtype=torch.float64))) == 0.0
    assert flow_properties.check_conversions(FlowCase(TARGET, interpolant, 1.0, 7)) <= 1
    with pytest.raises(TimeOutOfRangeError):
        flow.convert(np.zeros((1, 2)), np.zeros((1, 2)), 1.0, "eps", "velocity", interpolant)


def test_velocity_property_catches_planted_bugs():
    assert flow_properties.check_velocity(CASE) <= 1
    for planted in (_flipped_time, _off_by_1e3):
        with pytest.raises(PropertyViolation):
            flow_properties.check_velocity(CASE, planted)


def test_path_derivative_catches_a_convention_bug_the_reference_shares():
    """A t vs 1 - t bug inside the reference would pass a comparison with the reference; the Monte Carlo identity does not."""
    assert flow_properties.check_velocity_is_path_derivative(CASE, samples=8000) <= flow_properties.FLOW_Z
    with pytest.raises(PropertyViolation):
        flow_properties.check_velocity_is_path_derivative(CASE, _flipped_time, samples=8000)


def test_tweedie_property_catches_a_planted_bug():
    def off(mixture, x, t, interpolant, precision="float64"):
        return flow.velocity(mixture, x, t * (1 + 1e-12), interpolant, precision=precision)

    flow_properties.check_tweedie_velocity(CASE)
    with pytest.raises(PropertyViolation):
        flow_properties.check_tweedie_velocity(CASE, off)


def test_conversion_property_catches_planted_bugs():
    trig = FlowCase(TARGET, "trigonometric", 0.6, 3)
    flow_properties.check_conversions(trig)

    def wrong_sign(prediction, x, t, source, target, interpolant):
        # planted: det = alpha sigma' + sigma alpha' (a sign slip); only the trigonometric path notices at det's size
        out = flow.convert(prediction, x, t, source, target, interpolant)
        if source == "velocity" and target == "x0":
            path = flow.get_interpolant(interpolant)
            t64 = np.float64(t)
            from ditcheck.reference.precision import FLOAT64
            a, s = path.alpha(FLOAT64, t64), path.sigma(FLOAT64, t64)
            da, ds = path.d_alpha(FLOAT64, t64), path.d_sigma(FLOAT64, t64)
            out = out * (a * ds - s * da) / (a * ds + s * da)
        return out

    def slightly_off(prediction, x, t, source, target, interpolant):
        return flow.convert(prediction, x, t, source, target, interpolant) * (1 + 1e-3 * (target == "eps"))

    for planted in (wrong_sign, slightly_off):
        with pytest.raises(PropertyViolation):
            flow_properties.check_conversions(trig, planted)


def test_torch_model_oracle_converts_every_parameterisation():
    x = torch.as_tensor(np.random.default_rng(2).standard_normal((5, 2)))
    exact = FlowMixtureOracle(MIXTURE, "trigonometric")
    t = 0.35
    v = exact.velocity(x, t)
    for name in flow.FLOW_PARAMETERISATIONS:
        prediction = torch.as_tensor(flow.convert(v.numpy(), x.numpy(), t, "velocity", name, "trigonometric"))
        model = FlowModelOracle(lambda x_, t_, p=prediction: p, 2, name, "trigonometric")
        torch.testing.assert_close(model.velocity(x, t), v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(exact.score(x, t), torch.as_tensor(flow.score(MIXTURE, x.numpy(), t, "trigonometric")),
                               rtol=1e-12, atol=1e-12)
    assert TorchInterpolant("variance-exploding").t_max == math.inf


SAMPLER_CASE = FlowSamplerCase(TARGET, "rectified-flow", 200, 11, samples=3000)


@pytest.mark.parametrize("sampler", [samplers.flow_euler, samplers.flow_heun, samplers.flow_sde])
def test_flow_samplers_reach_the_target(sampler):
    assert flow_properties.check_flow_sampler(SAMPLER_CASE, sampler) <= flow_properties.FLOW_Z


def test_flow_heun_converges_faster_than_euler():
    oracle = FlowMixtureOracle(MIXTURE)
    x = torch.randn((2000, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = samplers.flow_heun(oracle, x, samplers.flow_grid(1000)).x  # its own error ~ 1e-7 here
    errors = {name: [float((fn(oracle, x, samplers.flow_grid(n)).x - reference).pow(2).mean().sqrt()) for n in (32, 64)]
              for name, fn in (("euler", samplers.flow_euler), ("heun", samplers.flow_heun))}
    # RMS error ratios at 32 -> 64 steps measured 2.04 (Euler, first order) and 4.05 (Heun, second order)
    assert 1.7 < errors["euler"][0] / errors["euler"][1] < 2.4
    assert 3.4 < errors["heun"][0] / errors["heun"][1] < 4.8
    assert samplers.flow_heun(oracle, x, samplers.flow_grid(4)).score_evals == 7  # last step to t = 0 is Euler


def _flow_euler_shift_applied_twice(oracle, x, times, *, generator=None):
    """Planted: steps on the grid it is given (already shifted by 3) but asks the model at the grid shifted again."""
    grid = torch.as_tensor(times, dtype=torch.float64)
    model_times = torch.as_tensor(flow.time_shift(grid.numpy(), 3.0))
    start = oracle.counts()
    for (t, s), tm in zip(zip(grid[:-1], grid[1:]), model_times[:-1]):
        x = x + (s - t) * oracle.velocity(x, tm)
    return samplers.SampleResult(x, oracle.score_evals - start[0], 0)


def _flow_euler_flipped(oracle, x, times, *, generator=None):
    grid = torch.as_tensor(times, dtype=torch.float64)
    for t, s in zip(grid[:-1], grid[1:]):
        x = x + (s - t) * oracle.velocity(x, torch.clamp(1 - t, min=1e-3))
    return samplers.SampleResult(x, 0, 0)


@pytest.mark.parametrize("planted", [_flow_euler_shift_applied_twice, _flow_euler_flipped])
def test_flow_sampler_property_catches_planted_bugs(planted):
    with pytest.raises(PropertyViolation):
        flow_properties.check_flow_sampler(SAMPLER_CASE, planted)
