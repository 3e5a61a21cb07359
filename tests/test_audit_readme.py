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


def test_committed_runs_exist_and_cover_every_claim() -> None:
    from ditcheck.audit import registry

    names = {p.name for p in RUNS}
    assert {"default", "quick"} <= names
    for folder in RUNS:
        report = json.loads((folder / "report.json").read_text())
        assert [c["id"] for c in report["claims"]] == list(registry()), folder.name
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
