"""Registry entries for latent DiTs and conditional diffusion: LD1-LD5, CF1-CF4 (docs/claims.md, latent DiTs and conditional diffusion).

Sources: Hu, Wu, Li, Song, Liu, "On statistical rates and provably efficient criteria of latent diffusion
transformers (DiTs)", NeurIPS 2024 (arXiv 2407.01079); Fu, Yang, Wang, Chen, "Unveil conditional diffusion
models with classifier-free guidance: a sharp statistical theory" (arXiv 2403.11968).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ditcheck.properties import conditional
from ditcheck.properties import mixtures as mix
from ditcheck.properties import early_stopping, recovery
from ditcheck.properties import samplers as smp
from ditcheck.properties import torch_dit
from ditcheck.properties.measurement import RateSeries
from ditcheck.reference.mixtures import LatentMixture

from hypothesis import strategies as st

from .registry import Claim, Mode, budget

__all__ = ["CLAIMS", "ld3_sizes", "ld4_sizes", "cf4_exponents", "cf3_rates", "CF3_TIMES", "CF3_JUMP_TARGETS"]

HU = "Hu, Wu, Li, Song, Liu, NeurIPS 2024 (arXiv 2407.01079)"
FU = "Fu, Yang, Wang, Chen 2024 (arXiv 2403.11968)"


# ----------------------------------------------------------------------------------------
# LD1, LD2


def _mixture_grid(mode: Mode) -> list[mix.MixtureCase]:
    """Near-extremal latent mixtures: tiny and large t (sigma^2 -> 0 amplifies x/sigma^2), tails, d0 = D,
    ill-conditioned and far-apart components, ddpm's first and last steps, per-point times."""
    spec = mix.MixtureSpec
    cases = [
        mix.MixtureCase(spec(6, 2, 3, 1, 2, mean_scale=3.0, condition=100.0), 4, 3, "ou-half", 0.01, spread=3.0),
        mix.MixtureCase(spec(6, 3, 2, 4, 5), 4, 6, "ou-half", 8.0),
        mix.MixtureCase(spec(3, 3, 3, 7, 8, condition=100.0), 4, 9, "ou-unit", 0.005, spread=3.0),
        mix.MixtureCase(spec(5, 1, 1, 10, 11), 4, 12, "ddpm", 1.0),
    ]
    if mode != "quick":
        cases += [
            mix.MixtureCase(spec(6, 2, 3, 13, 14, mean_scale=3.0), 4, 15, "ddpm", 999.0, spread=3.0),
            mix.MixtureCase(spec(4, 2, 2, 16, 17, condition=100.0), 4, 18, "vp-linear", 0.01, per_point_times=True),
            mix.MixtureCase(spec(1, 1, 3, 19, 20, mean_scale=3.0), 4, 21, "ou-half", 0.02, spread=3.0),
            mix.MixtureCase(spec(6, 3, 3, 22, 23, mean_scale=0.5, condition=100.0), 4, 24, "ou-unit", 4.0,
                             per_point_times=True),
        ]
    return cases


LD1 = Claim(
    id="LD1",
    statement="grad log p_t(x) = B grad log p^h_t(B^T x) - (I - B B^T) x / sigma_t^2 (latent Gaussian mixtures, "
              "float64 vs closed form)",
    source=f"{HU}, sec. 3 (score decomposition)",
    kind="exact",
    bound="properties.mixtures.mixture_tolerance (a-priori float64 rounding bound)",
    measure=mix.measure_ld1,
    strategy=mix.mixture_cases,
    grid=_mixture_grid,
    examples=budget(60, 10000, 50000),
    notes="observed: max_i |LD1 sum - score|_i / max |score| at the worst point; limit: the point's a-priori "
          "rounding tolerance on the same scale. Ball-arithmetic (arb) overlap is checked by the test suite "
          "(tests/test_mixtures.py), not here.",
)


def _ld2_grid(mode: Mode) -> list[torch_dit.TorchLD2Case]:
    return [torch_dit.TorchLD2Case(case, seed) for seed, case in enumerate(_mixture_grid(mode))
            if case.spec.latent <= 3]


