"""Hypothesis profiles of the project: smoke, ci, audit (docs/conventions.md#hypothesis-profiles)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from hypothesis import HealthCheck, Phase, settings

__all__ = ["PROFILES", "register_profiles", "load_profile_from_environment", "without_local_constants"]

PROFILES = ("smoke", "ci", "audit")


def register_profiles() -> None:
    """Register smoke (seconds), ci (derandomized, no deadline, no database) and audit (many examples)."""
    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("smoke", max_examples=10, deadline=None, suppress_health_check=slow_ok)
    settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, database=None,
                              print_blob=True, suppress_health_check=slow_ok)
    # Audits search for worst cases; shrinking toward the pass/fail edge would waste the budget.
    settings.register_profile("audit", max_examples=2000, deadline=None, suppress_health_check=slow_ok,
                              phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target])


def load_profile_from_environment() -> str | None:
    """Load the profile named by DITCHECK_PROFILE, if set; return its name."""
    name = os.environ.get("DITCHECK_PROFILE")
    if name:
        if name not in PROFILES:
            raise ValueError(f"environment variable DITCHECK_PROFILE: expected one of {PROFILES}; got {name!r}")
        settings.load_profile(name)
    return name


@contextlib.contextmanager
def without_local_constants() -> Iterator[None]:
    """Hypothesis also draws literal constants found in the user's loaded modules, so its draws depend on what
    happens to be imported: a report would change with the import graph. This switches that pool off.
    The audit and ``ditcheck validate`` promise the same draws for a seed wherever they run (CLI, worker
    process, pytest), so they search inside this (an internal of Hypothesis >= 6.131; without it there is
    nothing to switch off, and the determinism tests say so)."""
    try:
        from hypothesis.internal.conjecture import providers  # lazy: an internal, absent before 6.131
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if original is None or cache is None or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()
    cache.cache.clear()  # entries computed with the local pool
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()
