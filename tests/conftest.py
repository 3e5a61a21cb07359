"""ditcheck's own suite runs under the project's "ci" profile unless another is chosen.

(The installed pytest plugin only registers profiles and honours DITCHECK_PROFILE: it must
not change the Hypothesis settings of other projects' test suites.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py, importable under xdist and importlib modes


def pytest_configure(config: pytest.Config) -> None:
    import torch

    # one intra-op thread per process: with -n auto the workers already fill the cores, and the suite's
    # tensors are tiny, so extra threads only contend (tiny models were up to 25x slower under xdist,
    # and 9x slower in a serial run on the loaded 2-core runner)
    torch.set_num_threads(1)
    if not config.getoption("hypothesis_profile", default=None) and not os.environ.get("DITCHECK_PROFILE"):
        settings.load_profile("ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long audits (@pytest.mark.audit) run only when asked for with ``-m audit``."""
    if "audit" in (config.getoption("markexpr", default="") or ""):
        return
    skip = pytest.mark.skip(reason="long audit: run with -m audit")
    for item in items:
        if item.get_closest_marker("audit") is not None:
            item.add_marker(skip)
