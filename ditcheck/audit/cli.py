"""Audit every claim of docs/claims.md on the built-in reference and torch implementation: worst-case searches for bounds,
fitted exponents for rates, verdicts, and a report folder (report.json, report.md, PNG plots).

Modes: --quick (about 18 s on 2 idle cores), the default (about 4.5 minutes on 2 idle cores: docs/audit/default/run.json),
--thorough (5x the default's search budgets; not timed for this release).
Each claim runs in shards (batches of grid cases and of search examples, its rate series) on local worker
processes (--workers) or on a dask.distributed cluster (--scheduler tcp://host:8786, or local:N for a LocalCluster
of N workers; pip install "ditcheck[distributed]"). Results are deterministic for a given mode and --seed, whatever
--workers or --scheduler is. Exit code 1 when a bound or an exact identity is VIOLATED or a measurement raised or
was lost with its worker (ERROR), else 0; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ditcheck.options import add_list_option, add_seed_option
from ditcheck.reference.errors import InvalidArgumentError

from . import MODES, THEORY_ORDER, Claim, ClaimResult, Mode, registry
from .report import HOW_TO_READ, print_results, write_report
from .execute import DISTRIBUTED_INSTALL, import_distributed, parse_scheduler, run_audit
from .run import expected_steps, plan_shards

__all__ = ["HELP", "add_arguments", "run", "audit", "select_claims"]

HELP = "audit every claim of docs/claims.md: worst-case bound tightness, fitted rates, verdicts, report folder"


def select_claims(spec: str | None, claims: dict[str, Claim]) -> list[Claim]:
    """The claims named in ``spec`` ("AS1,AS2"; case-insensitive), or all; unknown ids are an error."""
    if not spec:
        return list(claims.values())
    wanted = [part.strip().upper() for part in spec.split(",") if part.strip()]
    unknown = [cid for cid in wanted if cid not in claims]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"argument --claims: expected comma-separated ids from {', '.join(claims)}; got {spec!r}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return [claims[cid] for cid in THEORY_ORDER if cid in wanted]


def audit(claims: Sequence[Claim], mode: Mode, seed: int, workers: int = 1,
          progress: Callable[[str, int], None] = lambda claim_id, n: None, scheduler: str | None = None) -> list[ClaimResult]:
    """Run ``claims`` and return their results in docs/claims.md order (``ditcheck.audit.execute.run_audit``).

    The claims are cut into shards (grid and search batches, rate series) that run here (``workers`` 1: modified
    Claim objects, planted bounds in tests, work too), on a spawned process pool of ``workers`` processes, or on
    the dask.distributed cluster ``scheduler`` (an address or local:N); the results are the same number for
    number (registered claims only off this process: each worker looks its claim up in the registry).
    """
    return run_audit(claims, mode, seed, workers=workers, scheduler=scheduler, progress=progress)[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = HOW_TO_READ
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="small search budgets: 15-25 s on 2 idle cores")
    modes.add_argument("--thorough", action="store_true", help="5x the default search budgets, larger rate grids: several times the default's wall time")
    add_list_option(parser, "--claims", metavar="ID,ID", help="claim ids to audit (default: all registered claims)")
    add_seed_option(parser, "every search and measurement")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="local worker processes running the claims' shards (default: the number of CPUs)")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="run the shards on a dask.distributed cluster: a scheduler address (tcp://host:8786) or "
                             f"local:N to start a LocalCluster of N workers for this run (needs {DISTRIBUTED_INSTALL}); "
                             "the results are the same as a local run's")
    parser.add_argument("--out", type=Path, default=Path("ditcheck-audit"), metavar="DIR",
                        help="report folder: report.json, report.md, one PNG per claim (default ./ditcheck-audit)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--list", action="store_true",
                        help="list the registered claims (id, kind, what they are held to) and exit")


def _mode(args: argparse.Namespace) -> Mode:
    return "quick" if args.quick else "thorough" if args.thorough else "default"


def run(args: argparse.Namespace) -> int:
    console = Console()
    claims = registry()
    if args.list:
        for claim in claims.values():
            console.print(f"{claim.id:4} {claim.kind:13} {claim.bound or claim.reason[:70]}", highlight=False)
        return 0
    try:
        selected = select_claims(",".join(args.claims) if args.claims else None, claims)
    except argparse.ArgumentTypeError as error:
        console.print(f"[red]error[/]: {error}")
        return 2
    if args.workers is not None and args.workers < 1:
        console.print(f"[red]error[/]: argument --workers: expected an integer >= 1; got {args.workers}")
        return 2
    try:  # before the audit runs, not after: an unwritable --out must not cost the whole run
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / ".write-test").touch()
        (args.out / ".write-test").unlink()
    except OSError as error:
        console.print(f"[red]error[/]: argument --out: expected a writable folder; got {str(args.out)!r} ({error})")
        return 2
    mode = _mode(args)
    assert mode in MODES
    scheduler = getattr(args, "scheduler", None)
    if scheduler is not None:
        try:  # a typo or a missing dask is a usage error now, not after the cluster starts
            parse_scheduler(scheduler)
            import_distributed()
        except InvalidArgumentError as error:
            console.print(f"[red]error[/]: {escape(str(error))}", highlight=False)
            return 2
    shards = sum(len(plan_shards(c, mode, args.seed)) for c in selected)
    workers = min(args.workers or os.cpu_count() or 1, shards)
    start = time.perf_counter()
    try:
        with Progress(TextColumn("{task.description:>5}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bars:
            tasks = {c.id: bars.add_task(c.id, total=expected_steps(c, mode)) for c in selected}
            results, placement = run_audit(
                selected, mode, args.seed, workers=workers, scheduler=scheduler,
                progress=lambda cid, n: bars.advance(tasks[cid], n),
                on_placement=lambda p: console.print(f"running {shards} shards of {len(selected)} claims on "
                                                     f"{p.describe()}", highlight=False))
    except InvalidArgumentError as error:  # the scheduler could not be reached or has no worker
        console.print(f"[red]error[/]: {escape(str(error))}", highlight=False)
        return 2
    except KeyboardInterrupt:  # the pool or cluster has been shut down by its context manager
        console.print("[red]interrupted[/]: nothing was written")
        return 130
    elapsed = time.perf_counter() - start
    print_results(results, f"ditcheck audit ({mode}, seed {args.seed})", console)
    header = {"mode": mode, "seed": args.seed, "claims": ",".join(c.id for c in selected),
              "command": "ditcheck audit " + {"quick": "--quick ", "thorough": "--thorough ", "default": ""}[mode]
              + f"--seed {args.seed}" + (f" --claims {','.join(args.claims)}" if args.claims else ""),
              "ran on": placement.describe(), "workers": placement.workers,
              **({"scheduler": placement.scheduler} if placement.scheduler else {})}
    written = write_report(results, args.out, header, plots=not args.no_plots)
    failed = [r.id for r in results if r.failed]
    console.print(f"{len(results)} claims in {elapsed:.0f} s on {placement.describe()}; report: {args.out / 'report.md'} "
                  f"({len(written)} files)", highlight=False)
    if failed:
        console.print(f"[bold red]failed[/]: {', '.join(failed)}")
    return 1 if failed else 0
