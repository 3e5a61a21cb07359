"""GP4: a small DiT trained on Gaussian-process sequences on the CPU (Fu, Dou, Guo, Wang, Chen, ICLR 2025, sec. 5).

Data: H frames in R^d with vec(x0) ~ N(0, Gamma (x) Sigma) (reference.gp), diffused by the OU-half process
x_t = alpha_t x0 + sigma_t z. The network is ditcheck.models.dit.DiT with the frames as an H x 1 latent with patch 1
and C = d channels (so one token per frame, its 2-D sin-cos position embedding varying along the frames),
trained by denoising score matching with eps-prediction: score = -eps_hat / sigma_t.

What :func:`train_gp_dit` reports (:class:`GPTrainingResult`):

* the learned score's relative error sqrt(sum ||s_hat - s*||^2 / sum ||s*||^2) against the exact score
  (reference.gp.gp_score) at a grid of times, next to the "independent frames" baseline -(alpha^2 Sigma +
  sigma^2 I)^-1 x_i (the exact score when Gamma = I: what a network that ignores the other frames can reach);
* the head-averaged attention as a function of the lag |i - j| (mean of the softmax weights over layers,
  heads, evaluation sequences, times and the pairs at that lag) and its Pearson correlation with gamma(|i - j|)
  (GP4's claim, empirical), over all lags and over lags >= 1 (the diagonal alone, self-attention, makes the
  first large), and the profile's contrast over lags >= 1 (see :func:`lag_contrast`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ditcheck.models.dit import DiT
from ditcheck.reference import gp
from ditcheck.reference.dit import DiTConfig
from ditcheck.reference.errors import InvalidArgumentError, ShapeError
from ditcheck.reference.schedules import alpha as schedule_alpha
from ditcheck.reference.schedules import sigma2 as schedule_sigma2

__all__ = [
    "GPTrainingConfig",
    "GPTrainingResult",
    "AttentionRecorder",
    "DECAY_CLASSES",
    "gp_dit_config",
    "lag_profile",
    "kernel_correlation",
    "lag_contrast",
    "independent_frames_score",
    "train_gp_dit",
    "evaluate_gp_dit",
]

#: The three decay classes of the paper with the parameters GP4 uses by default.
DECAY_CLASSES: dict[str, dict[str, float]] = {
    "exponential": {"length_scale": 2.0},
    "squared-exponential": {"length_scale": 2.0},
    "polynomial": {"nu": 1.5},
}


@dataclass(frozen=True)
class GPTrainingConfig:
    """Data, network and optimiser of one GP4 run (defaults: the ``ditcheck bench gp`` run, about a minute on one core).

    ``position_embedding=False`` zeroes DiT's fixed sin-cos table (an ablation: attention can then only use content).
    """

    kind: str = "exponential"
    parameters: tuple[tuple[str, float], ...] = (("length_scale", 2.0),)
    frames: int = 16
    dim: int = 2
    hidden_size: int = 64
    depth: int = 2
    num_heads: int = 4
    steps: int = 600
    batch: int = 128
    learning_rate: float = 2e-3
    t_min: float = 0.05
    t_max: float = 3.0
    eval_times: tuple[float, ...] = (0.05, 0.1, 0.3, 1.0, 3.0)
    eval_sequences: int = 256
    seed: int = 0
    position_embedding: bool = True

    def __post_init__(self) -> None:
        for name in ("frames", "dim", "hidden_size", "depth", "num_heads", "steps", "batch", "eval_sequences"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "steps" else 1):
                raise InvalidArgumentError(name, "a positive integer" if name != "steps" else "a non-negative integer",
                                           repr(value))
        if not 0 < self.t_min < self.t_max < math.inf:
            raise InvalidArgumentError("t_min", f"0 < t_min < t_max = {self.t_max} < inf", repr(self.t_min))
        if not self.eval_times or not all(0 < t < math.inf for t in self.eval_times):
            raise InvalidArgumentError("eval_times", "positive finite times (score = -eps / sigma_t needs t > 0)",
                                       repr(self.eval_times))
        if not self.learning_rate > 0:
            raise InvalidArgumentError("learning_rate", "a positive number", repr(self.learning_rate))

    @classmethod
    def for_kind(cls, kind: str, **overrides: Any) -> GPTrainingConfig:
        """The default run for one of DECAY_CLASSES (its default kernel parameters)."""
        if kind not in DECAY_CLASSES:
            raise InvalidArgumentError("kind", f"one of {tuple(DECAY_CLASSES)}", repr(kind))
        return replace(cls(kind=kind, parameters=tuple(DECAY_CLASSES[kind].items())), **overrides)

    @property
    def gamma(self) -> np.ndarray:
        return gp.gamma_matrix(self.frames, self.kind, **dict(self.parameters))

    @property
    def sigma_matrix(self) -> np.ndarray:
        """Fixed spatial covariance: 1 on the diagonal, 0.4 next to it (eigenvalues 1 + 0.8 cos(pi k / (d + 1)))."""
        return np.eye(self.dim) + 0.4 * (np.eye(self.dim, k=1) + np.eye(self.dim, k=-1))


@dataclass
class GPTrainingResult:
    """What one GP4 run measured; see the module docstring for the definitions."""

    config: GPTrainingConfig
    losses: list[float]
    eval_times: tuple[float, ...]
    score_errors: list[float]
    baseline_errors: list[float]
    untrained_errors: list[float]
    attention_profile: np.ndarray
    gamma_profile: np.ndarray
    correlation: float
    correlation_off_diagonal: float
    contrast: float
    seconds: float


class AttentionRecorder:
    """An ``attention(q, k, v, scale)`` for ditcheck.models.dit.DiT: softmax attention that keeps its weights."""

    def __init__(self) -> None:
        self.recording = False
        self.weights: list[Tensor] = []

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        weights = torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1)
        if self.recording:
            self.weights.append(weights.detach())
        return weights @ v


def gp_dit_config(config: GPTrainingConfig) -> DiTConfig:
    """DiT for H frames in R^d: an H x 1 latent, patch 1, d channels, eps-prediction only, unconditional.

    time_scale 1000 / t_max maps t in [0, t_max] onto DiT's usual timestep range [0, 1000].
    """
    return DiTConfig(input_size=(config.frames, 1), patch_size=1, in_channels=config.dim,
                     hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads, num_classes=0,
                     learn_sigma=False, time_scale=1000.0 / config.t_max)


def _to_latent(x: Tensor) -> Tensor:
    """[N, H, d] frames -> [N, d, H, 1] latents."""
    return x.permute(0, 2, 1).unsqueeze(-1)


def _from_latent(x: Tensor) -> Tensor:
    return x.squeeze(-1).permute(0, 2, 1)


def lag_profile(weights: Any) -> np.ndarray:
    """Mean attention weight at each lag k = |i - j|, k = 0..H-1, over all leading axes of weights [..., H, H]."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim < 2 or w.shape[-1] != w.shape[-2]:
        raise ShapeError("weights", "attention weights [..., H, H]", str(w.shape))
    mean = w.reshape(-1, w.shape[-1], w.shape[-1]).mean(axis=0)
    size = mean.shape[0]
    lags = np.abs(np.subtract.outer(np.arange(size), np.arange(size)))
    return np.array([mean[lags == k].mean() for k in range(size)])


