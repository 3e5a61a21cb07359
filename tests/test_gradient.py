"""LD7 exact attention-weight gradient, LD8 low-rank chain (bound, ranks, autograd Function), AS7 lemma."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import at_most, expect_caught
from hypothesis import given

from ditcheck.fast_attention.gradient import (LowRankAttentionWeightLoss, LowRankFactors, attention_weight_gradient_exact,
                               attention_weight_gradient_lowrank, attention_weight_loss,
                               attention_weight_loss_lowrank, logit_radius)
from ditcheck.bounds import softmax_value_derivative_bound
from ditcheck.properties.gradient import (LowRankGradientCase, SoftmaxDerivativeCase,
                                          check_exact_gradient_matches_autograd,
                                          check_low_rank_gradient_within_bound, check_low_rank_ranks,
                                          check_softmax_derivative_bound, low_rank_gradient_cases,
                                          softmax_derivative_cases)
from ditcheck.reference import attention_weight_gradient
from ditcheck.reference.errors import InvalidArgumentError, NonFiniteError, ShapeError

CASE = LowRankGradientCase(tokens=20, dim=3, seed=7, scale=0.5, radius=0.5, degree=5)


# --- LD7: exact closed form ---------------------------------------------------------------

@at_most(30)
@given(low_rank_gradient_cases())
def test_ld7_closed_form_equals_autograd_and_reference(case: LowRankGradientCase) -> None:
    check_exact_gradient_matches_autograd(case)


def _dense_diag_r_term(a1, a2, a3, w, w_ov, y, scale):
    """scale A1 diag(r) f A2^T, dense (what a closed form missing its diag(r) term leaves out)."""
    f = torch.softmax(scale * (a1.T @ w @ a2), -1)
    h = a3.T @ w_ov.T
    c = f @ h - y
    r = ((c @ h.T) * f).sum(-1)
    return scale * (a1 @ (r[:, None] * f) @ a2.T)


def test_ld7_catches_missing_diag_r_term() -> None:
    def buggy(**kw):
        return attention_weight_gradient_exact(**kw) + _dense_diag_r_term(**kw)

    expect_caught(lambda case: check_exact_gradient_matches_autograd(case, buggy), low_rank_gradient_cases(),
                  claim="LD7")


def test_ld7_catches_missing_scale_factor() -> None:
    def buggy(**kw):
        return attention_weight_gradient_exact(**kw) / kw["scale"]

    expect_caught(lambda case: check_exact_gradient_matches_autograd(case, buggy), low_rank_gradient_cases(),
                  claim="LD7")


def test_ld7_chunking_does_not_change_the_result() -> None:
    t = CASE.tensors()
    whole = attention_weight_gradient_exact(**t, scale=CASE.scale, chunk_size=CASE.tokens)
    for chunk in (1, 3, 7):
        assert torch.allclose(attention_weight_gradient_exact(**t, scale=CASE.scale, chunk_size=chunk), whole,
                              rtol=1e-13, atol=1e-15)


# --- LD8: low-rank chain ------------------------------------------------------------------

@at_most(50)
@given(low_rank_gradient_cases())
def test_ld8_low_rank_gradient_within_bound(case: LowRankGradientCase) -> None:
    check_low_rank_gradient_within_bound(case)


def _terms(result, t):
    from ditcheck.fast_attention.gradient import _gradient_terms

    return _gradient_terms(t["a1"], t["a2"], result.factors)


def test_ld8_catches_missing_diag_r_term() -> None:
    def buggy(**kw):
        result = attention_weight_gradient_lowrank(**kw)
        _, _, a1ru, a2v = _terms(result, kw)
        return dataclasses.replace(result, gradient=result.gradient + kw["scale"] * a1ru @ a2v.T)

    expect_caught(lambda case: check_low_rank_gradient_within_bound(case, buggy), low_rank_gradient_cases(),
                  claim="LD8")


def test_ld8_catches_wrong_khatri_rao_pairing() -> None:
    def buggy(**kw):
        result = attention_weight_gradient_lowrank(**kw)
        a1p, a2q, a1ru, a2v = _terms(result, kw)
        d = kw["a1"].shape[0]
        # pairs feature a of one side with column l of the other: (l, a) flattened against (a, l)
        wrong = a1p.reshape(d, -1) @ a2q.transpose(1, 2).reshape(d, -1).T
        return dataclasses.replace(result, gradient=kw["scale"] * (wrong - a1ru @ a2v.T))

    expect_caught(lambda case: check_low_rank_gradient_within_bound(case, buggy), low_rank_gradient_cases(),
                  claim="LD8")


def test_ld8_catches_missing_scale_factor() -> None:
    def buggy(**kw):
        result = attention_weight_gradient_lowrank(**kw)
        return dataclasses.replace(result, gradient=result.gradient / kw["scale"])

    expect_caught(lambda case: check_low_rank_gradient_within_bound(case, buggy), low_rank_gradient_cases(),
                  claim="LD8")


def test_ld8_bound_is_not_taken_from_the_result() -> None:
    """Planted: a chain that is off by 10x its LD8 bound and reports a bound inflated to match is still caught."""

    def buggy(**kw):
        result = attention_weight_gradient_lowrank(**kw)
        bound = result.bound
        error = 10 * bound.gradient_error
        inflated = dataclasses.replace(bound, gradient_error=1e3 * error + 1.0)
        return dataclasses.replace(result, gradient=result.gradient + error, bound=inflated)

    expect_caught(lambda case: check_low_rank_gradient_within_bound(case, buggy), low_rank_gradient_cases(),
                  claim="LD8")


def test_ld8_catches_a_wrong_intermediate() -> None:
    """r~ computed as the row sum of c~ (forgetting the f~ h factor) is caught at the r stage."""

    def buggy(**kw):
        result = attention_weight_gradient_lowrank(**kw)
        factors = dataclasses.replace(result.factors, r=result.factors.c.sum(-1))
        return dataclasses.replace(result, factors=factors)

    error = expect_caught(lambda case: check_low_rank_gradient_within_bound(case, buggy), low_rank_gradient_cases(),
                          claim="LD8")
    assert "intermediate" in str(error)


@at_most(20)
@given(low_rank_gradient_cases())
def test_ld8_ranks_as_stated(case: LowRankGradientCase) -> None:
    check_low_rank_ranks(case)


def test_ld8_ranks_catch_the_generic_k2() -> None:
    """Reporting the paper's generic k2 = k1 + d while the chain uses q = c h^T (rank d) is caught."""

    def buggy(**kw):
        result = attention_weight_gradient_lowrank(**kw)
        k1, d = result.ranks[0], kw["a1"].shape[0]
        return dataclasses.replace(result, ranks=(k1, k1 + d, k1 * (k1 + d), k1))

    expect_caught(lambda case: check_low_rank_ranks(case, buggy), low_rank_gradient_cases(), claim="LD8")


