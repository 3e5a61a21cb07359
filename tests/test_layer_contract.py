"""The layer contract of pyproject.toml ([tool.importlinter]): reference -> core -> properties -> apps.

import-linter reads a package from one directory, but the checkout keeps reference/ and properties/ beside
ditcheck/ (setuptools maps them into ditcheck). So the tree is copied as it is installed and linted there, in a
subprocess whose PYTHONPATH puts the copy first. A planted upward import shows that the contract can break.
"""

from __future__ import annotations

import ast
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


# Imports sit at the top of a module. One inside a function says why on a "# lazy:" comment (on its line or in
# the block of imports and comments just above it): an optional dependency, an import too slow for the paths that
# skip it (matplotlib when no figure is written), or a start-up the project keeps light (the pytest plugin).

SOURCE_FOLDERS = ("ditcheck", "reference", "properties")


def unexplained_function_imports(source: str) -> list[int]:
    """Line numbers of imports inside a function body with no "# lazy:" reason next to them."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if not isinstance(inner, (ast.Import, ast.ImportFrom)):
                continue
            row = inner.lineno - 1
            while row >= 0 and "lazy:" not in lines[row] and (
                    row == inner.lineno - 1 or lines[row].strip().startswith(("#", "from ", "import ")) or
                    not lines[row].strip()):
                row -= 1
            if row < 0 or "lazy:" not in lines[row]:
                found.append(inner.lineno)
    return sorted(set(found))


def test_every_import_inside_a_function_says_why() -> None:
    unexplained = [f"{path.relative_to(ROOT)}:{line}" for folder in SOURCE_FOLDERS
                   for path in sorted((ROOT / folder).rglob("*.py"))
                   for line in unexplained_function_imports(path.read_text())]
    assert unexplained == [], "imports inside functions without a '# lazy:' reason:\n" + "\n".join(unexplained)


def test_an_unexplained_import_inside_a_function_is_found() -> None:
    source = ("import math\n\n\ndef explained():\n    # lazy: optional\n    import scipy\n\n    import json\n"
              "    return json\n\n\ndef inline():\n    from io import StringIO  # lazy: slow\n    return StringIO\n"
              "\n\ndef planted():\n    value = 1\n    import json\n    return json, value\n")
    assert unexplained_function_imports(source) == [source.splitlines().index("    value = 1") + 2]
