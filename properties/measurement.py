"""What a property measures, as data the audit can rank: one input's observed/limit, a rate's points, an observation.

A ``check_*`` property raises when its claim fails; the matching ``measure_*`` returns the numbers
the check decides on, so ``ditcheck audit`` can report how close to the edge the worst input came.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Measurement", "RateSeries", "Observation", "Relation"]


@dataclass(frozen=True)
class Measurement:
    """One input of a bound or exact claim: ``observed`` is held to ``limit`` (a bound, or a rounding tolerance).

    ``case`` is the frozen dataclass that rebuilds the input (its repr is the reproducer's configuration);
    ``forms`` holds the observed/limit ratios of other forms of the same bound (AS2: per column, the
    paper's 2 eps ||V||), reported beside the main one.
    """

    observed: float
    limit: float
    case: Any
    forms: Mapping[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """observed / limit; 0/0 is 0 (nothing to bound, nothing observed), x/0 for x > 0 is inf."""
        if self.limit == 0:
            return 0.0 if self.observed == 0 else math.inf
        return float(self.observed / self.limit)


Relation = Literal["equal", "at least", "at most"]


@dataclass(frozen=True)
class RateSeries:
    """Points (x, y) of a claimed power law y ~ x^exponent (replicates share an x), and what is claimed.

    ``relation``: "equal" (the exponent is the claim, e.g. PF1's m^-1/2), "at least" / "at most"
    (a big-O rate: the measured exponent may be better, e.g. CF3's TV = O(t0^1/2) is "at least 1/2").
    ``tolerance`` is the pre-asymptotic allowance stated with the claim, added to the fit's interval.
    """

    label: str
    x: Sequence[float]
    y: Sequence[float]
    claimed: float
    relation: Relation
    tolerance: float
    xlabel: str
    ylabel: str

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
        if x.shape != y.shape or x.ndim != 1 or x.size < 3:
            raise ValueError(f"RateSeries {self.label!r}: x and y must be 1-D of one length >= 3; "
                             f"got shapes {x.shape} and {y.shape}")
        if not (np.all(x > 0) and np.all(y > 0) and np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError(f"RateSeries {self.label!r}: a log-log fit needs finite positive x and y")
        if len(np.unique(x)) < 2:
            raise ValueError(f"RateSeries {self.label!r}: a slope needs at least two distinct x")


@dataclass(frozen=True)
class Observation:
    """An empirical claim's measured values and whether they meet its stated criterion."""

    values: Mapping[str, float]
    reproduced: bool
    criterion: str
