"""``ditcheck validate --all``: every target a project lists, validated in parallel, one report and one exit code.

The targets live in a ``[tool.ditcheck]`` table of the project's pyproject.toml (the nearest one at or above the
current directory) or in a TOML file given with ``--targets FILE`` (the same table, or the same arrays at its
top level). One array of tables per kind; ``target`` is the MODULE:ATTR spec (a relative ``.py`` path is read
from the file's folder) and every other key is a keyword of the public function that validates that kind
(``ditcheck.validate.attention``, ``.dit``, ``.scheduler``; ``-`` may be written for ``_``)::

    [[tool.ditcheck.attention]]
    target = "src/attn.py:flash"
    dtype = "float64"
    examples = 20

    [[tool.ditcheck.dit]]
    target = "mypkg.models:make_dit"
    convention = "diffusers"

    [[tool.ditcheck.dit]]
    target = "model.py:PixArt_XL_2"      # any torch model, component by component
    inputs = "model.py:example_inputs"   # a function of the example seed returning the forward's arguments
    reference = "upstream/model.py:PixArt_XL_2"  # optional: the implementation it must match, submodule by submodule

    [[tool.ditcheck.scheduler]]
    target = "diffusers:DDIMScheduler"
    steps = [10, 50]
    samples = 1000

The targets run on a local process pool (``--workers``, default one per CPU) or on a dask.distributed cluster
(``--scheduler ADDRESS`` or ``local:N``, see ``ditcheck.cluster``). Each target's report is printed in file
order, then one table. Exit code: 0 every target conforms; 2 no target could run (none loaded, or the file is
unusable); 1 otherwise (a discrepancy, or some target could not run while others did).
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing
import os
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from ditcheck import validate
from ditcheck.cluster import DISTRIBUTED_INSTALL, Placement, dask_client, import_distributed, parse_scheduler
from ditcheck.loader import LoadError, load_function, resolved_spec
from ditcheck.reference.errors import InvalidArgumentError

__all__ = ["KINDS", "TargetSpec", "TargetOutcome", "find_pyproject", "read_targets", "run_target", "run_targets",
           "combined_exit_code", "add_batch_arguments", "run_batch"]

KINDS = ("attention", "dit", "scheduler")
_VERDICTS = {0: "CONFORMS", 1: "DISCREPANCY", 2: "COULD NOT RUN"}


@dataclass(frozen=True)
class TargetSpec:
    """One listed target: its kind, MODULE:ATTR, and the keyword arguments of ``ditcheck.validate.<kind>``."""

    kind: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)
    entry: str = ""  # where it was listed, e.g. "[tool.ditcheck] attention[0]"

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.kind} {self.target}" + (f" ({settings})" if settings else "")


@dataclass
class TargetOutcome:
    """What validating one target gave: the kind's exit code, its printed report, its JSON, the seconds taken."""

    spec: TargetSpec
    exit_code: int
    text: str
    report: dict[str, Any] | None = None
    seconds: float = 0.0


def _validator(kind: str) -> Callable[..., Any]:
    return {"attention": validate.attention, "dit": validate.dit, "scheduler": validate.scheduler}[kind]


def _keywords(kind: str) -> set[str]:
    parameters = list(inspect.signature(_validator(kind)).parameters.values())
    return {p.name for p in parameters[1:] if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"target"}


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (default: the current directory), or None."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate / "pyproject.toml"
    return None


