"""No private name crosses an area: what two areas share is a public, documented function.

An area is reference/, properties/, each core subpackage of ditcheck (fast_attention, models, diffusion, gp and
the module bounds) and each app (validate, audit, bench, and the modules cli, criteria, plugin, loader, options).
The scan reads the source with ast: ``from X import _name``, ``import X._private``, ``module._name`` on an
imported module, and a dotted ``area.module._name`` written in a string (the audit cites bounds by name).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("ditcheck", "reference", "properties")
# A dotted name inside a string that ends in a private attribute, e.g. "properties.mixtures._tolerance".
_CITED = re.compile(r"\b((?:ditcheck\.)?(?:reference|properties|fast_attention|models|diffusion|gp|bounds|validate|"
                    r"audit|bench)(?:\.[A-Za-z]\w*)*)\.(_[A-Za-z]\w*)\b")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def area_of_module(dotted: str) -> str:
    """ditcheck.reference.x -> reference; ditcheck.validate._target -> validate; ditcheck.cli -> cli."""
    parts = dotted.split(".")
    if parts[0] == "ditcheck":
        parts = parts[1:]
    return parts[0] if parts else "ditcheck"


def area_of_file(relative: str) -> str:
    parts = Path(relative).with_suffix("").parts
    if parts[0] in ("reference", "properties"):
        return parts[0]
    return parts[1] if len(parts) > 1 else "ditcheck"


def crossings(source: str, relative: str) -> list[str]:
    """Every private name the file at ``relative`` (e.g. ditcheck/bounds.py) takes from another area."""
    here = area_of_file(relative)
    found: list[str] = []
    imported_modules: dict[str, str] = {}  # local name -> dotted module of another area
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if area_of_module(node.module) == here or node.module.split(".")[0] not in ("ditcheck", *SOURCES[1:]):
                continue
            private_path = [p for p in node.module.split(".") if _is_private(p)]
            for alias in node.names:
                if private_path or _is_private(alias.name):
                    found.append(f"{relative}:{node.lineno} from {node.module} import {alias.name}")
                else:
                    imported_modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "ditcheck" or area_of_module(alias.name) == here:
                    continue
                if any(_is_private(p) for p in alias.name.split(".")):
                    found.append(f"{relative}:{node.lineno} import {alias.name}")
                imported_modules[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in _CITED.finditer(node.value):
                if area_of_module(match.group(1)) != here:
                    found.append(f"{relative}:{node.lineno} cites {match.group(0)}")
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules):
            found.append(f"{relative}:{node.lineno} {imported_modules[node.value.id]}.{node.attr}")
    return found


def _tree_crossings() -> list[str]:
    found = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            found += crossings(path.read_text(), relative)
    return found


def test_no_private_name_crosses_an_area() -> None:
    assert _tree_crossings() == []


def test_the_scan_catches_planted_crossings() -> None:
    planted = {
        "from ditcheck.fast_attention.polynomial import _helper\n": "import _helper",
        "from ditcheck.validate._target import call_isolated\n": "validate._target",
        "import ditcheck.reference.gp as gp\nx = gp._check(1)\n": "ditcheck.reference.gp._check",
        "from ditcheck.reference import gp\ny = gp._check\n": "ditcheck.reference.gp._check",
        "BOUND = 'properties.mixtures._tolerance'\n": "cites properties.mixtures._tolerance",
    }
    for source, says in planted.items():
        found = crossings(source, "ditcheck/bounds.py")
        assert len(found) == 1 and says in found[0], (source, found)


def test_the_scan_allows_what_is_allowed() -> None:
    allowed = ("from ditcheck.reference.gp import check_kernels\n"  # public name of another area
               "from ditcheck.bounds import _own\n"  # the area's own private name
               "from ._target import call_isolated\n"  # relative: same package
               "import ditcheck.reference.gp as gp\nz = gp.__name__\n"  # dunders are public
               "TEXT = 'reference.gp.check_kernels'\n")
    assert crossings(allowed, "ditcheck/bounds.py") == []
