"""How ``ditcheck validate scheduler`` drives each family of diffusers scheduler with an exact model.

The exact model answers what a perfectly trained network would: the posterior means E[x_0 | x], E[eps | x] of the
Gaussian-mixture target at the noise level the network is told about, converted to the parameterisation the
scheduler's configuration names. A network knows its noise level only through the timestep t it is handed, so:

* ``flow`` (FlowMatch*, and any scheduler with prediction_type="flow_prediction" or use_flow_sigmas=True):
  x_t = (1 - s) x_0 + s eps with s = t / num_train_timesteps (diffusers' timesteps = sigmas * T); the output is the
  rectified-flow velocity v = E[eps - x_0 | x] (reference.flow).
* ``edm`` (EDMEuler, EDMDPMSolverMultistep): x = x_0 + sigma eps with sigma = e^(4 t) (Karras et al. 2022,
  Table 1: c_noise = ln(sigma)/4); the network sees c_in x, c_in = 1/sqrt(sigma^2 + sigma_data^2), and returns F with
  D = c_skip x + c_out F = E[x_0 | x], c_skip = sigma_data^2/(sigma^2 + sigma_data^2),
  c_out = +-sigma sigma_data/sqrt(sigma^2 + sigma_data^2) (+ for "epsilon", - for "v_prediction"; "sample": F = D).
  These are the paper's formulas, not the scheduler's, so a wrong preconditioning in a scheduler shows.
* ``ve`` (k-diffusion style: Euler, Euler-ancestral, Heun, LMS, KDPM2, ...: a VP-trained network driven in
  x = x_0 + sigma eps): the network sees y = scale_model_input(x) = x / sqrt(sigma^2 + 1), a VP state with
  alpha_bar = 1/(1 + sigma^2). At an integer t the network's noise level is the training alpha_bar[t]; at a fractional
  t (which a discrete-time network was never trained at) it is the scheduler's own sigma, read off the scaling.
* ``vp`` (DDPM, DDIM, PNDM, DEIS, DPM-Solver, UniPC, SA-Solver, LCM, TCD, ...): y = x is a VP state; integer t:
  alpha_bar[t]; fractional t: the training sigma = sqrt((1 - alpha_bar)/alpha_bar) interpolated linearly in
  log sigma (the inverse of diffusers' _sigma_to_t).

VP and VE outputs: "epsilon" E[eps | y], "sample" E[x_0 | y], "v_prediction" alpha E[eps | y] - sigma E[x_0 | y]
(Salimans & Ho 2022). The samples are compared with the law at the scheduler's final noise level (the data law when
it ends at sigma = 0).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from ditcheck.diffusion.flow import FlowMixtureOracle
from ditcheck.diffusion.metrics import diffused_target
from ditcheck.reference.mixtures import LatentMixture

__all__ = ["FAMILIES", "OutOfScope", "detect_family", "ExactModel", "drive", "FLUX_MU", "candidate_settings",
           "OUT_OF_SCOPE", "FLOW_TIME_REVERSED", "flow_sigma_of_timestep", "set_timesteps", "final_law",
           "out_of_scope_reason"]

FAMILIES = ("flow", "edm", "ve", "vp")
#: diffusers' Flux pipeline mu at 4096 image tokens (calculate_shift: base_shift 0.5 at 256, max_shift 1.15 at 4096)
FLUX_MU = 1.15

#: Schedulers with no Gaussian sampling path to compare against, and why (by class name, MRO-inherited).
OUT_OF_SCOPE: dict[str, str] = {
    "AmusedScheduler": "discrete-token (masked generative) sampling: no Gaussian noise path",
    "VQDiffusionScheduler": "discrete-token (VQ-diffusion) sampling: no Gaussian noise path",
    "BlockRefinementScheduler": "discrete-token block refinement (language-model decoding): no Gaussian noise path",
    "EntropyBoundScheduler": "discrete-token entropy-bounded unmasking: no Gaussian noise path",
    "DiscreteDDIMScheduler": "discrete-state DDIM over token vocabularies: no Gaussian noise path",
    "RFD4ProteinaScheduler": "protein-structure sampler: needs protein-specific scheduler arguments",
    "RePaintScheduler": "inpainting: step() needs the known image and its mask",
    "DDIMInverseScheduler": "inversion (data to noise): no sampling target",
    "DPMSolverMultistepInverseScheduler": "inversion (data to noise): no sampling target",
    "ScoreSdeVeScheduler": "predictor-corrector API (step_pred / step_correct), not step()",
    "KarrasVeScheduler": "deprecated stub without a config",
    "ConsistencyDecoderScheduler": "decodes VAE latents with the consistency decoder's own network",
    "CosineDPMSolverMultistepScheduler": "needs torchsde (not installed)",
    "DPMSolverSDEScheduler": "needs torchsde (not installed)",
    "SCMScheduler": "sCM's TrigFlow consistency parameterisation (prediction_type='trigflow') has no exact model here",
    "PiflowScheduler": "pi-Flow policy outputs (a distilled policy, not a velocity) have no exact model here",
    "CogVideoXDPMScheduler": "step() needs the pipeline's previous x0 prediction and timestep_back",
    "HeliosScheduler": "multi-stage pyramid sampler: set_timesteps needs the pipeline's stage_index",
    "HeliosDMDScheduler": "multi-stage pyramid sampler: set_timesteps needs the pipeline's stage_index",
    "CMStochasticIterativeScheduler": ("consistency-model sampling needs a consistency function (a map to a sample); "
                                       "the exact denoiser E[x_0 | x] is not one"),
    "IPNDMScheduler": "its timesteps' noise levels are not exposed (no alphas_cumprod or sigma table for the model input)",
    "DDPMWuerstchenScheduler": "continuous t in [0, 1] with a cosine alpha_bar function, no alphas_cumprod table: not driven yet",
}

#: Flow schedulers whose timestep runs the other way, t = 1 - sigma, and whose network outputs x_0 - eps (= -v):
#: MiniMax-H3 (denoised = x + sigma * output).
FLOW_TIME_REVERSED = ("MiniMaxH3Scheduler",)


def out_of_scope_reason(cls: type) -> str | None:
    """The OUT_OF_SCOPE reason of a scheduler class (or a base class), checked before building it."""
    for base in cls.__mro__:
        if base.__name__ in OUT_OF_SCOPE:
            return OUT_OF_SCOPE[base.__name__]
    return None


def _time_reversed(sched: Any) -> bool:
    return any(base.__name__ in FLOW_TIME_REVERSED for base in type(sched).__mro__)


def flow_sigma_of_timestep(sched: Any, timesteps: Any) -> Any:
    """The flow time sigma a network reads from its timestep: t / num_train_timesteps (diffusers), or 1 - t (FLOW_TIME_REVERSED)."""
    if _time_reversed(sched):
        return 1 - timesteps
    return timesteps / int(_config(sched).get("num_train_timesteps", 1000))


class OutOfScope(Exception):
    """The scheduler (or one configuration of it) has no exact model here; the message says why."""


def _config(sched: Any) -> dict[str, Any]:
    return dict(getattr(sched, "config", {}) or {})


def detect_family(sched: Any) -> str:
    """One of FAMILIES (module docstring), or OutOfScope with the reason."""
    reason = out_of_scope_reason(type(sched))
    if reason is not None:
        raise OutOfScope(reason)
    config = _config(sched)
    prediction = config.get("prediction_type")
    named_flow = any("Flow" in base.__name__ or base.__name__.endswith("RFScheduler") for base in type(sched).__mro__)
    if prediction == "flow_prediction" or config.get("use_flow_sigmas") or (
            not hasattr(sched, "alphas_cumprod") and hasattr(sched, "sigmas") and ("shift" in config or named_flow)):
        return "flow"
    if hasattr(sched, "precondition_inputs") and hasattr(sched, "precondition_outputs"):
        return "edm"
    if hasattr(sched, "alphas_cumprod") and hasattr(sched, "sigmas") and float(getattr(sched, "init_noise_sigma",
                                                                                        1.0)) > 1.5:
        return "ve"
    if hasattr(sched, "alphas_cumprod"):
        return "vp"
    raise OutOfScope("no alphas_cumprod, sigmas with a flow shift, or EDM preconditioning: the noise path is unknown")


def _vp_output(prediction: str, x0: torch.Tensor, eps: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    if prediction == "epsilon":
        return eps
    if prediction == "sample":
        return x0
    if prediction == "v_prediction":
        return alpha * eps - sigma * x0
    raise OutOfScope(f"prediction_type {prediction!r} has no exact model here (epsilon, sample, v_prediction)")


@dataclass
class ExactModel:
    """The exact network for one scheduler instance: ``__call__(model_input, x, t)`` -> the model output tensor."""

    sched: Any
    family: str
    oracle: FlowMixtureOracle

    def __post_init__(self) -> None:
        config = _config(self.sched)
        self.prediction = config.get("prediction_type") or ("flow_prediction" if self.family == "flow" else "epsilon")
        self.train_steps = int(config.get("num_train_timesteps", 1000))
        if self.family in ("ve", "vp"):
            abar = self.sched.alphas_cumprod.to(torch.float64)
            self.alphas_cumprod = abar
            self.log_sigmas = 0.5 * torch.log((1 - abar) / abar)

    def _alpha_bar(self, t: float) -> float:
        """Training alpha_bar at t (integer: the table; fractional: log-sigma interpolation)."""
        if t == round(t):
            return float(self.alphas_cumprod[int(round(t))])
        low = int(math.floor(t))
        frac = t - low
        log_sigma = (1 - frac) * float(self.log_sigmas[low]) + frac * float(self.log_sigmas[min(low + 1,
                                                                                                 self.train_steps - 1)])
        return 1.0 / (1.0 + math.exp(2 * log_sigma))

    def posterior(self, y: torch.Tensor, alpha: float, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        x0, eps = self.oracle.posterior_means_at(y.to(torch.float64), torch.tensor([alpha], dtype=torch.float64),
                                                 torch.tensor([sigma], dtype=torch.float64))
        return x0, eps

    def __call__(self, model_input: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        if self.family == "flow":
            if self.prediction != "flow_prediction":
                raise OutOfScope(f"prediction_type {self.prediction!r} on flow sigmas has no exact model here")
            s = float(flow_sigma_of_timestep(self.sched, t))
            x0, eps = self.posterior(model_input, 1 - s, s)
            return x0 - eps if _time_reversed(self.sched) else eps - x0
        if self.family == "edm":
            sigma = math.exp(4 * t)
            sd = float(_config(self.sched).get("sigma_data", 0.5))
            state = model_input * math.sqrt(sigma * sigma + sd * sd)  # c_in^-1 (Karras et al. 2022, Table 1)
            x0, _ = self.posterior(state, 1.0, sigma)
            if self.prediction == "sample":
                return x0
            c_skip = sd * sd / (sigma * sigma + sd * sd)
            c_out = sigma * sd / math.sqrt(sigma * sigma + sd * sd)
            if self.prediction == "v_prediction":
                c_out = -c_out
            elif self.prediction != "epsilon":
                raise OutOfScope(f"prediction_type {self.prediction!r} has no exact EDM model here")
            return (x0 - c_skip * state) / c_out
        if self.family == "ve" and t != round(t):
            # fractional t: the scheduler's own sigma, read off its input scaling y = x / sqrt(sigma^2 + 1)
            scale = float((model_input * x).sum() / (x * x).sum())
            alpha_bar = scale * scale
        else:
            alpha_bar = self._alpha_bar(t)
        alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
        x0, eps = self.posterior(model_input, alpha, sigma)
        return _vp_output(self.prediction, x0, eps, alpha, sigma)


def final_law(sched: Any, family: str, mixture: LatentMixture) -> LatentMixture:
    """The law the samples should follow: the data law diffused to the scheduler's last noise level."""
    sigmas = getattr(sched, "sigmas", None)
    last = float(sigmas[-1]) if isinstance(sigmas, torch.Tensor) and sigmas.numel() else 0.0
    if last <= 0 or family == "vp" and not hasattr(sched, "sigmas"):
        return mixture
    if family == "flow":
        alpha, sigma = 1 - last, last
    elif family == "vp":
        alpha = 1 / math.sqrt(1 + last * last)
        sigma = last * alpha
    else:
        alpha, sigma = 1.0, last
    if mixture.latent_dim != mixture.ambient_dim:
        return mixture
    return diffused_target(mixture, alpha, sigma * sigma)


