"""Running one claim: worst-case search, rate fits, verdicts. Everything here is deterministic for (mode, seed)."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import mpmath
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings, target
from hypothesis import seed as hypothesis_seed

from ditcheck.properties.measurement import Measurement, Observation, RateSeries
from ditcheck.properties.profiles import without_local_constants
from ditcheck.reference.formats import FLOAT64

from .registry import Claim, Mode

__all__ = ["ClaimResult", "RateFit", "run_claim", "fit_rate", "claim_seed", "reproducer", "expected_steps", "LOOSE_BELOW",
           "Shard", "ShardOutcome", "plan_shards", "run_shard", "merge_shards", "shard_seed", "SEARCH_SHARD_EXAMPLES",
           "GRID_SHARD_CASES",
           "student_t_quantile", "FLOAT64_ULP"]

#: max observed/bound below this is reported as "loose by 1/max" rather than "holds".
LOOSE_BELOW = 0.5
#: the spacing of float64 at 1: exact claims report relative errors in these units.
FLOAT64_ULP = FLOAT64.machine_epsilon  # one ulp of 1.0
#: confidence level of the fitted exponents' intervals.
CONFIDENCE = 0.95

Advance = Callable[[int], None]


def claim_seed(seed: int, claim_id: str) -> int:
    """The claim's own seed: independent of the order and the process claims run in (crc32, not salted hash)."""
    return (seed * 1_000_003 + zlib.crc32(claim_id.encode())) % 2**32


