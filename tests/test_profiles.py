"""The project's Hypothesis profiles and their selection by DITCHECK_PROFILE."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

from ditcheck.properties.profiles import PROFILES, load_profile_from_environment


def test_profiles_have_their_documented_settings() -> None:
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.deadline is None and ci.database is None and ci.max_examples == 100
    assert settings.get_profile("smoke").max_examples <= 10
    audit = settings.get_profile("audit")
    assert audit.max_examples >= 1000 and Phase.shrink not in audit.phases and Phase.target in audit.phases
    assert set(PROFILES) == {"smoke", "ci", "audit"}


def test_environment_variable_selects_a_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    current = settings.get_current_profile_name()
    try:
        monkeypatch.setenv("DITCHECK_PROFILE", "smoke")
        assert load_profile_from_environment() == "smoke"
        assert settings.get_current_profile_name() == "smoke"
        monkeypatch.setenv("DITCHECK_PROFILE", "fast")
        with pytest.raises(ValueError, match="DITCHECK_PROFILE"):
            load_profile_from_environment()
    finally:
        settings.load_profile(current)
