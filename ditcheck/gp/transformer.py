"""GP2: a transformer unrolling gradient descent for the Gaussian-process score (Fu, Dou, Guo, Wang, Chen, ICLR 2025).

The score of vec(x) ~ N(0, Gamma (x) Sigma) diffused to time t is s* = -A_t^-1 vec(x) with
A_t = alpha_t^2 Gamma (x) Sigma + sigma_t^2 I (GP1). Gradient descent on 1/2 s^T A_t s + s^T x,

    s^{k+1} = s^k - h (A_t s^k + x),   s^0 = 0,   h = 1 / lambda_max(A_t),

contracts by ||I - h A_t||_2 = 1 - 1/kappa_t per step, so ||s^K - s*|| <= (1 - 1/kappa_t)^K ||s*|| (GP2).
With the frames as tokens (S [H, d], row i the score of frame i) one step reads

    S <- S - h alpha_t^2 Gamma S Sigma - h sigma_t^2 S - h X,

and Gamma S Sigma is attention: token i mixes the values v_j = Sigma s_j with weights gamma(i, j).
:class:`UnrolledGPTransformer` builds that transformer explicitly. Every token carries a residual stream
z_i = [x_i, s_i, p_i] (widths d, d, P); p_i is a fixed positional encoding; W_Q, W_K read p, W_V reads s
and applies Sigma, W_O writes back into the s slot, and a time-gated linear map adds -h sigma_t^2 s - h x.
The gates -h alpha_t^2, -h sigma_t^2, -h depend on t only (the role adaLN plays in a DiT).

Positional encodings that make the attention weights gamma(i, j) (``encoding``):

* ``"one-hot"`` (linear attention, P = 2H): p_i = [e_i, Gamma[:, i]], q_i = e_i, k_j = Gamma[:, j], so
  q_i . k_j = Gamma_ij bit for bit (a dot product with a one-hot vector rounds nothing).
* ``"factor"`` (linear attention, P = rank): Gamma = F F^T with F = U diag(sqrt(g)) from eigh, p_i = F[i],
  q_i = k_i = p_i. For a stationary kernel this is a learned-looking low-dimensional encoding; the weights
  equal gamma to eigh's rounding (about n u ||Gamma||).
* ``"softmax"`` (softmax attention, P = 2H + 1): q_i = e_i, k_j = log Gamma[:, j], so softmax row i is
  Gamma_ij / r_i with r_i = sum_j Gamma_ij; a per-token gain r_i (the last encoding entry) restores Gamma_ij.
  Needs every gamma(i, j) > 0 (true for the three decay classes, not for banded kernels).

The bound and its derived rounding floor are ditcheck.bounds.gp2_rate, gp2_rounding_floor and gp2_condition_upper.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from ditcheck.reference import gp
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, ShapeError
from ditcheck.reference.linalg import eigenvalue_error_bound
from ditcheck.reference.precision import FLOAT64, as_float64_array
from ditcheck.reference.schedules import Schedule, coefficients

__all__ = [
    "ENCODINGS",
    "Encoding",
    "KernelAttention",
    "GradientStepBlock",
    "UnrolledGPTransformer",
    "positional_encodings",
]

Encoding = Literal["one-hot", "factor", "softmax"]
ENCODINGS: tuple[Encoding, ...] = get_args(Encoding)


def positional_encodings(gamma: np.ndarray,
                         encoding: Encoding = "one-hot") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P [H, width], query reader [width, r], key reader [width, r]) with attention weights gamma(i, j) (GP2).

    Linear attention weights are (P R_Q)(P R_K)^T; softmax ones (the ``"softmax"`` encoding) are
    gain_i softmax_j((P R_Q)(P R_K)^T), gain = P[:, -1]. Readers are 0/1 selection matrices.
    """
    gamma = as_float64_array(gamma, "gamma")
    if gamma.ndim != 2 or gamma.shape[0] != gamma.shape[1] or gamma.shape[0] < 1:
        raise ShapeError("gamma", "a square [H, H] temporal kernel matrix", str(gamma.shape))
    size = gamma.shape[0]
    eye = np.eye(size)
    if encoding == "one-hot":
        table = np.concatenate([eye, gamma.T], axis=1)
        return table, np.concatenate([eye, np.zeros((size, size))]), np.concatenate([np.zeros((size, size)), eye])
    if encoding == "factor":
        values, vectors = np.linalg.eigh(gamma)
        keep = values > eigenvalue_error_bound(gamma)  # drop the numerical null space: weights change by <= its bound
        table = vectors[:, keep] * np.sqrt(values[keep])
        reader = np.eye(table.shape[1])
        return table, reader, reader
    if encoding == "softmax":
        if not np.all(gamma > 0):
            raise InvalidArgumentError("gamma", "strictly positive entries for the 'softmax' encoding (log gamma)",
                                       f"min {float(gamma.min()):.3g}")
        gain = gamma.sum(axis=1, keepdims=True)
        table = np.concatenate([eye, np.log(gamma).T, gain], axis=1)
        zeros = np.zeros((1, size))
        return (table, np.concatenate([eye, np.zeros((size, size)), zeros]),
                np.concatenate([np.zeros((size, size)), eye, zeros]))
    raise InvalidArgumentError("encoding", f"one of {ENCODINGS}", repr(encoding))


