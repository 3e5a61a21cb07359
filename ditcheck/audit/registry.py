"""The claim registry: one ``Claim`` per claim id of docs/claims.md, each with what the audit needs to check it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import strategies as st

from ditcheck.properties.measurement import Measurement, Observation, RateSeries

__all__ = ["Claim", "Kind", "Mode", "MODES", "KINDS", "budget"]

Kind = Literal["exact", "bound", "rate", "empirical", "not checkable"]
KINDS: tuple[Kind, ...] = ("exact", "bound", "rate", "empirical", "not checkable")
Mode = Literal["quick", "default", "thorough"]
MODES: tuple[Mode, ...] = ("quick", "default", "thorough")


def budget(quick: int, default: int, thorough: int) -> dict[Mode, int]:
    """Hypothesis examples (or rate replicates) per mode."""
    return {"quick": quick, "default": default, "thorough": thorough}


@dataclass(frozen=True)
class Claim:
    """A claim of docs/claims.md as the audit runs it.

    kind "exact" / "bound": ``measure(case) -> Measurement`` over ``grid(mode)`` (fixed cases) and a
    Hypothesis search of ``strategy`` for ``examples[mode]`` inputs, maximising observed/limit.
    kind "rate": ``rates(mode, seed) -> [RateSeries]``, one fitted exponent per series (a bound or exact
    claim may have ``rates`` too, for a rate part such as LD8's runtime: fitted and reported beside it).
    kind "empirical": ``observe(mode, seed) -> Observation``.
    kind "not checkable": ``reason``, and ``illustrate() -> rows`` tabulating what can be said.
    ``bound`` names the function in ditcheck.bounds (or the tolerance) the claim is held to.
    ``statistical``: an exact identity checked by a statistical test (observed = deviation, limit = the
    acceptance limit at a stated false-alarm rate), so its error is not reported in ulps.
    """

    id: str
    statement: str
    source: str
    kind: Kind
    bound: str = ""
    measure: Callable[[Any], Measurement] | None = None
    strategy: Callable[[], st.SearchStrategy[Any]] | None = None
    grid: Callable[[Mode], Sequence[Any]] = lambda mode: ()
    examples: Mapping[Mode, int] = field(default_factory=lambda: budget(0, 0, 0))
    rates: Callable[[Mode, int], Sequence[RateSeries]] | None = None
    observe: Callable[[Mode, int], Observation] | None = None
    reason: str = ""
    illustrate: Callable[[], Sequence[Mapping[str, Any]]] | None = None
    notes: str = ""
    statistical: bool = False

    def __post_init__(self) -> None:
        needs = {"exact": ("measure", "strategy"), "bound": ("measure", "strategy"), "rate": ("rates",),
                 "empirical": ("observe",), "not checkable": ("reason",)}
        if self.kind not in needs:
            raise ValueError(f"Claim {self.id}: kind must be one of {KINDS}; got {self.kind!r}")
        missing = [name for name in needs[self.kind] if not getattr(self, name)]
        if missing:
            raise ValueError(f"Claim {self.id} ({self.kind}): missing {', '.join(missing)}")
