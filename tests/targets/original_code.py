"""Replicas of patterns in original (non-diffusers) text-to-image DiT code, written here from a reading of the
public code, not copied: PixArt-alpha's text-conditioned block (adaLN-single with a per-block scale_shift_table,
t2i_modulate, global WindowAttention, a caption cross-attention over every image flattened into one sequence
with a block-diagonal mask), its final layer and caption embedder (a null caption for dropped rows), the original
DiT's class embedder (a null-class row), and Flux's MLPEmbedder, its RMSNorm (weight named ``scale``,
eps written into forward, float32 inside) and its LoRA linear (an nn.Linear subclass adding lora_B(lora_A(x))).

Look-alikes (the last section): correct code sharing those structures' names or shapes, each modelled on a real
pattern (Open-Sora's temporal block, loralib's and peft's LoRA linears, a GEGLU with LLaMA's names, forks' RMSNorms with
other eps, lucidrains' unit-offset RMSNorm, a fork's FluxPosEmbed), and the original DiT block conditioned per token.

Each class takes ``bug`` knobs that plant one subtle fault modelled on a real one (a shift/scale swap, a 1.001
factor, swapped key/value halves, an activation changed inline). ``tiny_text_to_image`` builds the whole tiny
model (latents 4 x 8 x 8, patch 2, hidden 32, 4 heads, depth 2, captions of 5 tokens of width 12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN, HEADS, DEPTH, PATCH, CHANNELS, SIDE, CAPTION_TOKENS, CAPTION_WIDTH = 32, 4, 2, 2, 4, 8, 5, 12


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, swapped: bool = False) -> torch.Tensor:
    """x (1 + scale) + shift; ``swapped`` plants the shift/scale exchange."""
    return x * (1 + shift) + scale if swapped else x * (1 + scale) + shift


class WindowAttention(nn.Module):
    """PixArt's global WindowAttention (no relative-position tables): qkv [B, N, 3, H, Dh], SDPA, proj."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.use_rel_pos = num_heads, False
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: Any = None) -> torch.Tensor:
        n, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, tokens, dim))


class MultiHeadCrossAttention(nn.Module):
    """Image tokens attend to their own caption: every image's queries in one sequence of B N tokens, the captions
    concatenated [1, sum L, D], and a block-diagonal mask from the caption lengths ``mask`` (xformers'
    BlockDiagonalMask.from_seqlens in the original; an additive mask here)."""

    def __init__(self, dim: int, num_heads: int, factor: float = 1.0, kv_swapped: bool = False):
        super().__init__()
        self.num_heads, self.factor, self.kv_swapped = num_heads, factor, kv_swapped
        self.q_linear, self.kv_linear, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: list[int] | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q = self.q_linear(x).reshape(1, -1, self.num_heads, dim // self.num_heads).transpose(1, 2) * self.factor
        k, v = self.kv_linear(cond).reshape(1, -1, 2, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.kv_swapped:
            k, v = v, k
        bias = None
        if mask is not None:
            owner = torch.repeat_interleave(torch.arange(batch), torch.tensor(mask))
            image = torch.arange(batch).repeat_interleave(tokens)
            bias = torch.zeros(image.numel(), owner.numel(), dtype=q.dtype)
            bias.masked_fill_(image[:, None] != owner[None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """timm's Mlp: fc1, GELU(tanh), fc2 (hidden 4 dim and output dim unless given)."""

    def __init__(self, dim: int, hidden: int | None = None, out: int | None = None):
        super().__init__()
        hidden, out = hidden or 4 * dim, out or dim
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PixArtBlock(nn.Module):
    """adaLN-single: (scale_shift_table[None] + t.reshape(B, 6, D)) chunked into shift, scale, gate (msa, mlp)."""

    def __init__(self, dim: int, num_heads: int, swapped: bool = False, gate_factor: float = 1.0,
                 mlp_swapped: bool = False, **cross: Any):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = WindowAttention(dim, num_heads)
        self.cross_attn = MultiHeadCrossAttention(dim, num_heads, **cross)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim ** 0.5)
        # mlp_swapped: the shift/scale exchange in the MLP branch's modulate only
        self.swapped, self.gate_factor, self.mlp_swapped = swapped, gate_factor, mlp_swapped

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, mask: list[int] | None = None) -> torch.Tensor:
        batch = x.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.reshape(batch, 6, -1)).chunk(6, dim=1)
        x = x + gate_msa * self.attn(t2i_modulate(self.norm1(x), shift_msa, scale_msa, self.swapped))
        x = x + self.cross_attn(x, y, mask)
        mlp_in = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp, self.swapped or self.mlp_swapped)
        return x + self.gate_factor * gate_mlp * self.mlp(mlp_in)


