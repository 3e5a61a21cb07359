"""The audit's outputs: the terminal table (rich), report.json, report.md and the PNG plots."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .run import FLOAT64_ULP, LOOSE_BELOW, ClaimResult, RateFit

__all__ = ["results_table", "write_report", "REPORT_VERSION", "HOW_TO_READ", "plot_claim"]

REPORT_VERSION = 1

HOW_TO_READ = f"""\
How to read the verdicts:
- bound: the worst observed/bound over a fixed grid of near-extremal inputs and a Hypothesis search that maximises
  the ratio (no shrinking; the worst input is recorded as it is measured). "holds": max <= 1 and >= {LOOSE_BELOW};
  "loose by X": the bound is X = 1/max times the worst error found; "VIOLATED": max > 1, with a reproducer.
- exact: an identity checked to rounding; the worst error is given in float64 ulps (relative) and as a fraction
  of the rounding tolerance the property derives. "exact to rounding" or "VIOLATED". Identities between
  distributions (CF1, RT2) are statistical tests: the worst deviation as a fraction of the acceptance limit at
  the stated false-alarm rate, "holds (statistical)" or "VIOLATED".
- rate: a log-log least-squares exponent with its 95% t-interval against the claimed exponent; "equal" claims need
  the interval (widened by the stated pre-asymptotic tolerance) to contain the claim, "at least"/"at most" (big-O
  rates) only need it not to lie entirely on the wrong side. "consistent" or "inconsistent".
