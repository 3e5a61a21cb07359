"""Validate a diffusers-style scheduler by driving its own step loop with the exact model of a known target.

  ditcheck validate scheduler MODULE:ATTR [--steps N,N] [--config KEY=VALUE ...] [--mu MU] [--no-search]
                                          [--samples N] [--eta E] [--seed S] [--quick] [--strict-schedule] [--json PATH]

ATTR is a scheduler class (e.g. ``diffusers:FlowMatchEulerDiscreteScheduler``), an instance, or a zero-argument
factory. The model is exact: the posterior means of a Gaussian-mixture target at the noise level the network is told
(its timestep), in the parameterisation the configuration names: eps, x0 (sample), v, the flow velocity, or EDM's
preconditioned output (_scheduler_families: flow matching, EDM, k-diffusion VE and VP families). Whatever error remains
in the final samples is the scheduler's: its discretisation (shrinking as steps grow) and its settings.

Configurations: the scheduler's own config (with ``--config`` overrides: the configuration a user ships), then, unless
``--no-search``, each knob its config offers, one at a time (clip_sample=False, prediction types, spacings, Karras /
exponential / beta sigmas, final_sigmas_type, shift=3.0 (SD3), use_dynamic_shifting with mu (Flux), ...). The own
configuration runs at every step count, searched ones at the largest the own one ran at (their verdict). A run the
scheduler raises in is a failed run with the exception's message (never a traceback).
Reported per run: the largest |z|-score of the per-coordinate mean and variance against the exact moments of the law
at the scheduler's final noise level (the variance's standard error uses the exact fourth central moment), W2 between
fitted Gaussians and binned TV (2-D, with its noise floor). A configuration is BIASED when at its largest step count
that ran some |z| > 5 (false alarm about 6e-7 per moment under exact sampling). Schedule properties
(_scheduler_schedule: monotone and ends as configured, the training schedule at N = T, timesteps agree with sigmas,
knob formulas) are checked per configuration and reported separately.

Exit code 0: the own configuration reaches the target; 1: it is biased or fails at every step count (with
``--strict-schedule`` also: it breaks a schedule property); 2: the target could not be loaded or built, is out of
scope (the reason is printed), or no configuration could run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from io import StringIO
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ditcheck.diffusion.flow import FlowMixtureOracle
from ditcheck.diffusion.metrics import tv_binned, w2_fitted_gaussian
from ditcheck.properties.flow import moment_z_scores
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.mixtures import LatentMixture, gaussian_mixture, sample

from ditcheck.loader import LoadError, load
from ditcheck.options import add_list_option

from ._scheduler_families import FLUX_MU, OutOfScope, candidate_settings, detect_family, drive, out_of_scope_reason
from ._scheduler_schedule import SCHEDULE_NEUTRAL, ScheduleCheck, schedule_checks
from ._target import TargetError
from .report import emit

HELP = "drive a diffusers scheduler's step loop with exact scores of a Gaussian mixture and check the samples"

__all__ = ["HELP", "Z_THRESHOLD", "DEFAULT_STEPS", "QUICK_STEPS", "default_target", "exact_eps", "SchedulerRun",
           "SchedulerConfigResult", "SchedulerReport", "scheduler", "parse_config_overrides", "add_arguments", "run"]

Z_THRESHOLD = 5.0
DEFAULT_STEPS = (10, 50, 250)
#: steps of ``--quick`` (the coverage table's tiny mode): enough to run every code path of a scheduler
QUICK_STEPS = (4, 25)


def default_target() -> LatentMixture:
    """A 2-D two-component mixture whose mass reaches beyond [-1, 1] (image-range clipping then matters)."""
    return gaussian_mixture([0.4, 0.6], [[-1.5, 0.5], [1.2, -0.8]],
                            [[[0.3, 0.1], [0.1, 0.2]], [[0.25, -0.05], [-0.05, 0.4]]])


def exact_eps(mixture: LatentMixture, x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """eps*(x) = E[eps | x] = -sqrt(1 - abar) grad log p(x), p the mixture diffused to sqrt(abar) x_0 + sqrt(1 - abar) eps."""
    oracle = FlowMixtureOracle(mixture)
    _, eps = oracle.posterior_means_at(x.to(torch.float64), torch.tensor([math.sqrt(alpha_bar)], dtype=torch.float64),
                                       torch.tensor([math.sqrt(1.0 - alpha_bar)], dtype=torch.float64))
    return eps.to(x.dtype)


@dataclass(frozen=True)
class SchedulerRun:
    """One configuration at one number of inference steps; ``error`` when the scheduler raised (a failed run)."""

    steps: int
    mean_z: float  # max_j |sample mean_j - mean_j| / (sd_j / sqrt(n))
    variance_z: float  # max_j |sample var_j - var_j| / sqrt((mu4_j - var_j^2) / n)
    w2: float  # W2(fitted Gaussian, target moments)
    tv: float | None  # binned TV (2-D and 1-D targets)
    tv_noise_floor: float | None
    evaluations: int
    error: str | None = None
    seconds: float = 0.0

    @property
    def biased(self) -> bool:
        return self.error is None and max(self.mean_z, self.variance_z) > Z_THRESHOLD


@dataclass(frozen=True)
class SchedulerConfigResult:
    """All step counts of one configuration (``overrides`` applied to the scheduler's own config) and its schedule checks."""

    label: str
    overrides: dict[str, Any]
    runs: list[SchedulerRun]
    schedule: list[ScheduleCheck] = field(default_factory=list)
    family: str | None = None

    @property
    def ran(self) -> list[SchedulerRun]:
        return [run for run in self.runs if run.error is None]

    @property
    def failed(self) -> bool:
        """No step count ran: the configuration is a failed check (the scheduler raised every time)."""
        return not self.ran

    @property
    def biased(self) -> bool:
        """Biased at the largest step count that ran (discretisation error has had the most room to vanish)."""
        return bool(self.ran) and self.ran[-1].biased

    @property
    def schedule_failures(self) -> list[ScheduleCheck]:
        return [check for check in self.schedule if check.passed is False]

    @property
    def verdict(self) -> str:
        if self.failed:
            return "FAILED"
        return "BIASED" if self.biased else "ok"


@dataclass
class SchedulerReport:
    """Everything ``scheduler`` measured; ``str(report)`` is the table the CLI prints."""

    scheduler: str
    samples: int
    eta: float
    exact_floor_w2: float  # W2 of fitted Gaussians for n exact draws: the Monte Carlo floor of the w2 column
    configs: list[SchedulerConfigResult] = field(default_factory=list)
    seconds: float = 0.0
    strict_schedule: bool = False

    @property
    def anything_ran(self) -> bool:
        return any(config.ran for config in self.configs)

    @property
    def exit_code(self) -> int:
        """2: no configuration could run; 1: the own configuration is biased or failed (with ``strict_schedule``, also
        when it breaks a schedule property: those are reported separately from sampling error); 0 otherwise."""
        if not self.anything_ran:
            return 2
        own = self.configs[0]
        return 1 if own.failed or own.biased or (self.strict_schedule and own.schedule_failures) else 0

    def findings(self) -> list[str]:
        lines = []
        own = self.configs[0]
        working = [c.label for c in self.configs[1:] if c.ran and not c.biased]
        if not self.anything_ran:
            lines.append(f"{self.scheduler}: no configuration could run; first error: "
                         f"{next((r.error for c in self.configs for r in c.runs if r.error), 'none')}")
        elif own.failed:
            lines.append(f"{self.scheduler} with its own configuration FAILED at every step count "
                         f"({own.runs[-1].error}); configurations that run unbiased: {', '.join(working) or 'none'}.")
        elif own.biased:
            last = own.ran[-1]
            lines.append(f"{self.scheduler} with its own configuration is BIASED at {last.steps} steps even with the "
                         f"exact model (mean |z| {last.mean_z:.1f}, variance |z| {last.variance_z:.1f}); unbiased with: "
                         f"{', '.join(working) or 'none of those tried'}.")
        else:
            lines.append(f"{self.scheduler} with its own configuration reaches the target at {own.ran[-1].steps} steps.")
        for config in self.configs:
            for run in config.runs:
                if run.error is not None and not config.failed:
                    lines.append(f"{config.label}: {run.steps} steps raised {run.error}")
            if config is not own and config.failed:
                lines.append(f"setting {config.label} fails: {config.runs[-1].error}")
            elif config is not own and config.biased:
                lines.append(f"setting {config.label} biases it (at {config.ran[-1].steps} steps).")
            for check in config.schedule_failures:
                lines.append(f"schedule [{config.label}] {check.name}: {check.detail}")
        return lines

    def to_json(self) -> str:
        payload = asdict(self)
        payload["findings"] = self.findings()
        payload["exit_code"] = self.exit_code
        return json.dumps(payload, indent=2, default=float)

    def __str__(self) -> str:
        table = Table(title=f"ditcheck validate scheduler {self.scheduler} (exact model, n = {self.samples}, "
                            f"eta = {self.eta})")
        for column in ("configuration", "steps", "mean |z|", "var |z|", "W2 fitted", "TV binned", "TV floor", "verdict"):
            table.add_column(column, justify="left" if column == "configuration" else "right")
        for config in self.configs:
            for run in config.runs:
                if run.error is not None:
                    table.add_row(config.label, str(run.steps), "", "", "", "", "", f"FAILED: {run.error[:60]}")
                    continue
                table.add_row(config.label, str(run.steps), f"{run.mean_z:.1f}", f"{run.variance_z:.1f}",
                              f"{run.w2:.4f}", "" if run.tv is None else f"{run.tv:.4f}",
                              "" if run.tv_noise_floor is None else f"{run.tv_noise_floor:.4f}",
                              "BIASED" if run.biased else "ok")
        schedule = Table(title="schedule properties (separate from sampling error)")
        for column in ("configuration", "property", "verdict", "detail"):
            schedule.add_column(column)
        for config in self.configs:
            for check in config.schedule:
                verdict = "n/a" if check.passed is None else ("ok" if check.passed else "FAILED")
                schedule.add_row(config.label, check.name, verdict, check.detail[:90])
        buffer = StringIO()
        console = Console(file=buffer, width=140, force_terminal=False)
        console.print(table)
        console.print(schedule)
        notes = (f"|z| > {Z_THRESHOLD:g} marks a moment off the exact target (false alarm ~6e-7 each); the W2 floor of "
                 f"{self.samples} exact draws is {self.exact_floor_w2:.4f}; the verdict of a configuration is its "
                 f"largest step count that ran. Run time {self.seconds:.1f} s.")
        return buffer.getvalue() + notes + "\n" + "\n".join(self.findings())


def _instance(target: Any) -> Any:
    if isinstance(target, str):
        target = load(target)
    if isinstance(target, type):
        reason = out_of_scope_reason(target)
        if reason is not None:
            raise OutOfScope(f"{target.__name__} is out of scope: {reason}")
        try:
            return target()
        except Exception as error:  # noqa: BLE001 - a scheduler that cannot be built is an unusable target
            raise TargetError("target", "a scheduler class that builds with no arguments",
                              f"{type(error).__name__}: {error}") from error
    if hasattr(target, "step") and hasattr(target, "set_timesteps"):
        return target
    if callable(target):
        try:
            return target()
        except Exception as error:  # noqa: BLE001
            raise TargetError("target", "a zero-argument scheduler factory", f"{type(error).__name__}: {error}") from error
    raise TargetError("target", "a scheduler class, instance or zero-argument factory", type(target).__name__)


def _scheduler_class_and_config(target: Any) -> tuple[type, dict[str, Any], str]:
    instance = _instance(target)
    if not (hasattr(instance, "step") and hasattr(instance, "set_timesteps")):
        raise TargetError("target", "a diffusers-style scheduler (step, set_timesteps)", type(instance).__name__)
    reason = out_of_scope_reason(type(instance))
    if reason is not None:
        raise OutOfScope(f"{type(instance).__name__} is out of scope: {reason}")
    config = dict(getattr(instance, "config", {}) or {})
    return type(instance), config, type(instance).__name__


def _build(cls: type, config: dict[str, Any], overrides: dict[str, Any]) -> Any:
    merged = {k: v for k, v in {**config, **overrides}.items() if not k.startswith("_")}
    if hasattr(cls, "from_config"):
        return cls.from_config(merged)
    return cls(**merged)


def _measure(x: torch.Tensor, law: LatentMixture, steps: int, evaluations: int, seconds: float) -> SchedulerRun:
    if not bool(torch.isfinite(x).all()):
        return SchedulerRun(steps, math.inf, math.inf, math.inf, None, None, evaluations, seconds=seconds)
    xs = x.detach().to(torch.float64).numpy()
    mean_z, variance_z = moment_z_scores(xs, law)
    tv = floor = None
    if law.ambient_dim in (1, 2):
        estimate = tv_binned(xs, law, bins=20)
        tv, floor = estimate.value, estimate.noise_floor
    return SchedulerRun(steps, mean_z, variance_z, w2_fitted_gaussian(xs, law), tv, floor, evaluations,
                        seconds=seconds)


def _run(prototype: Any, mixture: LatentMixture, oracle: FlowMixtureOracle, steps: int, samples: int, seed: int,
         eta: float, mu: float | None) -> SchedulerRun:
    """One run on a copy of ``prototype`` (a built scheduler, or the exception building it raised); whatever the
    scheduler raises is a failed run with its message (never a traceback)."""
    start = time.perf_counter()
    try:
        if isinstance(prototype, Exception):
            raise prototype
        sched = copy.deepcopy(prototype)  # some constructors are slow (KDPM2 runs set_timesteps(T) in __init__)
        x, law, evaluations = drive(sched, mixture, oracle, steps, samples, seed, eta, mu)
        x = torch.as_tensor(x)
        if tuple(x.shape) != (samples, mixture.ambient_dim):
            raise ValueError(f"prev_sample has shape {tuple(x.shape)}, expected {(samples, mixture.ambient_dim)}")
    except Exception as error:  # noqa: BLE001 - isolation: the scheduler's failure is a finding about it
        message = f"{type(error).__name__}: {error}".strip()
        return SchedulerRun(steps, math.nan, math.nan, math.nan, None, None, 0, error=message,
                            seconds=time.perf_counter() - start)
    return _measure(x, law, steps, evaluations, time.perf_counter() - start)


def _copy_or_raise(prototype: Any) -> Any:
    if isinstance(prototype, Exception):
        raise prototype
    return copy.deepcopy(prototype)


def _family_of(sched: Any) -> str | None:
    try:
        return detect_family(sched)
    except Exception:  # noqa: BLE001 - reported by the runs themselves
        return None


def _family(sched_cls: type, config: dict[str, Any], overrides: dict[str, Any]) -> str | None:
    try:
        return detect_family(_build(sched_cls, config, overrides))
    except Exception:  # noqa: BLE001 - reported by the runs themselves
        return None


def _default_settings(config: dict[str, Any], family: str | None) -> list[tuple[str, dict[str, Any]]]:
    return [("own config", {}), *candidate_settings(config, family or "vp")]


def parse_config_overrides(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; VALUE read as JSON when it parses (3.0, true, null, "x"), else as a string."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise InvalidArgumentError("--config", "KEY=VALUE (e.g. shift=3.0, use_dynamic_shifting=true)", repr(item))
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = {"True": True, "False": False, "None": None}.get(text, text)
        overrides[key.strip()] = value
    return overrides


def scheduler(target: Any, *, mixture: LatentMixture | None = None, steps: tuple[int, ...] = DEFAULT_STEPS,
              samples: int = 4000, seed: int = 0, eta: float = 0.0,
              settings: list[tuple[str, dict[str, Any]]] | None = None, config: dict[str, Any] | None = None,
              mu: float | None = None, search: bool = True, schedule: bool = True,
              strict_schedule: bool = False) -> SchedulerReport:
    """Validate a scheduler (class, instance, factory or "MODULE:ATTR") against an exact Gaussian-mixture target.

    ``config``: overrides applied to the scheduler's own configuration (``--config KEY=VALUE``): that is the
    configuration validated first ("own config") and the one the exit code is about. ``settings``: (label,
    overrides) pairs to run; by default the own configuration then, with ``search``, each knob its config offers
    (_scheduler_families.candidate_settings). ``mu``: set_timesteps' mu under use_dynamic_shifting (default
    FLUX_MU). ``schedule``: also check the schedule properties of each configuration (``strict_schedule``: a failed
    one of the own configuration sets exit code 1). Raises TargetError when the
    target cannot be loaded or built, OutOfScope when it has no exact model (the message says why).
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 100:
        raise InvalidArgumentError("samples", "an integer >= 100", repr(samples))
    step_counts = tuple(sorted(int(s) for s in steps))
    if not step_counts or step_counts[0] < 1:
        raise InvalidArgumentError("steps", "positive numbers of inference steps", repr(steps))
    mixture = default_target() if mixture is None else mixture
    if not isinstance(mixture, LatentMixture):
        raise InvalidArgumentError("mixture", "a LatentMixture", type(mixture).__name__)
    started = time.perf_counter()
    sched_cls, own, name = _scheduler_class_and_config(target)
    base = {**own, **(config or {})}
    train_steps = int(base.get("num_train_timesteps", 1000))
    if step_counts[-1] > train_steps:
        raise InvalidArgumentError("steps", f"at most num_train_timesteps = {train_steps}", repr(step_counts[-1]))
    family = _family(sched_cls, base, {})
    searched = settings is None and search
    if settings is None:
        settings = _default_settings(base, family) if search else [("own config", {})]
    if config:
        label = ", ".join(f"{k}={v}" for k, v in config.items())
        settings = [(f"own config + {label}" if s_label == "own config" else s_label, s) for s_label, s in settings]
    exact = torch.as_tensor(_exact_draws(mixture, samples, seed))
    report = SchedulerReport(name, samples, eta, w2_fitted_gaussian(exact, mixture), strict_schedule=strict_schedule)
    oracle = FlowMixtureOracle(mixture)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of a few thousand 2-D rows: threads only contend on a shared machine
    try:
        for label, overrides in settings:
            try:
                prototype: Any = _build(sched_cls, base, overrides)
            except Exception as error:  # noqa: BLE001 - a configuration the scheduler refuses is a failed check
                prototype = error
            # searched configurations run at the largest step count only (their verdict; the trend is the own one's)
            counts = step_counts
            if searched and report.configs:
                counts = (report.configs[0].ran or report.configs[0].runs)[-1:]
                counts = tuple(run.steps for run in counts)
            runs = [_run(prototype, mixture, oracle, s, samples, seed, eta, mu) for s in counts]
            merged = {k: v for k, v in {**base, **overrides}.items() if not k.startswith("_")}
            checks: list[ScheduleCheck] = []
            # configurations that change only the parameterisation or the solver share the own one's schedule
            if schedule and (not report.configs or not set(overrides) <= SCHEDULE_NEUTRAL):
                checks = schedule_checks(lambda p=prototype: _copy_or_raise(p), merged, mu)
            report.configs.append(SchedulerConfigResult(label, overrides, runs, checks,
                                                        None if isinstance(prototype, Exception)
                                                        else _family_of(prototype)))
    finally:
        torch.set_num_threads(threads)
    report.seconds = time.perf_counter() - started
    return report


def _exact_draws(mixture: LatentMixture, samples: int, seed: int) -> np.ndarray:
    return sample(mixture, samples, seed + 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE:ATTR",
                        help="a scheduler class, instance or factory, e.g. diffusers:DDPMScheduler")
    add_list_option(parser, "--steps", kind=int, default=list(DEFAULT_STEPS), metavar="N,N",
                    help=f"numbers of inference steps (default {','.join(map(str, DEFAULT_STEPS))})")
    parser.add_argument("--samples", type=int, default=4000, metavar="N", help="samples per run (default 4000)")
    parser.add_argument("--eta", type=float, default=0.0, help="eta passed to step() when it takes one (DDIM, TCD's "
                                                               "gamma; default 0)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default 0)")
    parser.add_argument("--config", action="append", metavar="KEY=VALUE", default=[],
                        help="override the scheduler's configuration (repeatable; VALUE as JSON: shift=3.0, "
                             "use_dynamic_shifting=true, final_sigmas_type=zero): the configuration validated first")
    parser.add_argument("--mu", type=float, default=None,
                        help=f"set_timesteps' mu under use_dynamic_shifting (default {FLUX_MU}, Flux at 4096 tokens)")
    parser.add_argument("--no-search", action="store_true",
                        help="validate only the (own or --config) configuration, not each knob the config offers")
    parser.add_argument("--strict-schedule", action="store_true",
                        help="exit 1 also when the own configuration breaks a schedule property")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny mode: steps {','.join(map(str, QUICK_STEPS))}, 500 samples (checks that it runs)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH ('-': stdout)")


def run(args: argparse.Namespace) -> int:
    try:
        steps = QUICK_STEPS if getattr(args, "quick", False) else tuple(args.steps)
        samples = 500 if getattr(args, "quick", False) else args.samples
        report = scheduler(args.target, steps=steps, samples=samples, seed=args.seed, eta=args.eta,
                           config=parse_config_overrides(getattr(args, "config", None)), mu=getattr(args, "mu", None),
                           search=not getattr(args, "no_search", False),
                           strict_schedule=getattr(args, "strict_schedule", False))
    except OutOfScope as error:
        print(f"ditcheck validate scheduler: out of scope: {error}", file=sys.stderr)
        return 2
    except (LoadError, InvalidArgumentError) as error:  # TargetError is a LoadError
        print(f"ditcheck validate scheduler: the target could not be used: {error}", file=sys.stderr)
        return 2
    emit(report, args.json)
    return report.exit_code
