"""The result of a validation: one :class:`Check` per sub-check, the first divergence, the diagnosis."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ditcheck.properties.validation import Tolerance

__all__ = ["Check", "Failure", "Report", "emit"]


@dataclass
class Failure:
    """A failing case kept for --save-failures: its inputs and a snippet that re-runs it."""

    check_id: str
    arrays: dict[str, np.ndarray]
    snippet: str


@dataclass
class Check:
    """One sub-check: observed error, the tolerance and its derivation, or why the check failed outright."""

    id: str
    ok: bool
    observed: float | None = None
    tolerance: Tolerance | None = None
    message: str = ""
    examples: int = 0
    worst_case: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.observed is None or self.tolerance is None:
            return None
        return self.tolerance.ratio(self.observed)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ok": self.ok, "observed": _finite_or_str(self.observed),
                "tolerance": None if self.tolerance is None else
                {k: _finite_or_str(v) for k, v in self.tolerance.to_dict().items()},
                "message": self.message, "examples": self.examples, "worst_case": self.worst_case}


def _finite_or_str(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass
class Report:
    """What ``ditcheck.validate.attention`` / ``.dit`` found.

    ``ok``: every check passed. ``checks``: one entry per sub-check. ``first_divergence``: for
    models, the first submodule (in execution order) whose activation is outside tolerance.
    ``diagnosis``: the convention-knob settings under which the mismatch vanishes. ``precision``:
    findings about deliberate lower-precision parts (a DiT's float32 islands in a float64 run), each
    with its error and the bound it is held to; they do not decide ``ok`` (a strict run adds them to
    ``checks`` as well).
    """

    target: str
    kind: str
    settings: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    first_divergence: str | None = None
    diagnosis: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list, repr=False)
    precision: list[Check] = field(default_factory=list)
    loaded: bool = True

    @property
    def ok(self) -> bool:
        return self.loaded and all(check.ok for check in self.checks)

    @property
    def exit_code(self) -> int:
        """The CLI's: 0 conforms, 1 a discrepancy was found, 2 the target could not be loaded or called."""
        if not self.loaded:
            return 2
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "kind": self.kind, "ok": self.ok, "settings": self.settings,
                "checks": [c.to_dict() for c in self.checks], "first_divergence": self.first_divergence,
                "diagnosis": self.diagnosis, "notes": self.notes, "precision": [c.to_dict() for c in self.precision]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def save_failures(self, directory: str | Path) -> list[Path]:
        """Write each failing case as CHECK.py (a snippet that re-runs it) plus CHECK.npz when it has arrays (its
        inputs and weights); return the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for failure in self.failures:
            stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in failure.check_id)
            npz = out / f"{stem}.npz"
            if failure.arrays:
                np.savez(npz, **failure.arrays)
                written.append(npz)
            script = out / f"{stem}.py"
            script.write_text(failure.snippet.replace("{NPZ}", str(npz.resolve())))
            written.append(script)
        return written

    def __str__(self) -> str:
        verdict = "CONFORMS" if self.ok else ("COULD NOT RUN" if not self.loaded else "DISCREPANCY")
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        lines = [f"ditcheck validate {self.kind} {self.target}: {verdict}", f"  settings: {settings}"]
        width = max([len(c.id) for c in self.checks] + [5])
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            if check.observed is not None and check.tolerance is not None:
                detail = (f"error {check.observed:.3g} <= {check.tolerance.value:.3g}" if check.ok else
                          f"error {check.observed:.3g} >  {check.tolerance.value:.3g}")
                detail += f"  [{check.tolerance.describe()}]"
            else:
                detail = ""
            line = f"  {mark} {check.id:<{width}}  {detail}"
            if check.message and not check.ok:
                line += ("  " if detail else "") + check.message
            lines.append(line.rstrip())
        if self.first_divergence:
            lines.append(f"  first divergence: {self.first_divergence}")
        if self.diagnosis:
            lines.append("  diagnosis: the mismatch vanishes with")
            for entry in self.diagnosis:
                knobs = ", ".join(f"{k}={v!r}" for k, v in entry["knobs"].items())
                where = f" at {entry['where']}" if entry.get("where") else ""
                ratio = f"  (worst error/tolerance {entry['ratio']:.3g})" if entry.get("ratio") is not None else ""
                lines.append(f"    {knobs}{where}{ratio}")
        for finding in self.precision:
            lines.append(f"  {finding.id}: {finding.message}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def emit(report: Any, json_path: str | None) -> None:
    """Print ``report`` and, when ``json_path`` is given, its ``to_json()`` to that file ('-': standard output)."""
    print(report)
    if json_path:
        text = report.to_json()
        if json_path == "-":
            print(text)
        else:
            Path(json_path).write_text(text + "\n")