- empirical: an observation from the paper, with the criterion it is judged by: "reproduced" or "not reproduced".
- not checkable: existence or hardness statements and unstated constants; the reason, and a table of what they imply.
- ERROR: a measurement raised; the claim is unverified and the audit fails.
The exit code is 1 when any claim is VIOLATED or ERROR, else 0 (inconsistent rates and unreproduced observations
are reported, not failed: they are statements about asymptotics and experiments, not proven inequalities).
"""

_STYLE = {"VIOLATED": "bold red", "ERROR": "bold red", "inconsistent": "yellow", "not reproduced": "yellow",
          "not checkable": "dim"}


def _style(verdict: str) -> str:
    for key, style in _STYLE.items():
        if verdict.startswith(key):
            return style
    return "green"


def _worst(result: ClaimResult) -> str:
    if result.kind in ("exact", "bound") and result.max_ratio is not None:
        if result.kind == "exact" and result.statistical:
            return f"{result.max_ratio:.3g} of limit"
        if result.kind == "exact":
            return f"{result.max_observed:.2g} ({result.max_observed / FLOAT64_ULP:.3g} ulp)"
        return f"{result.max_ratio:.4g}"
    if result.fits and result.kind == "rate":
        return "\n".join(f"{f.exponent:.3g} [{f.low:.3g}, {f.high:.3g}] vs {f.claimed:g}" for f in result.fits)
    return ""


def results_table(results: Sequence[ClaimResult], title: str) -> Table:
    """One row per claim: id, kind, verdict, the worst ratio / error / fitted exponents, inputs measured."""
    table = Table(title=title, show_lines=False)
    for column, justify in (("claim", "left"), ("kind", "left"), ("verdict", "left"), ("worst / fit", "right"),
                            ("n", "right")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in results:
        table.add_row(r.id, r.kind, f"[{_style(r.verdict)}]{r.verdict}[/]", _worst(r), str(r.examples or ""))
    return table


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf / nan
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _positive_floor(values: Sequence[float]) -> float:
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    return min(positive) / 10 if positive else 1e-300


def plot_claim(result: ClaimResult, path: Path) -> bool:
    """observed vs bound scatter (exact / bound claims) or log-log fits (rates); False if there is nothing to plot."""
    # lazy: matplotlib takes about 1 s to import, paid only when a figure is written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    scatter = result.kind in ("exact", "bound") and result.points
    if not scatter and not result.fits:
        return False
    panels = int(bool(scatter)) + len(result.fits)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(4.8 * columns, 4.2 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.set_visible(False)
    if scatter:
        _scatter(axes.pop(0), result)
    for ax, fit in zip(axes, result.fits):
        _fit_panel(ax, fit)
    fig.suptitle(f"{result.id}: {result.verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _scatter(ax: Any, result: ClaimResult) -> None:
    limits = [p[0] for p in result.points]
    observed = [p[1] for p in result.points]
    floor = _positive_floor(observed)
    zero = [o <= 0 for o in observed]
    ax.scatter([b for b, z in zip(limits, zero) if not z], [o for o, z in zip(observed, zero) if not z], s=9,
               alpha=0.6, label="inputs")
    if any(zero):
        ax.scatter([b for b, z in zip(limits, zero) if z], [floor] * sum(zero), s=9, marker="v", color="grey",
                   alpha=0.5, label="observed 0 (drawn at the floor)")
    positive_limits = [b for b in limits if b > 0 and math.isfinite(b)]
    if positive_limits:
        low, high = min(positive_limits + [floor]), max(positive_limits)
        ax.plot([low, high], [low, high], "r-", lw=1, label="observed = bound" if result.kind == "bound"
                else "observed = tolerance")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("bound" if result.kind == "bound" else "rounding tolerance")
    ax.set_ylabel("observed")
    ax.set_title(f"max ratio {result.max_ratio:.3g}", fontsize=9)
    ax.legend(fontsize=7)


def _fit_panel(ax: Any, fit: RateFit) -> None:
    ax.loglog(fit.x, fit.y, "o", ms=4, alpha=0.7, label="measured")
    xs = sorted(set(fit.x))
    ax.loglog(xs, [math.exp(fit.intercept) * x**fit.exponent for x in xs], "b-", lw=1,
              label=f"fit {fit.exponent:.3g} [{fit.low:.3g}, {fit.high:.3g}]")
    mid_x = math.exp(sum(math.log(x) for x in fit.x) / len(fit.x))
    mid_y = math.exp(fit.intercept) * mid_x**fit.exponent
    ax.loglog(xs, [mid_y * (x / mid_x) ** fit.claimed for x in xs], "r--", lw=1,
              label=f"claimed {fit.relation} {fit.claimed:g}")
    ax.set_xlabel(fit.xlabel)
    ax.set_ylabel(fit.ylabel)
    ax.set_title(textwrap.fill(fit.label + ("" if fit.consistent else " (inconsistent)"), 48), fontsize=8)
    ax.legend(fontsize=7)


def _markdown_table(results: Sequence[ClaimResult]) -> list[str]:
    lines = ["| claim | kind | verdict | worst / fit | summary |", "|---|---|---|---|---|"]
    for r in results:
        summary = r.summary.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.id} | {r.kind} | {r.verdict} | {_worst(r).replace(chr(10), '; ')} | {summary} |")
    return lines


def _rows_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    return (["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            + ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows])


def _claim_section(result: ClaimResult, plot: str | None) -> list[str]:
    lines = [f"## {result.id} ({result.kind}): {result.verdict}", "", result.statement, "",
             f"- source: {result.source}"]
    if result.bound:
        lines.append(f"- held to: `{result.bound}`")
    lines.append(f"- result: {result.summary}")
    if result.examples:
        lines.append(f"- inputs measured: {result.examples}")
    if result.worst_case:
        lines.append(f"- worst input: `{result.worst_case}`")
    if result.notes:
        lines.append(f"- notes: {result.notes}")
    if result.reproducer and (result.verdict.startswith("VIOLATED") or result.kind in ("bound", "exact")):
        lines += ["", "Reproducer (re-runs the measurement on the worst input):", "", "```python",
                  result.reproducer, "```"]
    if result.table:
        lines += [""] + _rows_table(result.table)
    if result.errors:
        lines += ["", "Errors:", "", "```", *[e.strip() for e in result.errors[:3]], "```"]
    if plot:
        lines += ["", f"![{result.id}]({plot})"]
    return lines + [""]


def write_report(results: Sequence[ClaimResult], folder: Path, header: Mapping[str, Any],
                 plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and one PNG per claim with data into ``folder``; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    plot_names: dict[str, str] = {}
    if plots:
        for result in results:
            path = folder / f"{result.id}.png"
            if plot_claim(result, path):
                plot_names[result.id] = path.name
                written[path.name] = path
    document = {"version": REPORT_VERSION, **_jsonable(dict(header)),
                "python": platform.python_version(),
                "failed": [r.id for r in results if r.failed],
                "claims": [_jsonable(r) for r in results],
                "plots": plot_names}
    (folder / "report.json").write_text(json.dumps(document, indent=1, allow_nan=False))
    written["report.json"] = folder / "report.json"
    md = ["# ditcheck audit", "",
          ", ".join(f"{k}: {v}" for k, v in header.items()), "",
          *_markdown_table(results), "", "```", HOW_TO_READ.rstrip(), "```", ""]
    for result in results:
        md += _claim_section(result, plot_names.get(result.id))
    (folder / "report.md").write_text("\n".join(md))
    written["report.md"] = folder / "report.md"
    return written


def print_results(results: Sequence[ClaimResult], title: str, console: Console | None = None) -> None:
    """The terminal table, then a reproducer for every VIOLATED claim."""
    console = console or Console()
    console.print(results_table(results, title))
    for r in results:
        if r.verdict.startswith("VIOLATED") and r.reproducer:
            console.print(f"[bold red]{r.id} VIOLATED[/]: {r.summary}\nworst input: {r.worst_case}\nreproducer:")
            console.print(r.reproducer, markup=False, highlight=False)
        elif r.verdict == "ERROR":
            console.print(f"[bold red]{r.id} ERROR[/]: {r.summary}")
            for error in r.errors[:1]:
                console.print(error, markup=False, highlight=False)
