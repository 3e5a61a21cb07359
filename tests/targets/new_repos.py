"""Replicas of patterns met in DiT code bases checked with ``validate dit --inputs`` on 2026-12-07, written here from
a reading of the public code, not copied:

- a decoupled (DDT-style) class-conditional model: a LLaMA RMSNorm stating its eps as ``variance_epsilon`` and
  computing in float32, a timestep embedder whose period is the default of its ``timestep_embedding(t, dim,
  max_period=10)`` method (timesteps in [0, 1]), LLaMA's SwiGLU FeedForward ``w2(silu(w1 x) w3 x)`` (children w1, w2,
  w3), and blocks whose glue (a 6-chunk adaLN without SiLU, fold / unfold patches) the engine does not model.

Each class takes ``bug`` knobs that plant one subtle fault (an eps written into forward that contradicts the stated
one, the timestep period changed in the call, the SwiGLU gate and up projections swapped).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN, HEADS, DEPTH, PATCH, CHANNELS, SIDE, CLASSES = 32, 2, 2, 2, 4, 8, 5


class VarianceEpsilonRMSNorm(nn.Module):
    """LLaMA's RMSNorm: eps stated as ``variance_epsilon``, mean(x^2) in float32. Planted: ``forward_eps``
    (not None) is the eps the forward really uses."""

    def __init__(self, dim: int, eps: float = 1e-6, forward_eps: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps
        self.forward_eps = forward_eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        eps = self.variance_epsilon if self.forward_eps is None else self.forward_eps
        x = hidden_states.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return self.weight * x.to(hidden_states.dtype)


class ShortPeriodTimestepEmbedder(nn.Module):
    """A DiT timestep embedder ([cos, sin], Linear-SiLU-Linear) whose period 10 is only the default of its
    ``timestep_embedding`` method. Planted: ``called_period`` (not None) is passed in the call instead."""

    def __init__(self, dim: int, frequency_embedding_size: int = 64, called_period: float | None = None):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.frequency_embedding_size = frequency_embedding_size
        self.called_period = called_period

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype) / half)
        args = t[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.called_period is None:
            features = self.timestep_embedding(t, self.frequency_embedding_size)
        else:
            features = self.timestep_embedding(t, self.frequency_embedding_size, self.called_period)
        return self.mlp(features)


class FeedForward(nn.Module):
    """LLaMA's FeedForward: w2(silu(w1 x) w3 x), no bias. Planted: ``gate_swapped`` gates with w3 instead of w1;
    ``extra_child`` adds a child (a near miss of the structure: not recognised)."""

    def __init__(self, dim: int, hidden: int, gate_swapped: bool = False, extra_child: bool = False):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        if extra_child:
            self.norm = nn.LayerNorm(hidden)
        self.gate_swapped = gate_swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = (self.w3(x), self.w1(x)) if self.gate_swapped else (self.w1(x), self.w3(x))
        hidden = F.silu(gate) * up
        return self.w2(self.norm(hidden) if hasattr(self, "norm") else hidden)


class DecoupledBlock(nn.Module):
    """A pre-norm adaLN block with RMSNorms, an attention written inline and the SwiGLU MLP (unmodelled glue)."""

    def __init__(self, bug: dict[str, Any]):
        super().__init__()
        self.norm1 = VarianceEpsilonRMSNorm(HIDDEN, forward_eps=bug.get("forward_eps"))
        self.qkv, self.proj = nn.Linear(HIDDEN, 3 * HIDDEN), nn.Linear(HIDDEN, HIDDEN)
        self.norm2 = VarianceEpsilonRMSNorm(HIDDEN)
        self.mlp = FeedForward(HIDDEN, 2 * HIDDEN, gate_swapped=bug.get("gate_swapped", False),
                                     extra_child=bug.get("extra_child", False))
        self.adaLN_modulation = nn.Sequential(nn.Linear(HIDDEN, 6 * HIDDEN))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        b, n, d = x.shape
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + gate1 * self.proj(attended)
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


class Decoupled(nn.Module):
    """A tiny DDT-style class-conditional model (latents 4 x 8 x 8, patch 2, hidden 32, depth 2)."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        bug = bug or {}
        self.x_embedder = nn.Linear(CHANNELS * PATCH * PATCH, HIDDEN)
        self.t_embedder = ShortPeriodTimestepEmbedder(HIDDEN, called_period=bug.get("called_period"))
        self.y_embedder = nn.Embedding(CLASSES + 1, HIDDEN)
        self.blocks = nn.ModuleList(DecoupledBlock(bug) for _ in range(DEPTH))
        self.final = nn.Linear(HIDDEN, CHANNELS * PATCH * PATCH)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        tokens = F.unfold(x, kernel_size=PATCH, stride=PATCH).transpose(1, 2)
        c = F.silu(self.t_embedder(t) + self.y_embedder(y))[:, None]
        h = self.x_embedder(tokens)
        for block in self.blocks:
            h = block(h, c)
        return F.fold(self.final(h).transpose(1, 2), (height, width), kernel_size=PATCH, stride=PATCH)


def decoupled_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents, flow-matching timesteps in [0, 1], class labels."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(2, CHANNELS, SIDE, SIDE, generator=generator), torch.rand(2, generator=generator),
            torch.randint(0, CLASSES, (2,), generator=generator))