class KernelAttention(nn.Module):
    """Single-head attention over the frames with weights gamma(i, j) from positional encodings; values Sigma s_j."""

    def __init__(self, gamma: np.ndarray, sigma_matrix: np.ndarray, encoding: Encoding = "one-hot", *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        dim = sigma_matrix.shape[0]
        table, query_reader, key_reader = positional_encodings(gamma, encoding)
        width = 2 * dim + table.shape[1]
        self.encoding = encoding
        self.softmax = encoding == "softmax"
        factory = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), **factory)

        position_slot = slice(2 * dim, width)
        w_q = np.zeros((width, query_reader.shape[1]))
        w_q[position_slot] = query_reader
        w_k = np.zeros((width, key_reader.shape[1]))
        w_k[position_slot] = key_reader
        w_v = np.zeros((width, dim))
        w_v[dim:2 * dim] = sigma_matrix  # Sigma symmetric: v_j = Sigma s_j is the row s_j Sigma
        w_o = np.zeros((dim, width))
        w_o[:, dim:2 * dim] = np.eye(dim)
        self.register_buffer("w_q", tensor(w_q))
        self.register_buffer("w_k", tensor(w_k))
        self.register_buffer("w_v", tensor(w_v))
        self.register_buffer("w_o", tensor(w_o))
        gain = np.zeros(width)
        if self.softmax:
            gain[-1] = 1.0
        self.register_buffer("w_gain", tensor(gain[:, None]))

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """Attention weights [N, H, H] for the residual stream z [N, H, width]."""
        scores = (z @ self.w_q) @ (z @ self.w_k).transpose(-1, -2)
        if self.softmax:
            return (z @ self.w_gain) * torch.softmax(scores, dim=-1)
        return scores

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """W_O (weights (z W_V)): the update written into the s slot, [N, H, width]."""
        return (self.weights(z) @ (z @ self.w_v)) @ self.w_o


