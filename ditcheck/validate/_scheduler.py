"""Validate a diffusers-style scheduler by driving its own step loop with the exact noise prediction of a known target.

  ditcheck validate scheduler MODULE:ATTR [--steps N ...] [--samples N] [--eta E] [--seed S] [--json PATH]

ATTR is a scheduler class (e.g. ``diffusers:DDPMScheduler``, ``diffusers:DDIMScheduler``), an instance, or a
zero-argument factory. The model is exact: for the Gaussian-mixture target p_0 the scheduler's own
alphas_cumprod define x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z, and the eps-prediction handed to
``scheduler.step`` is eps*(x, t) = -sqrt(1 - abar_t) grad log p_t(x) in closed form. Whatever error remains in
the final samples is the scheduler's: its discretisation (shrinking as steps grow) and its settings.

Each configuration (the scheduler's own config, then clip_sample=False, then each timestep_spacing) runs at
every step count. Reported per run: the largest |z|-score of the per-coordinate mean and variance against the
target's exact moments (the variance's standard error uses the exact fourth central moment), W2 between
fitted Gaussians and binned TV (2-D, with its noise floor). A configuration is BIASED when at its largest step
count some |z| > 5 (false alarm about 6e-7 per moment under exact sampling, Bonferroni over the 2 D moments
checked). Exit code 0: the scheduler's own configuration is unbiased; 1: it is biased (the report names the
settings that remove the bias); 2: the target could not be loaded or stepped.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ditcheck.diffusion.metrics import mixture_moments, tv_binned, w2_fitted_gaussian
from ditcheck.diffusion.oracles import _mixture_log_terms
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.mixtures import LatentMixture, gaussian_mixture

from ditcheck.loader import LoadError, load
from ditcheck.options import add_list_option

from ._target import TargetError
from .report import emit

HELP = "drive a diffusers scheduler's step loop with exact scores of a Gaussian mixture and check the samples"

__all__ = ["HELP", "Z_THRESHOLD", "default_target", "exact_eps", "SchedulerRun", "SchedulerConfigResult",
           "SchedulerReport", "scheduler", "add_arguments", "run"]

Z_THRESHOLD = 5.0
DEFAULT_STEPS = (10, 50, 250, 1000)


def default_target() -> LatentMixture:
    """A 2-D two-component mixture whose mass reaches beyond [-1, 1] (image-range clipping then matters)."""
    return gaussian_mixture([0.4, 0.6], [[-1.5, 0.5], [1.2, -0.8]],
                            [[[0.3, 0.1], [0.1, 0.2]], [[0.25, -0.05], [-0.05, 0.4]]])


def exact_eps(mixture: LatentMixture, x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """eps*(x) = -sqrt(1 - abar) grad log p(x), p = sum_k w_k N(sqrt(abar) m_k, abar S_k + (1 - abar) I) (exact; float64)."""
    weights = mixture.weights / mixture.weights.sum()
    b = mixture.basis
    means = torch.as_tensor(mixture.means @ b.T, dtype=torch.float64)
    covariances = torch.as_tensor(b @ mixture.covariances @ b.T, dtype=torch.float64)
    alpha = math.sqrt(alpha_bar)
    sigma2 = 1.0 - alpha_bar
    eye = torch.eye(means.shape[1], dtype=torch.float64)
    _, score = _mixture_log_terms(x.to(torch.float64), torch.as_tensor(np.log(weights)), (alpha * means)[None],
                                  (alpha_bar * covariances + sigma2 * eye)[None])
    return (-math.sqrt(sigma2) * score).to(x.dtype)


def _fourth_central_moments(mixture: LatentMixture, mean: np.ndarray) -> np.ndarray:
    """Per coordinate E[(X_j - mean_j)^4] = sum_k w_k (d^4 + 6 d^2 s^2 + 3 s^4), d = m_kj - mean_j, s^2 = S_kjj."""
    weights = mixture.weights / mixture.weights.sum()
    b = mixture.basis
    d = mixture.means @ b.T - mean[None]
    s2 = np.diagonal(b @ mixture.covariances @ b.T, axis1=-2, axis2=-1)
    return weights @ (d**4 + 6 * d * d * s2 + 3 * s2 * s2)


@dataclass(frozen=True)
class SchedulerRun:
    """One configuration at one number of inference steps."""

    steps: int
    mean_z: float  # max_j |sample mean_j - mean_j| / (sd_j / sqrt(n))
    variance_z: float  # max_j |sample var_j - var_j| / sqrt((mu4_j - var_j^2) / n)
    w2: float  # W2(fitted Gaussian, target moments)
    tv: float | None  # binned TV (2-D and 1-D targets)
    tv_noise_floor: float | None
    evaluations: int

    @property
    def biased(self) -> bool:
        return max(self.mean_z, self.variance_z) > Z_THRESHOLD


@dataclass(frozen=True)
class SchedulerConfigResult:
    """All step counts of one configuration (``overrides`` applied to the scheduler's own config)."""

    label: str
    overrides: dict[str, Any]
    runs: list[SchedulerRun]

    @property
    def biased(self) -> bool:
        """Biased at the largest step count (discretisation error has had the most room to vanish)."""
        return self.runs[-1].biased


@dataclass
class SchedulerReport:
    """Everything ``scheduler`` measured; ``str(report)`` is the table the CLI prints."""

    scheduler: str
    samples: int
    eta: float
    exact_floor_w2: float  # W2 of fitted Gaussians for n exact draws: the Monte Carlo floor of the w2 column
    configs: list[SchedulerConfigResult] = field(default_factory=list)

    @property
    def own_config_biased(self) -> bool:
        return self.configs[0].biased

    @property
    def exit_code(self) -> int:
        return 1 if self.own_config_biased else 0

    def findings(self) -> list[str]:
        lines = []
        own = self.configs[0]
        if own.biased:
            fixes = [c.label for c in self.configs[1:] if not c.biased]
            lines.append(f"{self.scheduler} with its own configuration is BIASED at {own.runs[-1].steps} steps "
                         f"even with the exact noise prediction (mean |z| {own.runs[-1].mean_z:.1f}, variance |z| "
                         f"{own.runs[-1].variance_z:.1f}); unbiased with: {', '.join(fixes) or 'none of those tried'}.")
        else:
            lines.append(f"{self.scheduler} with its own configuration reaches the target at {own.runs[-1].steps} steps.")
        for config in self.configs[1:]:
            if config.biased:
                lines.append(f"setting {config.label} biases it (at {config.runs[-1].steps} steps).")
        return lines

    def to_json(self) -> str:
        payload = asdict(self)
        payload["findings"] = self.findings()
        return json.dumps(payload, indent=2, default=float)

    def __str__(self) -> str:
        from io import StringIO

        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"ditcheck validate scheduler {self.scheduler} (exact eps, n = {self.samples}, eta = {self.eta})")
        for column in ("configuration", "steps", "mean |z|", "var |z|", "W2 fitted", "TV binned", "TV floor", "verdict"):
            table.add_column(column, justify="left" if column == "configuration" else "right")
        for config in self.configs:
            for run in config.runs:
                table.add_row(config.label, str(run.steps), f"{run.mean_z:.1f}", f"{run.variance_z:.1f}",
                              f"{run.w2:.4f}", "" if run.tv is None else f"{run.tv:.4f}",
                              "" if run.tv_noise_floor is None else f"{run.tv_noise_floor:.4f}",
                              "BIASED" if run.biased else "ok")
        buffer = StringIO()
        Console(file=buffer, width=120, force_terminal=False).print(table)
        notes = (f"|z| > {Z_THRESHOLD:g} marks a moment off the exact target (false alarm ~6e-7 each); the W2 floor of "
                 f"{self.samples} exact draws is {self.exact_floor_w2:.4f}; the verdict of a configuration is its "
                 "largest step count.")
        return buffer.getvalue() + notes + "\n" + "\n".join(self.findings())


