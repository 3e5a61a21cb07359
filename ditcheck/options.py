"""The command-line grammar every ``ditcheck`` command shares (one meaning per option name).

- **Lists** are written comma-separated, ``--lengths 1024,4096``; space-separated items (``--lengths 1024 4096``)
  and a mix of both are accepted too, so one grammar works in every command. Each list option's help says so.
- **Names** mean the same thing everywhere: ``--seed S`` seeds every random draw of the run (default 0);
  ``--json PATH`` writes the results as JSON to a file (``-``: stdout where supported); ``--out DIR`` is an
  output directory; ``--plot PATH`` a figure file; ``--dtype D`` the torch dtype the computation runs in;
  ``--device`` a torch device; ``--repeats N`` timed calls per measurement; ``--threads N`` torch
  intra-op threads; ``--workers N`` worker processes; ``--quick`` a reduced, seconds-long run.
- Bad values are usage errors (argparse's ``error:`` line, exit 2), never a traceback.

This module sits beside :mod:`ditcheck.loader` in the layer just above ``ditcheck.reference``: the app commands
(which may not import one another) share it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["LIST_HELP", "list_item", "add_list_option", "add_seed_option", "add_json_option"]

#: Appended to the help of every list option.
LIST_HELP = "comma-separated, e.g. A,B (spaces also accepted)"


def list_item(kind: Callable[[str], Any], choices: Sequence[Any] | None = None) -> Callable[[str], list[Any]]:
    """An argparse ``type`` turning one token ``"a,b"`` into ``[kind("a"), kind("b")]`` (bad items: usage errors)."""
    def parse(token: str) -> list[Any]:
        items = []
        for text in token.split(","):
            text = text.strip()
            if not text:
                continue  # "1024," and "1024, 4096" are read as the user meant them
            try:
                value = kind(text)
            except (TypeError, ValueError) as error:
                detail = str(error) or getattr(kind, "__name__", "value")
                raise argparse.ArgumentTypeError(f"invalid item {text!r}: {detail}") from None
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(f"invalid item {text!r} (choose from {', '.join(map(str, choices))})")
            items.append(value)
        if not items:
            raise argparse.ArgumentTypeError(f"expected at least one item, got {token!r}")
        return items
    parse.__name__ = getattr(kind, "__name__", "item")  # argparse names the type in its messages
    return parse


class _FlattenList(argparse.Action):
    """Collect ``nargs="+"`` tokens, each already a list, into one flat list (replacing the default)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [item for token in values for item in token])


def add_list_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str,
                    kind: Callable[[str], Any] = str, choices: Sequence[Any] | None = None, default: Any = None,
                    metavar: str = "A,B", help: str = "", **kwargs: Any) -> argparse.Action:
    """Add a list option in the shared grammar (comma-separated, spaces also accepted); returns the action."""
    suffix = f" ({LIST_HELP.replace('A,B', metavar)}"
    suffix += f"; from {', '.join(map(str, choices))})" if choices is not None else ")"
    return parser.add_argument(*flags, type=list_item(kind, choices), nargs="+", action=_FlattenList,
                               default=default, metavar=metavar, help=help + suffix, **kwargs)


def add_seed_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "every random draw",
                    default: int = 0) -> argparse.Action:
    """``--seed S``: the one seed of a run."""
    return parser.add_argument("--seed", type=int, default=default, metavar="S",
                               help=f"seed of {what} (default {default})")


def add_json_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                    what: str = "the results") -> argparse.Action:
    """``--json PATH``: also write the results as JSON."""
    return parser.add_argument("--json", default=None, metavar="PATH", help=f"also write {what} as JSON to PATH")