class T2IFinalLayer(nn.Module):
    def __init__(self, dim: int, out: int, swapped: bool = False):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim ** 0.5)
        self.swapped = swapped

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        return self.linear(t2i_modulate(self.norm_final(x), shift, scale, self.swapped))


class CaptionEmbedder(nn.Module):
    """PixArt-alpha's caption embedder: y_proj (an Mlp C -> D -> D) of the caption [B, 1, T, C]; the rows dropped for
    classifier-free guidance (force_drop_ids == 1, or at random when training) take the null caption y_embedding
    [T, C], a buffer. Planted: ``inverted`` drops where force_drop_ids == 0; ``factor`` scales y_proj's input."""

    def __init__(self, in_channels: int, hidden_size: int, uncond_prob: float, token_num: int, inverted: bool = False,
                 factor: float = 1.0):
        super().__init__()
        self.y_proj = Mlp(in_channels, hidden_size, hidden_size)
        self.register_buffer("y_embedding", torch.randn(token_num, in_channels) / in_channels ** 0.5)
        self.uncond_prob, self.inverted, self.factor = uncond_prob, inverted, factor

    def token_drop(self, caption: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop = torch.rand(caption.shape[0]) < self.uncond_prob
        else:
            drop = force_drop_ids == (0 if self.inverted else 1)
        return torch.where(drop[:, None, None, None], self.y_embedding, caption)

    def forward(self, caption: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.uncond_prob > 0) or force_drop_ids is not None:
            caption = self.token_drop(caption, force_drop_ids)
        return self.y_proj(caption * self.factor if self.factor != 1.0 else caption)


class LabelEmbedder(nn.Module):
    """The original DiT's class embedder: a table of num_classes rows plus the null class's when dropout_prob > 0,
    called as (labels, train[, force_drop_ids]); a dropped label becomes num_classes. Planted: ``null_offset`` moves
    the null label (-1: the last real class, off by one); ``factor`` scales the embedding."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float, null_offset: int = 0,
                 factor: float = 1.0):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + (dropout_prob > 0), hidden_size)
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.null_offset, self.factor = null_offset, factor

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0]) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, self.num_classes + self.null_offset, labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        embedded = self.embedding_table(labels)
        return embedded * self.factor if self.factor != 1.0 else embedded


class MLPEmbedder(nn.Module):
    """Flux's vector / time embedder; ``inline_gelu`` plants GELU in place of the silu module in forward."""

    def __init__(self, in_dim: int, hidden_dim: int, inline_gelu: bool = False):
        super().__init__()
        self.in_layer, self.silu, self.out_layer = nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        self.inline_gelu = inline_gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.in_layer(x)
        return self.out_layer(F.gelu(hidden) if self.inline_gelu else self.silu(hidden))


class RMSNorm(nn.Module):
    """Flux's RMSNorm: weight named ``scale``, eps 1e-6 written into forward, computed in float32 (x.float()).
    Planted: ``factor`` scales rrms; ``eps_1e5`` writes 1e-5 into forward instead."""

    def __init__(self, dim: int, factor: float = 1.0, eps_1e5: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.factor, self.eps_1e5 = factor, eps_1e5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if self.eps_1e5 else 1e-6
        rrms = torch.rsqrt(torch.mean(x.float() ** 2, dim=-1, keepdim=True) + eps) * self.factor
        return (x.float() * rrms).to(x.dtype) * self.scale


class LinearLora(nn.Linear):
    """Flux's LoRA linear: the base linear plus scale lora_B(lora_A(x))."""

    def __init__(self, in_features: int, out_features: int, rank: int = 2, scale: float = 1.0):
        super().__init__(in_features, out_features)
        self.lora_A, self.lora_B = nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.lora_B(self.lora_A(x)) * self.scale


class TimestepEmbedder(nn.Module):
    """The original DiT / PixArt timestep embedder ([cos, sin] of 256 frequencies, Linear-SiLU-Linear)."""

    def __init__(self, dim: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=t.dtype) / half)
        args = t[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class TextToImage(nn.Module):
    """A tiny PixArt-alpha-style model (patchify by a Linear on unfolded patches; pooled caption through MLPEmbedder)."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        bug = dict(bug or {})
        final_swapped, embedder_gelu = bug.pop("final_swapped", False), bug.pop("inline_gelu", False)
        caption_bug = {"inverted": bug.pop("caption_inverted", False), "factor": bug.pop("caption_factor", 1.0)}
        self.x_embedder = nn.Linear(CHANNELS * PATCH * PATCH, HIDDEN)
        self.t_embedder = TimestepEmbedder(HIDDEN)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(HIDDEN, 6 * HIDDEN))
        self.y_embedder = CaptionEmbedder(CAPTION_WIDTH, HIDDEN, 0.1, CAPTION_TOKENS, **caption_bug)
        self.pooled_embedder = MLPEmbedder(CAPTION_WIDTH, HIDDEN, inline_gelu=embedder_gelu)
        self.blocks = nn.ModuleList([PixArtBlock(HIDDEN, HEADS, **(bug if i == DEPTH - 1 else {})) for i in range(DEPTH)])
        self.final_layer = T2IFinalLayer(HIDDEN, PATCH * PATCH * CHANNELS, swapped=final_swapped)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, caption: torch.Tensor,
                lengths: list[int] | None = None, drop: torch.Tensor | None = None) -> torch.Tensor:
        batch = x.shape[0]
        side = x.shape[-1] // PATCH
        tokens = x.reshape(batch, CHANNELS, side, PATCH, side, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(batch, side * side, -1)
        h = self.x_embedder(tokens)
        t = self.t_embedder(timestep) + self.pooled_embedder(caption.mean(dim=1))
        t0 = self.t_block(t)
        y = self.y_embedder(caption[:, None], self.training, drop).squeeze(1)  # [B, 1, T, C] as in the original
        if lengths is None:
            y = y.reshape(1, -1, HIDDEN)
        else:
            y = torch.cat([y[i, :n] for i, n in enumerate(lengths)])[None]
        for block in self.blocks:
            h = block(h, y, t0, lengths)
        return self.final_layer(h, t)


def tiny_text_to_image(seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 0.1,
                       **bug: Any) -> tuple[nn.Module, tuple[Any, ...]]:
    """The model with weights (and the null caption) N(0, scale^2) and inputs (latents, timesteps, captions, caption
    lengths [5, 3])."""
    model = TextToImage(bug)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in [*model.parameters(), *model.buffers()]:
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * scale)
    model = model.to(dtype).eval()
    inputs = (torch.randn(2, CHANNELS, SIDE, SIDE, generator=generator, dtype=torch.float64).to(dtype),
              torch.tensor([10.0, 700.0], dtype=dtype),
              torch.randn(2, CAPTION_TOKENS, CAPTION_WIDTH, generator=generator, dtype=torch.float64).to(dtype),
              [CAPTION_TOKENS, 3])
    return model, inputs


class FluxStyleNorms(nn.Module):
    """Flux's QK-norm pair and a LoRA linear on [B, L, D] tokens (``factor`` plants a 1.001 in the query norm)."""

    def __init__(self, dim: int = HIDDEN, factor: float = 1.0):
        super().__init__()
        self.qkv = LinearLora(dim, 3 * dim)
        self.query_norm, self.key_norm = RMSNorm(dim // HEADS, factor), RMSNorm(dim // HEADS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens = x.shape[:2]
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(self.query_norm(q), self.key_norm(k), v)


class TopKGate(nn.Module):
    """DiT-MoE's router: one 2-D weight [experts, D] (a linear's shapes) returning the top-k expert indices and their
    softmax weights per token, not a linear's output."""

    def __init__(self, dim: int = HIDDEN, experts: int = 4, top_k: int = 2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(experts, dim))
        self.top_k = top_k

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = F.linear(hidden_states.reshape(-1, hidden_states.shape[-1]), self.weight).softmax(dim=-1)
        weights, indices = torch.topk(scores, k=self.top_k, dim=-1)
        return indices, weights


class GatedMLP(nn.Module):
    """DiT-MoE's expert (LLaMA's MLP): down_proj(act_fn(gate_proj(x)) up_proj(x)); with ``slices`` > 1 (its
    pretraining_tp) the projections run as F.linear on weight slices, so no child is called. ``swapped`` plants the
    activation on up_proj instead of gate_proj."""

    def __init__(self, dim: int = HIDDEN, width: int = 2 * HIDDEN, slices: int = 1, swapped: bool = False):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(dim, width, bias=False), nn.Linear(dim, width, bias=False)
        self.down_proj, self.act_fn = nn.Linear(width, dim, bias=False), nn.SiLU()
        self.slices, self.swapped = slices, swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.slices == 1:
            gate, up = self.gate_proj(x), self.up_proj(x)
            return self.down_proj(self.act_fn(up) * gate if self.swapped else self.act_fn(gate) * up)
        width = self.gate_proj.out_features // self.slices
        gate = torch.cat([F.linear(x, w) for w in self.gate_proj.weight.split(width)], dim=-1)
        up = torch.cat([F.linear(x, w) for w in self.up_proj.weight.split(width)], dim=-1)
        hidden = (F.silu(up) * gate if self.swapped else F.silu(gate) * up).split(width, dim=-1)
        return sum(F.linear(h, w) for h, w in zip(hidden, self.down_proj.weight.split(width, dim=1)))


# ----------------------------------------------------------------------------------------
# Flux's original two-stream transformer (black-forest-labs/flux, src/flux/modules/layers.py), its pattern


@dataclass
class ModulationOut:
    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor


def rotation_tables(positions: torch.Tensor, dim: int, theta: float, clockwise: bool = False) -> torch.Tensor:
    """Per position and frequency the 2 x 2 matrix [[cos, -sin], [sin, cos]] ([..., dim/2, 2, 2]), float32 like Flux's;
    ``clockwise`` plants the transposed matrix (the rotation the other way)."""
    omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=positions.dtype) / dim)
    angles = positions[..., None] * omega
    cos, sin = torch.cos(angles), torch.sin(angles)
    sign = -1 if clockwise else 1
    return torch.stack([torch.stack([cos, -sign * sin], -1), torch.stack([sign * sin, cos], -1)], -2).float()


def rotate(x: torch.Tensor, tables: torch.Tensor, half: bool = False) -> torch.Tensor:
    """Each channel pair (x0, x1) times its matrix, in float32; pairs (2i, 2i+1), or (i, i + D/2) when ``half``."""
    width = x.shape[-1]
    if half:
        pairs = torch.stack([x[..., :width // 2], x[..., width // 2:]], dim=-1).float()
    else:
        pairs = x.float().reshape(*x.shape[:-1], width // 2, 2)
    out = tables[..., 0] * pairs[..., None, 0] + tables[..., 1] * pairs[..., None, 1]
    if half:
        return torch.cat([out[..., 0], out[..., 1]], dim=-1).type_as(x)
    return out.reshape(x.shape).type_as(x)


def rope_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: torch.Tensor, half: bool = False,
                   factor: float = 1.0) -> torch.Tensor:
    q, k = rotate(q, tables, half), rotate(k, tables, half)
    out = F.scaled_dot_product_attention(q * factor, k, v)
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def split_heads(qkv: torch.Tensor, heads: int, layout: str = "khd") -> list[torch.Tensor]:
    """[B, L, 3 H Dh] as "(K H D)" (Flux's), or "(H K D)" (a planted layout) -> q, k, v [B, H, L, Dh]."""
    batch, length = qkv.shape[:2]
    if layout == "hkd":
        split = qkv.reshape(batch, length, heads, 3, -1).permute(3, 0, 2, 1, 4)
    else:
        split = qkv.reshape(batch, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return list(split.unbind(0))


class EmbedND(nn.Module):
    def __init__(self, theta: int, axes_dim: list[int], clockwise: bool = False):
        super().__init__()
        self.theta, self.axes_dim, self.clockwise = theta, axes_dim, clockwise

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([rotation_tables(ids[..., i], d, self.theta, self.clockwise) for i, d in enumerate(self.axes_dim)],
                         dim=-3)[:, None]


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm, self.key_norm = RMSNorm(dim), RMSNorm(dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class Modulation(nn.Module):
    """lin(silu(vec)) chunked into ModulationOut(shift, scale, gate) x 1 or 2; ``swapped`` plants shift <-> scale."""

    def __init__(self, dim: int, double: bool, swapped: bool = False):
        super().__init__()
        self.is_double, self.multiplier = double, 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim)
        self.swapped = swapped

    def forward(self, vec: torch.Tensor) -> tuple[ModulationOut, ModulationOut | None]:
        out = self.lin(F.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)
        groups = [(out[i + 1], out[i], out[i + 2]) if self.swapped else out[i:i + 3] for i in range(0, len(out), 3)]
        return ModulationOut(*groups[0]), ModulationOut(*groups[1]) if self.is_double else None


class SelfAttention(nn.Module):
    """Never called whole: the blocks call its qkv, norm and proj."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.qkv, self.norm, self.proj = nn.Linear(dim, 3 * dim), QKNorm(dim // heads), nn.Linear(dim, dim)


class DoubleStreamBlock(nn.Module):
    def __init__(self, dim: int, heads: int, half: bool = False, factor: float = 1.0):
        super().__init__()
        self.num_heads, self.half, self.factor = heads, half, factor
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", Modulation(dim, double=True))
            setattr(self, f"{stream}_norm1", nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{stream}_attn", SelfAttention(dim, heads))
            setattr(self, f"{stream}_norm2", nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{stream}_mlp", nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"),
                                                          nn.Linear(2 * dim, dim)))

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mods, qkvs = {}, {}
        for stream, x in (("img", img), ("txt", txt)):
            mods[stream] = getattr(self, f"{stream}_mod")(vec)
            first = mods[stream][0]
            attention = getattr(self, f"{stream}_attn")
            modulated = (1 + first.scale) * getattr(self, f"{stream}_norm1")(x) + first.shift
            q, k, v = split_heads(attention.qkv(modulated), self.num_heads)
            q, k = attention.norm(q, k, v)
            qkvs[stream] = (q, k, v)
        joint = [torch.cat((qkvs["txt"][i], qkvs["img"][i]), dim=2) for i in range(3)]
        attended = rope_attention(*joint, pe, self.half, self.factor)
        parts = {"txt": attended[:, :txt.shape[1]], "img": attended[:, txt.shape[1]:]}
        results = []
        for stream, x in (("img", img), ("txt", txt)):
            first, second = mods[stream]
            x = x + first.gate * getattr(self, f"{stream}_attn").proj(parts[stream])
            mlp_in = (1 + second.scale) * getattr(self, f"{stream}_norm2")(x) + second.shift
            results.append(x + second.gate * getattr(self, f"{stream}_mlp")(mlp_in))
        return tuple(results)


class SingleStreamBlock(nn.Module):
    def __init__(self, dim: int, heads: int, layout: str = "khd", gate_factor: float = 1.0):
        super().__init__()
        self.num_heads, self.hidden_size, self.mlp_hidden_dim = heads, dim, 2 * dim
        self.linear1, self.linear2 = nn.Linear(dim, 3 * dim + 2 * dim), nn.Linear(dim + 2 * dim, dim)
        self.norm, self.pre_norm = QKNorm(dim // heads), nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp_act, self.modulation = nn.GELU(approximate="tanh"), Modulation(dim, double=False)
        self.layout, self.gate_factor = layout, gate_factor

    def forward(self, x: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
        mod, _ = self.modulation(vec)
        qkv, mlp = torch.split(self.linear1((1 + mod.scale) * self.pre_norm(x) + mod.shift),
                               [3 * self.hidden_size, self.mlp_hidden_dim], dim=-1)
        q, k, v = split_heads(qkv, self.num_heads, self.layout)
        q, k = self.norm(q, k, v)
        output = self.linear2(torch.cat((rope_attention(q, k, v, pe), self.mlp_act(mlp)), 2))
        return x + self.gate_factor * mod.gate * output


class TwoStream(nn.Module):
    """A tiny Flux: one double and one single block on [text, image] tokens with 3-axis RoPE ids."""

    def __init__(self, bug: dict[str, Any] | None = None):
        super().__init__()
        bug = dict(bug or {})
        self.pe_embedder = EmbedND(10_000, [2, 2, 4], clockwise=bug.pop("clockwise", False))
        self.img_in, self.txt_in = nn.Linear(CHANNELS * PATCH * PATCH, HIDDEN // 2), nn.Linear(CAPTION_WIDTH, HIDDEN // 2)
        self.time_in = MLPEmbedder(64, HIDDEN // 2)
        double = {k: bug.pop(k) for k in ("half", "factor") if k in bug}
        self.double_blocks = nn.ModuleList([DoubleStreamBlock(HIDDEN // 2, 2, **double)])
        self.single_blocks = nn.ModuleList([SingleStreamBlock(HIDDEN // 2, 2, **bug)])

    def forward(self, img: torch.Tensor, img_ids: torch.Tensor, txt: torch.Tensor, txt_ids: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10000) * torch.arange(32, dtype=timesteps.dtype) / 32)
        vec = self.time_in(torch.cat([torch.cos(timesteps[:, None] * freqs), torch.sin(timesteps[:, None] * freqs)], -1))
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        img, txt = self.double_blocks[0](self.img_in(img), self.txt_in(txt), vec, pe)
        joined = self.single_blocks[0](torch.cat((txt, img), 1), vec, pe)
        return joined[:, txt.shape[1]:]


def tiny_two_stream(seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 0.1, modulation_swapped: bool = False,
                    **bug: Any) -> tuple[nn.Module, tuple[Any, ...]]:
    """TwoStream with weights N(0, scale^2), 2 images of 4 x 4 patches (ids (0, row, column)) and 5 text tokens."""
    model = TwoStream(bug)
    if modulation_swapped:
        model.single_blocks[0].modulation.swapped = True
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * scale)
    model = model.to(dtype).eval()
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    img_ids = torch.stack([torch.zeros(16), rows.reshape(-1), cols.reshape(-1)], -1)[None].repeat(2, 1, 1).to(dtype)
    inputs = (torch.randn(2, 16, CHANNELS * PATCH * PATCH, generator=generator, dtype=torch.float64).to(dtype), img_ids,
              torch.randn(2, 5, CAPTION_WIDTH, generator=generator, dtype=torch.float64).to(dtype),
              torch.zeros(2, 5, 3, dtype=dtype), torch.tensor([0.3, 0.9], dtype=dtype))
    return model, inputs


# ----------------------------------------------------------------------------------------
# U-ViT's long-skip transformer (baofff/U-ViT, libs/uvit.py), its pattern


class SkipBlock(nn.Module):
    """U-ViT's Block: [x, skip] -> skip_linear (out blocks only), then pre-norm attention and MLP residuals.
    ``skip_first`` plants the concatenation the other way round; ``factor`` a 1.001 on the attention residual."""

    def __init__(self, dim: int, heads: int, skip: bool = False, skip_first: bool = False, factor: float = 1.0):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim)
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.use_checkpoint = False
        self.skip_first, self.factor = skip_first, factor

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([skip, x] if self.skip_first else [x, skip], dim=-1))
        x = x + self.factor * self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LongSkip(nn.Module):
    def __init__(self, **bug: Any):
        super().__init__()
        self.in_blocks = nn.ModuleList([SkipBlock(HIDDEN, HEADS)])
        self.mid_block = SkipBlock(HIDDEN, HEADS)
        self.out_blocks = nn.ModuleList([SkipBlock(HIDDEN, HEADS, skip=True, **bug)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        return x


def tiny_long_skip(seed: int = 0, dtype: torch.dtype = torch.float32, **bug: Any) -> tuple[nn.Module, tuple[Any, ...]]:
    model = LongSkip(**bug)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.1)
    return model.to(dtype).eval(), (torch.randn(2, 9, HIDDEN, generator=generator, dtype=torch.float64).to(dtype),)


# ----------------------------------------------------------------------------------------
# Look-alikes of the recognised structures: correct code the engine must not fail (conforms, or not checked with the
# reason), each modelled on a real pattern that shares names or shapes with a recognised one


class TemporalPixArtBlock(PixArtBlock):
    """PixArtBlock's children, table and signature, but its self-attention runs over frames: the tokens
    B (T S) C are rearranged to (B S) T C around attn (Open-Sora's temporal STDiT3Block does this)."""

    def __init__(self, dim: int, num_heads: int, frames: int):
        super().__init__(dim, num_heads)
        self.frames = frames

    def attend_over_frames(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        frames, spatial = self.frames, tokens // self.frames
        h = x.reshape(batch, frames, spatial, dim).permute(0, 2, 1, 3).reshape(batch * spatial, frames, dim)
        h = self.attn(h)
        return h.reshape(batch, spatial, frames, dim).permute(0, 2, 1, 3).reshape(batch, tokens, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, mask: list[int] | None = None) -> torch.Tensor:
        batch = x.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.reshape(batch, 6, -1)).chunk(6, dim=1)
        x = x + gate_msa * self.attend_over_frames(t2i_modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn(x, y, mask)
        return x + gate_mlp * self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp))


class SpatialTemporalBlock(TemporalPixArtBlock):
    """The same with Open-Sora's STDiT3Block signature forward(x, y, t, mask, x_mask, t0, T, S)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, mask: list[int] | None = None,
                x_mask: torch.Tensor | None = None, t0: torch.Tensor | None = None, T: int | None = None,
                S: int | None = None) -> torch.Tensor:
        return super().forward(x, y, t, mask)


class LoraParameterLinear(nn.Linear):
    """loralib's Linear: an nn.Linear subclass keeping its low-rank factors as parameters (no child module) and adding
    (x A^T B^T) scaling in its own forward."""

    def __init__(self, in_features: int, out_features: int, rank: int = 2, scaling: float = 0.5):
        super().__init__(in_features, out_features)
        self.lora_A = nn.Parameter(torch.zeros(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


class PeftLinear(nn.Module):
    """peft's LoRA wrapper, a class named ``Linear`` that is no nn.Linear: base_layer plus lora_B(lora_A(x)) from
    ModuleDicts per adapter, weight and bias as properties of the base layer."""

    def __init__(self, in_features: int, out_features: int, rank: int = 2):
        super().__init__()
        self.base_layer = nn.Linear(in_features, out_features)
        self.lora_A = nn.ModuleDict({"default": nn.Linear(in_features, rank, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(rank, out_features, bias=False)})

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B["default"](self.lora_A["default"](x))


PeftLinear.__name__ = PeftLinear.__qualname__ = "Linear"  # peft's class name


class GegluFeedForward(nn.Module):
    """A GEGLU feed-forward with LLaMA's names, w2(gelu(w1 x) w3 x), the activation written into forward (no act
    child). ``approximate`` "tanh" for gelu-tanh; planted: ``factor`` scales the gated product."""

    def __init__(self, dim: int, hidden: int, approximate: str = "none", factor: float = 1.0):
        super().__init__()
        self.w1, self.w3 = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.approximate, self.factor = approximate, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x), approximate=self.approximate) * self.w3(x) * self.factor)


class PerTokenDiTBlock(nn.Module):
    """The original DiT block's children, conditioned per token: c [B, N, D] gives six [B, N, D] chunks."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = WindowAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa * self.attn(self.norm1(x) * (1 + scale_msa) + shift_msa)
        return x + gate_mlp * self.mlp(self.norm2(x) * (1 + scale_mlp) + shift_mlp)


class ForkRMSNorm(nn.Module):
    """A fork's RMSNorm named like torch's, weight named ``weight``, no eps attribute: F.rms_norm's default eps
    (finfo(dtype).eps). Planted: ``factor`` scales the output."""

    def __init__(self, dim: int, factor: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight) * self.factor


ForkRMSNorm.__name__ = ForkRMSNorm.__qualname__ = "RMSNorm"


class FluxRMSNormAnyEps(nn.Module):
    """Flux's RMSNorm (weight ``scale``, float32 inside) with another eps hard-coded into forward (1e-8,
    finfo(float32).eps, 3e-6 in forks)."""

    def __init__(self, dim: int, eps_in_forward: float):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.eps_in_forward = eps_in_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rrms = torch.rsqrt(torch.mean(x.float() ** 2, dim=-1, keepdim=True) + self.eps_in_forward)
        return (x.float() * rrms).to(x.dtype) * self.scale


class UnitOffsetRMSNorm(nn.Module):
    """lucidrains' RMSNorm: F.normalize(x) sqrt(d) (gamma + 1), gamma initialised to zeros."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * (self.gamma + 1)


UnitOffsetRMSNorm.__name__ = UnitOffsetRMSNorm.__qualname__ = "RMSNorm"


class GainThenDouble(nn.Module):
    """A leaf with one 1-D parameter of the feature width that is no norm: 2 x w (a norm's parameter shapes)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x * self.weight


class ForkFluxPosEmbed(nn.Module):
    """A fork's FluxPosEmbed in diffusers' style (theta, axes_dim, forward(ids)): (cos, sin) [L, sum axes_dim], each
    frequency repeated for its interleaved pair, not Flux EmbedND's rotation matrices."""

    def __init__(self, theta: int, axes_dim: list[int]):
        super().__init__()
        self.theta, self.axes_dim = theta, axes_dim

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = [], []
        for axis, dim in enumerate(self.axes_dim):
            omega = 1.0 / self.theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
            angles = ids[:, axis].double()[:, None] * omega
            cos.append(angles.cos().repeat_interleave(2, -1))
            sin.append(angles.sin().repeat_interleave(2, -1))
        return torch.cat(cos, -1).float(), torch.cat(sin, -1).float()


ForkFluxPosEmbed.__name__ = ForkFluxPosEmbed.__qualname__ = "FluxPosEmbed"


class PosEmbed(ForkFluxPosEmbed):
    """The same under a name no registry holds: EmbedND's structure (theta, axes_dim, forward(ids)), other outputs."""


PosEmbed.__name__ = PosEmbed.__qualname__ = "PosEmbed"


class PerSampleCrossAttention(nn.Module):
    """Sana's MultiHeadCrossAttention without xformers: q_norm / k_norm Identity, each sample's queries attend to its
    own caption [B, L, D] with the 0/1 mask [B, L] made additive, (1 - mask) -10000. Planted: key/value halves
    swapped."""

    def __init__(self, dim: int, num_heads: int, kv_swapped: bool = False):
        super().__init__()
        self.num_heads, self.kv_swapped = num_heads, kv_swapped
        self.q_linear, self.kv_linear, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        heads = self.num_heads
        k, v = self.kv_linear(cond).view(batch, -1, 2, dim).unbind(2)
        if self.kv_swapped:
            k, v = v, k
        q = self.q_norm(self.q_linear(x)).view(batch, -1, heads, dim // heads).transpose(1, 2)
        k = self.k_norm(k).view(batch, -1, heads, dim // heads).transpose(1, 2)
        v = v.view(batch, -1, heads, dim // heads).transpose(1, 2)
        if mask is not None:
            mask = ((1 - mask.to(q.dtype)) * -10000.0)[:, None, None].repeat(1, heads, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))
