"""ditcheck audit, attention claims (LD6-LD8, AS1-AS7, PF1): each runs in quick mode, and each new measurement
or rate catches a planted bug (a wrong bound gives VIOLATED, a wrong implementation an inconsistent exponent)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ditcheck.fast_attention.attention import AttentionResult, attention
from ditcheck.audit import budget, registry, run_claim
from ditcheck.audit import claims_attention as ca
from ditcheck.fast_attention.gradient import attention_weight_gradient_exact
from ditcheck.fast_attention.polynomial import polynomial_features
from ditcheck.properties import fast_attention
from ditcheck.fast_attention.random_features import positive_random_features

IDS = ("LD6", "LD7", "LD8", "AS1", "AS2", "AS3", "AS4", "AS5", "AS6", "AS7", "PF1")


def test_claims_are_registered_in_theory_order() -> None:
    ids = [cid for cid in registry() if cid in IDS]
    assert ids == list(IDS) and [c.id for c in ca.CLAIMS] == ids


@pytest.mark.slow
@pytest.mark.parametrize("claim_id", IDS)
def test_claim_runs_in_quick_mode(claim_id: str) -> None:
    torch.set_num_threads(1)
    result = run_claim(registry()[claim_id], "quick", 0)
    assert result.verdict != "ERROR" and not result.errors, (result.summary, result.errors)
    assert "VIOLATED" not in result.verdict and "inconsistent" not in result.verdict, result.summary


def _one_case(claim_id: str):
    """The claim with its grid cut to its first case and no search: planted bugs are caught on fixed inputs."""
    claim = registry()[claim_id]
    first = claim.grid("quick")[:1]
    return dataclasses.replace(claim, grid=lambda mode: first, examples=budget(0, 0, 0))


# --- AS1: the limit is the certified eps --------------------------------------------------------------

def test_as1_planted_halved_certificate_is_violated() -> None:
    claim = _one_case("AS1")
    planted = dataclasses.replace(claim, measure=lambda case: fast_attention.measure_entrywise_relative_error(
        case, eps_fn=lambda approximation: approximation.eps / 2))
    assert run_claim(planted, "quick", 0).verdict == "VIOLATED"


# --- AS3: degree against R --------------------------------------------------------------------------

def test_as3_planted_quadratic_degree_is_inconsistent() -> None:
    claim = registry()["AS3"]
    planted = dataclasses.replace(claim, rates=lambda mode, seed: ca.as3_series(
        mode, seed, degree_fn=lambda radius, eps, kind: math.ceil(radius * radius)))
    assert run_claim(planted, "quick", 0).verdict == "inconsistent"


# --- AS4: numerical rank ----------------------------------------------------------------------------

def _duplicated_monomial(x, approximation, scale, *, side):
    """Planted: the last monomial replaced by a copy of the first (right column count, rank one short)."""
    features = polynomial_features(x, approximation, scale, side=side).clone()
    if features.shape[-1] > 1:
        features[..., -1] = features[..., 0]
    return features


def test_as4_planted_dependent_feature_is_violated() -> None:
    claim = _one_case("AS4")
    planted = dataclasses.replace(
        claim, measure=lambda case: fast_attention.measure_feature_rank(case, features=_duplicated_monomial))
    assert run_claim(planted, "quick", 0).verdict == "VIOLATED"


def test_as4_planted_paper_rank_is_violated() -> None:
    """The paper's C(2(g+d), 2g) is an upper bound, not the rank."""
    from ditcheck.bounds import paper_feature_rank_bound

    claim = _one_case("AS4")
    planted = dataclasses.replace(
        claim, measure=lambda case: fast_attention.measure_feature_rank(case, rank_fn=paper_feature_rank_bound))
    assert run_claim(planted, "quick", 0).verdict == "VIOLATED"


# --- AS5, LD6: counted FLOPs ------------------------------------------------------------------------

