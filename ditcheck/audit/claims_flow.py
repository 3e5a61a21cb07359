"""Registry entries for flow matching: FM1-FM3 (docs/claims.md#flow-matching): the exact velocity field of an
interpolant, the conversions between velocity, eps, x0 and score predictions, and the order of the flow samplers.

Sources: Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow matching for generative modeling", ICLR 2023 (arXiv 2210.02747);
Liu, Gong, Liu, "Flow straight and fast: rectified flow", ICLR 2023 (arXiv 2209.03003); Albergo, Boffi,
Vanden-Eijnden, "Stochastic interpolants", 2023 (arXiv 2303.08797); Ma et al., "SiT", 2024 (arXiv 2401.08740);
Karras, Aittala, Aila, Laine, "Elucidating the design space of diffusion-based generative models", NeurIPS 2022.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ditcheck.diffusion import samplers
from ditcheck.properties import flow as F
from ditcheck.properties.measurement import RateSeries
from ditcheck.properties.samplers import SamplerMixtureCase

from .registry import Claim, Mode, budget

__all__ = ["CLAIMS", "FM3_STEPS", "FM3_TARGETS", "FM3_TOLERANCE", "FM3_ORDERS", "fm3_series"]

LIPMAN = "Lipman, Chen, Ben-Hamu, Nickel, Le, ICLR 2023 (arXiv 2210.02747)"
SIT = "Ma, Goldstein, Albergo, Boffi, Vanden-Eijnden, Xie 2024 (SiT, arXiv 2401.08740)"


def _flow_grid(mode: Mode) -> list[F.FlowCase]:
    """Every interpolant at its ends (t -> 0, where sigma_t -> 0 amplifies x / sigma; t = 1, where alpha_t = 0) and
    mid-path, on separated ill-conditioned, single and overlapping mixtures (the variance-exploding path also at t = 20)."""
    targets = [SamplerMixtureCase(3, 3, 11, 2.0, 4.0, 0.2), SamplerMixtureCase(2, 1, 12, 1.0, 4.0, 1.0),
               SamplerMixtureCase(3, 2, 13, 0.5, 1.0, 0.5)]
    times = {"rectified-flow": (1e-3, 0.5, 1.0), "trigonometric": (1e-3, 0.5, 1.0),
             "variance-exploding": (1e-3, 1.0, 20.0)}
    cases = [F.FlowCase(target, interpolant, t, 7 + i)
             for i, target in enumerate(targets) for interpolant, ts in times.items() for t in ts]
    return cases[::3] if mode == "quick" else cases


FM1 = Claim(
    id="FM1",
    statement="For the interpolant x_t = alpha_t x_0 + sigma_t eps the marginal velocity v(x, t) = alpha'_t E[x_0 | x_t = x] "
              "+ sigma'_t E[eps | x_t = x] generates the path's marginals; for a latent Gaussian mixture it has a closed "
              "form (Gaussian conditioning per component), which ditcheck's torch oracle evaluates",
    source=f"{LIPMAN}, Theorem 1 (marginal vector field); Liu et al. 2023 (rectified flow) (docs/claims.md#fm1)",
    kind="exact",
    bound=f"properties.flow.measure_velocity: {F.VELOCITY_BASELINE_FACTOR:g} x the float64 reference's distance to the "
          f"arb enclosure + {F.VELOCITY_ULP_FLOOR:g} ulp of the terms' size x the per-component solves' condition number",
    measure=F.measure_velocity,
    strategy=F.flow_cases,
    grid=_flow_grid,
    examples=budget(10, 300, 1500),
    notes="The exact field is reference.flow.velocity in arb (python-flint balls); the candidate is "
          "ditcheck.diffusion.flow.FlowMixtureOracle.velocity (float64 torch), the velocity the flow samplers and "
          "`ditcheck validate scheduler`'s flow-matching family use. Observed: the largest distance from a candidate "
          "entry to its ball (absolute). Rectified flow, trigonometric (SiT's GVP) and variance-exploding paths, at "
          "16 draws of x_t and 2 wide points per case. That this closed form is the conditional expectation of the "
          "path's derivative (and so not a shared convention bug such as t vs 1 - t) is checked by a Monte Carlo "
          "identity in the test suite (properties.flow.check_velocity_is_path_derivative), and its agreement with the "
          "score route (Tweedie) as overlapping arb balls (check_tweedie_velocity). Planted: a 1e-3 relative velocity "
          "error is VIOLATED (tests/test_audit_flow.py).",
)


FM2 = Claim(
    id="FM2",
    statement="At a fixed (x_t, t) the velocity, eps, x0 and score predictions are affine maps of each other: "
              "x0 = (sigma' x - sigma v)/det, eps = (alpha v - alpha' x)/det, score = -eps/sigma, "
              "v = alpha' x0 + sigma' eps, det = alpha sigma' - sigma alpha'",
    source=f"{SIT}, sec. 2 (and Kingma and Gao 2023 for the VP case) (docs/claims.md#fm2)",
    kind="exact",
    bound=f"properties.flow.measure_conversions: {F.CONVERSION_ULPS:g} u (|a p| + |b x|) per conversion y = a p + b x "
          "plus the exact value's ball radius; round trips with the forward error propagated",
    measure=F.measure_conversions,
    strategy=F.flow_cases,
    grid=_flow_grid,
    examples=budget(10, 300, 1500),
    notes="Each of the 12 conversions of reference.flow.convert maps the exact source prediction (from the arb "
          "velocity) to the exact target prediction (arb) within the a-priori allowance, and converting back returns "
          "the input; observed / limit is the worst entry's error over its allowance, both relative to the largest "
          "value of that comparison. At alpha_t = 0 (t = 1 of the rectified and trigonometric paths, exactly: the "
          "trigonometric alpha_t is sin(pi (1 - t)/2)) x_t carries no x_0: conversions from eps or score to x0 or "
          "velocity are refused there, not checked. Planted: a sign error in one conversion is VIOLATED.",
)


#: FM3's targets (mixture, interpolant) per mode, the step counts of its fits, the claimed orders per method
FM3_TARGETS: dict[str, tuple[tuple[SamplerMixtureCase, str], ...]] = {
    "quick": ((SamplerMixtureCase(2, 2, 3), "rectified-flow"),),
    "default": ((SamplerMixtureCase(2, 2, 3), "rectified-flow"), (SamplerMixtureCase(2, 2, 3), "trigonometric"),
                (SamplerMixtureCase(2, 1, 12, 1.0, 4.0, 1.0), "rectified-flow"),
                (SamplerMixtureCase(2, 1, 12, 1.0, 4.0, 1.0), "trigonometric")),
}
FM3_TARGETS["thorough"] = FM3_TARGETS["default"]
FM3_STEPS: dict[str, tuple[int, ...]] = {"quick": (16, 32, 64), "default": (16, 32, 64), "thorough": (16, 32, 64, 128)}
FM3_ORDERS: dict[str, tuple[Callable[..., Any], float]] = {"flow-euler": (samplers.flow_euler, -1.0),
                                                            "flow-heun": (samplers.flow_heun, -2.0)}
#: pre-asymptotic allowance: the next term of the error expansion, C n^-p (1 + D/n), bends the local slope by about
#: D/n; measured on these targets: Heun's local slopes -2.18, -2.10, -2.06 from 8 to 64 steps (Euler's -0.95 .. -0.99)
FM3_TOLERANCE = 0.1


def fm3_series(mode: Mode, seed: int,
               methods: Mapping[str, tuple[Callable[..., Any], float]] | None = None) -> list[RateSeries]:
    """FM3: RMS endpoint error of each flow sampler against the ODE's solution vs the number of steps, per target.
    ``methods`` (name -> (sampler, claimed exponent)) replaces the samplers, to plant a bug."""
    methods = FM3_ORDERS if methods is None else methods
    steps = FM3_STEPS[mode]
    series = []
    for target, interpolant in FM3_TARGETS[mode]:
        errors = F.flow_order_errors(target, interpolant, steps, {name: m[0] for name, m in methods.items()},
                                     points=128 if mode == "quick" else 256, seed=seed)
        for name, (_, exponent) in methods.items():
            series.append(RateSeries(
                f"{name} endpoint RMS error vs steps, {interpolant}, {target.components}-component target "
                f"(seed {target.seed}; {errors[name][0]:.3g} at {steps[0]} steps, {errors[name][-1]:.3g} at {steps[-1]})",
                [float(n) for n in steps], errors[name], exponent, "equal", FM3_TOLERANCE, "steps n",
                "RMS error at t = 0"))
    return series


FM3 = Claim(
    id="FM3",
    statement="With the exact velocity, the flow samplers' global error at t = 0 falls like n^-1 for Euler "
              "(FlowMatchEulerDiscreteScheduler's update) and n^-2 for Heun (Karras et al.'s second-order step) in "
              "the number of steps n",
    source="Karras, Aittala, Aila, Laine, NeurIPS 2022, sec. 3 and Alg. 1 (Heun); one-step method orders "
           "(docs/claims.md#fm3)",
    kind="rate",
    bound=f"exponents equal to -1 (Euler) and -2 (Heun), tolerance {FM3_TOLERANCE}",
    rates=fm3_series,
    notes="Deterministic: starts x_1 ~ N(0, I) (seeded), the exact mixture velocity (FlowMixtureOracle), uniform "
          "grids t = 1 -> 0; the reference is flow_heun at 16 x the largest step count (its own error 0.4% of "
          "Heun's there, moving an exponent by < 0.01). Targets: 2-D mixtures with 2 and 1 components on the "
          "rectified-flow and trigonometric paths (one in quick). Separated, sharply switching mixtures reach the "
          "asymptotic order only at larger n (measured: Heun's local slope -0.5 to -0.6 below 32 steps on a "
          "3-component mixture with means 2 apart and scale 0.2): the order is a statement about n -> infinity. "
          "The stochastic sampler flow_sde and the samplers' laws are checked statistically in tests/test_flow.py "
          "(check_flow_sampler). Planted: a Heun corrector that re-uses the velocity at t (first order) is "
          "inconsistent.",
)


CLAIMS: tuple[Claim, ...] = (FM1, FM2, FM3)
