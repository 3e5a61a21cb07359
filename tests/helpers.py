"""Shared test helpers: run a property over a strategy and demand that a planted bug is caught."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ditcheck.properties.violation import PropertyViolation

__all__ = ["expect_caught", "at_most"]


def expect_caught(check: Callable[[Any], None], cases: st.SearchStrategy[Any], *, claim: str | None = None,
                  max_examples: int = 50) -> PropertyViolation:
    """Assert that ``check(case)`` raises PropertyViolation for some drawn case (a planted bug is caught).

    No shrinking: the first violating case is enough, and it keeps planted-bug tests fast.
    """

    @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(cases)
    def run(case: Any) -> None:
        check(case)

    with pytest.raises(PropertyViolation) as info:
        run()
    if claim is not None:
        assert info.value.claim == claim, f"caught, but by {info.value.claim!r} instead of {claim!r}"
    return info.value


def at_most(max_examples: int) -> settings:
    """settings with max_examples = min(max_examples, the active profile's): for arb/mp-heavy tests, never raises it."""
    return settings(max_examples=min(max_examples, settings().max_examples))