def test_ld8_error_shrinks_with_degree_and_reports_the_chain() -> None:
    t = CASE.tensors()
    reference = attention_weight_gradient(**CASE.arrays(), scale=CASE.scale)
    errors = []
    for degree in (2, 3, 5):
        result = attention_weight_gradient_lowrank(**t, scale=CASE.scale, degree=degree, radius=CASE.radius,
                                                   timed=True)
        errors.append(float(np.abs(result.gradient.numpy() - reference).max()))
        assert result.degree == degree and result.radius == CASE.radius
        assert result.ranks == (math.comb(3 + degree, degree), 3, 3 * math.comb(3 + degree, degree),
                                math.comb(3 + degree, degree))
        assert errors[-1] <= result.bound.gradient_error
        assert set(result.timings) >= {"features", "khatri_rao", "total"}
    assert errors[0] > errors[1] > errors[2]


def test_ld8_target_eps_picks_the_minimal_degree() -> None:
    from ditcheck.bounds import minimal_degree

    t = CASE.tensors()
    result = attention_weight_gradient_lowrank(**t, scale=CASE.scale, eps=1e-3, radius=0.5)
    assert result.eps <= 1e-3 and result.degree == minimal_degree(0.5, 1e-3)


def test_ld8_default_radius_is_a_rounded_up_cauchy_schwarz_bound() -> None:
    t = CASE.tensors()
    bound = logit_radius(t["a1"], t["a2"], t["w"], scale=CASE.scale)
    logits = CASE.scale * (t["a1"].T @ t["w"] @ t["a2"])
    assert float(logits.abs().max()) <= bound
    result = attention_weight_gradient_lowrank(**t, scale=CASE.scale, degree=3)
    assert bound <= result.radius <= bound * 2 ** (1 / 16)