LD2 = Claim(
    id="LD2",
    statement="s(x,t) = W_B f(W_B^T x, t)/sigma_t^2 - x/sigma_t^2 with W_B = B, f = q is the true score; "
              "||f - q|| = delta gives score error exactly delta/sigma_t^2 (ditcheck's torch LatentScoreNetwork)",
    source=f"{HU}, sec. 3 (score-network form)",
    kind="exact",
    bound="float64 rounding: properties.mixtures.mixture_tolerance; 4 (D + d0) u (||f|| + ||q|| + 2||x||)",
    measure=torch_dit.measure_torch_ld2,
    strategy=torch_dit.torch_ld2_cases,
    grid=_ld2_grid,
    examples=budget(20, 3000, 15000),
    notes="Tests ditcheck.models.dit.LatentScoreNetwork (torch, float64) against the reference: with f the exact q "
          "of a latent mixture its output must be the closed-form score, and with f a random-weight DiT "
          "sigma^2 ||s_f - s_q|| must equal ||f - q|| pointwise. The worse of the two relative errors is "
          "reported; forms give both ratios to their tolerances.",
)


# ----------------------------------------------------------------------------------------
# LD3, LD4: not checkable, tabulated


LD3_EPS = (0.5, 0.1, 0.01)
LD3_DEPTHS = (1, 2, 4, 8)


def ld3_sizes() -> list[dict[str, Any]]:
    """Implied transformer sizes of LD3 for eps in LD3_EPS, L in LD3_DEPTHS: K ~ eps^(-2L) blocks, weights ~ eps^(-4L)
    (unstated constants taken as 1, so these are lower orders of magnitude, not sizes)."""
    rows = []
    for eps in LD3_EPS:
        for depth in LD3_DEPTHS:
            rows.append({"eps": eps, "L": depth, "log10 blocks K ~ eps^(-2L)": -2 * depth * math.log10(eps),
                         "log10 weight norm ~ eps^(-4L)": -4 * depth * math.log10(eps), "vacuous": True})
    return rows


LD3 = Claim(
    id="LD3",
    statement="There is a transformer (2 heads, head size 1, FF width 4) with L2 score error <= eps sqrt(d0)/sigma_t, "
              "with K = O(eps^(-2L)) blocks and weight norms ~ eps^(-4L)",
    source=f"{HU}, Thm 3.1 (score approximation)",
    kind="not checkable",
    reason="An existence statement: it names no construction to run, and the sizes it implies (K = O(eps^(-2L)) "
           "blocks, weight norms eps^(-4L), constants unstated) are astronomically large for any useful eps, so "
           "no finite experiment can confirm or refute it. The table gives the implied orders (constants = 1): "
           "vacuous.",
    illustrate=ld3_sizes,
)


LD4_CASES = ((0.5, 1), (0.5, 2), (0.25, 1), (0.1, 1), (0.1, 2), (0.01, 1))


def ld4_sizes() -> list[dict[str, Any]]:
    """log10 of LD4's first-term constant 2^((1/eps)^(2L)), and of the n at which n^(-1/3) brings that term to eps."""
    rows = []
    for eps, depth in LD4_CASES:
        exponent = (1 / eps) ** (2 * depth)  # log2 of the constant
        log10_constant = exponent * math.log10(2)
        # 2^E n^(-1/3) <= eps  <=>  n >= (2^E / eps)^3
        rows.append({"eps": eps, "L": depth, "(1/eps)^(2L)": exponent, "log10 2^((1/eps)^(2L))": log10_constant,
                     "log10 n needed for that term <= eps": 3 * (log10_constant - math.log10(eps))})
    return rows


LD4 = Claim(
    id="LD4",
    statement="Score-estimation error O~(2^((1/eps)^(2L)) n^(-1/3)/(T0 T) + n^(-1/3)/(T0 T) + 1/(T0 T eps^2))",
    source=f"{HU}, Thm 3.2 (sample complexity)",
    kind="not checkable",
    reason="Not falsifiable: the constant 2^((1/eps)^(2L)) exceeds 10^30 already at eps = 0.1, L = 1 (10^3010 at "
           "L = 2), so the bound is vacuous at every sample size that exists; the n^(-1/3) part alone could only be "
           "compared with an empirical slope of score error vs n over models trained at many n, which ditcheck "
           "does not train (it would be reported as consistent or not, never asserted).",
    illustrate=ld4_sizes,
)


# ----------------------------------------------------------------------------------------
# LD5


