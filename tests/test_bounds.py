"""ditcheck.bounds: AS2 forms, AS3 minimal degree, AS4 rank, LD6 threshold, rounding terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import at_most, expect_caught
from hypothesis import given

from ditcheck import bounds
from ditcheck.properties.fast_attention import (DegreeCase, check_minimal_degree, check_taylor_not_better,
                                                degree_cases, indicative_degree_table)
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.formats import FLOAT32, FLOAT64


@at_most(25)
@given(degree_cases())
def test_minimal_degree_is_minimal(case: DegreeCase) -> None:
    check_minimal_degree(case)


@at_most(25)
@given(degree_cases())
def test_taylor_needs_at_least_chebyshev_degree(case: DegreeCase) -> None:
    check_taylor_not_better(case)


def test_minimal_degree_planted_off_by_one_is_caught() -> None:
    expect_caught(lambda case: check_minimal_degree(
        case, degree_fn=lambda r, e, kind: bounds.minimal_degree(r, e, kind=kind) + 1), degree_cases(), claim="AS3")
    expect_caught(lambda case: check_minimal_degree(
        case, degree_fn=lambda r, e, kind: max(0, bounds.minimal_degree(r, e, kind=kind) - 1)), degree_cases(),
        claim="AS3")


def test_taylor_planted_kind_swap_is_caught() -> None:
    swapped = {"chebyshev": "taylor", "taylor": "chebyshev"}
    expect_caught(lambda case: check_taylor_not_better(
        case, degree_fn=lambda r, e, kind: bounds.minimal_degree(r, e, kind=swapped[kind])), degree_cases(),
        claim="AS3")


def test_indicative_degree_table_of_as3() -> None:
    """The AS3 table of docs/claims.md#as3, R <= 4: our certified Chebyshev degrees equal it (R = 8 too: the audit test)."""
    rows = indicative_degree_table(max_radius=4.0)
    assert [(r, e, ours) for r, e, ours, _ in rows] == [(r, e, theirs) for r, e, _, theirs in rows]


@pytest.mark.audit
def test_indicative_degree_table_all_radii_and_kinds() -> None:
    """All of the AS3 table of docs/claims.md#as3 (R = 8 included); minimax never needs more, Taylor never less."""
    rows = indicative_degree_table()
    assert [ours for _, _, ours, _ in rows] == [theirs for _, _, _, theirs in rows]
    for (_, _, minimax, _), (_, _, chebyshev, _), (_, _, taylor, _) in zip(
            indicative_degree_table("minimax"), rows, indicative_degree_table("taylor")):
        assert minimax <= chebyshev <= taylor


def test_minimal_degree_refuses_what_float64_cannot_certify() -> None:
    with pytest.raises(bounds.UnreachableAccuracyError) as info:
        bounds.minimal_degree(16.0, 1e-12)
    assert info.value.argument == "eps" and "R = 16" in str(info.value)
    for eps in (0.0, 1.0, -1e-3, float("nan")):
        with pytest.raises(InvalidArgumentError) as info:
            bounds.minimal_degree(1.0, eps)
        assert info.value.argument == "eps"
    with pytest.raises(InvalidArgumentError):
        bounds.minimal_degree(1.0, 1e-3, kind="remez")


def test_feature_rank_and_paper_bound() -> None:
    assert [bounds.feature_rank(4, g) for g in range(1, 7)] == [5, 15, 35, 70, 126, 210]
    assert bounds.feature_rank(8, 4) == 495
    for d in range(1, 6):
        for g in range(0, 6):
            assert bounds.feature_rank(d, g) <= bounds.paper_feature_rank_bound(d, g)
    with pytest.raises(InvalidArgumentError):
        bounds.feature_rank(-1, 2)


def test_as2_forms_and_ld6() -> None:
    assert bounds.as2_output_bound(0.5, 2.0) == 2.0
    assert bounds.as2_paper_bound(0.25, 2.0) == 1.0
    v = np.array([[[1.0, -3.0], [5.0, -1.0]]])
    assert np.allclose(bounds.as2_column_bound(0.5, v), [[2.0, 1.0]])
    assert bounds.ld6_threshold(math.ceil(math.e**4)) == pytest.approx(2.0, rel=1e-3)
    with pytest.raises(InvalidArgumentError):
        bounds.ld6_threshold(1)
    with pytest.raises(InvalidArgumentError):
        bounds.as2_output_bound(1.0, 1.0)


def test_gamma_and_rounding_bounds() -> None:
    u = FLOAT64.unit_roundoff
    assert bounds.gamma(10, u) == pytest.approx(10 * u)
    assert bounds.gamma(2**54, u) == math.inf
    assert bounds.poly_attention_rounding_bound(1.0, 0.5, 1e-4, 10**6, 495, 4, 1.0, FLOAT32.unit_roundoff) > 0
    assert bounds.poly_attention_rounding_bound(1.0, 0.5, 1e-4, 10**9, 495, 4, 1.0, FLOAT32.unit_roundoff) == math.inf