def test_ld8_negative_scale() -> None:
    t = CASE.tensors()
    reference = attention_weight_gradient(**CASE.arrays(), scale=-CASE.scale)
    result = attention_weight_gradient_lowrank(**t, scale=-CASE.scale, degree=5, radius=CASE.radius)
    assert float(np.abs(result.gradient.numpy() - reference).max()) <= result.bound.gradient_error


def test_ld8_float32() -> None:
    t64 = CASE.tensors()
    r64 = attention_weight_gradient_lowrank(**t64, scale=CASE.scale, degree=4, radius=CASE.radius)
    r32 = attention_weight_gradient_lowrank(**CASE.tensors(torch.float32), scale=CASE.scale, degree=4,
                                            radius=CASE.radius)
    assert r32.gradient.dtype == torch.float32
    scale = float(r64.gradient.abs().max())
    assert float((r32.gradient.double() - r64.gradient).abs().max()) <= 1e-4 * scale


def test_ld8_autograd_function_matches_the_chain_and_exact_gradients() -> None:
    t = CASE.tensors()
    leaves = {name: x.clone().requires_grad_(True) for name, x in t.items()}
    loss = attention_weight_loss_lowrank(**leaves, scale=CASE.scale, degree=5, radius=CASE.radius)
    loss.backward()
    chain = attention_weight_gradient_lowrank(**t, scale=CASE.scale, degree=5, radius=CASE.radius)
    assert torch.allclose(leaves["w"].grad, chain.gradient, rtol=1e-12, atol=1e-14)
    assert float(loss.detach()) == pytest.approx(float(chain.loss), rel=1e-14)
    exact = {name: x.clone().requires_grad_(True) for name, x in t.items()}
    exact_loss = attention_weight_loss(**exact, scale=CASE.scale)
    exact_loss.backward()
    # certified eps ~ 1e-6: every gradient agrees with the exact one to about that, relative to its size
    for name in t:
        size = float(exact[name].grad.abs().max())
        assert float((leaves[name].grad - exact[name].grad).abs().max()) <= 1e-4 * size, name
    assert abs(float(loss.detach()) - float(exact_loss.detach())) <= 1e-4 * float(exact_loss.detach())


def test_ld8_function_only_computes_requested_gradients() -> None:
    t = CASE.tensors()
    w = t.pop("w").requires_grad_(True)
    from ditcheck.fast_attention.polynomial import exp_approximation

    loss = LowRankAttentionWeightLoss.apply(*(t[n] for n in ("a1", "a2", "a3")), w, t["w_ov"], t["y"], CASE.scale,
                                            exp_approximation(CASE.radius, 4))
    (2 * loss).backward()
    single = attention_weight_gradient_lowrank(**t, w=w.detach(), scale=CASE.scale, degree=4, radius=CASE.radius)
    assert torch.allclose(w.grad, 2 * single.gradient, rtol=1e-12, atol=1e-14)
    assert all(t[n].grad is None for n in t)


def test_ld8_factors_dense_f_is_row_stochastic() -> None:
    result = attention_weight_gradient_lowrank(**CASE.tensors(), scale=CASE.scale, degree=5, radius=CASE.radius)
    assert isinstance(result.factors, LowRankFactors)
    assert torch.allclose(result.factors.dense_f().sum(-1), torch.ones(CASE.tokens, dtype=torch.float64))


