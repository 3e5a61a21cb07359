"""``ditcheck bench audit``: wall time of ``ditcheck audit`` on 1, 2, 4 local workers and on a dask LocalCluster.

Each configuration runs the same audit (mode, seed, claims) through ``ditcheck.audit.execute.run_audit``: here
(1 worker), on a spawned process pool (N workers) and on a LocalCluster of ``--cluster`` workers started for the
run (``local:N``; needs ``pip install "ditcheck[distributed]"``). The time is the wall time of the whole run:
process or cluster start-up included, the CLI's import and the report writing not. Every configuration must
give the same numbers (the audit's sharding promise): the table says so, and the exit code is 1 if not.
More workers than cores only adds contention; the shards (grid and search batches, rate series) are the
unit of parallelism, so the longest single shard bounds the wall time from below.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

from ditcheck.options import add_list_option, add_seed_option
from ditcheck.audit import registry
from ditcheck.audit import execute
from ditcheck.cluster import import_distributed
from ditcheck.reference.errors import InvalidArgumentError

__all__ = ["HELP", "AuditTiming", "bench_audit", "add_arguments", "run"]

HELP = "wall time of ditcheck audit with 1, 2, 4 local workers and on a 2-worker dask LocalCluster"


@dataclasses.dataclass(frozen=True)
class AuditTiming:
    """One configuration: where it ran, its wall time, and whether its numbers equal the first configuration's."""

    where: str
    seconds: float
    identical: bool
    failed: tuple[str, ...]


def _numbers(results: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        data = dataclasses.asdict(result)
        data.pop("seconds")
        rows.append(data)
    return rows


def bench_audit(mode: str = "default", seed: int = 0, workers: tuple[int, ...] = (1, 2, 4), cluster: int | None = 2,
                claim_ids: tuple[str, ...] | None = None, report: Any = print) -> list[AuditTiming]:
    """Time the audit in each configuration (``report`` is called with each row's line as it completes)."""
    claims = registry()
    selected = [claims[cid] for cid in claim_ids] if claim_ids else list(claims.values())
    configurations: list[tuple[int, str | None]] = [(n, None) for n in workers]
    if cluster:
        configurations.append((1, f"local:{cluster}"))
    timings: list[AuditTiming] = []
    reference = None
    for count, scheduler in configurations:
        start = time.perf_counter()
        results, placement = execute.run_audit(selected, mode, seed, workers=count, scheduler=scheduler)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        numbers = _numbers(results)
        reference = numbers if reference is None else reference
        timing = AuditTiming(placement.describe(), seconds, numbers == reference,
                             tuple(r.id for r in results if r.failed))
        timings.append(timing)
        report(f"{timing.where:<60} {seconds:8.1f} s  identical: {'yes' if timing.identical else 'NO'}")
    return timings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("quick", "default", "thorough"), default="default",
                        help="audit mode to time (default: default, about 4 minutes per run on 2 quiet cores)")
    add_list_option(parser, "--workers", kind=int, default=[1, 2, 4], metavar="N,N",
                    help="local worker counts to time (default 1,2,4)")
    parser.add_argument("--cluster", type=int, default=2, metavar="N",
                        help="also time a dask LocalCluster of N workers (0: skip; default 2)")
    add_list_option(parser, "--claims", metavar="ID,ID", help="claim ids to audit (default: all registered claims)")
    add_seed_option(parser, "the audit")


def run(args: argparse.Namespace) -> int:
    workers = tuple(int(n) for n in args.workers)
    if any(n < 1 for n in workers) or args.cluster < 0:
        print("ditcheck bench audit: argument --workers / --cluster: expected integers >= 1 (--cluster 0 skips)")
        return 2
    if args.cluster:
        try:
            import_distributed()
        except InvalidArgumentError as error:
            print(f"ditcheck bench audit: {error} (or --cluster 0)")
            return 2
    claim_ids = tuple(c.upper() for c in args.claims) if args.claims else None
    print(f"ditcheck bench audit: mode {args.mode}, seed {args.seed}, {os.cpu_count()} CPUs; wall time per run")
    timings = bench_audit(args.mode, args.seed, workers, args.cluster or None, claim_ids,
                          report=lambda line: print(line, flush=True))
    print(f"ditcheck audit{'' if args.mode == 'default' else ' --' + args.mode} --seed {args.seed}: "
          + ("the same numbers in every configuration" if all(t.identical for t in timings)
             else "NUMBERS DIFFER between configurations"))
    return 0 if all(t.identical for t in timings) else 1
