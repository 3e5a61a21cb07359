"""LD9: subspace recovery of latent DiTs (Hu, Wu, Li, Song, Liu, NeurIPS 2024, corollary on distribution recovery).

Hu et al. bound the subspace error ||W_B W_B^T - B B^T|| of the score network's learned W_B (and a TV bound on the
latent law) in terms of the score-estimation error, which falls with the number n of samples. What can be checked
without trained networks: the W_B that minimises the *orthogonal part* of the empirical denoising loss. For the
network class s(x, t) = W_B f(W_B^T x, t)/sigma_t^2 - x/sigma_t^2 (LD2) the term of the loss that f cannot reach is
||(I - W_B W_B^T) x||^2 / sigma_t^4 summed over the samples, minimised by the span of the top d0 left singular vectors
of the sample matrix X = [x_1 .. x_n] (Eckart-Young). Under the paper's assumption x = B h exactly, with h having a
density, X has rank d0 as soon as n >= d0, so that span is span(B): the learned subspace is exact for every
n >= d0 and the claimed rate in n holds trivially (error at rounding level). This module measures that error
against an a-priori float64 bound (Wedin's sin-theta theorem):

    ||W W^T - B B^T||_2 <= (||E||_F + max(D, n) u ||X||_2) / (sigma_d0(X) - ||E||_F - max(D, n) u ||X||_2) + 2 gamma_{d0+2}

with E the rounding of X = B H (|E| <= gamma_d0 |B| |H| entrywise), max(D, n) u ||X||_2 the SVD's backward error
(LAPACK's gesdd is backward stable with a modest p(D, n); p = max(D, n) is taken) and the last term forming the two
projectors. The latent TV part of the corollary depends on the trained score's error (LD4): not checkable here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from ditcheck import bounds
from ditcheck.reference import formats
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.mixtures import LatentMixture, gaussian_mixture, sample

from .measurement import Measurement
from .strategies import orthonormal_columns, seeds

__all__ = ["RecoveryCase", "recovery_cases", "learned_subspace", "subspace_error_bound", "measure_subspace_recovery",
           "Learner"]

UNIT = formats.FLOAT64.unit_roundoff


@dataclass(frozen=True)
class RecoveryCase:
    """n samples x = B h in R^ambient, B [ambient, latent] orthonormal, h a ``components``-component Gaussian mixture whose
    covariances have condition number ``condition`` (small latent directions make sigma_d0(X) small)."""

    ambient: int
    latent: int
    samples: int
    seed: int
    components: int = 2
    condition: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.latent <= self.ambient:
            raise InvalidArgumentError("latent", f"1 <= latent <= ambient = {self.ambient}", repr(self.latent))
        if self.samples < self.latent:
            raise InvalidArgumentError("samples", f"at least latent = {self.latent} samples", repr(self.samples))

    def mixture(self) -> LatentMixture:
        rng = np.random.default_rng(self.seed)
        basis = orthonormal_columns(self.ambient, self.latent, self.seed)
        spectrum = np.geomspace(1.0, 1.0 / self.condition, self.latent)
        covariances = []
        for _ in range(self.components):
            rotation = orthonormal_columns(self.latent, self.latent, int(rng.integers(2**32)))
            covariance = (rotation * spectrum) @ rotation.T
            covariances.append((covariance + covariance.T) / 2)
        mixture = gaussian_mixture(np.full(self.components, 1 / self.components),
                                   rng.standard_normal((self.components, self.latent)), np.stack(covariances))
        return LatentMixture(basis, mixture.weights, mixture.means, mixture.covariances)


@st.composite
def recovery_cases(draw: st.DrawFn) -> RecoveryCase:
    ambient = draw(st.integers(2, 24))
    latent = draw(st.integers(1, ambient))
    samples = draw(st.sampled_from([latent, latent + 1, 2 * latent, 10 * latent, 100, 1000]))
    return RecoveryCase(ambient, latent, max(samples, latent), draw(seeds()), draw(st.integers(1, 3)),
                        draw(st.sampled_from([1.0, 10.0, 1e3, 1e5])))


def learned_subspace(samples: np.ndarray, latent: int) -> np.ndarray:
    """W_B [D, d0]: the top ``latent`` left singular vectors of the sample matrix (rows of ``samples`` are x_i), the
    minimiser of the orthogonal part sum_i ||(I - W W^T) x_i||^2 of the empirical denoising loss."""
    left, _, _ = np.linalg.svd(np.asarray(samples, dtype=np.float64).T, full_matrices=False)
    return left[:, :latent]


def subspace_error_bound(basis: np.ndarray, latent_samples: np.ndarray, samples: np.ndarray) -> float:
    """The a-priori bound on ||W W^T - B B^T||_2 of the module docstring (inf when sigma_d0(X) does not dominate)."""
    d0 = basis.shape[1]
    data = bounds.gamma(d0, UNIT) * float(np.linalg.norm(np.abs(latent_samples) @ np.abs(basis).T))
    singular = np.linalg.svd(samples.T, compute_uv=False)
    backward = max(samples.shape) * UNIT * float(singular[0])
    gap = float(singular[d0 - 1]) - data - backward
    projectors = 2 * bounds.gamma(d0 + 2, UNIT) + 2 * UNIT  # W W^T, B B^T and their difference, per entry
    if gap <= 0:
        return math.inf
    return (data + backward) / gap + projectors * math.sqrt(basis.shape[0] * d0)


Learner = Callable[[np.ndarray, int], np.ndarray]


def measure_subspace_recovery(case: RecoveryCase, learn: Learner = learned_subspace) -> Measurement:
    """LD9 (Hu et al. 2024, distribution recovery; docs/claims.md#ld9): ||W_B W_B^T - B B^T||_2 of the learned subspace
    from ``case.samples`` samples against its float64 bound. ``forms``: sigma_d0(X)/sigma_1(X) (how ill-conditioned
    the samples are) and the error in units of u."""
    mixture = case.mixture()
    x = sample(mixture, case.samples, case.seed + 1)
    latent = x @ mixture.basis  # h = B^T x (exact to rounding: the bound's |H| term is its magnitude)
    learned = np.asarray(learn(x, case.latent), dtype=np.float64)
    error = float(np.linalg.norm(learned @ learned.T - mixture.basis @ mixture.basis.T, ord=2))
    limit = subspace_error_bound(mixture.basis, latent, x)
    singular = np.linalg.svd(x.T, compute_uv=False)
    return Measurement(error, limit, case, forms={"sigma_d0 / sigma_1": float(singular[case.latent - 1] / singular[0]),
                                                  "error / u": error / UNIT})
