"""pytest plugin (entry point ``pytest11``): registers ditcheck's Hypothesis profiles.

``--hypothesis-profile NAME`` (Hypothesis' own option) or ``DITCHECK_PROFILE=NAME``
selects smoke, ci or audit. The command-line option wins over the environment.
"""

from __future__ import annotations

import pytest

from .profiles import load_profile_from_environment, register_profiles

register_profiles()


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("hypothesis_profile", default=None):
        load_profile_from_environment()


def pytest_report_header(config: pytest.Config) -> str:
    from hypothesis import settings

    return f"ditcheck: hypothesis profile {settings.get_current_profile_name()!r}"
