"""The ``ditcheck`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

from ditcheck.reference.errors import InvalidArgumentError

from . import __version__

__all__ = ["main", "build_parser", "COMMANDS", "COMMAND_HELP"]

#: ``ditcheck NAME`` -> the module that implements it; each has HELP, add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, str] = {
    "audit": "ditcheck.audit.cli",
    "bench": "ditcheck.bench",
    "validate": "ditcheck.validate.cli",
    "criteria": "ditcheck.criteria",
}


#: each command's one-line HELP, copied here so that ``ditcheck --help`` need not import every command module (its
#: imports take seconds); tests/test_cli.py holds it equal to the modules' own HELP.
COMMAND_HELP: dict[str, str] = {
    "audit": "audit every claim of docs/claims.md: worst-case bound tightness, fitted rates, verdicts, report folder",
    "bench": "benchmarks measured side by side in one run",
    "validate": "validate third-party attention, DiT or scheduler code against the reference (exit 0 conforms, 1 "
                "discrepancy, 2 unusable)",
    "criteria": ("LD6 efficiency criterion per attention layer: entries B of Q, K (scale folded in) vs sqrt(ln L), "
                 "logit range R vs ln L, degree, rank, predicted speed-up"),
}


def _command(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser(load: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; ``load`` (default: every command) names the commands whose own options are built, the
    others are listed with their COMMAND_HELP only (enough for ``ditcheck --help`` and for parsing another command)."""
    loaded = set(COMMANDS if load is None else load)
    parser = argparse.ArgumentParser(
        prog="ditcheck",
        description="Verified numerics and property testing for latent Diffusion Transformers.")
    parser.add_argument("--version", action="version", version=f"ditcheck {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if name not in loaded:
            commands.add_parser(name, help=COMMAND_HELP[name])
            continue
        module = _command(name)
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=module.__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _selected_command(argv: Sequence[str]) -> list[str]:
    """The command named in ``argv`` (its first word that is a command), as a one-element list, else []."""
    return [word for word in argv if word in COMMANDS][:1]


def _command_path(args: argparse.Namespace) -> str:
    """``ditcheck validate dit``-style name of the command that ran, for its error line."""
    path = ["ditcheck", args.command]
    for sub in ("validate_target", "bench"):  # the dest of the commands' own sub-commands
        if isinstance(getattr(args, sub, None), str):
            path.append(getattr(args, sub))
    return " ".join(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a typed error (bad input, a target that cannot be loaded) is one line on stderr, exit 2."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_selected_command(words)).parse_args(words)
    try:
        return int(_command(args.command).run(args))
    except InvalidArgumentError as error:  # every ditcheck error type (LoadError, TargetError, ...) is one
        print(f"{_command_path(args)}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ditcheck ... | head` closed the pipe: no traceback, the exit status of SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not raise again
        return 128 + 13


if __name__ == "__main__":
    raise SystemExit(main())