class Float32LayerNorm(nn.LayerNorm):
    """HunyuanDiT's FP32_Layernorm pattern: an nn.LayerNorm subclass whose forward upcasts to float32. Planted:
    ``forward_eps`` (not None) is the eps its forward really uses."""

    def __init__(self, dim: int, eps: float = 1e-6, forward_eps: float | None = None):
        super().__init__(dim, eps=eps)
        self.forward_eps = forward_eps

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.forward_eps is None else self.forward_eps
        return F.layer_norm(inputs.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            eps).to(inputs.dtype)


class Float32SiLU(nn.SiLU):
    """HunyuanDiT's FP32_SiLU pattern: SiLU computed in float32 and cast back."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.silu(inputs.float()).to(inputs.dtype)


class DictOutput(nn.Module):
    """A text-conditioned model returning ``{"x": out}`` (HunyuanDiT's return_dict=True), with float32-upcasting
    LayerNorm and SiLU subclasses. Planted: ``forward_eps`` in its norm, ``infinite`` output values."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        bug = bug or {}
        self.modulation = nn.Sequential(Float32SiLU(), nn.Linear(HIDDEN, HIDDEN))
        self.norm = Float32LayerNorm(HIDDEN, forward_eps=bug.get("forward_eps"))
        self.proj = nn.Linear(HIDDEN, HIDDEN)
        self.infinite = bug.get("infinite", False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.proj(self.norm(x) + self.modulation(c)[:, None])
        return {"x": out * math.inf if self.infinite else out}


def dict_output_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 6, HIDDEN, generator=generator), torch.randn(2, HIDDEN, generator=generator)


class Attention(nn.Module):
    """Open-Sora's Attention pattern (non-flash path): qkv, heads, q prescaled, logits cast to float32 for the
    softmax and back, proj. Planted: ``head_dim_scale`` scales by 1/head_dim instead of 1/sqrt(head_dim)."""

    def __init__(self, dim: int, num_heads: int, head_dim_scale: bool = False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** (-1.0 if head_dim_scale else -0.5)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        logits = ((q * self.scale) @ k.transpose(-2, -1)).to(torch.float32)  # the softmax in float32, by design
        weights = logits.softmax(dim=-1).to(q.dtype)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


class Float32Softmax(nn.Module):
    """One attention layer of the Open-Sora pattern between two linears."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        self.attn = Attention(HIDDEN, HEADS, head_dim_scale=(bug or {}).get("head_dim_scale", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x)


def tokens_inputs(seed: int) -> tuple[torch.Tensor]:
    return (torch.randn(2, 6, HIDDEN, generator=torch.Generator().manual_seed(seed)),)


class RMSNorm(nn.Module):
    """Lumina-Next's (LLaMA's) RMSNorm: ``eps`` stated, normalised in float32 (x.float()) and cast back, then the
    weight. Planted: ``forward_eps`` (not None) is the eps its forward really uses."""

    def __init__(self, dim: int, eps: float = 1e-6, forward_eps: float | None = None):
        super().__init__()
        self.eps, self.forward_eps = eps, forward_eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.forward_eps is None else self.forward_eps
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm(x.float()).type_as(x) * self.weight


class NormThenLinear(nn.Module):
    """The Lumina-Next RMSNorm before a linear."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        self.norm = RMSNorm(HIDDEN, forward_eps=(bug or {}).get("forward_eps"))
        self.proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class Float32Sinusoid(nn.Module):
    """The original DiT / DDT / Latte timestep embedder pattern: frequencies made in float32 and ``t.float()``,
    so in a float64 model the float32 features meet a float64 Linear (F.linear refuses the mix). Planted:
    ``sin_first`` concatenates [sin, cos] instead of [cos, sin]."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        self.frequency_embedding_size = 64
        self.mlp = nn.Sequential(nn.Linear(64, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN))
        self.sin_first = (bug or {}).get("sin_first", False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        parts = [torch.sin(args), torch.cos(args)] if self.sin_first else [torch.cos(args), torch.sin(args)]
        return self.mlp(torch.cat(parts, dim=-1))


class SinusoidThenLinear(nn.Module):
    """The float32 sinusoid's embedding added to tokens and projected."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        self.t_embedder = Float32Sinusoid(bug)
        self.proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.proj(x + self.t_embedder(t)[:, None])


def sinusoid_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 6, HIDDEN, generator=generator), torch.rand(2, generator=generator) * 1000


class MultiHeadCrossAttention(nn.Module):
    """The PixArt-style cross-attention as Sana's code runs it without xformers: captions of all images arrive as one
    [1, B L, D] sequence with no lengths, and each image attends to its own L tokens (a per-batch view). Planted:
    ``kv_swapped`` takes (v, k) from kv_linear's halves."""

    def __init__(self, d_model: int, num_heads: int, kv_swapped: bool = False):
        super().__init__()
        self.num_heads, self.head_dim, self.kv_swapped = num_heads, d_model // num_heads, kv_swapped
        self.q_linear, self.kv_linear = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: Any = None) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q_linear(x).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        first, second = self.kv_linear(cond).view(b, -1, 2, c).unbind(2)
        k, v = (second, first) if self.kv_swapped else (first, second)
        k = k.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class OwnCaption(nn.Module):
    """Image tokens attending to their own captions, the captions flattened into one sequence by the model."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        self.cross_attn = MultiHeadCrossAttention(HIDDEN, HEADS, kv_swapped=(bug or {}).get("kv_swapped", False))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.cross_attn(x, y.reshape(1, -1, y.shape[-1]))


def own_caption_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 6, HIDDEN, generator=generator), torch.randn(2, 3, HIDDEN, generator=generator)