def read_targets(path: Path, argument: str = "--targets") -> list[TargetSpec]:
    """The targets listed in ``path`` (pyproject.toml's [tool.ditcheck], or a targets file), in file order.
    Raises InvalidArgumentError naming the file and the entry for anything malformed."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise InvalidArgumentError(argument, "a readable TOML file", f"{str(path)!r} ({error})") from None
    table = document.get("tool", {}).get("ditcheck", None)
    where = "[tool.ditcheck]"
    if table is None and Path(path).name != "pyproject.toml":
        table, where = document, "the file"
    if not isinstance(table, dict) or not table:
        raise InvalidArgumentError(argument, f"a [tool.ditcheck] table listing {', '.join(KINDS)} targets "
                                             "([[tool.ditcheck.attention]] target = \"MODULE:ATTR\", ...)",
                                   f"none in {str(path)!r}")
    unknown = sorted(set(table) - set(KINDS))
    if unknown:
        raise InvalidArgumentError(argument, f"only {', '.join(KINDS)} arrays in {where} (a [tool.ditcheck] table, or "
                                             "those arrays at a targets file's top level)", f"{unknown} in {str(path)!r}")
    specs = []
    for kind in KINDS:
        entries = table.get(kind, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InvalidArgumentError(argument, f"{where} {kind} as an array of tables ([[...{kind}]])",
                                       f"{type(entries).__name__} in {str(path)!r}")
        allowed = _keywords(kind)
        for index, entry in enumerate(entries):
            name = f"{where} {kind}[{index}] of {path}"
            options = {key.replace("-", "_"): value for key, value in entry.items()}
            target = options.pop("target", None)
            if not isinstance(target, str) or not target:
                raise InvalidArgumentError(argument, f"a target = \"MODULE:ATTR\" in {name}", repr(target))
            bad = sorted(set(options) - allowed)
            if bad:
                raise InvalidArgumentError(argument, f"keywords of ditcheck.validate.{kind} in {name} "
                                                     f"({', '.join(sorted(allowed))})", repr(bad))
            options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
            for key in ("inputs", "reference"):  # MODULE:ATTR specs too: a .py path is relative to the file
                if isinstance(options.get(key), str):
                    options[key] = resolved_spec(options[key], Path(path).resolve().parent)
            specs.append(TargetSpec(kind, resolved_spec(target, Path(path).resolve().parent), options,
                                    f"{where} {kind}[{index}]"))
    return specs


def run_target(spec: TargetSpec) -> TargetOutcome:
    """Validate one target with the public function of its kind. Never raises: a target that cannot be loaded,
    or options the function refuses, give exit code 2 with the reason; the checks' own verdicts give 0 or 1."""
    torch.set_num_threads(1)  # one target per process: intra-op threads would only contend
    start = time.perf_counter()
    try:
        if spec.kind == "attention":
            report = _validator("attention")(load_function(spec.target), target=spec.target, **spec.options)
        elif spec.kind == "dit":
            # the spec itself: dit() loads it, and builds a diffusers class (diffusers:FluxTransformer2DModel) tiny
            report = _validator("dit")(spec.target, target=spec.target, **spec.options)
        else:
            report = _validator("scheduler")(spec.target, **spec.options)
        code = int(report.exit_code)
        text, payload = str(report), json.loads(report.to_json())
    except LoadError as error:
        code, text, payload = 2, f"the target could not be used: {error}", None
    except Exception as error:  # noqa: BLE001 - a target or option that breaks the run is reported, not a crash
        code, text, payload = 2, f"could not run: {type(error).__name__}: {error}", None
    return TargetOutcome(spec, code, text, payload, time.perf_counter() - start)


def combined_exit_code(outcomes: Sequence[TargetOutcome]) -> int:
    """0 every target conforms; 2 none could run; 1 otherwise."""
    codes = [o.exit_code for o in outcomes]
    if codes and all(code == 0 for code in codes):
        return 0
    if not codes or all(code == 2 for code in codes):
        return 2
    return 1