def test_ld8_bad_input_raises_typed_errors() -> None:
    t = CASE.tensors()
    with pytest.raises(ShapeError) as info:
        attention_weight_gradient_lowrank(**{**t, "y": t["y"][:-1]}, degree=3)
    assert info.value.argument == "y"
    with pytest.raises(NonFiniteError):
        attention_weight_gradient_lowrank(**{**t, "a3": t["a3"] * math.inf}, degree=3)
    with pytest.raises(InvalidArgumentError) as info:
        attention_weight_gradient_lowrank(**t, scale=CASE.scale, degree=3, eps=1e-3)
    assert info.value.argument == "eps, degree"
    with pytest.raises(InvalidArgumentError) as info:  # a radius below the actual logits is refused
        attention_weight_gradient_lowrank(**t, scale=CASE.scale, degree=3, radius=0.01)
    assert info.value.argument == "radius"
    with pytest.raises(InvalidArgumentError) as info:  # eps >= 1: P may vanish
        attention_weight_gradient_lowrank(**t, scale=CASE.scale, degree=1, radius=4.0)
    assert info.value.argument == "degree"
    with pytest.raises(InvalidArgumentError) as info:
        attention_weight_gradient_lowrank(**t, scale=0.0, degree=3)
    assert info.value.argument == "scale"
    with pytest.raises(InvalidArgumentError) as info:
        attention_weight_gradient_exact(**t, chunk_size=0)
    assert info.value.argument == "chunk_size"


# --- AS7 ----------------------------------------------------------------------------------

@given(softmax_derivative_cases())
def test_as7_derivative_within_bound(case: SoftmaxDerivativeCase) -> None:
    check_softmax_derivative_bound(case)


def test_as7_catches_the_bound_without_d() -> None:
    """The paper's 8 B n (no factor d) fails for wide V: the aligned family reaches about 0.77 B n d."""
    expect_caught(lambda case: check_softmax_derivative_bound(case, lambda b, n, d, v_max: 8 * b * n * v_max ** 2),
                  softmax_derivative_cases(), claim="AS7", max_examples=200)


def test_as7_aligned_family_is_near_the_direct_bound() -> None:
    """S_ij = B sigma_j, V = sigma: f'(lambda) = 2 n d B tanh(lambda B)(1 - tanh^2) peaks at 0.77 B n d."""
    from ditcheck.properties.gradient import _softmax_value_norm

    b, n, d = 2.0, 8, 5
    lam_star = math.atanh(1 / math.sqrt(3)) / b
    sigma = torch.cat([torch.ones(n // 2), -torch.ones(n // 2)]).double()  # balanced signs: mean_f sigma = tanh
    s, v = b * sigma.expand(n, n).clone(), sigma[:, None].expand(n, d).clone()
    lam = torch.tensor(lam_star, dtype=torch.float64, requires_grad=True)
    (derivative,) = torch.autograd.grad(_softmax_value_norm(s, v, lam), lam)
    assert float(derivative) == pytest.approx(2 * n * d * b * (1 / math.sqrt(3)) * (2 / 3), rel=1e-12)
    assert float(derivative) <= softmax_value_derivative_bound(b, n, d)


# --- bench -----------------------------------------------------------------------------

def test_bench_gradient_runs_and_reports(capsys) -> None:
    from ditcheck.cli import main

    assert main(["bench", "gradient", "--lengths", "64", "128", "--repeats", "1", "--dim", "2"]) == 0
    out = capsys.readouterr().out
    assert "crossover" in out and "fitted slope" in out and "LD8 bound" in out


def test_bench_crossover_interpolates() -> None:
    from ditcheck.bench.gradient import crossover

    assert crossover([100, 200], [2.0, 1.0], [1.0, 2.0]).startswith("about 141")
    assert crossover([100, 200], [1.0, 1.0], [2.0, 4.0]).startswith("below 100")
    assert crossover([100, 200], [2.0, 4.0], [1.0, 1.0]).startswith("above 200")
