"""A text-to-image DiT in the style of an original code base (PixArt-alpha's PixArt.py, written here from a reading of
its structure, not copied): neither the facebookresearch/DiT layout nor a diffusers class, so ``validate dit``
checks it component by component from the inputs :func:`inputs` gives.

Its pieces: a timm-style patch embedding and attention, the original DiT's TimestepEmbedder (its attribute names,
so the engine recognises it), one shared ``t_block`` making six modulation vectors per sample, per-block
``scale_shift_table`` added to them, t2i_modulate, cross-attention to caption tokens through q_linear / kv_linear
with a key-padding mask, a caption MLP and a final layer with its own two-row table. Tiny: latents 4 x 8 x 8,
patch 2, hidden 32, depth 2, 4 heads, 5 caption tokens of width 16. ``PLANTED``: bug name -> (constructor options,
the component that must be reported).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

try:
    from .dit_forks import Attention, Mlp  # imported as the tests' package
except ImportError:
    from dit_forks import Attention, Mlp  # loaded from its path: ditcheck's loader puts this folder on sys.path

CHANNELS, INPUT, PATCH, HIDDEN, DEPTH, HEADS, CAPTION_TOKENS, CAPTION_WIDTH = 4, 8, 2, 32, 2, 4, 5, 16


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """The original DiT's attribute names; ``shift`` plants a downscale_freq_shift the module does not state."""

    def __init__(self, dim: int, frequency_embedding_size: int = 256, shift: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.frequency_embedding_size, self.shift = frequency_embedding_size, shift

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - self.shift))
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))


class CrossAttention(nn.Module):
    """Queries from the image tokens, keys and values from the caption, padded caption tokens masked out."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.q_linear, self.kv_linear, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        q = self.q_linear(x).view(n, tokens, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv_linear(cond).view(n, cond.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :].bool())
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class ManualAttention(Attention):
    """The same attention written out (q k^T, softmax, times v) instead of one scaled_dot_product_attention call: a
    correct rewrite a fork makes, which a reference comparison must not flag."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        heads = dim // self.head_dim_only
        q, k, v = self.qkv(x).reshape(n, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, tokens, dim))


class PixArtStyleBlock(nn.Module):
    def __init__(self, dim: int, heads: int, modulate_swapped: bool = False, cross_scale: float = 1.0,
                 manual_attention: bool = False, **attention: Any):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = (ManualAttention if manual_attention else Attention)(dim, heads, **attention)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim ** 0.5)
        self.modulate_swapped, self.cross_scale = modulate_swapped, cross_scale

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """PixArt's block signature: image tokens x, caption tokens y, the six modulation rows t, the caption mask."""
        chunks = (self.scale_shift_table[None] + t.reshape(len(x), 6, -1)).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = chunks
        if self.modulate_swapped:  # planted: the MLP branch's shift and scale read from each other's rows
            shift_mlp, scale_mlp = scale_mlp, shift_mlp
        x = x + gate_msa * self.attn(t2i_modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn(x, y, mask) * self.cross_scale
        return x + gate_mlp * self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp))


class PixArtStyle(nn.Module):
    """forward(x [N, C, H, W], timestep [N], caption [N, L, W], mask [N, L]) -> [N, C, H, W] (no learned sigma)."""

    def __init__(self, timestep_shift: float = 0.0, **block: Any):
        super().__init__()
        self.x_embedder = nn.Conv2d(CHANNELS, HIDDEN, PATCH, PATCH)
        self.t_embedder = TimestepEmbedder(HIDDEN, shift=timestep_shift)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(HIDDEN, 6 * HIDDEN))
        self.y_embedder = Mlp(CAPTION_WIDTH, HIDDEN)  # fc2 back to CAPTION_WIDTH is replaced below
        self.y_embedder.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.blocks = nn.ModuleList([PixArtStyleBlock(HIDDEN, HEADS, **block) for _ in range(DEPTH)])
        self.norm_final = nn.LayerNorm(HIDDEN, elementwise_affine=False, eps=1e-6)
        self.final_table = nn.Parameter(torch.randn(2, HIDDEN) / HIDDEN ** 0.5)
        self.linear = nn.Linear(HIDDEN, PATCH * PATCH * CHANNELS)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, caption: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = x.shape
        h = self.x_embedder(x).flatten(2).transpose(1, 2)
        t = self.t_embedder(timestep)
        t0 = self.t_block(t)
        cond = self.y_embedder(caption)
        for block in self.blocks:
            h = block(h, cond, t0, mask)
        shift, scale = (self.final_table[None] + t[:, None]).chunk(2, dim=1)
        h = self.linear(t2i_modulate(self.norm_final(h), shift, scale))
        side_h, side_w = height // PATCH, width // PATCH
        h = h.reshape(n, side_h, side_w, PATCH, PATCH, channels).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(n, channels, height, width)


def inputs(seed: int) -> dict[str, torch.Tensor]:
    """One forward call's inputs, drawn from ``seed``: two samples, different times, the second caption padded."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, CAPTION_TOKENS)
    mask[1, -2:] = 0
    return {"x": torch.randn(2, CHANNELS, INPUT, INPUT, generator=generator),
            "timestep": torch.tensor([50.0, 900.0]) + torch.rand(2, generator=generator) * 50,
            "caption": torch.randn(2, CAPTION_TOKENS, CAPTION_WIDTH, generator=generator), "mask": mask}


#: bug name -> (PixArtStyle options, the submodule the report must name as the first divergence): caught by the
#: component engine alone

PLANTED = {
    # the head merge without the transpose (tokens and heads interleaved): inline code of the attention
    "heads_merged_wrong": ({"merge_wrong": True}, "blocks.0.attn"),
    # softmax(q k^T / d) instead of / sqrt(d)
    "attention_scale_1_over_d": ({"scale_power": -1.0}, "blocks.0.attn"),
    # frequencies exp(-log(10000) i / (half - 1)): diffusers' downscale_freq_shift=1, not what this module states
    "timestep_frequency_shift": ({"timestep_shift": 1.0}, "t_embedder"),
}

#: bug name -> (PixArtStyle options, the first divergence) in the block's own inline code: caught component by
#: component (the block is recognised by PixArt's structure) and against a reference (the clean PixArtStyle)
PLANTED_INLINE = {
    "modulate_shift_scale_swapped": ({"modulate_swapped": True}, "blocks.0"),
    "cross_attention_branch_x_1.001": ({"cross_scale": 1.001}, "blocks.0"),
}
