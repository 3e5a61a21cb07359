"""Audit registry entries LD1-LD5, CF1-CF4 (ditcheck.audit.claims_diffusion): they run, and planted bugs are caught."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch

from ditcheck.audit import claims_diffusion, registry, run_claim
from ditcheck.models.dit import LatentScoreNetwork
from ditcheck.properties import distributions as dist
from ditcheck.properties import samplers as smp
from ditcheck.properties import torch_dit
from ditcheck.reference import mixtures
from ditcheck.reference.errors import InvalidArgumentError, ShapeError
from ditcheck.reference.schedules import sigma2 as schedule_sigma2

IDS = ("LD1", "LD2", "LD3", "LD4", "LD5", "CF1", "CF2", "CF3", "CF4")


def test_registered_in_theory_order() -> None:
    claims = registry()
    assert all(cid in claims for cid in IDS)
    assert [c.id for c in claims_diffusion.CLAIMS] == list(IDS)


@pytest.mark.parametrize("cid", IDS)
def test_claim_runs_in_quick_mode(cid: str) -> None:
    result = run_claim(registry()[cid], "quick", 0)
    assert result.verdict != "ERROR", result.errors
    assert not result.errors
    expected = {"exact": "holds (statistical)" if result.statistical else "exact to rounding",
                "rate": "consistent", "not checkable": "not checkable"}
    if result.kind in expected:
        assert result.verdict == expected[result.kind], result.summary
    else:
        assert result.verdict.startswith(("holds", "loose")), result.summary


def test_quick_runs_are_deterministic() -> None:
    for cid in ("LD5", "CF1", "CF3"):
        first, second = (run_claim(registry()[cid], "quick", 3) for _ in range(2))
        assert first.summary == second.summary


def test_not_checkable_tables() -> None:
    ld3 = claims_diffusion.ld3_sizes()
    assert len(ld3) == 12 and all(row["vacuous"] for row in ld3)
    row = next(r for r in ld3 if r["eps"] == 0.01 and r["L"] == 8)
    assert row["log10 blocks K ~ eps^(-2L)"] == pytest.approx(32.0)
    ld4 = {(r["eps"], r["L"]): r for r in claims_diffusion.ld4_sizes()}
    assert ld4[(0.1, 1)]["log10 2^((1/eps)^(2L))"] == pytest.approx(100 * math.log10(2))
    cf4 = claims_diffusion.cf4_exponents()
    assert cf4[0]["score error exponent -2b/(d+dy+2b)"] == pytest.approx(-0.4)


# ---- planted bugs: each new measurement catches one ---------------------------------------------


def _claim(cid: str):
    return registry()[cid]


def test_ld1_planted_orthogonal_term_over_sigma_is_violated() -> None:
    def wrong(mixture, x, t, schedule="ou-half", precision="float64"):
        on, orth = mixtures.ld1_decomposition(mixture, x, t, schedule, precision=precision)
        sigma2 = np.broadcast_to(np.asarray(schedule_sigma2(t, schedule)),
                                 (x.shape[0],))[:, None]
        return on, orth * np.sqrt(sigma2)  # -(I - BB^T) x / sigma instead of / sigma^2

    claim = dataclasses.replace(_claim("LD1"), measure=functools.partial(dist.measure_ld1, decomposition=wrong))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


class SigmaNotVariance(LatentScoreNetwork):
    """Planted: divides by sigma_t (Hu et al.'s sigma(t) is the variance; misread as a standard deviation)."""

    def sigma2(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        return torch.sqrt(super().sigma2(t, batch))


def test_ld2_planted_sigma_for_variance_is_violated() -> None:
    claim = dataclasses.replace(_claim("LD2"), measure=functools.partial(torch_dit.measure_torch_ld2,
                                                                         score_network=SigmaNotVariance))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "VIOLATED"
    assert result.forms["score with f = q"] > 1


def test_ld5_planted_smaller_bound_is_violated() -> None:
    def half(T0, mu):  # noqa: N803 - planted: the bound without its factor e, halved
        return 0.5 * (T0 + mu)

    claim = dataclasses.replace(_claim("LD5"), measure=functools.partial(smp.measure_ld5_bound, bound=half))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def test_ld5_measure_matches_check() -> None:
    case = smp.LD5Case(6.0, 1e-4, 8)
    assert smp.check_ld5_bound(case) == smp.measure_ld5_bound(case).ratio


def test_cf1_planted_unmasked_optimal_score_is_violated() -> None:
    def ignores_the_mask(mixture, schedule="ou-half"):
        def s(x, t, labels):
            return mixtures.conditional_score(mixture, x, np.where(labels < 0, 0, labels), t, schedule)
        return s

    claim = dataclasses.replace(_claim("CF1"), measure=functools.partial(dist.measure_cf1, optimal=ignores_the_mask))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def _wrong_centre(alpha: float, sigma2: float, c2: float) -> tuple[float, float]:
    """Planted: centre alpha x instead of alpha x/(alpha^2 + C2 sigma^2)."""
    return alpha, sigma2 / (alpha * alpha + c2 * sigma2)


def test_cf2_planted_wrong_centre_is_violated() -> None:
    wrong = functools.partial(mixtures.cf2_decomposition, smoothing=_wrong_centre)
    claim = dataclasses.replace(_claim("CF2"), measure=functools.partial(dist.measure_cf2, decomposition=wrong))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"
    with pytest.raises(Exception, match="CF2"):
        dist.check_cf2(claim.grid("quick")[1], decomposition=wrong)


def test_cf2_planted_variance_sigma_instead_of_sigma2_is_violated() -> None:
    def wrong(alpha, sigma2, c2):
        return alpha / (alpha * alpha + c2 * sigma2), math.sqrt(sigma2) / (alpha * alpha + c2 * sigma2)

    bad = functools.partial(mixtures.cf2_decomposition, smoothing=wrong)
    claim = dataclasses.replace(_claim("CF2"), measure=functools.partial(dist.measure_cf2, decomposition=bad))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def test_cf2_quadrature_error_is_stated_and_small() -> None:
    case = dist.CF2Case(2, 3, 1, 0.99, 1e-3, 2, 2, 3.0, 3.0, 10.0)
    terms = mixtures.cf2_decomposition(case.mixture, case.x, case.time, case.c2)
    assert terms.quadrature_error.shape == (2,) and np.all(terms.quadrature_error < 1e-10)
    dist.check_cf2(case)


def test_cf2_bad_input() -> None:
    mixture = mixtures.gaussian_mixture([1.0], [[0.0]], [[[0.5]]])
    with pytest.raises(InvalidArgumentError, match="c2"):
        mixtures.cf2_decomposition(mixture, np.zeros((1, 1)), 0.5, 2.0)  # C2 >= 1/lambda_max = 2
    with pytest.raises(ShapeError, match="mixture"):
        big = mixtures.gaussian_mixture([1.0], [[0.0, 0.0, 0.0]], [np.eye(3)])
        mixtures.cf2_decomposition(big, np.zeros((1, 3)), 0.5, 0.5)


def test_cf3_planted_variance_floor_is_inconsistent() -> None:
    def floor(mixture, t0):  # planted: a variance floor of 1e-2 that early stopping never removes
        diffused = mixtures.diffuse(mixture, t0, "ou-half")
        return mixtures.gaussian_mixture(diffused.weights, diffused.means, diffused.covariances + 1e-2)

    claim = dataclasses.replace(_claim("CF3"), rates=functools.partial(claims_diffusion.cf3_rates, law=floor))
    assert run_claim(claim, "quick", 0).verdict == "inconsistent"


def test_ld1_planted_zero_tolerance_is_violated() -> None:
    def none(case, on, orth, full):  # planted: no rounding allowance at all
        return np.zeros((case.points, 1))

    claim = dataclasses.replace(_claim("LD1"), measure=functools.partial(dist.measure_ld1, tolerance=none))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"
