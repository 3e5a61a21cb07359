"""The coverage table of ``ditcheck validate scheduler``: every scheduler class diffusers exports, run and classified.

  python -m ditcheck.validate._scheduler_coverage [--quick] [--names A,B] [--json PATH]

Enumerates ``diffusers.schedulers`` programmatically (every class named *Scheduler that imports), runs each through
:func:`ditcheck.validate._scheduler.scheduler` (default mode: steps 10, 50, 250, 4000 samples, the configuration
search on; ``--quick``: steps 4, 25, 500 samples) and prints one row per class: verdict class, family, what it is
measured against, the configurations that reach the target, the reason when out of scope, and the run time.
Verdict classes: ``validates`` (exit 0), ``biased`` (own configuration biased or failing, exit 1), ``out of scope``
(with the reason), ``no run`` (nothing ran: exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from ._scheduler import DEFAULT_STEPS, QUICK_STEPS, scheduler
from ._scheduler_families import OutOfScope, out_of_scope_reason
from ._target import TargetError

__all__ = ["MEASURED_AGAINST", "CoverageRow", "diffusers_scheduler_classes", "coverage_row", "coverage", "markdown"]

MEASURED_AGAINST = {
    "flow": "exact rectified-flow velocity; law at the final sigma",
    "edm": "exact EDM denoiser (Karras preconditioning); law at the final sigma",
    "ve": "exact eps / x0 / v of a VP model on x / sqrt(1 + sigma^2); law at the final sigma",
    "vp": "exact eps / x0 / v at alpha_bar[t]; data law",
}


def diffusers_scheduler_classes() -> dict[str, Any]:
    """name -> class (or the ImportError message for a dummy whose backend is missing) of every exported *Scheduler."""
    import diffusers.schedulers as module  # lazy: diffusers is optional (the test extra)

    found: dict[str, Any] = {}
    for name in sorted(dir(module)):
        if not name.endswith("Scheduler") or name == "SchedulerMixin":
            continue
        try:
            value = getattr(module, name)
        except Exception as error:  # noqa: BLE001 - a lazy attribute that does not import is listed with its error
            found[name] = f"{type(error).__name__}: {error}"
            continue
        if inspect.isclass(value):
            found[name] = value
    return found


@dataclass(frozen=True)
class CoverageRow:
    name: str
    verdict: str  # validates | biased | out of scope | no run
    family: str | None
    measured_against: str
    working_configs: list[str]
    configs: int
    schedule_failures: list[str]
    reason: str
    seconds: float  # wall time (on a shared machine mostly waiting for a core)
    cpu_seconds: float = 0.0  # process CPU time: the run time on one free core


def coverage_row(name: str, cls: Any, *, quick: bool = False) -> CoverageRow:
    """Run one class; never raises (an unexpected exception becomes a ``no run`` row with its message)."""
    start = time.perf_counter()
    cpu = time.process_time()
    if not inspect.isclass(cls):
        return CoverageRow(name, "out of scope", None, "", [], 0, [], str(cls).splitlines()[0][:120], 0.0)
    reason = out_of_scope_reason(cls)
    if reason is not None:
        return CoverageRow(name, "out of scope", None, "", [], 0, [], reason, 0.0)
    steps, samples = (QUICK_STEPS, 500) if quick else (DEFAULT_STEPS, 4000)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            report = scheduler(cls, steps=steps, samples=samples)
    except (OutOfScope, TargetError) as error:
        return CoverageRow(name, "out of scope", None, "", [], 0, [], str(error), time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - the table must list it, not crash
        return CoverageRow(name, "no run", None, "", [], 0, [], f"{type(error).__name__}: {error}",
                           time.perf_counter() - start)
    own = report.configs[0]
    verdict = {0: "validates", 1: "biased", 2: "no run"}[report.exit_code]
    working = [c.label for c in report.configs if c.ran and not c.biased]
    failures = sorted({f"{check.name}" for c in report.configs[:1] for check in c.schedule_failures})
    reason = "" if verdict == "validates" else "; ".join(report.findings()[:1])
    return CoverageRow(name, verdict, own.family, MEASURED_AGAINST.get(own.family or "", ""), working,
                       len(report.configs), failures, reason, time.perf_counter() - start,
                       time.process_time() - cpu)


def coverage(names: list[str] | None = None, *, quick: bool = False) -> list[CoverageRow]:
    classes = diffusers_scheduler_classes()
    return [coverage_row(name, classes[name], quick=quick) for name in (names or list(classes))]


def markdown(rows: list[CoverageRow]) -> str:
    lines = ["| scheduler | verdict | family: measured against | configs reaching the target | own-config schedule "
             "properties failing | reason / note | CPU s (wall s) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        against = f"{row.family}: {row.measured_against}" if row.family else ""
        configs = f"{len(row.working_configs)}/{row.configs}" if row.configs else ""
        lines.append(f"| {row.name} | {row.verdict} | {against} | {configs} | {', '.join(row.schedule_failures)} | "
                     f"{row.reason.replace('|', '/')[:160]} | {row.cpu_seconds:.1f} ({row.seconds:.0f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--names", default="", help="comma-separated class names (default: all)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    names = [n for n in args.names.split(",") if n] or None
    rows = []
    classes = diffusers_scheduler_classes()
    for name in names or list(classes):
        row = coverage_row(name, classes[name], quick=args.quick)
        rows.append(row)
        print(markdown([row]).splitlines()[-1], flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([asdict(r) for r in rows], handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