def run_targets(specs: Sequence[TargetSpec], *, workers: int = 1, scheduler: str | None = None,
                done: Callable[[TargetOutcome], None] = lambda outcome: None
                ) -> tuple[list[TargetOutcome], Placement]:
    """Validate every spec (here with one worker, on a process pool, or on the cluster ``scheduler``); the
    outcomes in ``specs`` order, and where they ran. A task lost with its worker is an outcome with code 2."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError("workers", "an integer >= 1", repr(workers))
    outcomes: dict[int, TargetOutcome] = {}

    def finish(index: int, outcome: TargetOutcome) -> None:
        outcomes[index] = outcome
        done(outcome)

    def lost(index: int, error: BaseException) -> TargetOutcome:
        return TargetOutcome(specs[index], 2, f"lost: {type(error).__name__}: {error}")

    if scheduler is not None:
        with dask_client(scheduler) as (client, placement):
            completed = import_distributed().as_completed
            futures = {client.submit(run_target, spec, retries=1, pure=False): i for i, spec in enumerate(specs)}
            try:
                for future in completed(list(futures)):
                    try:
                        finish(futures[future], future.result())
                    except Exception as error:  # noqa: BLE001 - worker died twice, cancelled
                        finish(futures[future], lost(futures[future], error))
            finally:
                client.cancel(list(futures), force=True)
    elif workers == 1 or len(specs) <= 1:
        placement = Placement("in process", 1)
        for i, spec in enumerate(specs):
            finish(i, run_target(spec))
    else:
        placement = Placement("local process pool", workers)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            pool_futures: dict[Future[TargetOutcome], int] = {pool.submit(run_target, s): i for i, s in enumerate(specs)}
            for future in as_completed(pool_futures):
                try:
                    finish(pool_futures[future], future.result())
                except Exception as error:  # noqa: BLE001 - a worker process died
                    finish(pool_futures[future], lost(pool_futures[future], error))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return [outcomes[i] for i in range(len(specs))], placement


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--all`` and its options on the ``ditcheck validate`` parser (before the kind sub-commands)."""
    group = parser.add_argument_group("many targets (ditcheck validate --all)")
    group.add_argument("--all", action="store_true",
                       help="validate every target listed in pyproject.toml's [tool.ditcheck] table (or --targets)")
    group.add_argument("--targets", type=Path, metavar="FILE", default=None,
                       help="a TOML file listing the targets (a [tool.ditcheck] table, or its arrays at top level)")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="local worker processes (default: one per CPU, at most one per target)")
    group.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run the targets on a dask.distributed cluster: tcp://host:8786, or local:N "
                            f"({DISTRIBUTED_INSTALL})")
    group.add_argument("--json", metavar="PATH", default=None,
                       help="also write the combined report as JSON to PATH ('-': stdout)")


def _table(outcomes: Sequence[TargetOutcome], placement: Placement, elapsed: float) -> str:
    table = Table(title=f"ditcheck validate --all on {placement.describe()} ({elapsed:.0f} s)")
    for column in ("kind", "target", "verdict", "seconds"):
        table.add_column(column, justify="right" if column == "seconds" else "left", overflow="fold")
    for o in outcomes:
        table.add_row(o.spec.kind, o.spec.target, _VERDICTS.get(o.exit_code, str(o.exit_code)), f"{o.seconds:.1f}")
    buffer = StringIO()
    Console(file=buffer, width=120, force_terminal=False).print(table)
    return buffer.getvalue()


def run_batch(args: argparse.Namespace) -> int:
    """``ditcheck validate --all``: read the targets, run them, print every report and the table; exit code."""
    def usage(message: str) -> int:
        print(f"ditcheck validate: {message}", file=sys.stderr)
        return 2

    if not args.all:
        return usage("expected a target kind (attention, dit, scheduler) or --all")
    try:
        if args.targets is not None:
            specs = read_targets(args.targets)
        else:
            pyproject = find_pyproject()
            if pyproject is None:
                raise InvalidArgumentError("--all", "a pyproject.toml with a [tool.ditcheck] table here or above, "
                                                    "or --targets FILE", f"none above {os.getcwd()!r}")
            specs = read_targets(pyproject, argument="--all")
        if args.workers is not None and args.workers < 1:
            raise InvalidArgumentError("--workers", "an integer >= 1", repr(args.workers))
        if args.scheduler is not None:
            parse_scheduler(args.scheduler)
            import_distributed()
        workers = min(args.workers or os.cpu_count() or 1, len(specs))
        start = time.perf_counter()
        outcomes, placement = run_targets(specs, workers=workers, scheduler=args.scheduler)
    except InvalidArgumentError as error:
        return usage(str(error))
    elapsed = time.perf_counter() - start
    for outcome in outcomes:
        print(f"== {outcome.spec.entry}: {outcome.spec.describe()}")
        print(outcome.text)
        print()
    print(_table(outcomes, placement, elapsed), end="")
    code = combined_exit_code(outcomes)
    print(f"exit code {code}: " + {0: "every target conforms", 1: "a discrepancy, or a target that could not run",
                                    2: "no target could run"}[code])
    if args.json:
        text = json.dumps({"ran on": placement.describe(), "exit_code": code, "targets": [
            {"kind": o.spec.kind, "target": o.spec.target, "options": o.spec.options, "entry": o.spec.entry,
             "exit_code": o.exit_code, "seconds": o.seconds, "report": o.report,
             **({} if o.report is not None else {"message": o.text})} for o in outcomes]}, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return code
