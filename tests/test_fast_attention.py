"""ditcheck.fast_attention.attention: backends exact / poly / rf / auto; AS2 output bound with planted bugs; typed errors."""

from __future__ import annotations

import dataclasses
import math
from unittest import mock

import pytest
import torch
from helpers import expect_caught
from hypothesis import given, settings, target

import ditcheck.fast_attention.attention as attention_module
from ditcheck.fast_attention.attention import attention, certified_radius, exact_logit_radius, logit_radius_bound
from ditcheck.bounds import UnreachableAccuracyError
from ditcheck.properties.fast_attention import PolyAttentionCase, check_poly_attention_output, poly_attention_cases
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, NonFiniteError, ShapeError
from ditcheck.reference.formats import FLOAT64


def _inputs(shape=(2, 3, 40, 4), value_dim=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(*shape, generator=g, dtype=dtype) * 0.6 for _ in range(2))
    v = torch.randn(*shape[:-1], value_dim, generator=g, dtype=dtype)
    return q, k, v


@settings(max_examples=min(80, settings().max_examples))
@given(poly_attention_cases())
def test_poly_output_within_as2_bound(case: PolyAttentionCase) -> None:
    tightness = check_poly_attention_output(case)
    target(tightness.sharp, label="AS2 error / (eps/(1-eps) ||V||)")
    target(tightness.column, label="AS2 error / per-column bound")


def _radius_without_scale(q, k, v, **kwargs):
    """Planted: R measured as max||q|| max||k|| without the logit scale, and trusted."""
    radius = float(q.norm(dim=-1).max() * k.norm(dim=-1).max())
    return attention(q, k, v, radius=radius, check_radius=False, **kwargs)


def test_as2_planted_radius_without_scale_is_caught() -> None:
    expect_caught(lambda case: check_poly_attention_output(case, attention_fn=_radius_without_scale),
                  poly_attention_cases().filter(lambda c: c.logit_scale() > 1 and c.eps <= 1e-3), claim="AS2")


def _off_by_one_chunks(length, size):
    return [(start, min(start + size, length) - (1 if start + size < length else 0))
            for start in range(0, length, size)]


def test_as2_planted_chunk_boundary_off_by_one_is_caught() -> None:
    def check(case):
        with mock.patch.object(attention_module, "_chunks", _off_by_one_chunks):
            check_poly_attention_output(case)

    expect_caught(check, poly_attention_cases().filter(lambda c: c.chunk_size is not None and c.chunk_size > 1),
                  claim="AS2")


def _inflated_rounding(q, k, v, **kwargs):
    """Planted: the output is off by 3x the AS2 bound, and the result claims a rounding bound that would hide it."""
    result = attention(q, k, v, **kwargs)
    return dataclasses.replace(result, output=result.output + 3 * result.bound, rounding=math.inf)


def test_as2_rounding_term_is_not_taken_from_the_result() -> None:
    expect_caught(lambda case: check_poly_attention_output(case, attention_fn=_inflated_rounding),
                  poly_attention_cases(), claim="AS2")


def test_poly_float32_close_to_exact_and_reports_certificate() -> None:
    q, k, v = _inputs(dtype=torch.float32)
    result = attention(q, k, v, backend="poly", eps=1e-5)
    exact = attention(q, k, v).output
    assert result.backend == "poly" and result.rank == math.comb(4 + result.degree, result.degree)
    assert result.eps <= 1e-5 and result.bound == pytest.approx(result.eps / (1 - result.eps) * float(v.abs().max()))
    assert result.radius == pytest.approx(logit_radius_bound(q, k, 0.5))
    assert float((result.output - exact).abs().max()) <= result.bound + result.rounding


def test_poly_chunking_changes_nothing_but_rounding() -> None:
    q, k, v = _inputs(shape=(1, 2, 37, 3))
    results = [attention(q, k, v, backend="poly", eps=1e-6, chunk_size=c) for c in (None, 1, 5, 37, 100)]
    # each lies within its derived rounding bound of the same exact-arithmetic P-attention
    tolerance = 2 * results[0].rounding
    assert 0 < tolerance < 1e-9  # a useful bound, not a vacuous one
    for result in results[1:]:
        assert result.rounding == results[0].rounding
        assert float((result.output - results[0].output).abs().max()) <= tolerance


