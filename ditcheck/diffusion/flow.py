"""Flow-matching oracles in torch: interpolant paths and counted velocity evaluations (ditcheck.reference.flow in torch).

The path x_t = alpha_t x_0 + sigma_t eps and its velocity v(x, t) = alpha'_t E[x_0 | x_t] + sigma'_t E[eps | x_t] are
defined in ditcheck.reference.flow (docs there); here they are evaluated in torch for the flow samplers of
ditcheck.diffusion.samplers (``flow_euler``, ``flow_heun``, ``flow_sde``).

* :class:`TorchInterpolant`: alpha_t, sigma_t and their derivatives for "rectified-flow", "trigonometric" and
  "variance-exploding" (EDM). It also offers ``sigma2`` and ``check``, the two things MixtureOracle's closed forms use
  of a schedule, so a mixture oracle on an interpolant gives exact scores of the interpolant's marginals.
* :class:`FlowMixtureOracle`: exact velocity (and score, log density) of a forward-interpolated latent Gaussian mixture.
  E[x_0 | x] by Gaussian conditioning per component (no division by alpha_t: exact at t = 1, where alpha_t = 0).
* :class:`FlowModelOracle`: a user model whose output is stated as "velocity", "eps", "x0" or "score", converted
  with reference.flow's formulas (det = alpha sigma' - sigma alpha').

Every ``velocity`` call counts as one score evaluation (one network evaluation, NFE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ditcheck.reference.errors import InvalidArgumentError, ShapeError, TimeOutOfRangeError
from ditcheck.reference.flow import FLOW_PARAMETERISATIONS, INTERPOLANTS
from ditcheck.reference.mixtures import LatentMixture
from ditcheck.reference.precision import require_choice

from .oracles import MixtureOracle, Oracle

__all__ = ["TorchInterpolant", "FlowOracle", "FlowMixtureOracle", "FlowModelOracle", "velocity_to_score"]


@dataclass(frozen=True)
class TorchInterpolant:
    """x_t = alpha_t x_0 + sigma_t eps in torch (reference.flow.Interpolant): alpha, sigma, their derivatives, sigma^2."""

    name: str = "rectified-flow"

    def __post_init__(self) -> None:
        require_choice(self.name, INTERPOLANTS, "interpolant")

    @property
    def t_max(self) -> float:
        return math.inf if self.name == "variance-exploding" else 1.0

    def check(self, t: Any, argument: str = "t", *, allow_zero: bool = False) -> None:
        """Raise TimeOutOfRangeError unless every time lies in (0, t_max] ([0, t_max] with ``allow_zero``)."""
        values = torch.as_tensor(t, dtype=torch.float64)
        low_ok = values >= 0 if allow_zero else values > 0
        if not bool(torch.all(low_ok & (values <= self.t_max))):
            low = "[0" if allow_zero else "(0"
            raise TimeOutOfRangeError(argument, f"times in {low}, {self.t_max}] for interpolant {self.name!r}",
                                      f"values from {float(values.min())} to {float(values.max())}")

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "rectified-flow":
            return 1 - t
        if self.name == "trigonometric":
            return torch.sin(math.pi / 2 * (1 - t))  # cos(pi t / 2), exactly 0 at t = 1 (reference.flow)
        return torch.ones_like(t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(math.pi / 2 * t) if self.name == "trigonometric" else t

    def sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma(t) ** 2

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "rectified-flow":
            return -torch.ones_like(t)
        if self.name == "trigonometric":
            return -math.pi / 2 * torch.sin(math.pi / 2 * t)
        return torch.zeros_like(t)

    def d_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return math.pi / 2 * torch.sin(math.pi / 2 * (1 - t)) if self.name == "trigonometric" else torch.ones_like(t)


def _interpolant(interpolant: str | TorchInterpolant) -> TorchInterpolant:
    return interpolant if isinstance(interpolant, TorchInterpolant) else TorchInterpolant(interpolant)


def velocity_to_score(path: TorchInterpolant, v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """score = -eps_hat / sigma_t with eps_hat = (alpha_t v - alpha'_t x) / (alpha_t sigma'_t - sigma_t alpha'_t)."""
    alpha, sigma, d_alpha, d_sigma = path.alpha(t), path.sigma(t), path.d_alpha(t), path.d_sigma(t)
    eps = (alpha * v - d_alpha * x) / (alpha * d_sigma - sigma * d_alpha)
    return -eps / sigma


class FlowOracle(Oracle):
    """An oracle on an interpolant path: counted ``velocity(x, t)`` [N, dim] (and ``score``, from it or exact)."""

    interpolant: TorchInterpolant

    def velocity(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """v(x, t), [N, dim]; one counted evaluation."""
        times = self._times(x, t)
        self.score_evals += 1
        self.score_rows += x.shape[0]
        return self._velocity(x, times)

    def _velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FlowMixtureOracle(MixtureOracle, FlowOracle):
    """Exact velocity, score and log density of a latent Gaussian mixture carried along an interpolant path.

    Scores and log densities are MixtureOracle's closed forms with (alpha_t, sigma_t^2) of the path (its
    ``schedule`` slot holds the TorchInterpolant: those closed forms use only ``alpha``, ``sigma2`` and ``check``).
    Like MixtureOracle it takes B^T B = I exactly.
    """

    def __init__(self, mixture: LatentMixture, interpolant: str | TorchInterpolant = "rectified-flow", *,
                 device: Any = None, dtype: torch.dtype = torch.float64):
        path = _interpolant(interpolant)
        super().__init__(mixture, "ou-unit", device=device, dtype=dtype)
        self.interpolant = path
        self.schedule = path  # type: ignore[assignment]  # see the class docstring

    def curvature(self, t: float) -> float | None:
        return None  # RT1's curvature bound is for VP schedules only

    def posterior_means_at(self, x: torch.Tensor, alpha: torch.Tensor,
                           sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[x_0 | y = x], E[eps | y = x]) for y = alpha x_0 + sigma eps, any alpha >= 0, sigma > 0 ([T], T in {1, N}).

        Not counted (a building block: ``velocity`` counts). Gaussian conditioning per component in the latent
        coordinates c = B^T x with M_k = alpha^2 S_k + sigma^2 I: E[h | x] = sum_k r_k (mu_k + alpha S_k M_k^-1
        (c - alpha mu_k)); E[eps | x] = -sigma grad log p = sigma B sum_k r_k M_k^-1 (c - alpha mu_k) + (I - BB^T) x / sigma.
        """
        alpha = torch.as_tensor(alpha, dtype=self.dtype, device=x.device).reshape(-1)
        sigma = torch.as_tensor(sigma, dtype=self.dtype, device=x.device).reshape(-1)
        latent = x if self.full_rank else x @ self.basis
        d0 = self.mixture.latent_dim
        identity = torch.eye(d0, dtype=self.dtype, device=x.device)
        covariances = ((alpha**2)[:, None, None, None] * self.covariances
                       + (sigma**2)[:, None, None, None] * identity)  # M_k, [T, K, d0, d0]
        lower = torch.linalg.cholesky(covariances)
        # L^-1 once per component (per row when times are per row): N rows then cost batched products, far cheaper
        # in torch than N K triangular solves
        inverse = torch.linalg.solve_triangular(lower, identity.expand_as(lower), upper=False)
        offsets = latent[:, None, :] - alpha[:, None, None] * self.means  # c - alpha mu_k, [N, K, d0]
        pattern = "tkij,nkj->nki" if inverse.shape[0] == 1 else "nkij,nkj->nki"
        white = torch.einsum(pattern, inverse, offsets)[..., None]
        transposed = "tkji,nkj->nki" if inverse.shape[0] == 1 else "nkji,nkj->nki"
        natural = torch.einsum(transposed, inverse, white[..., 0])  # M_k^-1 (c - alpha mu_k) = L^-T L^-1 (...)
        log_det = 2 * torch.log(torch.diagonal(lower, dim1=-2, dim2=-1)).sum(-1)
        log_components = self.log_weights - (white[..., 0].pow(2).sum(-1) + log_det) / 2
        responsibilities = torch.softmax(log_components, dim=-1)  # [N, K]
        shrink = torch.einsum("kij,nkj->nki", self.covariances, natural)  # S_k M_k^-1 (c - alpha mu_k)
        x0_latent = (responsibilities[..., None] * (self.means + alpha[:, None, None] * shrink)).sum(1)
        eps_latent = sigma[:, None] * (responsibilities[..., None] * natural).sum(1)  # -sigma grad log q
        if self.full_rank:
            return x0_latent, eps_latent
        residual = x - latent @ self.basis.T  # E[eps | x] = -sigma score: the orthogonal part is residual / sigma
        return x0_latent @ self.basis.T, eps_latent @ self.basis.T + residual / sigma[:, None]

    def _velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.dtype)
        path = self.interpolant
        x0, eps = self.posterior_means_at(x, path.alpha(t), path.sigma(t))
        return path.d_alpha(t)[:, None] * x0 + path.d_sigma(t)[:, None] * eps


VelocityModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FlowModelOracle(FlowOracle):
    """A user model ``model(x [N, dim], t [N]) -> prediction [N, dim]`` on an interpolant path, as a velocity oracle.

    ``parameterisation`` is one of "velocity", "eps", "x0", "score" (reference.flow.convert's formulas; from eps
    or score the velocity divides by alpha_t, so those models cannot be evaluated at alpha_t = 0).
    ``time_map`` converts the sampler's time to the model's time input (e.g. t -> 1000 t); identity by default.
    """

    def __init__(self, model: VelocityModel, dim: int, parameterisation: str = "velocity",
                 interpolant: str | TorchInterpolant = "rectified-flow", *,
                 time_map: Callable[[torch.Tensor], torch.Tensor] | None = None, device: Any = None,
                 dtype: torch.dtype = torch.float64):
        require_choice(parameterisation, FLOW_PARAMETERISATIONS, "parameterisation")
        if not callable(model):
            raise InvalidArgumentError("model", "a callable model(x, t)", type(model).__name__)
        super().__init__(dim, "ou-unit", device=device, dtype=dtype)
        self.interpolant = _interpolant(interpolant)
        self.schedule = self.interpolant  # type: ignore[assignment]
        self.model = model
        self.parameterisation = parameterisation
        self.time_map = time_map

    def _velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        times = t.to(x.dtype).expand(x.shape[0])
        prediction = self.model(x, self.time_map(times) if self.time_map is not None else times)
        if tuple(prediction.shape) != tuple(x.shape):
            raise ShapeError("model", f"a model returning shape {tuple(x.shape)}", str(tuple(prediction.shape)))
        if self.parameterisation == "velocity":
            return prediction
        path = self.interpolant
        alpha, sigma = path.alpha(times)[:, None], path.sigma(times)[:, None]
        d_alpha, d_sigma = path.d_alpha(times)[:, None], path.d_sigma(times)[:, None]
        if self.parameterisation == "x0":
            return d_alpha * prediction + d_sigma * (x - alpha * prediction) / sigma
        eps = prediction if self.parameterisation == "eps" else -sigma * prediction
        return (d_alpha * x + (alpha * d_sigma - sigma * d_alpha) * eps) / alpha

    def _score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        times = t.to(x.dtype).expand(x.shape[0])[:, None]
        return velocity_to_score(self.interpolant, self._velocity(x, t), x, times)