def _ld5_grid(mode: Mode) -> list[smp.LD5Case]:
    """Near-extremal: T0 + mu close to 1 (the bound's edge), tiny T0, few and many steps, T just above 1 and large.

    observed/bound peaks near 1/e ~ 0.37 at small T0 and T0 + mu near 1 (T = 11.906, T0 = 1e-3, K = 12 found
    by the search): the bound is loose by about e, but v/(T0 + mu) itself reaches 1.006 there, so a
    constant 1 in place of e would not do.
    """
    case = smp.LD5Case
    cases = [case(11.906, 1e-3, 12), case(6.0, 1e-4, 8), case(12.0, 1e-3, 20), case(1.01, 1e-3, 2),
             case(2.0, 1e-3, 5), case(1.01, 0.98, 2), case(1.99, 1e-3, 2), case(1.5, 1e-3, 3), case(5.0, 0.9, 41)]
    if mode != "quick":
        cases += [case(T, T0, K) for T in (1.01, 3.0, 12.0) for T0 in (1e-3, 1e-2, 0.3, 0.9)
                  for K in (1, 2, 5, 50, 2000) if (T - T0) / K <= 1 - T0]
    return cases


LD5 = Claim(
    id="LD5",
    statement="Discretised orthogonal reverse SDE dy = (1/2 - 1/sigma^2(T - k mu)) y dt + dB from N(0, I): final "
              "variance v <= e (T0 + mu) for T > 1, T0 + mu <= 1",
    source=f"{HU}, Lemma on the orthogonal component (docs/claims.md#ld5)",
    kind="bound",
    bound="ditcheck.bounds.ld5_bound",
    measure=smp.measure_ld5_bound,
    strategy=smp.ld5_cases,
    grid=_ld5_grid,
    examples=budget(40, 4000, 20000),
    notes="observed: bounds.ld5_orthogonal_variance (the recursion v_{k+1} = v_k (1 + mu(1/2 - 1/sigma_k^2))^2 + mu, "
          "v_0 = 1) minus a 1e-12 relative rounding allowance; the sampler's agreement with the recursion is "
          "tested separately (check_ld5_sampler, chi-square).",
)


# ----------------------------------------------------------------------------------------
# LD9


def _ld9_grid(mode: Mode) -> list[recovery.RecoveryCase]:
    """n = d0 (the fewest samples that can span the subspace), ill-conditioned latents (sigma_d0(X) small), d0 = D."""
    case = recovery.RecoveryCase
    cases = [case(8, 3, 3, 1), case(8, 3, 3, 2, 1, 1e5), case(24, 12, 12, 3, 2, 1e3), case(2, 1, 2, 4, 1, 1.0),
             case(6, 6, 6, 5), case(16, 4, 1000, 6, 3, 1e5)]
    if mode != "quick":
        cases += [case(D, d0, n, 10 + D + d0 + n, 2, cond) for D, d0 in ((4, 1), (12, 5), (24, 23))
                  for n in (d0, 2 * d0, 200) for cond in (1.0, 1e4)]
    return cases


LD9 = Claim(
    id="LD9",
    statement="Distribution recovery: the learned subspace converges to the data's, ||W_B W_B^T - B B^T|| -> 0 at a rate "
              "in n (and the latent law in TV); checked for the W_B that minimises the orthogonal part of the "
              "empirical denoising loss from n samples of x = B h: exact (to rounding) for every n >= d0",
    source=f"{HU}, sec. 3, corollary on distribution recovery (subspace and latent TV)",
    kind="exact",
    bound="properties.recovery.subspace_error_bound (Wedin's sin-theta bound on float64 rounding and the SVD's "
          "backward error)",
    measure=recovery.measure_subspace_recovery,
    strategy=recovery.recovery_cases,
    grid=_ld9_grid,
    examples=budget(20, 2000, 10000),
    notes="What is checkable: with x = B h exactly (the paper's assumption) and h with a density, the sample matrix has "
          "rank d0 once n >= d0, so the subspace that minimises sum ||(I - W W^T) x_i||^2 (the part of the LD2 "
          "network's denoising loss that f cannot reach) is span(B) exactly: its error is rounding, "
          "at every n >= d0, so the claimed rate in n holds trivially (no rate to fit). Observed = "
          "||W W^T - B B^T||_2 against the float64 bound. The corollary's latent TV bound rests on the trained "
          "score's error (LD4's double-exponential constant): not checkable here; its subspace half is what this "
          "row checks. Planted: centring the samples before the SVD (PCA instead of the uncentred second moment: "
          "rank d0 - 1 at n = d0) and a float32 SVD are VIOLATED (tests).",
)


