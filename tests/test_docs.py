"""The project's documents stay true to the code: docs/claims.md covers every claim id the audit registers and the
code cites, no file cites a Markdown file the project does not contain (or an anchor that file lacks), and every
``ditcheck.x.y`` path and repository file path named in README.md and docs/*.md exists.

Each checker is a plain function of text, so a planted defect (a claim section removed, a citation of a file that
is not in the repository, a module path from before the reshaping) is shown to be caught on a copy of the text.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from ditcheck.audit import registry

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "docs" / "claims.md"

#: Claim ids as the code writes them (LD1-LD9, AS1-AS7, PF1, RF1, GP1-GP4, CF1-CF4, RT1-RT4, FM1-FM3, and any new one).
CLAIM_ID = re.compile(r"\b(?:LD|AS|PF|RF|GP|CF|RT|FM)\d+\b")
#: A section heading that is exactly a claim id: "## AS2" (anchor docs/claims.md#as2).
CLAIM_HEADING = re.compile(r"^#{2,3}[ \t]+((?:LD|AS|PF|RF|GP|CF|RT|FM)\d+)[ \t]*$", re.MULTILINE)
#: A cited Markdown file, with its anchor if any: "docs/claims.md#as2", "[x](conventions.md#tolerances)".
MD_CITATION = re.compile(r"(?<![\w/.-])([\w./-]*[\w-]\.md)(?:#([\w-]+))?\b")
#: Markdown files the project writes at run time rather than contains: the audit's report (``--out`` folder).
GENERATED = frozenset({"report.md"})
#: A module path under ditcheck: ditcheck.fast_attention.attention, ditcheck.bounds.as2_output_bound, ...
MODULE_PATH = re.compile(r"(?<![\w.])ditcheck(?:\.[A-Za-z_]\w*)+")
#: A repository file path: ditcheck/audit/claims_*.py, tests/test_<area>.py (a placeholder: any name), docs/figures/.
FILE_PATH = re.compile(r"(?<![\w./-])((?:ditcheck|reference|properties|tests|docs)/[\w./*<>-]*[\w>])")
#: Where citations are looked for: the code, the tests, the README, the docs and the project metadata.
CITING = ("*.md", "ditcheck/**/*.py", "reference/**/*.py", "properties/**/*.py", "tests/**/*.py", "docs/**/*.md",
          "pyproject.toml", ".ci/*")


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def documented_claims(markdown: str) -> set[str]:
    """Claim ids that have their own section (a heading that is exactly the id)."""
    return set(CLAIM_HEADING.findall(markdown))


def missing_claims(markdown: str, ids: Iterable[str]) -> list[str]:
    """The ids of ``ids`` without a section in ``markdown``, sorted."""
    return sorted(set(ids) - documented_claims(markdown))


def undocumented_claim_ids(paths: Iterable[Path], markdown: str) -> dict[str, list[str]]:
    """Claim ids cited in ``paths`` without a section in ``markdown``: id -> the files citing it."""
    documented = documented_claims(markdown)
    undocumented: dict[str, list[str]] = {}
    for path in paths:
        for claim_id in sorted(set(CLAIM_ID.findall(path.read_text(encoding="utf-8"))) - documented):
            undocumented.setdefault(claim_id, []).append(path.name)
    return undocumented


def dangling_citations(text: str, directory: Path, root: Path = ROOT) -> list[str]:
    """Markdown citations in ``text`` (written in ``directory``) whose file is not in the project, or whose anchor
    is not a heading of that file. A citation resolves against the citing file's directory or the root."""
    problems = []
    for match in MD_CITATION.finditer(text):
        name, anchor = match.group(1), match.group(2)
        if Path(name).name in GENERATED:
            continue
        candidates = [place / name for place in (directory, root)]
        target = next((path for path in candidates if path.is_file()), None)
        if target is None:
            problems.append(match.group(0))
        elif anchor and anchor not in heading_anchors(target.read_text(encoding="utf-8")):
            problems.append(f"{match.group(0)} (no such heading)")
    return problems