def kernel_correlation(profile: Any, gamma_profile: Any) -> float:
    """GP4 (Fu et al. 2025, sec. 5; docs/claims.md#gp4): Pearson correlation of attention-by-lag with gamma(lag)."""
    a, g = np.asarray(profile, dtype=np.float64), np.asarray(gamma_profile, dtype=np.float64)
    if a.shape != g.shape or a.ndim != 1 or a.size < 2:
        raise ShapeError("profile", f"a 1-D profile of the shape of gamma_profile {g.shape}", str(a.shape))
    a, g = a - a.mean(), g - g.mean()
    denominator = math.sqrt(float(a @ a) * float(g @ g))
    return float(a @ g / denominator) if denominator > 0 else float("nan")


def lag_contrast(profile: Any) -> float:
    """(max - min) / mean of the attention profile over lags >= 1: how much attention varies with the lag at all.

    Pearson correlation alone is blind to scale: attention driven by content only (no positions) still decays
    weakly with the lag on GP data (neighbours look alike) and correlates with gamma; its contrast is small.
    """
    a = np.asarray(profile, dtype=np.float64)[1:]
    if a.size < 2:
        raise ShapeError("profile", "a profile over at least 3 lags", str(np.shape(profile)))
    return float((a.max() - a.min()) / a.mean())