# ----------------------------------------------------------------------------------------
# CF1, CF2


def _cf1_grid(mode: Mode) -> list[conditional.CF1Case]:
    """Large perturbations (bias would be largest), tiny t (target variance 1/sigma^2 largest), multimodal classes."""
    spec = mix.MixtureSpec
    classes = (spec(4, 2, 3, 1, 2, mean_scale=3.0), spec(4, 2, 2, 3, 2, mean_scale=3.0))
    cases = [conditional.CF1Case(classes, 4, 5, 1.0, (0.05,), 4000, 6),
             conditional.CF1Case((spec(2, 1, 1, 7, 8), spec(2, 1, 2, 9, 8, mean_scale=0.5)), 10, 11, 0.1,
                          (0.05, 0.5, 2.0), 4000, 12)]
    if mode != "quick":
        cases += [conditional.CF1Case(classes, 13, 14, 0.3, (0.05, 0.1, 2.0), 4000, 15),
                  conditional.CF1Case((spec(3, 3, 3, 16, 17, condition=100.0), spec(3, 3, 1, 18, 17)), 19, 20, 1.0,
                               (2.0,), 4000, 21)]
    return cases


def _independent_noise(case: conditional.CF1Case) -> conditional.CF1Case:
    """The case with its Monte Carlo seed mixed with a hash of its other fields: any change redraws the noise.

    Otherwise the targeted search, which mutates times or the perturbation under a fixed seed, climbs the shared
    noise of nearby cases and the maximum |z| it reports outgrows the per-case false-alarm rate.
    """
    others = repr(dataclasses.replace(case, seed=0)).encode()
    return dataclasses.replace(case, seed=(zlib.crc32(others) ^ case.seed) % 2**32)


def cf1_independent_cases() -> st.SearchStrategy[conditional.CF1Case]:
    """properties.conditional.cf1_cases with independent Monte Carlo noise per case (_independent_noise)."""
    return conditional.cf1_cases().map(_independent_noise)


CF1 = Claim(
    id="CF1",
    statement="L(s) - L(s*) = time- and mask-averaged E ||s - grad log p_t(. | tau y)||^2 (denoising score matching, "
              "condition dropped with probability 1/2)",
    source=f"{FU}, sec. 3 (conditional DSM loss)",
    kind="exact",
    bound=f"STATISTICAL_Z = {conditional.STATISTICAL_Z:g} standard errors of the paired Monte Carlo estimate",
    measure=conditional.measure_cf1,
    strategy=cf1_independent_cases,
    grid=_cf1_grid,
    examples=budget(10, 2000, 10000),
    notes=f"Statistical: observed = |paired MC estimate of L(s* + delta) - L(s*) - exact E||delta||^2| (delta affine), "
          f"limit = {conditional.STATISTICAL_Z:g} standard errors (+1e-12 relative rounding). False-alarm rate "
          f"5.7e-7 per case under the CLT (two-sided z = 5); every searched case draws independent noise "
          f"(cf1_independent_cases), so a run's rate is at most cases x 5.7e-7 (~1e-3 thorough). Under the null "
          f"max |z| over n cases is ~sqrt(2 ln n): ratios ~0.7-0.8 at default are expected, not a warning.",
    statistical=True,
)


def _cf2_grid(mode: Mode) -> list[conditional.CF2Case]:
    """Near-extremal: tiny t (grad h/h is amplified by alpha/sigma^2 ~ 1/t), large t, C2 just below 1/lambda_max
    (f barely decays: the widest integrand), tails, far-apart components, ill-conditioned 2-D covariances."""
    case, mix = conditional.CF2Case, conditional.cf2_mixture
    cases = [case(mix(2, 3, 1, 3.0, 10.0), 0.99, 1e-3, 2, 2, 3.0), case(mix(1, 3, 3, 3.0), 0.05, 8.0, 3, 4, 3.0),
             case(mix(2, 2, 5, 1.0, 4.0), 0.5, 0.05, 2, 6, 1.0), case(mix(1, 2, 7, 0.5, 1.0), 0.99, 1e-3, 3, 8, 3.0)]
    if mode != "quick":
        cases += [case(mix(2, 1, 9, 1.0, 10.0), 0.9, 2.0, 3, 10, 3.0), case(mix(1, 1, 11), 0.5, 0.3, 3, 12),
                  case(mix(2, 3, 13, 3.0, 1.0), 0.05, 1e-3, 3, 14, 1.0),
                  case(mix(2, 3, 15, 3.0, 4.0), 0.99, 8.0, 3, 16, 3.0)]
    return cases


