"""Schedule properties of a diffusers scheduler, checked apart from its sampling error.

For one configuration (a zero-argument ``build`` returning a fresh scheduler):

* ``monotone``: at 10 and 50 inference steps the timesteps never increase, the sigmas (where the scheduler keeps
  them) never increase, and no timestep repeats except where the scheduler evaluates twice per step (order 2:
  Heun, KDPM2 interleave each timestep twice). Ends as configured: final_sigmas_type="zero" (and flow matching
  without a terminal shift) ends at sigma = 0, "sigma_min" at the training schedule's smallest sigma; shift_terminal
  ends the last non-zero sigma there; schedules without sigmas keep their timesteps in [0, num_train_timesteps).
* ``training schedule``: at num_inference_steps = num_train_timesteps the inference schedule is the schedule a model was
  trained with (not applicable when a knob reshapes the sigmas by design: Karras, exponential, beta, dynamic
  shifting): VP/VE: timesteps T-1, ..., 0 and sigmas sqrt((1 - alpha_bar)/alpha_bar) of the constructor's
  alphas_cumprod; flow matching and EDM: the sigmas the constructor builds.
* ``timesteps-sigmas``: each timestep and its sigma agree through the scheduler's own conversion: flow t = T sigma
  (MiniMax-H3: t = 1 - sigma); EDM t = ln(sigma)/4; VP/VE: the training sigma at t, with diffusers' rounding of t to
  an integer allowed (half a training step) and fractional t anywhere between its two neighbours.
* ``formula``: the documented formula of each knob set: static shift s sigma/(1 + (s - 1) sigma) and dynamic
  e^mu/(e^mu + 1/sigma - 1) of an equally spaced grid (reference.flow.time_shift); Karras sigma^(1/7) equally
  spaced; exponential log sigma equally spaced; beta: (sigma - sigma_min)/(sigma_max - sigma_min) =
  Beta(0.6, 0.6).ppf(1 - linspace(0, 1, N)); spacing of integer timesteps: leading (T//N) i + steps_offset,
  trailing round(T - i T/N) - 1, linspace round(linspace(T - 1, 0, N)) (fractional ones within 1/2 of it).

Tolerances: diffusers stores timesteps and sigmas in float32, so equalities hold to FLOAT32_ULPS units of 2^-24
relative (two float32 roundings plus a few float64 operations on them); grids equally spaced in a transformed
coordinate hold to the same relative slack of the coordinate's range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ditcheck.reference.flow import exponential_time_shift, time_shift
from ditcheck.reference.formats import FLOAT32, FLOAT64

from ._scheduler_families import FLUX_MU, detect_family, flow_sigma_of_timestep, set_timesteps

__all__ = ["ScheduleCheck", "FLOAT32_ULPS", "SCHEDULE_NEUTRAL", "schedule_checks"]

#: configuration keys that do not change the schedule: a configuration overriding only these shares the own one's
SCHEDULE_NEUTRAL = frozenset({"prediction_type", "clip_sample", "algorithm_type", "solver_order", "thresholding",
                              "lower_order_final", "solver_type"})
_CACHE: dict[int, dict[int, Any]] = {}

FLOAT32_ULPS = 8.0
_U32 = FLOAT32.unit_roundoff
KARRAS_RHO = 7.0
BETA_SHAPE = 0.6


@dataclass(frozen=True)
class ScheduleCheck:
    """One schedule property of one configuration: passed True/False, or None when it does not apply (detail says why)."""

    name: str
    passed: bool | None
    detail: str


def _array(values: Any) -> np.ndarray:
    return np.asarray(torch.as_tensor(values).detach().to(torch.float64).cpu().numpy(), dtype=np.float64)


def _integer_timesteps(sched: Any) -> bool:
    return not torch.is_floating_point(torch.as_tensor(sched.timesteps))


def _two_evaluations(sched: Any) -> bool:
    """Order-2 single-step schedulers (Heun, KDPM2) list each step's two evaluations: t_0, t'_0, t_1, t'_1, ...."""
    return int(getattr(sched, "order", 1)) >= 2 and not hasattr(sched, "model_outputs")


