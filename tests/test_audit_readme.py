"""The README's audit numbers come from committed runs (docs/audit/*/report.json) through ditcheck.audit.readme."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ditcheck.audit.readme import block_pattern, replace_blocks, run_block
from ditcheck.reference.errors import InvalidArgumentError

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted(p.parent for p in (ROOT / "docs" / "audit").glob("*/report.json"))


#: Claims registered after the committed default run (its ~25 minutes did not fit the machine's load when they were
#: added): the quick run has them, the default run must be re-run to cover them (then this is empty again).
ADDED_AFTER_THE_DEFAULT_RUN: tuple[str, ...] = ()


def test_committed_runs_exist_and_cover_every_claim() -> None:
    from ditcheck.audit import registry

    names = {p.name for p in RUNS}
    assert {"default", "quick"} <= names
    for folder in RUNS:
        report = json.loads((folder / "report.json").read_text())
        missing = ADDED_AFTER_THE_DEFAULT_RUN if folder.name == "default" else ()
        assert [c["id"] for c in report["claims"]] == [c for c in registry() if c not in missing], folder.name
        assert (folder / "run.json").is_file()


@pytest.mark.parametrize("folder", RUNS, ids=lambda p: p.name)
def test_readme_block_equals_the_generated_one(folder: Path) -> None:
    """Edit the numbers by re-running (python -m ditcheck.audit.readme run/write), never by hand."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = block_pattern(folder.name).search(readme)
    assert match, f"README has no block for docs/audit/{folder.name}"
    assert match.group(2) == run_block(folder)


def test_a_hand_edited_number_is_caught(tmp_path: Path) -> None:
    """A planted README edit (one number changed) no longer equals the generated block."""
    folder = tmp_path / "default"
    shutil.copytree(RUNS[0], folder)
    readme = "intro\n<!-- audit-run:default:begin -->\nSTALE-BLOCK\n<!-- audit-run:default:end -->\nrest\n"
    fresh = replace_blocks(readme, [folder])
    block = block_pattern("default").search(fresh).group(2)
    assert block == run_block(folder) and "STALE-BLOCK" not in fresh and fresh.endswith("rest\n")
    report = json.loads((folder / "report.json").read_text())
    report["claims"][0]["summary"] += " (edited)"
    (folder / "report.json").write_text(json.dumps(report))
    assert run_block(folder) != block
    with pytest.raises(InvalidArgumentError, match="readme"):
        replace_blocks("no markers", [folder])


def test_claims_md_lines_equal_the_default_run() -> None:
    """Each claim's section of docs/claims.md carries the committed default run's verdict and worst ratio / fit (the
    quick run's for a claim added after it), generated (python -m ditcheck.audit.readme claims docs/claims.md
    docs/audit/default docs/audit/quick), never typed."""
    from ditcheck.audit import registry
    from ditcheck.audit.readme import claim_block_pattern, claim_line, claim_source

    text = (ROOT / "docs/claims.md").read_text(encoding="utf-8")
    folders = [ROOT / "docs" / "audit" / "default", ROOT / "docs" / "audit" / "quick"]
    for cid in registry():
        match = claim_block_pattern(cid).search(text)
        assert match, f"docs/claims.md has no generated line for {cid}"
        assert match.group(2) == claim_line(claim_source(folders, cid), cid), cid


def test_a_hand_edited_claims_md_line_is_caught(tmp_path: Path) -> None:
    from ditcheck.audit.readme import claim_block_pattern, claim_line, replace_claim_blocks

    folder = tmp_path / "default"
    shutil.copytree(ROOT / "docs" / "audit" / "default", folder)
    report = json.loads((folder / "report.json").read_text())
    cid = report["claims"][0]["id"]
    text = "".join(f"## {c['id']}\n<!-- audit-claim:{c['id']}:begin -->\nSTALE\n<!-- audit-claim:{c['id']}:end -->\n"
                   for c in report["claims"])
    fresh = replace_claim_blocks(text, folder)
    assert "STALE" not in fresh and claim_block_pattern(cid).search(fresh).group(2) == claim_line(folder, cid)
    report["claims"][0]["verdict"] = "holds"  # planted: the run says something else than the text
    (folder / "report.json").write_text(json.dumps(report))
    assert claim_line(folder, cid) != claim_block_pattern(cid).search(fresh).group(2)
    with pytest.raises(InvalidArgumentError, match="claims"):
        replace_claim_blocks("## LD1 without a block", folder)