def _quadratic_poly(q, k, v, *, backend="exact", eps=1e-3, scale=None, **kwargs):
    """Planted: 'poly' that forms the L x L matrix (softmax(s Q K^T) V by matmuls) but reports poly's degree/rank."""
    from ditcheck.fast_attention.attention import DEFAULT_MAX_RANK, _poly_plan

    if backend != "poly":
        return attention(q, k, v, backend=backend, eps=eps, scale=scale, **kwargs)
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    _, _, approximation = _poly_plan(q, k, s, eps, None, "chebyshev", True, DEFAULT_MAX_RANK)
    dense = torch.softmax(s * q @ k.mT, dim=-1) @ v
    return AttentionResult(dense, "poly", degree=approximation.degree,
                           rank=math.comb(q.shape[-1] + approximation.degree, approximation.degree))


def test_as5_planted_quadratic_poly_is_inconsistent() -> None:
    planted = dataclasses.replace(registry()["AS5"], rates=lambda mode, seed: ca.as5_series(
        mode, seed, attention_fn=_quadratic_poly))
    result = run_claim(planted, "quick", 0)
    assert result.verdict == "inconsistent"
    assert not result.fits[0].consistent and result.fits[1].consistent


def test_ld6_planted_quadratic_poly_is_inconsistent() -> None:
    planted = dataclasses.replace(registry()["LD6"], rates=lambda mode, seed: ca.ld6_series(
        mode, seed, attention_fn=_quadratic_poly))
    assert run_claim(planted, "quick", 0).verdict == "inconsistent"


def test_attention_flops_count_the_real_backends() -> None:
    q, k, v = fast_attention.fixed_radius_inputs(64, 4, 3, 1.0, 0)
    exact, result = fast_attention.attention_flops(q, k, v, "exact")
    assert isinstance(result, AttentionResult) and exact == 2 * 64 * 64 * (4 + 3)
    poly, result = fast_attention.attention_flops(q, k, v, "poly")
    width = 3 + 1  # [V, 1], unpadded
    assert poly == 2 * 2 * 64 * result.rank * width  # keys and queries: one GEMM each over the features


# --- LD8: counted FLOPs of the chain ----------------------------------------------------------------

def test_ld8_planted_dense_gradient_rate_is_inconsistent() -> None:
    def dense(*, degree, radius, **kwargs):
        return attention_weight_gradient_exact(**kwargs)

    claim = _one_case("LD8")
    planted = dataclasses.replace(claim, rates=lambda mode, seed: ca.ld8_series(mode, seed, gradient_fn=dense))
    result = run_claim(planted, "quick", 0)
    assert result.verdict.endswith("rate inconsistent") and not result.fits[0].consistent


# --- PF1: FAVOR+ rate -------------------------------------------------------------------------------

def test_pf1_planted_wrong_normalisation_is_inconsistent() -> None:
    def biased(x, projection):
        """Planted: m^-1/4 instead of m^-1/2, so A~ is off by a factor m^1/2 that no m removes."""
        return positive_random_features(x, projection) * projection.shape[-2] ** 0.25

    planted = dataclasses.replace(registry()["PF1"], rates=lambda mode, seed: ca.pf1_series(
        mode, seed, feature_fn=biased))
    assert run_claim(planted, "quick", 0).verdict == "inconsistent"


def test_pf1_variance_law_holds_and_a_1_3x_feature_scale_breaks_it() -> None:
    """m Var[A~/A] = exp(||q + k||^2) - 1 for iid features; projections 1.3x too wide (a plausible mis-scaled N(0, s^2 I))
    make the estimator biased and its variance grow faster: the law's fit is inconsistent."""
    from ditcheck.properties import random_features

    x, y = random_features.relative_variance_law(repeats=256)
    assert all(0.8 < r < 1.25 for r in y / x)

    def wide(inputs, projection):
        return positive_random_features(inputs, 1.3 * projection)

    law_x, law_y = random_features.relative_variance_law(repeats=256, feature_fn=wide)
    assert min(law_y / law_x) > 1.5
    planted = dataclasses.replace(registry()["PF1"], rates=lambda mode, seed: ca.pf1_series(
        mode, seed, feature_fn=wide))
    result = run_claim(planted, "quick", 0)
    assert result.verdict == "inconsistent" and not result.fits[-1].consistent
