"""The ``ditcheck`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from ditcheck.reference.errors import InvalidArgumentError

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


def _command_path(args: argparse.Namespace) -> str:
    """``ditcheck validate dit``-style name of the command that ran, for its error line."""
    path = ["ditcheck", args.command]
    for sub in ("validate_target", "bench"):  # the dest of the commands' own sub-commands
        if isinstance(getattr(args, sub, None), str):
            path.append(getattr(args, sub))
    return " ".join(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a typed error (bad input, a target that cannot be loaded) is one line on stderr, exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(_command(args.command).run(args))
    except InvalidArgumentError as error:  # every ditcheck error type (LoadError, TargetError, ...) is one
        print(f"{_command_path(args)}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