def independent_frames_score(x: np.ndarray, t: float, sigma_matrix: np.ndarray) -> np.ndarray:
    """The exact score when frames are independent (Gamma = I): -(alpha^2 Sigma + sigma^2 I)^-1 x_i per frame."""
    return gp.gp_score(x, t, np.eye(x.shape[-2]), sigma_matrix)


def _relative(estimate: np.ndarray, exact: np.ndarray) -> float:
    return float(np.sqrt(np.sum((estimate - exact) ** 2) / np.sum(exact**2)))


def evaluate_gp_dit(model: DiT, recorder: AttentionRecorder, config: GPTrainingConfig, *,
                    device: Any = None) -> tuple[list[float], list[float], np.ndarray]:
    """(score errors per eval time, independent-frames baseline errors, attention weights [M, heads, H, H]).

    ``model(latents [N, d, H, 1], t [N]) -> eps``; the weights are those ``recorder`` saw (M = 0 if none).
    """
    gamma, sigma_matrix = config.gamma, config.sigma_matrix
    dtype = next(model.parameters()).dtype
    x0 = gp.sample_gp(gamma, sigma_matrix, config.eval_sequences, config.seed + 10_000)
    noise = np.random.default_rng(config.seed + 20_000).standard_normal(x0.shape)
    errors, baseline = [], []
    recorder.weights.clear()
    recorder.recording = True
    model.eval()
    try:
        for t in config.eval_times:
            a, s2 = float(schedule_alpha(np.array([t]))[0]), float(schedule_sigma2(np.array([t]))[0])
            xt = a * x0 + math.sqrt(s2) * noise
            exact = gp.gp_score(xt, t, gamma, sigma_matrix)
            with torch.no_grad():
                eps = model(_to_latent(torch.as_tensor(xt, dtype=dtype, device=device)),
                            torch.full((xt.shape[0],), t, dtype=dtype, device=device))
            score = -_from_latent(eps).double().cpu().numpy() / math.sqrt(s2)
            errors.append(_relative(score, exact))
            baseline.append(_relative(independent_frames_score(xt, t, sigma_matrix), exact))
    finally:
        recorder.recording = False
    if recorder.weights:
        weights = torch.cat([w.reshape(-1, *w.shape[-3:]) for w in recorder.weights]).double().cpu().numpy()
    else:  # a model that does not attend through the recorder
        weights = np.zeros((0, 1, config.frames, config.frames))
    recorder.weights.clear()
    return errors, baseline, weights


def train_gp_dit(config: GPTrainingConfig, *, device: Any = None,
                 dtype: torch.dtype = torch.float32) -> GPTrainingResult:
    """Train the GP4 DiT by denoising score matching (Adam, cosine learning rate) and evaluate it (see module doc)."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    gamma, sigma_matrix = config.gamma, config.sigma_matrix
    recorder = AttentionRecorder()
    model = DiT(gp_dit_config(config), attention=recorder, device=device, dtype=dtype)
    if not config.position_embedding:  # ablation: tokens no longer know their frame index
        with torch.no_grad():
            model.pos_embed.zero_()
    untrained, _, _ = evaluate_gp_dit(model, recorder, config, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(config.steps, 1))))
    rng = np.random.default_rng(config.seed)
    log_low, log_high = math.log(config.t_min), math.log(config.t_max)
    losses = []
    model.train()
    for step in range(config.steps):
        x0 = gp.sample_gp(gamma, sigma_matrix, config.batch, int(rng.integers(2**31)))
        t = np.exp(rng.uniform(log_low, log_high, config.batch))
        a, s2 = schedule_alpha(t), schedule_sigma2(t)
        noise = rng.standard_normal(x0.shape)
        xt = a[:, None, None] * x0 + np.sqrt(s2)[:, None, None] * noise
        eps = model(_to_latent(torch.as_tensor(xt, dtype=dtype, device=device)),
                    torch.as_tensor(t, dtype=dtype, device=device))
        loss = (eps - _to_latent(torch.as_tensor(noise, dtype=dtype, device=device))).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    errors, baseline, weights = evaluate_gp_dit(model, recorder, config, device=device)
    profile = lag_profile(weights)
    gamma_profile = gamma[0].copy()
    return GPTrainingResult(config, losses, config.eval_times, errors, baseline, untrained, profile, gamma_profile,
                            kernel_correlation(profile, gamma_profile),
                            kernel_correlation(profile[1:], gamma_profile[1:]), lag_contrast(profile),
                            time.perf_counter() - start)
