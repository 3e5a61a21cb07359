"""The ``ditcheck`` command line."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from types import ModuleType

from . import __version__

__all__ = ["main", "build_parser", "COMMANDS"]

#: ``ditcheck NAME`` -> the module that implements it; each has HELP, add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, str] = {
    "audit": "ditcheck.audit.cli",
    "bench": "ditcheck.bench",
    "validate": "ditcheck.validate.cli",
    "criteria": "ditcheck.criteria",
}


def _command(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditcheck",
        description="Verified numerics and property testing for latent Diffusion Transformers.")
    parser.add_argument("--version", action="version", version=f"ditcheck {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _command(name)
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=module.__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(_command(args.command).run(args))


if __name__ == "__main__":
    raise SystemExit(main())
