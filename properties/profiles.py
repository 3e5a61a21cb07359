"""Hypothesis profiles of the project: smoke, ci, audit (practice.md, "Profiles")."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

__all__ = ["PROFILES", "register_profiles", "load_profile_from_environment"]

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