CF2 = Claim(
    id="CF2",
    statement="For p(x|y) = exp(-C2 ||x||^2/2) f(x, y): grad log p_t = -C2 x/(alpha_t^2 + C2 sigma_t^2) + grad h/h, "
              "h = f smoothed by N(alpha_t x/(alpha_t^2 + C2 sigma_t^2), sigma_t^2/(alpha_t^2 + C2 sigma_t^2) I)",
    source=f"{FU}, sec. 4 (score decomposition; OU-half)",
    kind="exact",
    bound="2 x quadrature error estimate + a-priori float64 rounding (properties.conditional.measure_cf2)",
    measure=conditional.measure_cf2,
    strategy=conditional.cf2_cases,
    grid=_cf2_grid,
    examples=budget(15, 1500, 7500),
    notes="p(.|y) is a Gaussian mixture in 1-2 dimensions (one label; the identity is per label), "
          "0 < C2 < 1/lambda_max(S_k). grad h/h = (alpha/sigma^2)(E[u f]/E[f] - centre) by composite "
          "Gauss-Legendre quadrature (reference.mixtures.cf2_decomposition, independent of the closed-form "
          "score); its error is estimated by halving the panels. The formula was derived by completing the "
          "square (see reference.mixtures.cf2_smoothing): the source formula's (verify) mark is resolved as correct (docs/claims.md#cf2).",
)


# ----------------------------------------------------------------------------------------
# CF3


#: CF3's early-stopping times per mode: (t_low, t_high, points); two decades below the smallest component variance.
CF3_TIMES: dict[str, tuple[float, float, int]] = {"quick": (1e-4, 1e-2, 5), "default": (1e-4, 1e-2, 8),
                                                  "thorough": (1e-5, 1e-2, 12)}
CF3_TARGETS = {"quick": 2, "default": 4, "thorough": 8}

EarlyStopped = Callable[[LatentMixture, float], LatentMixture]


#: CF3's targets with jumps (w Uniform[low, high] + Gaussians), where TV(P, P_t0) ~ sqrt(t0) exactly: (quick, default) use
#: the first, thorough both.
CF3_JUMP_TARGETS: tuple[early_stopping.JumpTarget, ...] = (
    early_stopping.JumpTarget(0.5, -1.0, 1.0, (0.6, 0.4), (1.5, -2.0), (0.3, 0.5)),
    early_stopping.JumpTarget(0.3, 0.0, 0.5, (1.0,), (0.0,), (1.0,)),
)