def _prk_warmup(sched: Any) -> bool:
    """PNDM's Runge-Kutta warm-up evaluates half steps and repeats timesteps by design."""
    return getattr(sched, "prk_timesteps", None) is not None and not _config(sched).get("skip_prk_steps", False)


def _config(sched: Any) -> dict[str, Any]:
    return dict(getattr(sched, "config", {}) or {})


def _schedule(build: Callable[[], Any], steps: int, mu: float | None, *,
              first_order: bool = True) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """(scheduler, timesteps, sigmas) after set_timesteps; ``first_order``: one (t, sigma) per step for order-2 ones.

    Memoised per ``build`` and step count (some constructors take a second: KDPM2 runs set_timesteps(T) in __init__).
    """
    cache = _CACHE.setdefault(id(build), {})
    if steps not in cache:
        sched = build()
        set_timesteps(sched, steps, mu)
        cache[steps] = sched
    sched = cache[steps]
    sigmas = getattr(sched, "sigmas", None)
    timesteps = _array(sched.timesteps)
    sigma_values = None if sigmas is None else _array(sigmas)
    if first_order and _two_evaluations(sched):
        timesteps = timesteps[0::2]
        if sigma_values is not None:
            sigma_values = np.concatenate([sigma_values[:-1][0::2], sigma_values[-1:]])
    return sched, timesteps, sigma_values


def _close(a: np.ndarray, b: np.ndarray, scale: float | np.ndarray | None = None) -> tuple[bool, float]:
    """|a - b| <= FLOAT32_ULPS 2^-24 max(|a|, |b|, scale); returns (ok, worst |a - b| / allowance)."""
    size = np.maximum(np.abs(a), np.abs(b)) if scale is None else np.maximum(np.maximum(np.abs(a), np.abs(b)), scale)
    allowance = FLOAT32_ULPS * _U32 * np.maximum(size, FLOAT64.smallest_normal)
    ratio = float(np.max(np.abs(a - b) / allowance)) if a.size else 0.0
    return ratio <= 1.0, ratio


def _equally_spaced(values: np.ndarray, amplification: np.ndarray | float = 1.0) -> tuple[bool, float]:
    """Is ``values`` a linspace between its ends (to float32 rounding of the range)?

    ``amplification``: d(values)/d(stored) times |stored| / max|values| per point, when ``values`` is a nonlinear
    function of the stored float32 numbers (an inverted shift): their rounding reaches ``values`` scaled by it.
    """
    if values.size < 3:
        return True, 0.0
    grid = np.linspace(values[0], values[-1], values.size)
    return _close(values, grid, float(np.max(np.abs(values))) * np.maximum(1.0, amplification))


def _training_sigmas(sched: Any) -> np.ndarray:
    abar = _array(sched.alphas_cumprod)
    return np.sqrt((1 - abar) / abar)


