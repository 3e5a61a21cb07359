"""Metrics: binned TV against exact bin masses, fitted-Gaussian W2 and KL, sliced W2, MMD, subspace error (LD5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ditcheck.diffusion import metrics
from ditcheck.properties.strategies import orthonormal_columns
from ditcheck.reference import mixtures
from ditcheck.reference.errors import InvalidArgumentError, NotOrthonormalError, ShapeError


def _mixture(dim: int) -> mixtures.LatentMixture:
    rng = np.random.default_rng(dim)
    means = 2 * rng.standard_normal((2, dim))
    covariances = np.stack([np.eye(dim) * 0.5, np.diag(np.linspace(0.2, 1.0, dim))])
    return mixtures.gaussian_mixture([0.4, 0.6], means, covariances)


@pytest.mark.parametrize("dim", [1, 2])
def test_tv_binned_exact_samples_sit_at_the_noise_floor(dim):
    target = _mixture(dim)
    x = mixtures.sample(target, 20000, 1)
    estimate = metrics.tv_binned(x, target, bins=30)
    # under exact sampling the value concentrates near noise_floor (sd of the sum ~ noise_floor / sqrt(bins))
    assert 0.5 * estimate.noise_floor < estimate.value < 1.5 * estimate.noise_floor
    assert estimate.noise_floor <= estimate.noise_bound
    assert estimate.outside_mass < 1e-5 and estimate.quadrature_error < 1e-6


@pytest.mark.parametrize("dim", [1, 2])
def test_tv_binned_resolves_a_known_gap(dim):
    """A sample of another mixture q: binned TV >= its population value, which is <= TV(p, q) (data processing)."""
    p = _mixture(dim)
    q = mixtures.gaussian_mixture(p.weights, p.means + 0.5, p.covariances)
    exact = metrics.tv_exact(p, q, tolerance=1e-4)
    estimate = metrics.tv_binned(mixtures.sample(q, 20000, 2), p, bins=30)
    assert estimate.value <= exact.value + exact.error_bound + 3 * estimate.noise_floor
    assert estimate.value >= 0.6 * exact.value  # 30 bins per axis keep most of the gap


def test_tv_binned_bad_input():
    with pytest.raises(ShapeError):
        metrics.tv_binned(np.zeros((10, 3)), _mixture(3))
    with pytest.raises(ShapeError):
        metrics.tv_binned(np.zeros((10, 1)), _mixture(2))
    with pytest.raises(InvalidArgumentError) as info:
        metrics.tv_binned(np.full((10, 2), np.nan), _mixture(2))
    assert info.value.argument == "samples"
    with pytest.raises(InvalidArgumentError) as info:
        metrics.tv_binned(np.zeros((10, 2)), "not a mixture")
    assert info.value.argument == "target"
    for keyword, value in (("radius", 0.0), ("radius", float("nan")), ("quadrature_order", 2), ("bins", 1)):
        with pytest.raises(InvalidArgumentError) as info:
            metrics.tv_binned(np.zeros((10, 2)), _mixture(2), **{keyword: value})
        assert info.value.argument == keyword


def test_mixture_moments_match_monte_carlo():
    target = _mixture(3)
    mean, covariance = metrics.mixture_moments(target)
    x = mixtures.sample(target, 200000, 3)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(x.T), covariance, atol=0.05)


def test_w2_and_kl_of_fitted_gaussians():
    target = mixtures.gaussian_mixture([1.0], [[0.0, 1.0, -1.0]], [np.diag([1.0, 0.5, 2.0])])
    x = mixtures.sample(target, 50000, 4)
    assert metrics.w2_fitted_gaussian(x, target) < 0.03
    assert metrics.kl_fitted_gaussian(x, target) < 1e-3
    shifted = x + np.array([0.3, 0.0, 0.0])
    assert metrics.w2_fitted_gaussian(shifted, target) == pytest.approx(0.3, abs=0.02)
    assert metrics.kl_fitted_gaussian(shifted, target) == pytest.approx(0.3**2 / 2, abs=5e-3)


@pytest.mark.parametrize("dim", [2, 8])
def test_sliced_w2(dim):
    target = _mixture(dim)
    x = mixtures.sample(target, 4000, 5)
    floor = metrics.sliced_w2(x, target, projections=16)
    assert floor < 0.15  # the estimator's floor at n = 4000 (tails of the projected mixture dominate)
    shift = np.zeros(dim)
    shift[0] = 2.0
    # a shift by 2 e_1 moves each projection by 2 u_1, E u_1^2 = 1/dim: sliced W2 ~ 2/sqrt(dim)
    shifted = metrics.sliced_w2(x + shift, target, projections=64)
    assert shifted == pytest.approx(2 / math.sqrt(dim), rel=0.35)
    assert shifted > 3 * floor


def test_mmd():
    target = _mixture(4)
    a = mixtures.sample(target, 1500, 6)
    b = mixtures.sample(target, 1500, 7)
    same = metrics.mmd(a, b)
    different = metrics.mmd(a, b + 0.5)
    assert abs(same) < 2e-3 < different


def test_subspace_error():
    basis = orthonormal_columns(6, 2, 0)
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((5, 6)))
    expected = np.linalg.norm(x.numpy() - x.numpy() @ basis @ basis.T, axis=1)
    np.testing.assert_allclose(metrics.subspace_error(x, basis).numpy(), expected, rtol=1e-13)
    on_subspace = torch.as_tensor(np.random.default_rng(1).standard_normal((4, 2)) @ basis.T)
    assert float(metrics.subspace_error(on_subspace, basis).max()) < 1e-14
    with pytest.raises(NotOrthonormalError):
        metrics.subspace_error(x, 2 * basis)
    with pytest.raises(ShapeError):
        metrics.subspace_error(x[:, :5], basis)


def test_diffused_target_matches_reference_diffuse():
    mixture = _mixture(2)
    alpha, sigma2 = math.exp(-0.3), -math.expm1(-0.6)
    a = metrics.diffused_target(mixture, alpha, sigma2)
    b = mixtures.diffuse(mixture, 0.3, "ou-unit")
    np.testing.assert_allclose(a.means, b.means, rtol=1e-14)
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-14)


def test_sliced_w2_trimmed():
    """Trimming keeps a few stray points (e.g. a diverged chain) from dominating; the full metric sees them."""
    target = _mixture(8)
    x = mixtures.sample(target, 3000, 8)
    stray = x.copy()
    stray[:3] += 50.0
    full, full_stray = (metrics.sliced_w2(v, target, projections=16) for v in (x, stray))
    trimmed, trimmed_stray = (metrics.sliced_w2(v, target, projections=16, trim=0.01) for v in (x, stray))
    assert full_stray > 3 * full
    assert trimmed_stray < 1.2 * trimmed
    assert metrics.sliced_w2(x + 1.0, target, projections=16, trim=0.01) > 5 * trimmed
    with pytest.raises(InvalidArgumentError) as info:
        metrics.sliced_w2(x, target, trim=0.5)
    assert info.value.argument == "trim"
