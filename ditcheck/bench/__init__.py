"""Benchmarks: side-by-side timings measured in one run (never timed tests).

Every module of this package with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` is one ``ditcheck bench NAME`` (NAME = the module name), so a
benchmark is added by adding its module. ``python -m ditcheck.bench NAME`` runs the same.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import statistics
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

HELP = "benchmarks measured side by side in one run"

__all__ = ["time_call", "benchmarks", "add_arguments", "run", "main"]


def time_call(fn: Callable[[], Any], repeats: int, clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """(median seconds over ``repeats`` calls, last result); one untimed warm-up call first.

    ``clock`` is wall time by default; ``time.thread_time`` (CPU time of the calling thread, for
    single-threaded torch) leaves out the time other processes hold the core on a loaded machine.
    """
    result = fn()
    samples = []
    for _ in range(repeats):
        start = clock()
        result = fn()
        samples.append(clock() - start)
    return statistics.median(samples), result


def benchmarks() -> dict[str, ModuleType]:
    """The benchmark modules of this package by name (modules starting with '_' are helpers)."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            if all(hasattr(module, attribute) for attribute in ("HELP", "add_arguments", "run")):
                found[info.name] = module
    return dict(sorted(found.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-command per benchmark module, described by the module's docstring."""
    found = benchmarks()
    sub = parser.add_subparsers(dest="bench", required=True, metavar="{" + ",".join(found) + "}")
    for name, module in found.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))


def run(args: argparse.Namespace) -> int:
    return int(benchmarks()[args.bench].run(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditcheck.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