def _scheduler_class_and_config(target: Any) -> tuple[type, dict[str, Any], str]:
    if isinstance(target, str):
        target = load(target)
    if isinstance(target, type):
        instance = target()
    elif hasattr(target, "step") and hasattr(target, "set_timesteps"):
        instance = target
    elif callable(target):
        instance = target()
    else:
        raise TargetError("target", "a scheduler class, instance or zero-argument factory", type(target).__name__)
    if not (hasattr(instance, "step") and hasattr(instance, "set_timesteps") and hasattr(instance, "alphas_cumprod")):
        raise TargetError("target", "a diffusers-style scheduler (step, set_timesteps, alphas_cumprod)",
                          type(instance).__name__)
    config = dict(getattr(instance, "config", {}))
    return type(instance), config, type(instance).__name__


def _build(cls: type, config: dict[str, Any], overrides: dict[str, Any]) -> Any:
    merged = {k: v for k, v in {**config, **overrides}.items() if not k.startswith("_")}
    if hasattr(cls, "from_config"):
        return cls.from_config(merged)
    return cls(**merged)


def _sample(sched: Any, mixture: LatentMixture, steps: int, samples: int, seed: int, eta: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    sched.set_timesteps(steps)
    alphas_cumprod = sched.alphas_cumprod.to(torch.float64)
    x = torch.randn((samples, mixture.ambient_dim), generator=generator, dtype=torch.float64)
    x = x * float(getattr(sched, "init_noise_sigma", 1.0))
    parameters = inspect.signature(sched.step).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    step_kwargs: dict[str, Any] = {"generator": generator} if "generator" in parameters or any_keyword else {}
    if "eta" in parameters:  # named only: a **kwargs step would silently ignore it
        step_kwargs["eta"] = eta
    for t in sched.timesteps:
        model_input = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        eps = exact_eps(mixture, model_input, float(alphas_cumprod[int(t)]))
        x = sched.step(eps, t, x, **step_kwargs).prev_sample
    return x


def _run(sched_cls: type, config: dict[str, Any], overrides: dict[str, Any], mixture: LatentMixture,
         steps: int, samples: int, seed: int, eta: float) -> SchedulerRun:
    try:
        x = _sample(_build(sched_cls, config, overrides), mixture, steps, samples, seed, eta)
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
        # the scheduler's own code failed (exit code 2), not a finding about its distribution
        raise TargetError("target", f"a scheduler that builds with {overrides} and steps {steps} times",
                          f"{type(error).__name__}: {error}") from error
    if not bool(torch.isfinite(x).all()):
        return SchedulerRun(steps, math.inf, math.inf, math.inf, None, None, steps)
    xs = x.numpy()
    mean, covariance = mixture_moments(mixture)
    variance = np.diag(covariance)
    mu4 = _fourth_central_moments(mixture, mean)
    n = xs.shape[0]
    mean_z = float(np.max(np.abs(xs.mean(0) - mean) / np.sqrt(variance / n)))
    sample_variance = ((xs - mean) ** 2).mean(0)  # about the exact mean: unbiased, variance (mu4 - var^2)/n
    variance_z = float(np.max(np.abs(sample_variance - variance) / np.sqrt((mu4 - variance**2) / n)))
    tv = floor = None
    if mixture.ambient_dim in (1, 2):
        estimate = tv_binned(xs, mixture, bins=20)
        tv, floor = estimate.value, estimate.noise_floor
    return SchedulerRun(steps, mean_z, variance_z, w2_fitted_gaussian(xs, mixture), tv, floor, steps)


def _default_settings(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    settings: list[tuple[str, dict[str, Any]]] = [("own config", {})]
    base: dict[str, Any] = {}
    if config.get("clip_sample"):
        base = {"clip_sample": False}
        settings.append(("clip_sample=False", dict(base)))
    if "timestep_spacing" in config:
        for spacing in ("leading", "linspace", "trailing"):
            if spacing != config["timestep_spacing"]:  # the own spacing is already in the rows above
                label = ", ".join([*(f"{k}={v}" for k, v in base.items()), f"timestep_spacing={spacing}"])
                settings.append((label, {**base, "timestep_spacing": spacing}))
    return settings


def scheduler(target: Any, *, mixture: LatentMixture | None = None, steps: tuple[int, ...] = DEFAULT_STEPS,
              samples: int = 4000, seed: int = 0, eta: float = 0.0,
              settings: list[tuple[str, dict[str, Any]]] | None = None) -> SchedulerReport:
    """Validate a scheduler (class, instance, factory or "MODULE:ATTR") against an exact Gaussian-mixture target.

    ``settings``: (label, config overrides) pairs; by default the scheduler's own config, clip_sample=False
    (if clipping is on) and each timestep_spacing. ``eta`` is passed to step() when it accepts one (DDIM).
    Raises TargetError when the target cannot be loaded or is not a scheduler.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 100:
        raise InvalidArgumentError("samples", "an integer >= 100", repr(samples))
    step_counts = tuple(sorted(int(s) for s in steps))
    if not step_counts or step_counts[0] < 1:
        raise InvalidArgumentError("steps", "positive numbers of inference steps", repr(steps))
    mixture = default_target() if mixture is None else mixture
    if not isinstance(mixture, LatentMixture):
        raise InvalidArgumentError("mixture", "a LatentMixture", type(mixture).__name__)
    sched_cls, config, name = _scheduler_class_and_config(target)
    train_steps = int(config.get("num_train_timesteps", 1000))
    if step_counts[-1] > train_steps:
        raise InvalidArgumentError("steps", f"at most num_train_timesteps = {train_steps}", repr(step_counts[-1]))
    exact = torch.as_tensor(_exact_draws(mixture, samples, seed))
    report = SchedulerReport(name, samples, eta, w2_fitted_gaussian(exact, mixture))
    for label, overrides in (settings if settings is not None else _default_settings(config)):
        runs = [_run(sched_cls, config, overrides, mixture, s, samples, seed, eta) for s in step_counts]
        report.configs.append(SchedulerConfigResult(label, overrides, runs))
    return report


def _exact_draws(mixture: LatentMixture, samples: int, seed: int) -> np.ndarray:
    from ditcheck.reference.mixtures import sample

    return sample(mixture, samples, seed + 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE:ATTR",
                        help="a scheduler class, instance or factory, e.g. diffusers:DDPMScheduler")
    add_list_option(parser, "--steps", kind=int, default=list(DEFAULT_STEPS), metavar="N,N",
                    help=f"numbers of inference steps (default {','.join(map(str, DEFAULT_STEPS))})")
    parser.add_argument("--samples", type=int, default=4000, metavar="N", help="samples per run (default 4000)")
    parser.add_argument("--eta", type=float, default=0.0, help="eta passed to step() when it takes one (DDIM; default 0)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default 0)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH ('-': stdout)")


def run(args: argparse.Namespace) -> int:
    try:
        report = scheduler(args.target, steps=tuple(args.steps), samples=args.samples, seed=args.seed, eta=args.eta)
    except LoadError as error:  # TargetError is a LoadError
        print(f"ditcheck validate scheduler: the target could not be used: {error}", file=sys.stderr)
        return 2
    emit(report, args.json)
    return report.exit_code