def _knobs(config: dict[str, Any]) -> list[str]:
    return [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas") if config.get(k)]


def _monotone(build: Callable[[], Any], mu: float | None, config: dict[str, Any], family: str) -> ScheduleCheck:
    problems = []
    for steps in (10, 50):
        sched, timesteps, sigmas = _schedule(build, steps, mu)
        train = int(config.get("num_train_timesteps", 1000))
        by_design = _prk_warmup(sched)
        if family == "flow" and type(sched).__name__ == "MiniMaxH3Scheduler":
            timesteps = -timesteps  # its t = 1 - sigma increases while sigma decreases
        differences = np.diff(timesteps)
        if np.any(differences > 0):
            problems.append(f"timesteps increase at {steps} steps (index {int(np.argmax(differences > 0))})")
        repeats = int(np.sum(differences == 0))
        if repeats and not by_design:
            problems.append(f"{repeats} repeated timestep(s) at {steps} steps")
        if sigmas is not None and sigmas.size > 1 and np.any(np.diff(sigmas) > 0):
            problems.append(f"sigmas increase at {steps} steps")
        if sigmas is None or sigmas.size == 0:
            if family in ("vp", "ve") and not (np.all(timesteps >= 0) and np.all(timesteps < train)):
                problems.append(f"timesteps outside [0, {train}) at {steps} steps")
            continue
        final = config.get("final_sigmas_type", "zero" if family == "flow" else None)
        terminal = config.get("shift_terminal")
        if terminal and family == "flow":
            if not _close(np.array([sigmas[-2]]), np.array([float(terminal)]))[0]:
                problems.append(f"the last non-zero sigma is {sigmas[-2]:.6g}, not shift_terminal = {terminal}")
        elif final == "zero" and sigmas[-1] != 0:
            problems.append(f"final_sigmas_type='zero' but the schedule ends at sigma = {sigmas[-1]:.6g}")
        elif final == "sigma_min" and family in ("vp", "ve"):
            smallest = float(_training_sigmas(sched)[0])
            if not _close(np.array([sigmas[-1]]), np.array([smallest]))[0]:
                problems.append(f"final_sigmas_type='sigma_min' but the schedule ends at {sigmas[-1]:.6g}, "
                                f"not the training minimum {smallest:.6g}")
    return ScheduleCheck("monotone, ends as configured", not problems, "; ".join(problems) or "holds at 10 and 50 steps")


def _training_schedule(build: Callable[[], Any], mu: float | None, config: dict[str, Any],
                       family: str) -> ScheduleCheck:
    name = "training schedule at N = T"
    reshaping = _knobs(config) + (["use_dynamic_shifting"] if config.get("use_dynamic_shifting") else [])
    if reshaping:
        return ScheduleCheck(name, None, f"{', '.join(reshaping)} reshapes the sigmas by design (see formula)")
    train = int(config.get("num_train_timesteps", 1000))
    fresh = build()
    constructed = getattr(fresh, "sigmas", None)
    if family == "edm":
        return ScheduleCheck(name, None, "EDM trains on continuous sigma (log-normal): no discrete training schedule")
    try:
        sched, timesteps, sigmas = _schedule(build, train, mu)
    except ValueError as error:
        return ScheduleCheck(name, None, f"set_timesteps({train}) is refused: {error}")
    if _prk_warmup(sched):
        return ScheduleCheck(name, None, "PNDM's Runge-Kutta warm-up adds half steps by design (skip_prk_steps=False)")
    if family in ("vp", "ve"):
        expected = np.arange(train - 1, -1, -1, dtype=np.float64)
        problems = []
        if timesteps.shape != expected.shape or not np.array_equal(timesteps, expected):
            missing = sorted(set(expected.astype(int)) - set(np.round(timesteps).astype(int)))[:3]
            problems.append(f"timesteps are not T-1..0 ({timesteps.size} values, first {timesteps[:2].tolist()}, "
                            f"last {timesteps[-2:].tolist()}, missing {missing})")
        if sigmas is not None and sigmas.size:
            trained = np.sort(_training_sigmas(fresh))[::-1]
            inference = sigmas[: trained.size] if sigmas.size > trained.size else sigmas
            if inference.size != trained.size:
                problems.append(f"{inference.size} inference sigmas for {trained.size} training ones")
            else:
                ok, ratio = _close(inference, trained)
                if not ok:
                    problems.append(f"sigmas differ from the training sigmas ({ratio:.3g} x the float32 allowance)")
        return ScheduleCheck(name, not problems, "; ".join(problems) or "equals the training schedule")
    if constructed is None or sigmas is None:
        return ScheduleCheck(name, None, "the constructor builds no sigma table")
    if hasattr(fresh, "alphas_cumprod") and family == "flow":
        return ScheduleCheck(name, None, "the constructor builds VP sigmas; flow sigmas exist only after set_timesteps")
    trained = _array(constructed)
    trained = trained[trained > 0] if family == "flow" else trained
    inference = sigmas[sigmas > 0] if family == "flow" else sigmas
    if inference.size != trained.size:
        inference, trained = inference[: min(inference.size, trained.size)], trained[: min(inference.size,
                                                                                            trained.size)]
    ok, ratio = _close(inference, trained)
    return ScheduleCheck(name, ok, "equals the constructor's sigmas" if ok else
                         f"differs from the constructor's sigmas ({ratio:.3g} x the float32 allowance; first "
                         f"{inference[:2].tolist()} vs {trained[:2].tolist()}, last {inference[-2:].tolist()} vs "
                         f"{trained[-2:].tolist()})")


def _timesteps_sigmas(build: Callable[[], Any], mu: float | None, config: dict[str, Any],
                      family: str) -> ScheduleCheck:
    name = "timesteps agree with sigmas"
    sched, timesteps, sigmas = _schedule(build, 50, mu)
    if sigmas is None or sigmas.size == 0:
        return ScheduleCheck(name, None, "no sigma table (the timesteps are the training indices)")
    count = min(timesteps.size, sigmas.size)
    t, s = timesteps[:count], sigmas[:count]
    train = int(config.get("num_train_timesteps", 1000))
    if family == "flow":
        implied = flow_sigma_of_timestep(sched, t)
        if _integer_timesteps(sched):
            # integer timesteps: the scheduler's conversion includes the cast of T sigma to an integer (< 1/T apart)
            error = float(np.max(np.abs(implied - s))) * train
            return ScheduleCheck(name, error < 1 + FLOAT32_ULPS * _U32 * train,
                                 f"integer timesteps within {error:.3g} training steps of T sigma (cast by design)")
        ok, ratio = _close(implied, s, 1.0 / train)
        return ScheduleCheck(name, ok, "sigma = its timestep's flow time" if ok else
                             f"sigma differs from the timestep's flow time ({ratio:.3g} x the float32 allowance)")
    if family == "edm":
        positive = s > 0
        ok, ratio = _close(4 * t[positive], np.log(s[positive]), 4.0)
        return ScheduleCheck(name, ok, "t = ln(sigma)/4" if ok else
                             f"t differs from ln(sigma)/4 ({ratio:.3g} x the float32 allowance)")
    log_sigmas = np.log(_training_sigmas(sched))

    def sigma_at(times: np.ndarray) -> np.ndarray:
        return np.exp(np.interp(times, np.arange(log_sigmas.size), log_sigmas))

    keep = s > 0
    t, s = t[keep], s[keep]
    integral = t == np.round(t)
    low = np.where(integral, sigma_at(t - 0.5), sigma_at(np.floor(t)))
    high = np.where(integral, sigma_at(t + 0.5), sigma_at(np.ceil(t)))
    slack = FLOAT32_ULPS * _U32 * s
    bad = (s < low - slack) | (s > high + slack)
    if np.any(bad):
        index = int(np.argmax(bad))
        return ScheduleCheck(name, False, f"sigma {s[index]:.6g} at timestep {t[index]:.6g} lies outside the training "
                                          f"sigmas [{low[index]:.6g}, {high[index]:.6g}] around it")
    return ScheduleCheck(name, True, "each sigma is the training sigma of its timestep (to diffusers' rounding of t)")


def _formula(build: Callable[[], Any], mu: float | None, config: dict[str, Any], family: str) -> ScheduleCheck:
    name = "knob formulas"
    steps = 50
    sched, timesteps, sigmas = _schedule(build, steps, mu)
    results: list[str] = []
    failures: list[str] = []

    def record(label: str, ok: bool, ratio: float) -> None:
        (results if ok else failures).append(f"{label} ({ratio:.2g} x allowance)" if not ok else label)

    positive = None if sigmas is None else sigmas[sigmas > 0]
    if family == "flow" and positive is not None and not config.get("shift_terminal") and not _knobs(config):
        shift = float(config.get("shift", config.get("flow_shift", 1.0)))
        if config.get("use_dynamic_shifting"):
            m = FLUX_MU if mu is None else mu
            if config.get("time_shift_type", "exponential") == "exponential":
                unshifted = 1 / (1 + math.exp(m) * (1 / positive - 1))
                check = exponential_time_shift(np.clip(unshifted, 0, 1), m)
            else:
                unshifted = 1 / (1 + m * (1 / positive - 1))
                check = positive
            ok, ratio = _equally_spaced(unshifted)
            record(f"dynamic shift mu={m}", ok and bool(np.allclose(check, positive, rtol=1e-6)), ratio)
        else:
            unshifted = positive / (shift - (shift - 1) * positive)
            slope = shift / (shift - (shift - 1) * positive) ** 2  # d unshifted / d sigma
            ok, ratio = _equally_spaced(unshifted, slope * positive / np.max(np.abs(unshifted)))
            record(f"shift={shift:g} of an equally spaced grid", ok and bool(
                np.allclose(time_shift(np.clip(unshifted, 0, 1), shift), positive, rtol=1e-6)), ratio)
    if positive is not None and positive.size > 2:
        if config.get("use_karras_sigmas"):
            record("Karras rho=7", *_equally_spaced(positive ** (1 / KARRAS_RHO)))
        if config.get("use_exponential_sigmas"):
            record("exponential", *_equally_spaced(np.log(positive)))
        if config.get("use_beta_sigmas"):
            # lazy: diffusers builds beta sigmas with scipy (its constructor refuses use_beta_sigmas without it), so
            # scipy is present whenever this runs; ditcheck itself does not depend on it
            import scipy.stats

            count = positive.size
            normalised = (positive - positive[-1]) / (positive[0] - positive[-1])
            expected = scipy.stats.beta.ppf(1 - np.linspace(0, 1, count), BETA_SHAPE, BETA_SHAPE)
            record("beta(0.6, 0.6)", *_close(normalised, expected, 1.0))
    spacing = config.get("timestep_spacing")
    train = int(config.get("num_train_timesteps", 1000))
    if "original_inference_steps" in config:
        spacing = None  # LCM / TCD subsample their original_inference_steps grid: not one of the three spacings
        results.append("spacing n/a (LCM-style subsampling of original_inference_steps)")
    if spacing and _prk_warmup(sched):
        spacing = None
        results.append("spacing n/a (PNDM Runge-Kutta warm-up)")
    if spacing and not _knobs(config) and family in ("vp", "ve") and timesteps.size:
        t = timesteps
        n = t.size
        offset = int(config.get("steps_offset", 0))
        # diffusers builds grids of N points, or of N + 1 points dropping the last (the multistep solvers)
        if spacing == "leading":
            candidates = [(np.arange(k) * (train // k))[::-1][:n] + offset for k in (n, n + 1)]
            tolerance = 0.0
        elif spacing == "trailing":
            candidates = [np.round(np.arange(train, 0, -train / n)) - 1]
            tolerance = 0.0
        else:
            candidates = [np.linspace(train - 1, 0, k)[:n] for k in (n, n + 1)]
            tolerance = 0.5
        errors = [float(np.max(np.abs(t - c))) for c in candidates if c.size == t.size]
        if errors:
            error = min(errors)
            ok = error <= tolerance + FLOAT32_ULPS * _U32 * train
            (results if ok else failures).append(f"{spacing} spacing" + ("" if ok else f" (off by up to {error:g})"))
        else:
            failures.append(f"{spacing} spacing: {t.size} timesteps for {steps} steps")
    if not results and not failures:
        return ScheduleCheck(name, None, "no knob with a documented formula is set")
    return ScheduleCheck(name, not failures, "; ".join(failures + results))


def schedule_checks(build: Callable[[], Any], config: dict[str, Any], mu: float | None = None) -> list[ScheduleCheck]:
    """All four properties for one configuration; an exception inside the scheduler fails that property with its message."""
    try:
        family = detect_family(build())
    except Exception as error:  # noqa: BLE001 - the scheduler's own failure is the finding
        return [ScheduleCheck("build", False, f"{type(error).__name__}: {error}")]
    try:
        return _all_checks(build, config, mu, family)
    finally:
        _CACHE.pop(id(build), None)


def _all_checks(build: Callable[[], Any], config: dict[str, Any], mu: float | None, family: str) -> list[ScheduleCheck]:
    checks = []
    for name, check in (("monotone, ends as configured", _monotone), ("training schedule at N = T", _training_schedule),
                        ("timesteps agree with sigmas", _timesteps_sigmas), ("knob formulas", _formula)):
        try:
            checks.append(check(build, mu, config, family))
        except Exception as error:  # noqa: BLE001 - isolation: a raising scheduler fails this property
            checks.append(ScheduleCheck(name, False, f"{type(error).__name__}: {error}"))
    return checks