def set_timesteps(sched: Any, steps: int, mu: float | None) -> None:
    parameters = inspect.signature(sched.set_timesteps).parameters
    if _config(sched).get("use_dynamic_shifting") and "mu" in parameters:
        sched.set_timesteps(steps, mu=FLUX_MU if mu is None else mu)
    else:
        sched.set_timesteps(steps)


def drive(sched: Any, mixture: LatentMixture, oracle: FlowMixtureOracle, steps: int, samples: int, seed: int,
          eta: float, mu: float | None = None) -> tuple[torch.Tensor, LatentMixture, int]:
    """Run the scheduler's own loop with the exact model: (samples, the law they should follow, evaluations).

    Raises whatever the scheduler raises (the caller isolates it) and OutOfScope when no exact model applies.
    """
    family = detect_family(sched)
    model = ExactModel(sched, family, oracle)
    generator = torch.Generator().manual_seed(seed)
    set_timesteps(sched, steps, mu)
    init = getattr(sched, "init_noise_sigma", 1.0)
    x = torch.randn((samples, mixture.ambient_dim), generator=generator, dtype=torch.float64)
    x = x * float(1.0 if init is None else init)
    parameters = inspect.signature(sched.step).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    step_kwargs: dict[str, Any] = {"generator": generator} if "generator" in parameters or any_keyword else {}
    if "eta" in parameters:  # named only: a **kwargs step would silently ignore it
        step_kwargs["eta"] = eta
    evaluations = 0
    timesteps = list(sched.timesteps)
    for index, t in enumerate(timesteps):
        model_input = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        output = model(model_input, x, float(t)).to(x.dtype)
        evaluations += 1
        if "prev_timestep" in parameters:  # UnCLIP: the pipeline names the next timestep (else step assumes t - 1)
            step_kwargs["prev_timestep"] = timesteps[index + 1] if index + 1 < len(timesteps) else None
        x = sched.step(output, t, x, **step_kwargs).prev_sample
    return x, final_law(sched, family, mixture), evaluations


