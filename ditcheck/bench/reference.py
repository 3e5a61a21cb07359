"""``ditcheck bench reference``: certified (arb) vs mpmath vs float64 reference timings.

Times the reference on its embedded default inputs: certified (arb) attention on 64 tokens
with D = 32, a certified DiT block (64 tokens, hidden 64, 4 heads), and mpmath at
the same precision for comparison; it also prints what the certificate says
(largest ball radius) and how far float64 lies from the certified value next to
its a-priori rounding bound.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from ditcheck.reference import attention
from ditcheck.reference.dit import DiTConfig, dit_block, random_dit_params
from ditcheck.reference.rounding import attention_error_bound

from . import time_call


@dataclass(frozen=True)
class Timing:
    """Median wall time of ``repeats`` calls of one measured operation."""

    operation: str
    precision: str
    seconds: float
    repeats: int
    radius: float | None = None
    float64_error: float | None = None
    float64_bound: float | None = None

__all__ = ["Timing", "bench_reference", "print_timings", "add_arguments", "run"]

HELP = "certified (arb) vs mpmath vs float64 reference timings"


def _mp_digits(bits: int) -> int:
    """Decimal digits carrying as many bits as arb's working precision."""
    return math.ceil(bits * math.log10(2))


def bench_reference(bits: int = 128, repeats: int = 5, include_mp_block: bool = True,
                    seed: int = 0) -> list[Timing]:
    """Time certified attention and a certified DiT block against mpmath and float64 on the default inputs."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, 1, 64, 32)) for _ in range(3))
    digits = _mp_digits(bits)
    timings = []
    float_seconds, approx = time_call(lambda: attention(q, k, v), repeats * 20)
    arb_seconds, balls = time_call(lambda: attention(q, k, v, precision=f"arb:{bits}"), repeats)
    mp_seconds, _ = time_call(lambda: attention(q, k, v, precision=f"mp:{digits}"), 1)
    timings += [
        Timing("attention L=64 D=32", "float64", float_seconds, repeats * 20,
               float64_error=float(np.max(np.abs(approx - balls.mid))),
               float64_bound=float(np.max(attention_error_bound(q, k, v)))),
        Timing("attention L=64 D=32", f"arb:{bits}", arb_seconds, repeats, radius=balls.max_rad()),
        Timing("attention L=64 D=32", f"mp:{digits}", mp_seconds, 1),
    ]
    config = DiTConfig(input_size=8, patch_size=1, in_channels=4, hidden_size=64, depth=1, num_heads=4,
                       num_classes=10)
    block_args = {"x": rng.standard_normal((1, 64, 64)), "c": rng.standard_normal((1, 64)),
                  "params": random_dit_params(config, seed), "prefix": "blocks.0", "config": config}
    float_seconds, approx = time_call(lambda: dit_block(**block_args), repeats * 4)
    arb_seconds, balls = time_call(lambda: dit_block(**block_args, precision=f"arb:{bits}"), max(1, repeats // 2))
    timings += [
        Timing("DiT block T=64 D=64 H=4", "float64", float_seconds, repeats * 4,
               float64_error=float(np.max(np.abs(approx - balls.mid)))),
        Timing("DiT block T=64 D=64 H=4", f"arb:{bits}", arb_seconds, max(1, repeats // 2), radius=balls.max_rad()),
    ]
    if include_mp_block:
        mp_seconds, _ = time_call(lambda: dit_block(**block_args, precision=f"mp:{digits}"), 1)
        timings.append(Timing("DiT block T=64 D=64 H=4", f"mp:{digits}", mp_seconds, 1))
    return timings


def print_timings(timings: Sequence[Timing], title: str) -> None:
    """A table with each time and its ratio to the arb time of the same operation."""
    # lazy: rich (and matplotlib) would slow every `ditcheck --help`, which imports each command module

    def number(x: float | None) -> str:
        return "" if x is None else f"{x:.2e}"

    table = Table(title=title)
    for column in ("operation", "precision", "median time", "time / arb", "calls", "max ball radius",
                   "max |float64 - exact|", "a-priori bound"):
        table.add_column(column, justify="left" if column in ("operation", "precision") else "right",
                         no_wrap=column == "operation")
    arb_time = {t.operation: t.seconds for t in timings if t.precision.startswith("arb")}
    for t in timings:
        ratio = t.seconds / arb_time[t.operation] if t.operation in arb_time else float("nan")
        table.add_row(t.operation, t.precision, f"{t.seconds * 1e3:.1f} ms", f"{ratio:.2f}", str(t.repeats),
                      number(t.radius), number(t.float64_error), number(t.float64_bound))
    Console(width=max(Console().width, 130)).print(table)
    print("arb: certified (the ball contains the exact result); mp: same precision, not certified;\n"
          "float64 error is measured against the certified ball; 'calls' is the number of timed calls.")


def add_arguments(reference: argparse.ArgumentParser) -> None:
    reference.add_argument("--bits", type=int, default=128, help="arb working precision in bits (default 128)")
    reference.add_argument("--repeats", type=int, default=5, help="timed calls per arb measurement (default 5)")
    reference.add_argument("--no-mp-block", action="store_true",
                           help="skip the mpmath DiT block (the slowest measurement)")
    reference.add_argument("--seed", type=int, default=0, metavar="S",
                           help="seed of the embedded default inputs (default 0)")


def run(args: argparse.Namespace) -> int:
    timings = bench_reference(bits=args.bits, repeats=args.repeats, include_mp_block=not args.no_mp_block,
                              seed=args.seed)
    print_timings(timings, f"ditcheck bench reference (arb:{args.bits}, seed {args.seed})")
    return 0
