"""The README's audit numbers, generated from committed audit runs so they cannot drift from what a run measured.

Two steps, both ``python -m ditcheck.audit.readme``:

* ``run DIR [-- AUDIT ARGS]``: runs ``ditcheck audit --out DIR --no-plots AUDIT ARGS`` in a subprocess and writes
  DIR/run.json beside its report.json: the command, the wall time (command-line start-up included), the CPU count
  and the load average before the run (timings on a shared machine are only meaningful with the load).
* ``write README.md DIR [DIR ...]``: replaces each block ``<!-- audit-run:NAME:begin -->`` ...
  ``<!-- audit-run:NAME:end -->`` of the README (NAME = the folder's name) with :func:`run_block` of that folder.

* ``claims docs/claims.md DIR [DIR ...]``: replaces each block ``<!-- audit-claim:ID:begin -->`` ...
  ``<!-- audit-claim:ID:end -->`` of docs/claims.md with :func:`claim_line` of claim ID from the first DIR whose
  report has it (the default run, then the quick run for a claim added after the default run).

``tests/test_audit_readme.py`` checks that every block of the README equals what :func:`run_block` generates from
the committed folder (docs/audit/default, docs/audit/quick), and every claim's block of docs/claims.md what
:func:`claim_line` generates from docs/audit/default, so an audit number in either is always one run's number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.formats import FLOAT64

__all__ = ["run_block", "block_pattern", "replace_blocks", "claim_line", "claim_block_pattern", "claim_source",
           "replace_claim_blocks", "record_run", "main"]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _worst(claim: Mapping[str, Any]) -> str:
    """The worst ratio, error or fitted exponents, as the terminal table shows them (report.results_table)."""
    kind, top = claim["kind"], claim.get("max_ratio")
    if kind in ("exact", "bound") and top is not None:
        if kind == "exact" and claim.get("statistical"):
            return f"{top:.3g} of limit"
        if kind == "exact":
            return f"{claim['max_observed']:.2g} ({claim['max_observed'] / FLOAT64.machine_epsilon:.3g} ulp), {top:.2g} of tolerance"
        return f"{top:.4g}"
    fits = claim.get("fits") or []
    return "; ".join(f"{f['exponent']:.3g} [{f['low']:.3g}, {f['high']:.3g}] vs {f['relation']} {f['claimed']:g}"
                     for f in fits)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def run_block(folder: Path, shown: str | None = None) -> str:
    """Markdown for one committed run: what was run and how long it took, then one row per claim (verdict, worst
    ratio / error / exponents, inputs measured, the audit's one-line summary). ``shown``: the folder as the text names
    it (default: docs/audit/NAME, where the project keeps its runs)."""
    folder = Path(folder)
    shown = f"docs/audit/{folder.name}" if shown is None else shown
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    claims = report["claims"]
    failed = report.get("failed") or []
    lines = [f"`{run['command']}`: {len(claims)} claims in {_minutes(run['wall_seconds'])} wall time "
             f"(command-line start-up included) on {run['cpus']} CPUs, load average {run['load_before']:.1f} before "
             f"the run; {'no claim failed' if not failed else 'failed: ' + ', '.join(failed)}. "
             f"Generated from `{shown}/report.json` by `python -m ditcheck.audit.readme`.", "",
             "| claim | kind | verdict | worst / fit | n | summary |", "|---|---|---|---|---|---|"]
    for claim in claims:
        lines.append("| " + " | ".join(_cell(v) for v in (claim["id"], claim["kind"], claim["verdict"], _worst(claim),
                                                          claim.get("examples") or "", claim["summary"])) + " |")
    return "\n".join(lines)


def block_pattern(name: str) -> re.Pattern[str]:
    """The README block of run ``name``: its begin marker, the generated text, its end marker."""
    return re.compile(rf"(<!-- audit-run:{re.escape(name)}:begin -->\n)(.*?)(\n<!-- audit-run:{re.escape(name)}:end -->)",
                      re.DOTALL)


def replace_blocks(readme: str, folders: Sequence[Path]) -> str:
    """``readme`` with the block of every folder regenerated; a folder without a block in the README is an error."""
    for folder in folders:
        pattern = block_pattern(Path(folder).name)
        if not pattern.search(readme):
            raise InvalidArgumentError("readme", f"a block <!-- audit-run:{Path(folder).name}:begin/end -->",
                                       "no such markers")
        block = run_block(Path(folder))
        readme = pattern.sub(lambda m, text=block: m.group(1) + text + m.group(3), readme)
    return readme


def claim_line(folder: Path, claim_id: str, shown: str | None = None) -> str:
    """One claim's verdict and worst ratio / error / exponents in the committed run ``folder``, for docs/claims.md."""
    folder = Path(folder)
    shown = f"docs/audit/{folder.name}" if shown is None else shown
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    claim = next((c for c in report["claims"] if c["id"] == claim_id), None)
    if claim is None:
        raise InvalidArgumentError("claim_id", f"a claim of {shown}/report.json", repr(claim_id))
    worst = _worst(claim)
    return (f"**Committed run** (`{report['command']}`, `{shown}/report.json`, generated): {claim['verdict']}"
            + (f", {' '.join(worst.split())}." if worst else "."))


def claim_block_pattern(claim_id: str) -> re.Pattern[str]:
    """The block of claim ``claim_id`` in docs/claims.md: its begin marker, the generated line, its end marker."""
    name = re.escape(claim_id)
    return re.compile(rf"(<!-- audit-claim:{name}:begin -->\n)(.*?)(\n<!-- audit-claim:{name}:end -->)", re.DOTALL)


def claim_source(folders: Sequence[Path], claim_id: str) -> Path:
    """The first of ``folders`` whose report has claim ``claim_id`` (the run docs/claims.md quotes for it)."""
    for folder in folders:
        report = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))
        if any(c["id"] == claim_id for c in report["claims"]):
            return Path(folder)
    raise InvalidArgumentError("claim_id", f"a claim of one of the runs {[str(f) for f in folders]}", repr(claim_id))