def candidate_settings(config: dict[str, Any], family: str) -> list[tuple[str, dict[str, Any]]]:
    """The configurations to try beyond the scheduler's own: each knob its config offers, one at a time."""
    settings: list[tuple[str, dict[str, Any]]] = []

    def add(overrides: dict[str, Any]) -> None:
        if all(config.get(k) == v for k, v in overrides.items()):
            return
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        if label not in [s[0] for s in settings]:
            settings.append((label, overrides))

    base: dict[str, Any] = {"clip_sample": False} if config.get("clip_sample") else {}
    if base:
        add(base)
    if family in ("vp", "ve", "edm") and "prediction_type" in config:
        for prediction in ("epsilon", "sample", "v_prediction"):
            if family == "edm" and prediction == "sample":
                continue
            add({**base, "prediction_type": prediction})
    if "timestep_spacing" in config:
        for spacing in ("leading", "linspace", "trailing"):
            add({**base, "timestep_spacing": spacing})
    for knob in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
        if knob in config:
            add({**base, knob: True})
    if "final_sigmas_type" in config:
        add({"final_sigmas_type": "sigma_min"})
    if family == "flow" or "shift" in config:
        add({"shift": 3.0})  # SD3
        if "use_dynamic_shifting" in config:
            add({"use_dynamic_shifting": True})  # Flux (mu = FLUX_MU)
        if "shift_terminal" in config:
            add({"shift_terminal": 0.02})  # LTX-Video
    if family == "vp" and "use_flow_sigmas" in config:
        add({"use_flow_sigmas": True, "prediction_type": "flow_prediction"})
    if config.get("algorithm_type") in ("dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver"):
        add({"algorithm_type": "sde-dpmsolver++"})
    if "solver_order" in config:
        add({"solver_order": 3})
    return settings