def _named(fn: Callable[..., Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    keywords: dict[str, Any] = {}
    while isinstance(fn, functools.partial):
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    return fn, keywords


def _case_classes(value: Any, found: dict[str, set[str]]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        found.setdefault(cls.__module__, set()).add(cls.__qualname__)
        for f in dataclasses.fields(value):
            _case_classes(getattr(value, f.name), found)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _case_classes(item, found)


def reproducer(measure: Callable[..., Measurement], case: Any) -> str:
    """A Python snippet that rebuilds ``case`` and re-runs ``measure`` on it, printing observed, limit, ratio."""
    fn, keywords = _named(measure)
    classes: dict[str, set[str]] = {}
    _case_classes(case, classes)
    lines = ["import numpy as np", f"from {fn.__module__} import {fn.__name__}"]
    lines += [f"from {module} import {', '.join(sorted(names))}" for module, names in sorted(classes.items())]
    if keywords:
        lines.append(f"# the audit called it with {', '.join(f'{k}={v!r}' for k, v in keywords.items())}")
    lines += [f"case = {case!r}", f"m = {fn.__name__}(case)", "print(m.observed, m.limit, m.ratio)"]
    return "\n".join(lines)


@dataclass(frozen=True)
class RateFit:
    """Least-squares slope of log y on log x with its CONFIDENCE interval, against the claimed exponent."""

    label: str
    exponent: float
    low: float
    high: float
    claimed: float
    relation: str
    tolerance: float
    consistent: bool
    x: list[float]
    y: list[float]
    xlabel: str
    ylabel: str
    intercept: float


@functools.lru_cache(maxsize=64)
def student_t_quantile(probability: float, dof: int) -> float:
    """Quantile of Student's t with ``dof`` degrees of freedom: F(t) = 1 - I_{dof/(dof+t^2)}(dof/2, 1/2)/2."""
    if not 0.5 <= probability < 1 or dof < 1:
        raise ValueError(f"student_t_quantile: expected 0.5 <= probability < 1 and dof >= 1; got {probability}, {dof}")

    def upper_tail(t: float) -> float:
        return float(mpmath.betainc(dof / 2, 0.5, 0, dof / (dof + t * t), regularized=True)) / 2

    low, high = 0.0, 1.0
    while upper_tail(high) > 1 - probability:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if upper_tail(mid) > 1 - probability else (low, mid)
    return (low + high) / 2


def fit_rate(series: RateSeries) -> RateFit:
    """Fit log y = a + b log x; the interval is b +- t se(b); consistency per ``series.relation``:
    "equal": the interval widened by the tolerance contains the claim; "at least": b + halfwidth +
    tolerance >= claim; "at most": b - halfwidth - tolerance <= claim."""
    x, y = np.log(np.asarray(series.x, float)), np.log(np.asarray(series.y, float))
    design = np.stack([np.ones_like(x), x], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = x.size - 2
    residual = y - design @ np.array([intercept, slope])
    sxx = float(((x - x.mean()) ** 2).sum())
    se = math.sqrt(float(residual @ residual) / dof / sxx) if dof > 0 else math.inf
    half = student_t_quantile(0.5 + CONFIDENCE / 2, dof) * se if dof > 0 else math.inf
    low, high = float(slope - half), float(slope + half)
    tol = series.tolerance
    consistent = {"equal": low - tol <= series.claimed <= high + tol,
                  "at least": high + tol >= series.claimed,
                  "at most": low - tol <= series.claimed}[series.relation]
    return RateFit(series.label, float(slope), low, high, series.claimed, series.relation, tol, bool(consistent),
                   [float(v) for v in series.x], [float(v) for v in series.y], series.xlabel, series.ylabel,
                   float(intercept))


@dataclass
class ClaimResult:
    """What the audit found for one claim (plain data: JSON-able, picklable across worker processes)."""

    id: str
    kind: str
    statement: str
    source: str
    bound: str
    verdict: str
    failed: bool
    summary: str
    examples: int = 0
    max_ratio: float | None = None
    median_ratio: float | None = None
    min_ratio: float | None = None
    max_observed: float | None = None
    worst_case: str | None = None
    worst_observed: float | None = None
    worst_limit: float | None = None
    statistical: bool = False
    reproducer: str | None = None
    forms: dict[str, float] = field(default_factory=dict)
    points: list[tuple[float, float]] = field(default_factory=list)
    fits: list[RateFit] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    table: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: str = ""
    seconds: float = 0.0


# ----------------------------------------------------------------------------- shards
#
# A claim's work is cut into shards whose number and contents depend only on the claim and the mode (never on
# how many workers there are), each drawing from its own seed: the grid in batches of cases, the Hypothesis
# search in batches of examples (each batch its own targeted search; the claim's worst case is the max over
# them), the rate series, the observation or the table. ``run_claim`` runs a claim's shards here one after the
# other; ``ditcheck.audit.execute`` runs them on a process pool or a dask.distributed cluster. Either way the
# shards' outcomes are merged in shard order by ``merge_shards``, so every number is the same wherever they ran.

#: Hypothesis examples per search shard, and grid cases per grid shard, by mode.
SEARCH_SHARD_EXAMPLES: dict[Mode, int] = {"quick": 10, "default": 250, "thorough": 1000}
GRID_SHARD_CASES: dict[Mode, int] = {"quick": 16, "default": 32, "thorough": 64}

ShardPart = Literal["grid", "search", "rates", "observe", "illustrate"]


def shard_seed(seed: int, claim_id: str, search_index: int) -> int:
    """The seed of a claim's ``search_index``-th search shard (crc32: the same in every process and worker)."""
    return (seed * 1_000_003 + zlib.crc32(f"{claim_id}/search/{search_index}".encode())) % 2**32


@dataclass(frozen=True)
class Shard:
    """One independent piece of a claim's work: ``part`` with its slice of the grid (``start``:``stop``) or its
    number of Hypothesis examples and seed; ``index`` orders the merge, ``steps`` is its share of the progress."""

    claim_id: str
    index: int
    part: ShardPart
    steps: int
    start: int = 0
    stop: int = 0
    examples: int = 0
    seed: int = 0

    def describe(self) -> str:
        """Human-readable: what the shard would have measured (for the report of a lost shard)."""
        if self.part == "grid":
            return f"{self.claim_id} grid cases {self.start}..{self.stop - 1}"
        if self.part == "search":
            return f"{self.claim_id} search shard of {self.examples} examples (seed {self.seed})"
        return f"{self.claim_id} {self.part}"


@dataclass
class ShardOutcome:
    """What a shard measured (plain data: picklable across processes and cluster workers).

    ``failure``: the traceback of an exception outside the per-case measurements (a grid or strategy that
    raised, rates() raising); ``lost``: why the shard never came back (its worker died, its task failed twice).
    """

    shard: Shard
    found: list[Measurement] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    series: list[RateSeries] = field(default_factory=list)
    observation: Observation | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    lost: str | None = None
    seconds: float = 0.0


def plan_shards(claim: Claim, mode: Mode, seed: int) -> list[Shard]:
    """The claim's shards in merge order: grid batches, search batches, then its rates (kind "rate", or the rate
    part of a bound such as LD8), observation or table. Depends on the claim, the mode and the seed only."""
    shards: list[Shard] = []

    def add(part: ShardPart, steps: int, **fields: int) -> None:
        shards.append(Shard(claim.id, len(shards), part, steps, **fields))

    if claim.kind in ("exact", "bound"):
        cases = len(claim.grid(mode))
        batches = -(-cases // GRID_SHARD_CASES[mode])  # equal batches of at most GRID_SHARD_CASES
        for number in range(batches):
            start, stop = number * cases // batches, (number + 1) * cases // batches
            add("grid", stop - start, start=start, stop=stop)
        examples, batch = claim.examples[mode], SEARCH_SHARD_EXAMPLES[mode]
        for number, start in enumerate(range(0, examples, batch)):
            count = min(batch, examples - start)
            add("search", count, examples=count, seed=shard_seed(seed, claim.id, number))
        if claim.rates is not None:
            add("rates", 0)
    else:
        add({"rate": "rates", "empirical": "observe", "not checkable": "illustrate"}[claim.kind], 1)  # type: ignore[arg-type]
    return shards


def _measure_into(outcome: ShardOutcome, measure: Callable[[Any], Measurement], case: Any, advance: Advance) -> float:
    """Measure one case into ``outcome``; a measurement that raises or gives NaN is an error with its input."""
    try:
        m = measure(case)
        ratio = m.ratio
        if math.isnan(ratio):
            raise ValueError(f"observed/limit is NaN (observed={m.observed}, limit={m.limit})")
    except Exception as error:  # noqa: BLE001 - a failing measurement is reported, not allowed to stop the audit
        outcome.errors.append(f"{case!r}: {type(error).__name__}: {error}\n{traceback.format_exc(limit=-3)}")
        advance(1)
        return 0.0
    outcome.found.append(m)
    advance(1)
    return ratio


def _explore(claim: Claim, shard: Shard, outcome: ShardOutcome, advance: Advance) -> None:
    """A Hypothesis search that targets observed/limit (no shrinking: the worst input is recorded here as it is
    measured, since Hypothesis does not hand it back)."""
    measure = claim.measure
    assert measure is not None and claim.strategy is not None

    @hypothesis_seed(shard.seed)
    @settings(max_examples=shard.examples, database=None, deadline=None, derandomize=False,
              phases=[Phase.generate, Phase.target], suppress_health_check=list(HealthCheck))
    @given(claim.strategy())
    def explore(case: Any) -> None:
        target(min(_measure_into(outcome, measure, case, advance), 1e300), label=f"{claim.id} observed / limit")

    with without_local_constants():
        explore()


def run_shard(claim: Claim, shard: Shard, mode: Mode, seed: int, advance: Advance = lambda n: None) -> ShardOutcome:
    """Run one shard of ``claim``. Never raises: an exception outside the per-case measurements is its ``failure``."""
    start = time.perf_counter()
    outcome = ShardOutcome(shard)
    try:
        if shard.part == "grid":
            assert claim.measure is not None
            for case in list(claim.grid(mode))[shard.start:shard.stop]:
                _measure_into(outcome, claim.measure, case, advance)
        elif shard.part == "search":
            _explore(claim, shard, outcome, advance)
        elif shard.part == "rates":
            assert claim.rates is not None
            outcome.series = list(claim.rates(mode, claim_seed(seed, claim.id)))
        elif shard.part == "observe":
            assert claim.observe is not None
            outcome.observation = claim.observe(mode, claim_seed(seed, claim.id))
        else:
            outcome.rows = [dict(row) for row in claim.illustrate()] if claim.illustrate else []
    except Exception:  # noqa: BLE001 - one broken shard must not hide the rest of the audit
        outcome.failure = traceback.format_exc()
    if shard.part in ("rates", "observe", "illustrate"):
        advance(shard.steps)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _base_result(claim: Claim) -> ClaimResult:
    return ClaimResult(claim.id, claim.kind, claim.statement, claim.source, claim.bound, "", False, "",
                       notes=claim.notes, statistical=claim.statistical if claim.kind in ("exact", "bound") else False)


def _search_result(claim: Claim, found: list[Measurement], errors: list[str], series: list[RateSeries] | None
                   ) -> ClaimResult:
    result = _base_result(claim)
    result.examples, result.errors = len(found) + len(errors), errors
    if not found:
        result.verdict, result.failed, result.summary = "ERROR", True, "no input could be measured"
        return result
    ratios = np.array([m.ratio for m in found])
    worst = found[int(np.argmax(ratios))]
    result.max_ratio, result.median_ratio, result.min_ratio = (float(ratios.max()), float(np.median(ratios)),
                                                               float(ratios.min()))
    result.max_observed = float(max(m.observed for m in found))
    result.worst_case = repr(worst.case)
    result.worst_observed, result.worst_limit = float(worst.observed), float(worst.limit)
    result.reproducer = reproducer(claim.measure, worst.case)  # type: ignore[arg-type]
    result.forms = {name: float(max(m.forms.get(name, 0.0) for m in found)) for name in worst.forms}
    result.points = [(float(m.limit), float(m.observed)) for m in found]
    top = result.max_ratio
    if claim.kind == "exact" and claim.statistical:
        result.verdict = "holds (statistical)" if top <= 1 else "VIOLATED"
        result.summary = f"worst deviation {top:.3g} of its acceptance limit (median {result.median_ratio:.3g})"
    elif claim.kind == "exact":
        result.verdict = "exact to rounding" if top <= 1 else "VIOLATED"
        result.summary = (f"max error {result.max_observed:.2g} ({result.max_observed / FLOAT64_ULP:.3g} ulp), "
                          f"{top:.2g} of its rounding tolerance")
    else:
        result.verdict = ("VIOLATED" if top > 1 else "holds" if top >= LOOSE_BELOW
                          else f"loose by {1 / top:.3g}x" if top > 0 else "holds (never approached)")
        result.summary = f"max observed/bound {top:.4g} (median {result.median_ratio:.3g}, min {result.min_ratio:.3g})"
        if result.forms:
            result.summary += "; " + ", ".join(f"{name} {value:.3g}" for name, value in result.forms.items())
    result.failed = top > 1 or bool(errors)
    if errors and top <= 1:
        result.verdict = "ERROR"
    if series is not None:  # a bound with a rate part (LD8): fitted too, reported beside the bound's verdict
        _add_fits(result, series)
    return result


def _fit_summary(fits: Sequence[RateFit]) -> str:
    return "; ".join(f"{f.label}: {f.exponent:.3g} [{f.low:.3g}, {f.high:.3g}] vs {f.relation} {f.claimed:g}"
                     f"{'' if f.consistent else ' (inconsistent)'}" for f in fits)


def _add_fits(result: ClaimResult, series: Sequence[RateSeries]) -> None:
    result.fits = [fit_rate(s) for s in series]
    result.summary = "; ".join(filter(None, [result.summary, _fit_summary(result.fits)]))
    if not all(f.consistent for f in result.fits):
        result.verdict += ", rate inconsistent"


def _rate_result(claim: Claim, series: list[RateSeries]) -> ClaimResult:
    result = _base_result(claim)
    _add_fits(result, series)
    result.verdict = "consistent" if all(f.consistent for f in result.fits) else "inconsistent"
    result.examples = sum(len(f.x) for f in result.fits)
    return result


def _empirical_result(claim: Claim, observation: Observation) -> ClaimResult:
    result = _base_result(claim)
    result.summary = (", ".join(f"{k} {v:.3g}" for k, v in observation.values.items())
                      + f" (criterion: {observation.criterion})")
    result.verdict = "reproduced" if observation.reproduced else "not reproduced"
    result.values = {k: float(v) for k, v in observation.values.items()}
    return result


def _unchecked_result(claim: Claim, rows: list[dict[str, Any]]) -> ClaimResult:
    result = _base_result(claim)
    result.verdict, result.summary, result.table = "not checkable", claim.reason, rows
    return result


def merge_shards(claim: Claim, outcomes: Sequence[ShardOutcome]) -> ClaimResult:
    """The claim's result from all its shards' outcomes (any order; merged in shard order). A shard that raised
    outside its measurements, or was lost, makes the claim an ERROR that says what is missing; the numbers of
    the other shards are still reported."""
    ordered = sorted(outcomes, key=lambda o: o.shard.index)
    broken = [o for o in ordered if o.failure is not None or o.lost is not None]
    try:
        rates = [o for o in ordered if o.shard.part == "rates"]
        rates_ok = bool(rates) and rates[0].failure is None and rates[0].lost is None
        if claim.kind in ("exact", "bound"):
            found = [m for o in ordered for m in o.found]
            errors = [e for o in ordered for e in o.errors]
            result = _search_result(claim, found, errors, rates[0].series if rates_ok else None)
        elif broken:
            result = _base_result(claim)
        elif claim.kind == "rate":
            result = _rate_result(claim, rates[0].series)
        elif claim.kind == "empirical":
            assert ordered[0].observation is not None
            result = _empirical_result(claim, ordered[0].observation)
        else:
            result = _unchecked_result(claim, ordered[0].rows)
    except Exception as error:  # noqa: BLE001 - one broken claim must not hide the others
        result = _base_result(claim)
        broken, result.errors = [], [traceback.format_exc()]
        result.verdict, result.failed, result.summary = "ERROR", True, f"{type(error).__name__}: {error}"
    if broken:
        what = "; ".join(f"{o.shard.describe()}: " + (f"lost ({o.lost})" if o.lost is not None
                                                      else (o.failure or "").strip().splitlines()[-1])
                         for o in broken)
        result.verdict, result.failed = "ERROR", True
        result.summary = "; ".join(filter(None, [f"{len(broken)} of {len(ordered)} shard(s) missing: {what}",
                                                 result.summary]))
        result.errors = result.errors + [o.failure if o.failure is not None else f"{o.shard.describe()}: {o.lost}"
                                         for o in broken]
    result.seconds = sum(o.seconds for o in ordered)
    return result


def run_claim(claim: Claim, mode: Mode, seed: int, advance: Advance = lambda n: None) -> ClaimResult:
    """Audit one claim here, its shards one after the other. A measurement that raises is an ERROR (reported with
    its input), never a silent skip."""
    return merge_shards(claim, [run_shard(claim, shard, mode, seed, advance)
                                for shard in plan_shards(claim, mode, seed)])


def expected_steps(claim: Claim, mode: Mode) -> int:
    """How many advance() calls run_claim makes (for progress bars): grid + examples, or 1."""
    return sum(shard.steps for shard in plan_shards(claim, mode, 0))