def replace_claim_blocks(text: str, folders: Path | Sequence[Path]) -> str:
    """``text`` (docs/claims.md) with every claim's block regenerated from the first of ``folders`` that ran it; a
    claim of the runs without a block is an error."""
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    ids: list[str] = []
    for folder in folders:
        for claim in json.loads((folder / "report.json").read_text(encoding="utf-8"))["claims"]:
            if claim["id"] not in ids:
                ids.append(claim["id"])
    for cid in ids:
        pattern = claim_block_pattern(cid)
        if not pattern.search(text):
            raise InvalidArgumentError("claims", f"a block <!-- audit-claim:{cid}:begin/end -->", "no such markers")
        line = claim_line(claim_source(folders, cid), cid)
        text = pattern.sub(lambda m, line=line: m.group(1) + line + m.group(3), text)
    return text


def record_run(folder: Path, audit_args: Sequence[str]) -> dict[str, Any]:
    """Run ``ditcheck audit --out folder --no-plots *audit_args`` and write folder/run.json (wall time and load)."""
    folder = Path(folder)
    command = ["ditcheck", "audit", *audit_args]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "ditcheck", "audit", "--out", str(folder), "--no-plots",
                                *audit_args], check=False)
    wall = time.perf_counter() - start
    if completed.returncode not in (0, 1):
        raise RuntimeError(f"ditcheck audit exited with {completed.returncode}")
    run = {"command": " ".join(command), "wall_seconds": round(wall, 1), "cpus": os.cpu_count(),
           "load_before": round(load, 2), "exit_code": completed.returncode}
    (folder / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditcheck.audit.readme", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the audit into DIR and record its wall time")
    run.add_argument("folder", type=Path)
    run.add_argument("audit_args", nargs=argparse.REMAINDER, help="arguments for ditcheck audit (after --)")
    write = commands.add_parser("write", help="regenerate the README's audit blocks from committed runs")
    write.add_argument("readme", type=Path)
    write.add_argument("folders", type=Path, nargs="+")
    claims = commands.add_parser("claims", help="regenerate docs/claims.md's per-claim lines from a committed run")
    claims.add_argument("claims_md", type=Path)
    claims.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "run":
        extra = [a for a in args.audit_args if a != "--"]
        print(record_run(args.folder, extra))
        return 0
    if args.command == "claims":
        args.claims_md.write_text(replace_claim_blocks(args.claims_md.read_text(encoding="utf-8"), args.folders),
                                  encoding="utf-8")
        return 0
    args.readme.write_text(replace_blocks(args.readme.read_text(encoding="utf-8"), args.folders), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
