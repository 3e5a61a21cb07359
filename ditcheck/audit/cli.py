"""Audit every claim of docs/claims.md on the built-in reference and torch implementation: worst-case searches for bounds,
fitted exponents for rates, verdicts, and a report folder (report.json, report.md, PNG plots).

Modes: --quick (about 25 s on 2 cores), the default (about 4 minutes), --thorough (about 20 minutes).
Results are deterministic for a given mode and --seed, whatever --workers is. Exit code 1 when a bound or an
exact identity is VIOLATED or a measurement raised (ERROR), else 0.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ditcheck.options import add_list_option, add_seed_option

from . import MODES, THEORY_ORDER, Claim, ClaimResult, Mode, registry
from .report import HOW_TO_READ, print_results, write_report
from .run import expected_steps, run_claim

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


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core: intra-op threads would only contend


def _run_in_worker(claim_id: str, mode: Mode, seed: int, messages: Any) -> ClaimResult:
    return run_claim(registry()[claim_id], mode, seed, advance=lambda n: messages.put((claim_id, n)))


def audit(claims: Sequence[Claim], mode: Mode, seed: int, workers: int = 1,
          progress: Callable[[str, int], None] = lambda claim_id, n: None) -> list[ClaimResult]:
    """Run ``claims`` and return their results in docs/claims.md order.

    With ``workers`` > 1 claims run in spawned processes (registered claims only: each worker looks its claim up
    in the registry); with 1 they run here, so modified Claim objects (planted bounds in tests) work too.
    """
    if workers < 1:
        raise ValueError(f"argument workers: expected an integer >= 1; got {workers}")
    order = {cid: i for i, cid in enumerate(THEORY_ORDER)}
    if workers == 1 or len(claims) == 1:
        results = [run_claim(c, mode, seed, advance=lambda n, cid=c.id: progress(cid, n)) for c in claims]
    else:
        registered = registry()
        foreign = [c.id for c in claims if registered.get(c.id) is not c]
        if foreign:
            raise ValueError(f"argument claims: worker processes can only run registered claims; {foreign} are not")
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context,
                                                                initializer=_worker_init) as pool:
            messages = manager.Queue()
            # longest first, so a long claim does not start last
            by_cost = sorted(claims, key=lambda c: -expected_steps(c, mode))
            futures: list[Future[ClaimResult]] = [pool.submit(_run_in_worker, c.id, mode, seed, messages)
                                                  for c in by_cost]
            while not all(f.done() for f in futures):
                _drain(messages, progress, timeout=0.2)
            _drain(messages, progress, timeout=0.0)
            results = [f.result() for f in futures]
    return sorted(results, key=lambda r: order.get(r.id, len(order)))


def _drain(messages: Any, progress: Callable[[str, int], None], timeout: float) -> None:
    try:
        while True:
            claim_id, n = messages.get(timeout=timeout) if timeout else messages.get_nowait()
            progress(claim_id, n)
            timeout = 0.0
    except queue.Empty:
        pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = HOW_TO_READ
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="small search budgets: about 25 s on 2 cores")
    modes.add_argument("--thorough", action="store_true", help="5x the default search budgets, larger rate grids: about 20 minutes on 2 cores")
    add_list_option(parser, "--claims", metavar="ID,ID", help="claim ids to audit (default: all registered claims)")
    add_seed_option(parser, "every search and measurement")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes, one claim each at a time (default: the number of CPUs)")
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
    workers = min(args.workers or os.cpu_count() or 1, len(selected))
    start = time.perf_counter()
    with Progress(TextColumn("{task.description:>5}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bars:
        tasks = {c.id: bars.add_task(c.id, total=expected_steps(c, mode)) for c in selected}
        results = audit(selected, mode, args.seed, workers,
                        progress=lambda cid, n: bars.advance(tasks[cid], n))
    elapsed = time.perf_counter() - start
    print_results(results, f"ditcheck audit ({mode}, seed {args.seed})", console)
    header = {"mode": mode, "seed": args.seed, "claims": ",".join(c.id for c in selected),
              "command": "ditcheck audit " + {"quick": "--quick ", "thorough": "--thorough ", "default": ""}[mode]
              + f"--seed {args.seed}" + (f" --claims {','.join(args.claims)}" if args.claims else "")}
    written = write_report(results, args.out, header, plots=not args.no_plots)
    failed = [r.id for r in results if r.failed]
    console.print(f"{len(results)} claims in {elapsed:.0f} s with {workers} worker(s); report: {args.out / 'report.md'} "
                  f"({len(written)} files)", highlight=False)
    if failed:
        console.print(f"[bold red]failed[/]: {', '.join(failed)}")
    return 1 if failed else 0
