"""Score and energy oracles for samplers: exact closed forms from ``ditcheck.reference``, or a user model.

An oracle answers ``score(x, t)`` = grad log p_t(x) and, when it can, ``log_density(x, t)`` = log p_t(x)
(the negative energy) for batched torch inputs x [N, D] at one time t (a Python float or a 0-d tensor)
or one time per row (a tensor [N]). Every call is counted: ``score_evals`` and ``energy_evals`` are the
numbers of batched calls (one call = one network evaluation, NFE), ``score_rows`` the rows evaluated.

* :class:`MixtureOracle`: latent Gaussian mixtures x = B h, h ~ sum_k w_k N(mu_k, S_k) (reference.mixtures),
  re-expressed in torch for speed through the latent coordinates c = B^T x (LD1):
  log p_t(x) = log q_t(B^T x) - ||(I - BB^T) x||^2 / (2 sigma_t^2) - (D - d0)/2 log(2 pi sigma_t^2),
  grad log p_t(x) = B grad log q_t(B^T x) - (I - BB^T) x / sigma_t^2, q_t = sum_k w_k N(alpha_t mu_k, alpha_t^2 S_k + sigma_t^2 I).
  It takes B^T B = I exactly (the reference accepts |B^T B - I| <= 1e-10 and uses the exact Gram
  matrix): the two agree to about 1e-10 relative; tests/test_samplers.py checks it.
* :class:`GaussianOracle`: N(m, S) diffused to N(alpha m, alpha^2 S + sigma^2 I); :func:`gp_oracle` builds
  one for Gaussian-process sequences vec(x) ~ N(0, Gamma (x) Sigma) (reference.gp; GP1).
* :class:`ModelOracle`: any user callable ``model(x, t) -> prediction`` whose parameterisation is stated
  (``"eps"``, ``"x0"``, ``"v"`` or ``"score"``), converted with the schedule (docs/conventions.md#parameterisations):
  score = -eps / sigma_t, eps = (x - alpha_t x0)/sigma_t, eps = alpha_t v + sigma_t x. It has no energy.

Schedules are the continuous ones of reference.schedules ("ou-half", "ou-unit", "vp-linear"), all
variance preserving: sigma_t^2 = 1 - alpha_t^2. :class:`TorchSchedule` evaluates them in torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ditcheck.reference import gp as reference_gp
from ditcheck.reference.errors import InvalidArgumentError, ShapeError, TimeOutOfRangeError
from ditcheck.reference.mixtures import LatentMixture
from ditcheck.reference.precision import require_choice
from ditcheck.reference.schedules import PARAMETERISATIONS

__all__ = ["CONTINUOUS_SCHEDULES", "TorchSchedule", "Oracle", "MixtureOracle", "GaussianOracle", "gp_oracle",
           "ModelOracle"]

CONTINUOUS_SCHEDULES = ("ou-half", "ou-unit", "vp-linear")
VP_BETA_MIN, VP_BETA_MAX = 0.1, 20.0


@dataclass(frozen=True)
class TorchSchedule:
    """A variance-preserving schedule in torch: log alpha_t, its time derivative f(t), and sigma_t^2 = 1 - alpha_t^2.

    f = d log alpha / dt is the drift coefficient of the forward SDE dx = f x dt + g dW, and g^2 = -2 f
    (variance preserving), so the probability-flow ODE is dx/dt = f (x + grad log p_t) (Song et al. 2021, eq. 13).
    """

    name: str = "ou-unit"

    def __post_init__(self) -> None:
        if self.name not in CONTINUOUS_SCHEDULES:
            raise InvalidArgumentError("schedule", f"a continuous schedule, one of {CONTINUOUS_SCHEDULES}",
                                       repr(self.name))

    @property
    def t_max(self) -> float:
        return 1.0 if self.name == "vp-linear" else math.inf

    def check(self, t: Any, argument: str = "t") -> None:
        """Raise TimeOutOfRangeError unless every time lies in (0, t_max]."""
        values = torch.as_tensor(t, dtype=torch.float64)
        if not bool(torch.all((values > 0) & (values <= self.t_max))):
            raise TimeOutOfRangeError(argument, f"times in (0, {self.t_max}] for schedule {self.name!r}",
                                      f"values from {float(values.min())} to {float(values.max())}")

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "ou-half":
            return -t / 2
        if self.name == "ou-unit":
            return -t
        return -t * t * (VP_BETA_MAX - VP_BETA_MIN) / 4 - t * VP_BETA_MIN / 2

    def drift(self, t: torch.Tensor) -> torch.Tensor:
        """f(t) = d log alpha_t / dt."""
        if self.name == "ou-half":
            return torch.full_like(t, -0.5)
        if self.name == "ou-unit":
            return torch.full_like(t, -1.0)
        return -t * (VP_BETA_MAX - VP_BETA_MIN) / 2 - VP_BETA_MIN / 2

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma2(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(2 * self.log_alpha(t))


def _schedule(schedule: str | TorchSchedule) -> TorchSchedule:
    return schedule if isinstance(schedule, TorchSchedule) else TorchSchedule(schedule)


class Oracle:
    """Base class: counted ``score`` and ``log_density`` at times of ``schedule`` for inputs [N, dim]."""

    has_energy: bool = False

    def __init__(self, dim: int, schedule: str | TorchSchedule = "ou-unit", *, device: Any = None,
                 dtype: torch.dtype = torch.float64):
        self.dim = dim
        self.schedule = _schedule(schedule)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.score_evals = 0
        self.energy_evals = 0
        self.score_rows = 0

    def counts(self) -> tuple[int, int]:
        """(score_evals, energy_evals) so far."""
        return self.score_evals, self.energy_evals

    def _times(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """t as a float64 tensor [N] or [1] on x's device, checked against the schedule."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError("x", f"shape [N, {self.dim}]", str(tuple(x.shape)))
        times = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1)
        if times.numel() not in (1, x.shape[0]):
            raise ShapeError("t", f"a scalar or shape [{x.shape[0]}] (one time per row)", str(tuple(times.shape)))
        self.schedule.check(times)
        return times

    def score(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """grad_x log p_t(x), [N, dim]; one counted evaluation."""
        times = self._times(x, t)
        self.score_evals += 1
        self.score_rows += x.shape[0]
        return self._score(x, times)

    def log_density(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """log p_t(x), [N]; one counted evaluation. Raises InvalidArgumentError when the oracle has no energy."""
        if not self.has_energy:
            raise InvalidArgumentError("oracle", "an oracle with log densities (has_energy)",
                                       f"{type(self).__name__} gives scores only")
        times = self._times(x, t)
        self.energy_evals += 1
        return self._log_density(x, times)

    def curvature(self, t: float) -> float | None:
        """The largest eigenvalue of -hess log p_t where known in closed form, else None (a model oracle).

        For one Gaussian it is the score's Lipschitz constant; for a mixture it is the largest component
        precision, max_k lambda_max(Cov_k(t)^-1), which bounds the concave part of the Hessian only (the
        between-component term adds positive curvature of order ||alpha (mu_j - mu_k)||^2 times precisions^2).
        """
        return None

    def _score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _log_density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _mixture_log_terms(y: torch.Tensor, log_weights: torch.Tensor, centers: torch.Tensor,
                       covariances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log density [N], score [N, m]) of sum_k w_k N(center_k, Cov_k) at y [N, m]; centers [T, K, m], Cov [T, K, m, m], T in {1, N}.

    Cov_k = L L^T; the K (or N K) small inverse factors L^-1 are formed once, so the N rows cost two
    batched matrix products (much faster in torch than N K triangular solves).
    """
    lower = torch.linalg.cholesky(covariances)
    eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
    inverse = torch.linalg.solve_triangular(lower, eye.expand_as(lower), upper=False)  # L^-1
    offsets = y[:, None, :] - centers  # [N, K, m]
    white = torch.einsum("tkij,nkj->nki", inverse, offsets) if inverse.shape[0] == 1 else torch.einsum(
        "nkij,nkj->nki", inverse, offsets)
    m = y.shape[-1]
    log_det = 2 * torch.log(torch.diagonal(lower, dim1=-2, dim2=-1)).sum(-1)  # [T, K]
    log_components = log_weights - (white.pow(2).sum(-1) + log_det + m * math.log(2 * math.pi)) / 2
    log_total = torch.logsumexp(log_components, dim=-1)
    responsibilities = torch.exp(log_components - log_total[:, None])
    weighted = responsibilities[..., None] * white  # then L^-T: the score is -sum_k r_k Cov_k^-1 (y - c_k)
    natural = torch.einsum("tkji,nkj->ni", inverse, weighted) if inverse.shape[0] == 1 else torch.einsum(
        "nkji,nkj->ni", inverse, weighted)
    return log_total, -natural


class MixtureOracle(Oracle):
    """Exact score and log density of a forward-diffused latent Gaussian mixture (reference.mixtures.LatentMixture).

    p_t = law of alpha_t B h + sigma_t z; closed forms in the module docstring (LD1). Batched over rows,
    one Cholesky per component (per row when t is per row).
    """

    has_energy = True

    def __init__(self, mixture: LatentMixture, schedule: str | TorchSchedule = "ou-unit", *, device: Any = None,
                 dtype: torch.dtype = torch.float64):
        if not isinstance(mixture, LatentMixture):
            raise InvalidArgumentError("mixture", "a LatentMixture", type(mixture).__name__)
        super().__init__(mixture.ambient_dim, schedule, device=device, dtype=dtype)
        self.mixture = mixture
        weights = mixture.weights / mixture.weights.sum()
        as_tensor = lambda a: torch.as_tensor(np.array(a), dtype=dtype, device=self.device)  # noqa: E731
        self.basis = as_tensor(mixture.basis)
        self.log_weights = as_tensor(np.log(weights))
        self.means = as_tensor(mixture.means)
        self.covariances = as_tensor(mixture.covariances)
        self.full_rank = mixture.latent_dim == mixture.ambient_dim and np.array_equal(mixture.basis,
                                                                                       np.eye(mixture.ambient_dim))

    def _parts(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = t.to(self.dtype)
        alpha = self.schedule.alpha(t)
        sigma2 = self.schedule.sigma2(t)
        latent = x if self.full_rank else x @ self.basis
        identity = torch.eye(self.mixture.latent_dim, dtype=self.dtype, device=x.device)
        centers = alpha[:, None, None] * self.means
        covariances = (alpha**2)[:, None, None, None] * self.covariances + sigma2[:, None, None, None] * identity
        log_q, score_q = _mixture_log_terms(latent, self.log_weights, centers, covariances)
        return latent, log_q, score_q, sigma2

    def curvature(self, t: float) -> float:
        """max_k lambda_max((alpha_t^2 S_k + sigma_t^2 I)^-1), and 1/sigma_t^2 on the orthogonal complement (d0 < D)."""
        times = torch.as_tensor(t, dtype=torch.float64).reshape(1)
        self.schedule.check(times)
        alpha2 = float(self.schedule.alpha(times)) ** 2
        sigma2 = float(self.schedule.sigma2(times))
        smallest = alpha2 * float(np.linalg.eigvalsh(self.mixture.covariances)[:, 0].min()) + sigma2
        return 1.0 / (smallest if self.full_rank or self.mixture.latent_dim == self.dim else min(smallest, sigma2))

    def _score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        latent, _, score_q, sigma2 = self._parts(x, t)
        if self.full_rank:
            return score_q
        residual = x - latent @ self.basis.T
        return score_q @ self.basis.T - residual / sigma2[:, None]

    def _log_density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        latent, log_q, _, sigma2 = self._parts(x, t)
        if self.full_rank:
            return log_q
        residual = x - latent @ self.basis.T
        codim = self.mixture.ambient_dim - self.mixture.latent_dim
        return (log_q - residual.pow(2).sum(-1) / (2 * sigma2)
                - codim / 2 * torch.log(2 * math.pi * sigma2))

    def log_density_and_score(self, x: torch.Tensor, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once (one shared factorisation); counted as one score and one energy evaluation."""
        times = self._times(x, t)
        self.score_evals += 1
        self.energy_evals += 1
        self.score_rows += x.shape[0]
        latent, log_q, score_q, sigma2 = self._parts(x, times)
        if self.full_rank:
            return log_q, score_q
        residual = x - latent @ self.basis.T
        codim = self.mixture.ambient_dim - self.mixture.latent_dim
        log_p = log_q - residual.pow(2).sum(-1) / (2 * sigma2) - codim / 2 * torch.log(2 * math.pi * sigma2)
        return log_p, score_q @ self.basis.T - residual / sigma2[:, None]


class GaussianOracle(Oracle):
    """Exact score and log density of N(m, S) diffused: N(alpha_t m, alpha_t^2 S + sigma_t^2 I) (dense, small dim)."""

    has_energy = True

    def __init__(self, mean: Any, covariance: Any, schedule: str | TorchSchedule = "ou-unit", *, device: Any = None,
                 dtype: torch.dtype = torch.float64):
        mean_np = np.asarray(mean, dtype=np.float64)
        cov_np = np.asarray(covariance, dtype=np.float64)
        if mean_np.ndim != 1:
            raise ShapeError("mean", "a 1-D mean", str(mean_np.shape))
        if cov_np.shape != (mean_np.size, mean_np.size):
            raise ShapeError("covariance", f"shape {(mean_np.size, mean_np.size)}", str(cov_np.shape))
        super().__init__(mean_np.size, schedule, device=device, dtype=dtype)
        self.mean = torch.as_tensor(mean_np, dtype=dtype, device=self.device)
        self.covariance = torch.as_tensor(cov_np, dtype=dtype, device=self.device)

    def _parts(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.to(self.dtype)
        alpha = self.schedule.alpha(t)
        cov = (alpha**2)[:, None, None] * self.covariance + self.schedule.sigma2(t)[:, None, None] * torch.eye(
            self.dim, dtype=self.dtype, device=x.device)
        return _mixture_log_terms(x, torch.zeros(1, dtype=self.dtype, device=x.device),
                                  (alpha[:, None] * self.mean)[:, None, :], cov[:, None])

    def curvature(self, t: float) -> float:
        """lambda_max((alpha_t^2 S + sigma_t^2 I)^-1): the score's exact Lipschitz constant."""
        times = torch.as_tensor(t, dtype=torch.float64).reshape(1)
        self.schedule.check(times)
        alpha2 = float(self.schedule.alpha(times)) ** 2
        sigma2 = float(self.schedule.sigma2(times))
        return 1.0 / (alpha2 * float(np.linalg.eigvalsh(self.covariance.cpu().numpy().astype(np.float64))[0])
                      + sigma2)

    def _score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._parts(x, t)[1]

    def _log_density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._parts(x, t)[0]


def gp_oracle(gamma: Any, sigma_matrix: Any, schedule: str | TorchSchedule = "ou-unit", *, device: Any = None,
              dtype: torch.dtype = torch.float64) -> GaussianOracle:
    """Gaussian-process sequences vec(x) ~ N(0, Gamma (x) Sigma) (Fu et al. 2025; GP1) as a GaussianOracle on [N, H d] rows.

    Row-major vec as in reference.gp (frame i, channel a -> index i d + a); the kernels are validated there.
    """
    gamma_np, sigma_np = reference_gp.check_kernels(gamma, sigma_matrix)
    covariance = np.kron(gamma_np, sigma_np)
    return GaussianOracle(np.zeros(covariance.shape[0]), (covariance + covariance.T) / 2, schedule, device=device,
                          dtype=dtype)


Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ModelOracle(Oracle):
    """A user model ``model(x [N, dim], t [N]) -> prediction [N, dim]`` in the stated parameterisation, as a score oracle.

    ``parameterisation`` is one of "eps", "x0", "v", "score" (docs/conventions.md#parameterisations; v = alpha eps - sigma x0);
    ``time_map`` converts the sampler's time to the model's own time input (e.g. t -> 1000 t / T_max);
    the identity by default. Scores only: RTK-MALA then needs ``energy_nodes`` (samplers.RTKPotential line integrals).
    """

    def __init__(self, model: Model, dim: int, parameterisation: str, schedule: str | TorchSchedule = "ou-unit", *,
                 time_map: Callable[[torch.Tensor], torch.Tensor] | None = None, device: Any = None,
                 dtype: torch.dtype = torch.float64):
        require_choice(parameterisation, PARAMETERISATIONS, "parameterisation")
        if not callable(model):
            raise InvalidArgumentError("model", "a callable model(x, t)", type(model).__name__)
        super().__init__(dim, schedule, device=device, dtype=dtype)
        self.model = model
        self.parameterisation = parameterisation
        self.time_map = time_map

    def _score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        times = t.to(x.dtype).expand(x.shape[0])
        model_time = self.time_map(times) if self.time_map is not None else times
        prediction = self.model(x, model_time)
        if tuple(prediction.shape) != tuple(x.shape):
            raise ShapeError("model", f"a model returning shape {tuple(x.shape)}", str(tuple(prediction.shape)))
        alpha = self.schedule.alpha(times)[:, None]
        sigma = self.schedule.sigma2(times).sqrt()[:, None]
        if self.parameterisation == "score":
            return prediction
        if self.parameterisation == "eps":
            eps = prediction
        elif self.parameterisation == "x0":
            eps = (x - alpha * prediction) / sigma
        else:
            eps = alpha * prediction + sigma * x
        return -eps / sigma
