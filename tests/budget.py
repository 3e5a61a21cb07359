"""Example budgets for expensive property tests: lower the profile's max_examples, never raise it."""

from __future__ import annotations

from hypothesis import settings

__all__ = ["at_most"]


def at_most(max_examples: int) -> settings:
    """settings with max_examples = min(max_examples, the active profile's), for arb/mp-heavy tests."""
    return settings(max_examples=min(max_examples, settings().max_examples))