class GradientStepBlock(nn.Module):
    """One GP2 step on the residual stream: z + a attn(z) + (b s + c x) into the s slot.

    Gates (a, b, c) = (-h alpha_t^2, -h sigma_t^2, -h) per sequence, so the s slot becomes
    s - h (alpha_t^2 Gamma S Sigma + sigma_t^2 S + X): one gradient-descent step.
    """

    def __init__(self, gamma: np.ndarray, sigma_matrix: np.ndarray, encoding: Encoding = "one-hot", *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.attn = KernelAttention(gamma, sigma_matrix, encoding, device=device, dtype=dtype)
        dim = sigma_matrix.shape[0]
        width = self.attn.w_v.shape[0]
        read_s, read_x = np.zeros((width, width)), np.zeros((width, width))
        read_s[dim:2 * dim, dim:2 * dim] = np.eye(dim)
        read_x[0:dim, dim:2 * dim] = np.eye(dim)
        self.register_buffer("read_s", torch.as_tensor(read_s, device=device, dtype=self.attn.w_v.dtype))
        self.register_buffer("read_x", torch.as_tensor(read_x, device=device, dtype=self.attn.w_v.dtype))

    def forward(self, z: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """z [N, H, width], gates [N, 3] = (a, b, c) per sequence."""
        a, b, c = (gates[:, i, None, None] for i in range(3))
        return z + a * self.attn(z) + (b * (z @ self.read_s) + c * (z @ self.read_x))


class UnrolledGPTransformer(nn.Module):
    """GP2: K blocks; block k outputs the k-th gradient-descent iterate of the GP score (weights fixed, none learned).

    ``forward(x [N, H, d] or [H, d], t)`` returns s^K with the shape of x; ``return_iterates=True`` returns
    [K + 1, ...] (s^0 = 0 first). Times go through the reference schedule in float64; the gates are cast to
    ``dtype`` (float64 reproduces the reference iteration to rounding; any float dtype works).
    """

    def __init__(self, gamma: Any, sigma_matrix: Any, num_blocks: int, *, encoding: Encoding = "one-hot",
                 schedule: str | Schedule = "ou-half", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if encoding not in ENCODINGS:
            raise InvalidArgumentError("encoding", f"one of {ENCODINGS}", repr(encoding))
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, (int, np.integer)) or num_blocks < 0:
            raise InvalidArgumentError("num_blocks", "a non-negative integer", repr(num_blocks))
        gamma, sigma_matrix = gp.check_kernels(gamma, sigma_matrix)
        self.gamma, self.sigma_matrix, self.schedule, self.encoding = gamma, sigma_matrix, schedule, encoding
        self.frames, self.dim = gamma.shape[0], sigma_matrix.shape[0]
        self.blocks = nn.ModuleList(GradientStepBlock(gamma, sigma_matrix, encoding, device=device, dtype=dtype)
                                    for _ in range(int(num_blocks)))
        table = positional_encodings(gamma, encoding)[0]
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.register_buffer("pos_embed", torch.as_tensor(table, device=device, dtype=dtype))

    def step_size(self, t: np.ndarray) -> np.ndarray:
        """h = 1 / lambda_max(A_t) per time, float64 (GP2)."""
        return gp.gradient_descent_step_size(t, self.gamma, self.sigma_matrix, self.schedule)

    def gates(self, t: Any, count: int) -> np.ndarray:
        """(a, b, c) = (-h alpha_t^2, -h sigma_t^2, -h) per sequence, float64 [count, 3]."""
        raw = t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else t
        times = as_float64_array(raw, "t")
        times = np.full(count, float(times)) if times.ndim == 0 else times
        _, alpha, sigma2 = coefficients(FLOAT64, times, self.schedule, count)
        h = np.reshape(self.step_size(times), (-1,))
        return np.stack([-h * alpha**2, -h * sigma2, -h], axis=1)

    def attention_weights(self) -> torch.Tensor:
        """The [H, H] attention weights every block uses (they depend on positions only)."""
        like = {"dtype": self.pos_embed.dtype, "device": self.pos_embed.device}
        z = self.embed(torch.zeros((1, self.frames, self.dim), **like))
        attn = self.blocks[0].attn if len(self.blocks) else KernelAttention(
            self.gamma, self.sigma_matrix, self.encoding, **like)
        return attn.weights(z)[0]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Residual stream [N, H, width] = [x, s^0 = 0, positional encoding]."""
        n = x.shape[0]
        return torch.cat([x, torch.zeros_like(x), self.pos_embed.expand(n, -1, -1)], dim=-1)

    def forward(self, x: torch.Tensor, t: Any, *, return_iterates: bool = False) -> torch.Tensor:
        single = x.dim() == 2
        batch = x[None] if single else x
        if batch.dim() != 3 or tuple(batch.shape[1:]) != (self.frames, self.dim):
            raise ShapeError("x", f"[H, d] = {(self.frames, self.dim)} or [N, H, d]", str(tuple(x.shape)))
        if x.dtype != self.pos_embed.dtype:
            raise DTypeError("x", f"the model's dtype {self.pos_embed.dtype}", str(x.dtype))
        gates = torch.as_tensor(self.gates(t, batch.shape[0]), dtype=batch.dtype, device=batch.device)
        z = self.embed(batch)
        iterates = [z[..., self.dim:2 * self.dim]]
        for block in self.blocks:
            z = block(z, gates)
            iterates.append(z[..., self.dim:2 * self.dim])
        out = torch.stack(iterates) if return_iterates else iterates[-1]
        return out[:, 0] if (single and return_iterates) else out[0] if single else out