def test_poly_gradients_autograd() -> None:
    q, k, v = (x[:1, :1, :4, :2].clone().requires_grad_() for x in _inputs())
    assert torch.autograd.gradcheck(
        lambda a, b, c: attention(a, b, c, backend="poly", eps=1e-4, radius=1.0, chunk_size=3).output, (q, k, v))
    # and the gradient approximates the exact one
    out = attention(q, k, v, backend="poly", eps=1e-8).output.sum()
    grads = torch.autograd.grad(out, (q, k, v))
    exact = torch.autograd.grad(attention(q, k, v).output.sum(), (q, k, v))
    for g, e in zip(grads, exact):
        assert torch.allclose(g, e, atol=1e-6)


def test_radius_given_is_checked() -> None:
    q, k, v = _inputs()
    bound = logit_radius_bound(q, k, 0.5)
    measured = exact_logit_radius(q, k, 0.5)
    assert measured <= bound
    result = attention(q, k, v, backend="poly", radius=(measured + bound) / 2)  # below CS: verified exactly
    assert result.radius == pytest.approx((measured + bound) / 2)
    with pytest.raises(InvalidArgumentError) as info:
        attention(q, k, v, backend="poly", radius=measured / 2)
    assert info.value.argument == "radius"
    assert attention(q, k, v, backend="poly", radius=measured / 2, check_radius=False).radius == measured / 2
    assert certified_radius(0.5) == 0.5 and certified_radius(0.51) >= 0.51


def test_unreachable_eps_names_radius_and_dim() -> None:
    q, k, v = _inputs(shape=(1, 1, 8, 16))
    with pytest.raises(UnreachableAccuracyError) as info:
        attention(q, k, v, backend="poly", eps=1e-8)
    message = str(info.value)
    assert info.value.argument == "eps" and "D = 16" in message and "R = " in message and "rank" in message
    with pytest.raises(UnreachableAccuracyError):
        attention(q * 30, k * 30, v, backend="poly", eps=1e-10, max_rank=10**9)


def test_auto_picks_by_cost() -> None:
    q, k, v = _inputs(shape=(1, 1, 16, 4))
    assert attention(q, k, v, backend="auto").backend == "exact"
    q, k, v = _inputs(shape=(1, 1, 3000, 2))
    result = attention(q * 0.3, k * 0.3, v, backend="auto", eps=1e-3)
    assert result.backend == "poly" and result.eps <= 1e-3
    assert attention(q * 50, k * 50, v, backend="auto", eps=1e-9).backend == "exact"  # unreachable: falls back


def test_exact_and_bfloat16() -> None:
    q, k, v = _inputs(dtype=torch.float32)
    out = attention(q, k, v, scale=0.3).output
    assert torch.equal(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3))
    b = [x.to(torch.bfloat16) for x in (q, k, v)]
    assert attention(*b).output.dtype == torch.bfloat16
    assert attention(*b, backend="auto").backend == "exact"
    with pytest.raises(DTypeError):
        attention(*b, backend="poly")


def test_typed_errors() -> None:
    q, k, v = _inputs()
    with pytest.raises(InvalidArgumentError) as info:
        attention(q, k, v, backend="flash")
    assert info.value.argument == "backend"
    with pytest.raises(ShapeError):
        attention(q[0], k[0], v[0])
    with pytest.raises(ShapeError):
        attention(q, k[..., :3], v)
    with pytest.raises(ShapeError):
        attention(q, k, v[..., :5, :])
    with pytest.raises(DTypeError):
        attention(q, k.float(), v)
    with pytest.raises(NonFiniteError):
        attention(q, k.clone().fill_(math.nan), v, backend="poly")
    for eps in (0.0, 1.0, 2.0):
        with pytest.raises(InvalidArgumentError) as info:
            attention(q, k, v, backend="poly", eps=eps)
        assert info.value.argument == "eps"
    with pytest.raises(InvalidArgumentError) as info:
        attention(q, k, v, scale=-1.0)
    assert info.value.argument == "scale"
    with pytest.raises(InvalidArgumentError):
        attention(q, k, v, backend="poly", chunk_size=0)
    with pytest.raises(InvalidArgumentError):
        attention(q, k, v, backend="poly", kind="pade")