def resolves(path: str) -> bool:
    """Whether ``ditcheck.a.b.c`` names something real: the longest importable module, then attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def unresolved_module_paths(text: str) -> list[str]:
    """The ``ditcheck.x.y`` paths in ``text`` that do not import (or name no attribute of what imports)."""
    return sorted({path for path in MODULE_PATH.findall(text) if not resolves(path)})


def missing_files(text: str, root: Path = ROOT) -> list[str]:
    """Repository paths (ditcheck/..., tests/..., docs/..., globs allowed) in ``text`` that match no file."""
    return sorted({path for path in FILE_PATH.findall(text) if not any(root.glob(re.sub(r"<[^>]*>", "*", path)))})


def _files(patterns: Iterable[str]) -> list[Path]:
    """Project files matching ``patterns``, without build output and without this module (it plants citations)."""
    found = {path for pattern in patterns for path in ROOT.glob(pattern) if path.is_file()}
    return sorted(path for path in found if "egg-info" not in str(path) and "__pycache__" not in path.parts
                  and path != Path(__file__).resolve())


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# (a) every registered claim has its section


def test_claims_md_documents_every_registered_claim() -> None:
    ids = list(registry())
    assert len(ids) == 33  # theory.md's 29, LD9 (Hu et al.'s distribution recovery) and FM1-FM3 (flow matching)
    assert missing_claims(CLAIMS.read_text(encoding="utf-8"), ids) == []


def test_a_removed_claim_section_is_caught() -> None:
    text = CLAIMS.read_text(encoding="utf-8")
    assert "\n## AS2\n" in text
    assert missing_claims(text.replace("\n## AS2\n", "\n"), registry()) == ["AS2"]
    # an id mentioned in passing (here inside another section) is not a section of its own
    assert missing_claims(text.replace("\n## RT4\n", "\nSee also RT4.\n"), registry()) == ["RT4"]


# (b) every claim id the code cites has its section


def test_every_claim_id_cited_in_code_is_documented() -> None:
    code = _files(("ditcheck/**/*.py", "reference/**/*.py", "properties/**/*.py"))
    assert len(code) > 50
    assert undocumented_claim_ids(code, CLAIMS.read_text(encoding="utf-8")) == {}


def test_a_cited_but_undocumented_id_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "module.py"
    planted.write_text('"""LD99 (a claim nobody wrote down), AS2 and GP3 (documented)."""\n')
    assert undocumented_claim_ids([planted], CLAIMS.read_text(encoding="utf-8")) == {"LD99": ["module.py"]}


# (c) no citation of a Markdown file (or heading) the project does not contain


def test_no_file_cites_a_markdown_file_the_project_does_not_contain() -> None:
    problems = {}
    for path in _files(CITING):
        found = dangling_citations(path.read_text(encoding="utf-8"), path.parent)
        if found:
            problems[str(path.relative_to(ROOT))] = found
    assert problems == {}


@pytest.mark.parametrize("planted", [
    "see " + "theory" + ".md LD5",                      # the team notes the project does not ship
    "(Hu et al. 2024; docs/claims.md#ld99)",            # a file that exists, a heading that does not
    "Schedules (" + "conventions" + ".md)",             # a bare name that is not beside the citing file
    "[the claims](claims.md#as2)",                      # relative to the wrong directory (the root has none)
])
def test_a_planted_dangling_citation_is_caught(planted: str) -> None:
    code = (ROOT / "ditcheck" / "bounds.py").read_text(encoding="utf-8")
    assert dangling_citations(code, ROOT / "ditcheck") == []
    assert dangling_citations(code + f"\n# {planted}\n", ROOT / "ditcheck") != []


def test_relative_citations_and_generated_reports_are_accepted() -> None:
    assert dangling_citations("[claims](claims.md#as2), [x](conventions.md#tolerances)", ROOT / "docs") == []
    assert dangling_citations("README.md and docs/claims.md#ground-truth-gaussian-mixtures", ROOT) == []
    assert dangling_citations("writes report.json and report.md", ROOT / "ditcheck" / "audit") == []


def test_heading_anchors_follow_github() -> None:
    text = "# Title\n## The audit: `ditcheck audit`\n## AS2\n```\n## not a heading\n```\n## AS2\n"
    assert heading_anchors(text) == {"title", "the-audit-ditcheck-audit", "as2", "as2-1"}


# (d) every module path and file path named in the README and docs exists


@pytest.mark.parametrize("document", _documents(), ids=lambda path: path.name)
def test_module_and_file_paths_in_documents_exist(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    assert unresolved_module_paths(text) == []
    assert missing_files(text) == []


@pytest.mark.parametrize("stale, path", [
    ("`ditcheck.attention`", "ditcheck.attention"),                       # moved to ditcheck.fast_attention
    ("`ditcheck.models.DiT`", "ditcheck.models.DiT"),                     # now ditcheck.models.dit.DiT
    ("`ditcheck.properties.plugin`", "ditcheck.properties.plugin"),       # the plugin is ditcheck.plugin
    ("`ditcheck.bounds.as2_bound`", "ditcheck.bounds.as2_bound"),         # a function that does not exist
])
def test_a_stale_module_path_is_caught(stale: str, path: str) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert unresolved_module_paths(text + f"\n{stale}\n") == [path]


def test_a_stale_file_path_is_caught() -> None:
    assert missing_files("see ditcheck/attention.py and ditcheck/audit/claims_*.py") == ["ditcheck/attention.py"]