def cf3_rates(mode: Mode, seed: int, law: EarlyStopped | None = None,
              forward: early_stopping.ForwardLaw = early_stopping.ou_half) -> list[RateSeries]:
    """CF3 series: targets with a jump (TV ~ sqrt(t0) exactly: claimed exponent "equal" 1/2), then 1-D Gaussian-mixture
    targets as context (smooth: TV ~ t0, "at least" 1/2). TV(P, P_t0) by exact quadrature against t0.

    Tolerance 1/ln(1/t_mid): the claim is O(sqrt(t0) polylog(1/t0)), and one power of log(1/t0) lowers the
    local log-log slope by 1/ln(1/t0) (0.145 at t0 = 1e-3); on the jump targets the O(t0) correction raises it by
    about as much at the top of the range (0.558 over 1e-4..1e-2 on the first). The TV values are exact to 1e-12
    absolute (>= 1e-6 relative), so the fit's noise is only curvature. ``law`` (smooth targets) and ``forward``
    (jump targets) replace the forward process, to plant a bug.
    """
    low, high, points = CF3_TIMES[mode]
    tolerance = 1 / math.log(1 / math.sqrt(low * high))
    times = np.geomspace(low, high, points)
    series = []
    for i, jump in enumerate(CF3_JUMP_TARGETS[: 2 if mode == "thorough" else 1]):
        tvs = early_stopping.cf3_jump_curve(jump, times, forward)
        lead = early_stopping.jump_tv_leading_term(jump, float(times[0]))
        series.append(RateSeries(f"jump target {i} ({jump.uniform_weight:g} Uniform[{jump.low:g}, {jump.high:g}] + "
                                 f"{len(jump.means)} Gaussian(s)): TV / (sigma sum h_j / sqrt(2 pi)) = "
                                 f"{tvs[0] / lead:.3f} at t0 = {times[0]:.0e}", times.tolist(), tvs.tolist(), 0.5,
                                 "equal", tolerance, "t0", "TV(P, P_t0)"))
    for i in range(CF3_TARGETS[mode]):
        target = smp.SamplerMixtureCase(1, 1 + (seed + i) % 3, (seed + 7919 * i) % 2**32,
                                        (0.5, 1.0, 2.0)[i % 3], (1.0, 4.0)[i % 2], (0.2, 0.5, 1.0)[(i // 2) % 3])
        case = smp.CF3Case(target, low, high, points)
        _, smooth_times, tvs = smp.cf3_slope(case) if law is None else smp.cf3_slope(case, law)
        series.append(RateSeries(f"smooth target {i} ({target.components} comp., scale {target.scale}; context)",
                                 smooth_times.tolist(), tvs.tolist(), 0.5, "at least", tolerance, "t0", "TV(P, P_t0)"))
    return series


CF3 = Claim(
    id="CF3",
    statement="Early stopping: TV(P, P_t0) = O(sqrt(t0) polylog): on a density with a jump the fitted exponent of "
              "log TV vs log t0 is 1/2 (the rate is attained); on smooth densities at least 1/2 (context)",
    source=f"{FU}, early-stopping lemma",
    kind="rate",
    bound="exponent equal to 0.5 on the jump targets, at least 0.5 on the smooth ones (tolerance 1/ln(1/t_mid))",
    rates=cf3_rates,
    notes="Exact forward laws (no estimation error), OU-half, 1-D. Jump targets (properties.early_stopping): "
          "w Uniform[a, b] + Gaussians, TV = sigma sum_j h_j / sqrt(2 pi) + O(t0) with sigma = sqrt(1 - e^-t0), so "
          "the exponent is exactly 1/2 and a forward process with the wrong noise scale shows another one (the "
          "variance used as the standard deviation: 1; tests); the label gives TV over that leading term at the "
          "smallest t0 (-> 1). Smooth 1-D Gaussian mixtures: TV = O(t0) (slope 1), faster than the claimed sqrt(t0), "
          "consistent with an O() bound but unable to fail it: reported as context.",
)


# ----------------------------------------------------------------------------------------
# CF4


CF4_CASES = ((1.0, 2, 1), (2.0, 2, 1), (2.0, 16, 4), (4.0, 64, 10), (1.0, 784, 10))


def cf4_exponents() -> list[dict[str, Any]]:
    """CF4's claimed exponents of n for smoothness beta, data dim d, condition dim d_y."""
    rows = []
    for beta, d, dy in CF4_CASES:
        rows.append({"beta": beta, "d": d, "d_y": dy,
                     "score error exponent -2b/(d+dy+2b)": -2 * beta / (d + dy + 2 * beta),
                     "TV exponent -b/(d+dy+2b)": -beta / (d + dy + 2 * beta),
                     "lower bound exponent -b/(d+2b)": -beta / (d + 2 * beta)})
    return rows


CF4 = Claim(
    id="CF4",
    statement="Score error n^(-2 beta/(d + d_y + 2 beta)), TV n^(-beta/(d + d_y + 2 beta)); minimax lower bound "
              "n^(-beta/(d + 2 beta))",
    source=f"{FU}, main theorems (sample complexity)",
    kind="not checkable",
    reason="The rates are for nonparametric (beta-smooth) score estimators trained on n samples; checking them "
           "needs such estimators trained at several n (and many replicates, since the exponents are small), "
           "and ditcheck has none. Exact scores (the rest of CF1-CF3) say nothing about n. The table lists the "
           "claimed exponents; an empirical study would report fitted slopes next to them, never assert them.",
    illustrate=cf4_exponents,
)


CLAIMS: tuple[Claim, ...] = (LD1, LD2, LD3, LD4, LD5, LD9, CF1, CF2, CF3, CF4)
