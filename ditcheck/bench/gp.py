"""``ditcheck bench gp``: Gaussian-process sequences (GP2, GP3, GP4) and random-feature attention (RF1).

Prints, measured in one run on the CPU:

* GP2: relative error ||s^K - s*|| / ||s*|| of the unrolled gradient-descent transformer after K blocks, per
  decay class (exponential, squared-exponential, polynomial), next to the bound (1 - 1/kappa_t)^K, and the
  largest gap between the transformer and the reference iteration next to its derived rounding floor;
* GP3: banded kernels (|i - j| <= w) at t = 0.05: positive definite or not, and the banded score's error;
* GP4: a small DiT trained on GP sequences per decay class (``--steps`` Adam steps): learned score error vs
  the exact score over t, next to the independent-frames baseline, and the correlation between head-averaged
  attention by lag and gamma(lag) (all lags; lags >= 1) with the profile's contrast and the verdict of the GP4
  property (properties.gp.check_gp4_attention); ``--ablation`` adds a run with the position embedding zeroed;
* RF1: Monte Carlo error of the M-head Gram against the closed-form kernel with the fitted slope in M
  (claim -1/2), and ridge-regression learning curves for target degrees 0-3 with W0 = 0 vs W0 = b I.

``--plot PATH`` saves attention-by-lag against gamma(lag) per decay class. ``--quick`` runs a short version
(tiny DiTs, fewer heads and sizes) in well under a minute.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ditcheck.bounds import gp2_condition_upper, gp2_rate, gp2_rounding_floor
from ditcheck.gp.random_feature_layer import monte_carlo_kernel_error, ridge_learning_curve
from ditcheck.gp.training import DECAY_CLASSES, GPTrainingConfig, train_gp_dit
from ditcheck.gp.transformer import UnrolledGPTransformer
from ditcheck.properties.gp import check_gp4_attention
from ditcheck.properties.violation import PropertyViolation
from ditcheck.reference import gp
from ditcheck.reference.formats import FLOAT64

HELP = "GP2 unrolled transformer error vs depth, GP3 banding, GP4 trained-DiT attention vs kernel, RF1 kernel rate"

__all__ = ["QUICK_TRAINING", "GP2Row", "gp2_rows", "gp3_rows", "gp4_results", "rf1_rates", "rf1_curves", "save_plot",
           "add_arguments", "run"]

DEPTHS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class GP2Row:
    """One decay class: kappa_t, error and bound per depth K, worst transformer-vs-iteration gap and its floor."""

    kind: str
    kappa: float
    depths: tuple[int, ...]
    errors: tuple[float, ...]
    bounds: tuple[float, ...]
    gap: float
    floor: float


def gp2_rows(frames: int = 16, dim: int = 2, t: float = 0.5, depths: tuple[int, ...] = DEPTHS,
             sequences: int = 8, seed: int = 0) -> list[GP2Row]:
    """GP2 per decay class (ditcheck.gp.training.DECAY_CLASSES parameters), float64, 'one-hot' encoding."""
    sigma_matrix = GPTrainingConfig(dim=dim).sigma_matrix  # the spatial covariance GP4 trains on
    rows = []
    for kind, parameters in DECAY_CLASSES.items():
        gamma = gp.gamma_matrix(frames, kind, **parameters)
        x = gp.sample_gp(gamma, sigma_matrix, sequences, seed)
        model = UnrolledGPTransformer(gamma, sigma_matrix, max(depths), dtype=torch.float64)
        with torch.no_grad():
            iterates = model(torch.as_tensor(x), t, return_iterates=True).numpy()
        exact = gp.gp_score(x, t, gamma, sigma_matrix)
        kappa = float(gp2_condition_upper(t, gamma, sigma_matrix))
        norm = np.linalg.norm(exact)
        errors = tuple(float(np.linalg.norm(iterates[k] - exact) / norm) for k in depths)
        gaps = [float(np.linalg.norm(iterates[k] - gp.gradient_descent(x, t, gamma, sigma_matrix, k)) / norm)
                for k in depths]
        floor = float(2 * gp2_rounding_floor(max(depths), kappa, frames, dim, FLOAT64.unit_roundoff))
        rows.append(GP2Row(kind, kappa, tuple(depths), errors, tuple(float(gp2_rate(kappa, k)) for k in depths),
                           max(gaps), floor))
    return rows


def gp3_rows(frames: int = 16, widths: tuple[int, ...] = (1, 2, 3, 5), t: float = 0.05, seed: int = 0) -> list[tuple]:
    """GP3 per decay class and band half-width: (kind, width, status, lambda_min, kernel error, score error)."""
    rows = []
    for kind, parameters in DECAY_CLASSES.items():
        gamma = gp.gamma_matrix(frames, kind, **parameters)
        x = gp.sample_gp(gamma, np.eye(2), 16, seed)
        for width in widths:
            report = gp.banding_report(gamma, width, np.eye(2), t, x)
            rows.append((kind, width, report.status, report.lambda_min, report.kernel_relative_error,
                         report.score_relative_error))
    return rows


#: the `--quick` GP4 network and training run (GPTrainingConfig overrides): ~1-2 s per decay class
QUICK_TRAINING: dict[str, Any] = {"frames": 8, "hidden_size": 32, "depth": 1, "num_heads": 2, "steps": 150,
                                  "batch": 64, "eval_sequences": 128, "learning_rate": 3e-3}


def gp4_results(quick: bool, steps: int | None, seed: int, ablation: bool) -> list[Any]:
    """One trained DiT per decay class (and the no-position ablation on the exponential kernel if asked)."""
    size = dict(QUICK_TRAINING) if quick else {}
    if steps is not None:
        size["steps"] = steps
    configs = [GPTrainingConfig.for_kind(kind, seed=seed, **size) for kind in DECAY_CLASSES]
    if ablation:
        configs.append(GPTrainingConfig.for_kind("exponential", seed=seed, position_embedding=False, **size))
    return [train_gp_dit(config) for config in configs]


def rf1_rates(quick: bool, seed: int) -> list[tuple[float, tuple[int, ...], np.ndarray, float]]:
    """(b, head counts, RMS relative Frobenius Gram error per M, fitted slope) for W0 = 0 and W0 = I."""
    heads = (64, 256, 1024, 4096) if quick else (64, 256, 1024, 4096, 16384)
    out = []
    for mean_scale in (0.0, 1.0):
        errors, slope = monte_carlo_kernel_error(heads, budget=2**14 if quick else 2**17, mean_scale=mean_scale,
                                                 seed=seed)
        out.append((mean_scale, heads, errors, slope))
    return out


def rf1_curves(quick: bool, seed: int, mean_scales: tuple[float, ...] = (0.0, 1.0)) -> list[Any]:
    """Ridge learning curves for target degrees 0..3 and each W0 = b I."""
    sizes = (32, 128, 512) if quick else (32, 64, 128, 256, 512, 1024)
    heads = 128 if quick else 512
    return [ridge_learning_curve(degree, b, sizes, heads=heads, seed=seed)
            for degree in range(4) for b in mean_scales]


def save_plot(results: list[Any], path: str) -> None:
    """Attention by lag (normalised to its lag-0 value) against gamma(lag), one panel per run."""
    # lazy: matplotlib takes about 1 s to import, paid only when a figure is written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    figure, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.2), squeeze=False)
    for axis, result in zip(axes[0], results):
        lags = np.arange(result.attention_profile.size)
        axis.plot(lags, result.gamma_profile, "k--", label="gamma(lag)")
        axis.plot(lags, result.attention_profile / result.attention_profile[0], "o-",
                  label="attention(lag) / attention(0)")
        name = result.config.kind + ("" if result.config.position_embedding else " (no positions)")
        axis.set_title(f"{name}\nr = {result.correlation:.3f} (lags >= 1: {result.correlation_off_diagonal:.3f})",
                       fontsize=9)
        axis.set_xlabel("|i - j|")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _gp4_verdict(result: Any) -> str:
    try:
        check_gp4_attention(result)
    except PropertyViolation as violation:
        return "fails: " + ("flat" if "contrast" in violation.context else "low r")
    return "holds"


def _print_tables(gp2: list[GP2Row], gp3: list[tuple], gp4: list[Any], rates: list, curves: list, t: float) -> None:
    console = Console(width=max(Console().width, 170))
    table = Table(title=f"GP2: unrolled gradient descent at t = {t}: ||s^K - s*|| / ||s*|| and the bound (1 - 1/kappa_t)^K")
    table.add_column("K", justify="right")
    for row in gp2:
        table.add_column(f"{row.kind}\nerror", justify="right")
        table.add_column(f"kappa_t = {row.kappa:.2f}\nbound", justify="right")
    for index, k in enumerate(gp2[0].depths):
        table.add_row(str(k), *(f"{value:.2e}" for row in gp2 for value in (row.errors[index], row.bounds[index])))
    table.add_row("", *(text for row in gp2 for text in (f"|T - iter| {row.gap:.1e}", f"floor {row.floor:.1e}")))
    console.print(table)
    print("|T - iter|: largest gap between the transformer's block outputs and the reference iteration (relative to\n"
          "||s*||), next to twice the derived rounding floor (ditcheck.bounds.gp2_rounding_floor) at the largest K.")

    table = Table(title="GP3: banded kernels |i - j| <= w at t = 0.05 (H = 16, Sigma = I)")
    for column in ("kernel", "w", "status", "lambda_min", "||Gamma_w - Gamma|| / ||Gamma||", "score error"):
        table.add_column(column, justify="left" if column in ("kernel", "status") else "right")
    for kind, width, status, lowest, kernel_error, score_error in gp3:
        table.add_row(kind, str(width), status, f"{lowest:.3g}", f"{kernel_error:.3g}",
                      "n/a (A_t not PD)" if score_error is None else f"{score_error:.3g}")
    console.print(table)

    table = Table(title="GP4: small DiT trained on GP sequences (score error vs exact; baseline: independent frames)")
    table.add_column("kernel")
    for t_eval in gp4[0].eval_times:
        table.add_column(f"t={t_eval}", justify="right")
    for column in ("r (all lags)", "r (lags >= 1)", "contrast", "GP4", "loss first/last", "steps", "seconds"):
        table.add_column(column, justify="right")
    for result in gp4:
        name = result.config.kind + ("" if result.config.position_embedding else "\n(no positions)")
        table.add_row(name, *(f"{e:.3f}\n({b:.3f})" for e, b in zip(result.score_errors, result.baseline_errors)),
                      f"{result.correlation:.3f}", f"{result.correlation_off_diagonal:.3f}", f"{result.contrast:.2f}",
                      _gp4_verdict(result), f"{np.mean(result.losses[:20]):.3f}/{np.mean(result.losses[-20:]):.3f}",
                      str(result.config.steps), f"{result.seconds:.0f}")
    console.print(table)
    print("GP4: properties.gp.check_gp4_attention at its defaults (r over lags >= 1 at least 0.8, contrast at\n"
          "least 0.5; calibrated on the tiny exponential-kernel run of the tests, the paper states no constant).")

    table = Table(title="RF1: Monte Carlo Gram error ||K_M - K||_F / ||K||_F (RMS over draws) and fitted slope in M")
    table.add_column("W0")
    for m in rates[0][1]:
        table.add_column(f"M={m}", justify="right")
    table.add_column("slope (claim -0.5)", justify="right")
    for mean_scale, _, errors, slope in rates:
        table.add_row("0" if mean_scale == 0 else f"{mean_scale:g} I", *(f"{e:.2e}" for e in errors), f"{slope:.3f}")
    console.print(table)

    table = Table(title="RF1: ridge regression on random-feature attention, relative test error vs n")
    table.add_column("degree")
    table.add_column("W0")
    for n in curves[0].sizes:
        table.add_column(f"n={n}", justify="right")
    for curve in curves:
        table.add_row(str(curve.degree), "0" if curve.mean_scale == 0 else f"{curve.mean_scale:g} I",
                      *(f"{e:.3g}" for e in curve.test_errors))
    console.print(table)


def _number(kind: type, low: float, strict: bool) -> Any:
    """argparse type: a finite ``kind`` number above ``low`` (at least ``low`` unless strict); usage error otherwise."""
    def parse(text: str) -> Any:
        value = kind(text)
        if not math.isfinite(value) or not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"expected a finite number {'>' if strict else '>='} {low}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="short run: tiny DiTs (150 steps), fewer heads and sizes")
    parser.add_argument("--steps", type=_number(int, 0, strict=False), default=None,
                        help="Adam steps per trained DiT (default 600, or 150 with --quick)")
    parser.add_argument("--time", type=_number(float, 0.0, strict=True), default=0.5, help="diffusion time t of the GP2 table (default 0.5)")
    parser.add_argument("--ablation", action="store_true",
                        help="also train a DiT with the position embedding zeroed (exponential kernel)")
    parser.add_argument("--plot", metavar="PATH", default=None,
                        help="save attention-by-lag vs gamma(lag) per decay class to PATH")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of data, weights and random features (default 0)")
    parser.add_argument("--threads", type=_number(int, 1, strict=False), default=1,
                        help="torch intra-op threads (default 1: the models are tiny, threads only contend)")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    gp2 = gp2_rows(t=args.time, depths=DEPTHS[:8] if args.quick else DEPTHS, seed=args.seed)
    gp3 = gp3_rows(seed=args.seed)
    gp4 = gp4_results(args.quick, args.steps, args.seed, args.ablation)
    rates = rf1_rates(args.quick, args.seed)
    curves = rf1_curves(args.quick, args.seed)
    _print_tables(gp2, gp3, gp4, rates, curves, args.time)
    if args.plot:
        save_plot(gp4, args.plot)
        print(f"attention-vs-kernel plot saved to {args.plot}")
    print(f"total {time.perf_counter() - start:.0f} s on {args.threads} thread(s); errors are relative 2-norms")
    return 0
