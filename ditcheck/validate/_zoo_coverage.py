"""Print the README's coverage table of ``ditcheck validate dit`` over diffusers' transformer classes.

  python -m ditcheck.validate._zoo_coverage [--names A,B] [--dtypes float32,float64] [--examples N]

One row per class ``diffusers.models.transformers`` exports (:func:`ditcheck.validate.zoo.coverage_table`): built
tiny, the result in each dtype, components recognised / calls, the blocks whose inline code was checked, and the
wall (CPU) time per dtype. Torch runs on one thread, as in the test suite.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import torch

from .zoo import DEFAULT_ZOO_EXAMPLES, coverage_table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditcheck.validate._zoo_coverage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", default="", help="comma-separated class names (default: every class)")
    parser.add_argument("--dtypes", default="float32,float64", help="comma-separated dtypes (default both)")
    parser.add_argument("--examples", type=int, default=DEFAULT_ZOO_EXAMPLES,
                        help=f"examples per run (default {DEFAULT_ZOO_EXAMPLES})")
    args = parser.parse_args(argv)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    names = [name for name in args.names.split(",") if name] or None
    print(coverage_table(names, tuple(d for d in args.dtypes.split(",") if d), args.examples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
