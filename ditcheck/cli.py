"""The ``ditcheck`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import __version__, bench

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditcheck",
        description="Verified numerics and property testing for latent Diffusion Transformers.")
    parser.add_argument("--version", action="version", version=f"ditcheck {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench_parser = commands.add_parser(
        "bench", help="benchmarks measured side by side in one run",
        description="Benchmarks measured side by side in one run. 'reference': certified (arb) "
                    "attention and DiT block vs mpmath and float64 on the embedded default inputs.")
    bench.add_arguments(bench_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return bench.run(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
