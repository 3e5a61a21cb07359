"""The layer contract of pyproject.toml ([tool.importlinter]): reference -> core -> properties -> apps.

import-linter reads a package from one directory, but the checkout keeps reference/ and properties/ beside
ditcheck/ (setuptools maps them into ditcheck). So the tree is copied as it is installed and linted there, in a
subprocess whose PYTHONPATH puts the copy first. A planted upward import shows that the contract can break.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the test extra")

ROOT = Path(__file__).resolve().parents[1]


def _installed_layout(destination: Path) -> Path:
    """Copy ditcheck/, reference/ and properties/ into destination/ditcheck as setuptools installs them."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "ditcheck", destination / "ditcheck", ignore=ignore)
    shutil.copytree(ROOT / "reference", destination / "ditcheck" / "reference", ignore=ignore)
    shutil.copytree(ROOT / "properties", destination / "ditcheck" / "properties", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; "
                           "raise SystemExit(lint_imports(no_cache=True, no_logo=True))"],
                          cwd=tree, env=environment, capture_output=True, text=True, timeout=300)


def test_layer_contract_is_kept(tmp_path: Path) -> None:
    result = _lint(_installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, upward", [
    ("reference/layers.py", "from ditcheck.fast_attention import attention as _planted"),  # reference -> core
    ("ditcheck/fast_attention/polynomial.py", "import ditcheck.properties.strategies as _planted"),  # core -> properties
    ("properties/dit.py", "from ditcheck.validate import attention as _planted"),  # properties -> apps
])
def test_upward_import_breaks_the_contract(tmp_path: Path, module: str, upward: str) -> None:
    tree = _installed_layout(tmp_path)
    planted = tree / "ditcheck" / module.removeprefix("ditcheck/")
    planted.write_text(planted.read_text() + f"\n{upward}\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout or "not allowed to import" in result.stdout, result.stdout
