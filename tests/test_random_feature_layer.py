"""RF1: random-feature attention (ditcheck/gp/random_feature_layer.py): kernel, Monte Carlo rate, permutation invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ditcheck.properties.random_feature_layer import (RateCase, RF1Case, check_rf1_kernel_formula,
                                                      check_rf1_monte_carlo, check_rf1_permutation, check_rf1_rate,
                                                      rf1_cases)
from ditcheck.gp.random_feature_layer import (RandomFeatureAttention, polynomial_target, random_query_key_matrices,
                                           rf1_features, rf1_kernel, ridge_learning_curve, sphere_sequences)
from ditcheck.reference.errors import InvalidArgumentError, ShapeError

from helpers import at_most, expect_caught


@given(rf1_cases())
def test_rf1_kernel_equals_the_literal_formula(case: RF1Case) -> None:
    check_rf1_kernel_formula(case)


@at_most(25)
@given(rf1_cases())
def test_rf1_monte_carlo_gram_converges_to_the_kernel(case: RF1Case) -> None:
    check_rf1_monte_carlo(case)


@at_most(50)
@given(rf1_cases())
def test_rf1_output_and_kernel_are_invariant_to_key_permutations(case: RF1Case) -> None:
    check_rf1_permutation(case)


@pytest.mark.parametrize("mean_scale", [0.0, 1.0])
def test_rf1_monte_carlo_error_decays_like_inverse_square_root_of_heads(mean_scale: float) -> None:
    check_rf1_rate(RateCase(mean_scale=mean_scale))


def test_zero_scale_kernel_is_the_single_head_gram_exactly() -> None:
    """s = 0: every head is W0, so K = <phi_W0(X), phi_W0(X')> (no expectation left)."""
    x0, keys = sphere_sequences(3, 5, 4, seed=2)
    w0 = np.diag([0.5, -1.0, 0.25, 2.0])
    phi = rf1_features(x0, keys, w0[None])[:, 0]
    assert np.allclose(rf1_kernel(x0, keys, x0, keys, 0.0, w0), phi @ phi.T, rtol=1e-13, atol=0)


def test_torch_layer_matches_numpy_features_in_float64_and_float32() -> None:
    x0, keys = sphere_sequences(3, 4, 3, seed=5)
    weights = random_query_key_matrices(16, 3, 0.5, np.eye(3), seed=1)
    expected = rf1_features(x0, keys, weights)
    for dtype, tolerance in ((torch.float64, 1e-13), (torch.float32, 1e-5)):  # N + d terms of size <= max|phi| e^|logit|
        layer = RandomFeatureAttention(weights, dtype=dtype)
        features = layer.features(torch.as_tensor(x0, dtype=dtype), torch.as_tensor(keys, dtype=dtype))
        assert np.allclose(features.double().numpy(), expected, rtol=0, atol=tolerance * np.abs(expected).max())
    assert layer(torch.as_tensor(x0, dtype=dtype), torch.as_tensor(keys, dtype=dtype)).shape == (3,)
    assert [name for name, _ in layer.named_parameters()] == ["values"]  # W_m frozen (a buffer), v trainable


def test_ridge_learning_curves_learn_low_degree_targets() -> None:
    """The RF1 learning curves (ditcheck bench gp): test error falls with n; degree 1 is learned to 5% at n = 512."""
    curve = ridge_learning_curve(1, 0.0, sizes=(32, 128, 512), heads=256, test_size=400)
    assert curve.test_errors[0] > curve.test_errors[1] > curve.test_errors[2]
    assert curve.test_errors[2] < 0.05


def test_targets_have_the_models_parity() -> None:
    """Every model term is odd under (x0, X) -> (-x0, -X); so is every target (else it would be unlearnable)."""
    x0, keys = sphere_sequences(5, 3, 4, seed=0)
    for degree in range(4):
        assert np.allclose(polynomial_target(-x0, -keys, degree), -polynomial_target(x0, keys, degree))
    weights = random_query_key_matrices(8, 4, 0.5, seed=3)
    assert np.allclose(rf1_features(-x0, -keys, weights), -rf1_features(x0, keys, weights))


# ---- planted bugs -------------------------------------------------------------------------------


def _biased_kernel(x0, keys, x0_other, keys_other, scale, mean=None):
    """s^2 ||C||^2 without the 1/2 of the Gaussian moment generating function."""
    return rf1_kernel(x0, keys, x0_other, keys_other, np.sqrt(2) * scale, mean)


def test_planted_biased_kernel_formula_is_caught_by_monte_carlo() -> None:
    expect_caught(lambda case: check_rf1_monte_carlo(case, kernel=_biased_kernel), rf1_cases(), claim="RF1",
                  max_examples=20)


def test_planted_biased_kernel_formula_is_caught_by_the_rate() -> None:
    expect_caught(lambda case: check_rf1_rate(case, kernel=_biased_kernel), st.just(RateCase(heads=(64, 1024, 16384),
                                                                                              budget=2**15)),
                  claim="RF1", max_examples=1)


def test_planted_dropped_cross_term_is_caught_by_the_literal_formula() -> None:
    def no_cross(x0, keys, x0_other, keys_other, scale, mean=None):
        # ||C||^2 without 2 <x0, x0'> <x_i, x'_j>: exact for the s = 0 part, wrong for s > 0
        base = rf1_kernel(x0, keys, x0_other, keys_other, 0.0, mean)
        own = np.sum(x0**2, 1)[:, None] * np.sum(keys**2, 2)
        own2 = np.sum(x0_other**2, 1)[:, None] * np.sum(keys_other**2, 2)
        factor = np.exp(scale**2 / 2 * (own.mean(1)[:, None] + own2.mean(1)[None]))
        return base * factor

    expect_caught(lambda case: check_rf1_kernel_formula(case, kernel=no_cross), rf1_cases(), claim="RF1")


class _PositionalLayer(RandomFeatureAttention):
    """Weights key i by (1 + i / N): order-dependent, so not permutation invariant."""

    def features(self, x0, keys):
        ramp = 1 + torch.arange(keys.shape[1], dtype=keys.dtype) / keys.shape[1]
        return super().features(x0, keys * ramp[None, :, None])


def test_planted_order_dependent_layer_is_caught() -> None:
    expect_caught(lambda case: check_rf1_permutation(case, model=_PositionalLayer), rf1_cases(), claim="RF1")


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call, error, argument", [
    (lambda: rf1_kernel(np.zeros((2, 3)), np.zeros((2, 4, 2)), np.zeros((2, 3)), np.zeros((2, 4, 3)), 1.0),
     ShapeError, "keys"),
    (lambda: rf1_kernel(np.zeros(3), np.zeros((1, 4, 3)), np.zeros((1, 3)), np.zeros((1, 4, 3)), 1.0),
     ShapeError, "x0"),
    (lambda: rf1_kernel(np.zeros((1, 3)), np.zeros((1, 4, 3)), np.zeros((1, 3)), np.zeros((1, 4, 3)), 1.0,
                        np.eye(2)), ShapeError, "mean"),
    (lambda: rf1_features(np.zeros((1, 3)), np.zeros((1, 4, 3)), np.zeros((5, 2, 2))), ShapeError, "weights"),
    (lambda: random_query_key_matrices(0, 3, 1.0), InvalidArgumentError, "heads"),
    (lambda: RandomFeatureAttention(np.zeros((4, 2, 3))), ShapeError, "weights"),
    (lambda: polynomial_target(np.zeros((1, 2)), np.zeros((1, 3, 2)), -1), InvalidArgumentError, "degree"),
    (lambda: rf1_kernel(np.full((1, 2), np.nan), np.zeros((1, 3, 2)), np.zeros((1, 2)), np.zeros((1, 3, 2)), 1.0),
     InvalidArgumentError, "x0"),
])
def test_bad_input_raises_typed_errors(call, error: type, argument: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert info.value.argument == argument