def test_rf_backend_delegates_to_favor() -> None:
    random_features = pytest.importorskip("ditcheck.fast_attention.random_features")
    q, k, v = _inputs(dtype=torch.float32)
    result = attention(q * 0.3, k * 0.3, v, backend="rf", num_features=64, seed=3)
    expected, _ = random_features.favor_attention(q * 0.3, k * 0.3, v, num_features=64, seed=3, scale=0.5)
    assert result.backend == "rf" and torch.equal(result.output, expected) and result.error_estimate is not None


def test_bench_attention_tiny() -> None:
    from ditcheck.bench.attention import bench_attention, crossover_map

    rows = bench_attention(lengths=[64, 128], dim=2, heads=1, radius=0.5, eps=1e-3, repeats=1, num_features=16,
                           backends=("exact", "poly", "rf"))
    assert {row.backend for row in rows} == {"exact", "poly", "rf"}
    assert all(row.seconds > 0 and row.max_error >= 0 for row in rows)
    poly = [row for row in rows if row.backend == "poly"]
    assert all(row.max_error <= row.bound + row.rounding for row in poly)
    table = crossover_map(per_token={"exact": 1e-9, "feature": 1e-9}, dims=(4,), radii=(0.25,), eps_levels=(1e-3,))
    assert len(table) == 1 and table[0].rank == 15


def _dense_polynomial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, coefficients, scale: float
                                ) -> torch.Tensor:
    """D^-1 P(scale Q K^T) V formed densely in float64: the reference the feature contractions must equal."""
    logits = scale * q.double() @ k.double().mT
    a = sum(c * logits**j for j, c in enumerate(coefficients))
    return (a @ v.double()) / a.sum(-1, keepdim=True)


def test_poly_contraction_equals_dense_polynomial_attention() -> None:
    # the unpadded [V, 1]^T K' contraction, chunked, equals the dense P-attention within the derived rounding bound
    q, k, v = _inputs(shape=(1, 2, 45, 3))
    result = attention(q, k, v, backend="poly", eps=1e-6, chunk_size=7)
    reference = _dense_polynomial_attention(q, k, v, result.approximation.coefficients, 1 / math.sqrt(3))
    assert 0 < result.rounding < 1e-9
    assert float((result.output - reference).abs().max()) <= result.rounding
    # planted: one monomial weight off by 1e-3 (a wrong multinomial) is caught by the same comparison
    real = attention_module.feature_weights

    def off(layout, approximation):
        weights = real(layout, approximation).copy()
        weights[7] *= 1 + 1e-3
        return weights

    with mock.patch.object(attention_module, "feature_weights", off):
        planted = attention(q, k, v, backend="poly", eps=1e-6, chunk_size=7)
    assert float((planted.output - reference).abs().max()) > result.rounding


def test_taylor2_peer_features_are_based_second_order_taylor() -> None:
    from ditcheck.bench.attention import taylor2_attention, taylor2_features

    g = torch.Generator().manual_seed(3)
    dim = 8
    q, k, v = (torch.randn(1, 2, 20, dim, generator=g, dtype=torch.float64) for _ in range(3))
    s = q @ k.mT / math.sqrt(dim)
    kernel = taylor2_features(q) @ taylor2_features(k).mT
    assert taylor2_features(q).shape[-1] == 1 + dim + dim * dim
    # a-priori rounding: a dot product of 73 terms of size <= (1 + |q||k|/sqrt(D))^2 in float64
    size = (1 + q.norm(dim=-1)[..., :, None] * k.norm(dim=-1)[..., None, :] / math.sqrt(dim)) ** 2
    tolerance = 2 * 80 * FLOAT64.unit_roundoff * size
    assert bool(((kernel - (1 + s + s**2 / 2)).abs() <= tolerance).all())
    # planted: s^2 without the 1/2 (the sqrt(2) dropped) is far outside the rounding
    assert not bool(((kernel - (1 + s + s**2)).abs() <= tolerance).all())
    # and the attention is the dense (1 + s + s^2/2)-normalised attention
    dense = _dense_polynomial_attention(q, k, v, (1.0, 1.0, 0.5), 1 / math.sqrt(dim))
    assert torch.allclose(taylor2_attention(q, k, v), dense, rtol=0, atol=1e-12)
