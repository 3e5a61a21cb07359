"""The planted-bug corpus of ``ditcheck validate`` (issue 4), as importable targets, plus clean real implementations.

Attention bugs are fn(q, k, v) on [B, H, L, D] (``heads_merged_wrong`` on [B, L, H, D]); DiT bugs
are zero-argument factories of ditcheck.models.dit.DiT (original layout, float32 unless the entry says
otherwise) with one small change applied to a freshly built model. Each entry of BUGS names the
target, how to validate it and the check expected to fail (so a test shows it is caught there).
Usable from the CLI too: ``ditcheck validate attention tests/planted_bugs.py:wrong_scale``.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from ditcheck.models.dit import DiT
from ditcheck.reference.dit import DiTConfig

TINY = DiTConfig(input_size=4, patch_size=2, in_channels=2, hidden_size=16, depth=2, num_heads=2, num_classes=3)


def _scale(q: Tensor) -> float:
    return 1.0 / math.sqrt(q.shape[-1])


# ----------------------------------------------------------------------------------------
# Clean implementations (real third-party code and plain torch)


def sdpa_math(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """torch SDPA, math backend."""
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)


def sdpa_flash(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """torch SDPA, flash-attention CPU backend."""
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)


def multihead_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """torch.nn.MultiheadAttention (batch_first) with identity projections, on [B, L, H, D] (layout blhd).

    With in_proj = [I; I; I], out_proj = I and zero biases, MHA over E = H D splits heads exactly
    as [B, L, H, D] and computes softmax(q k^T / sqrt(D)) v per head.
    """
    batch, tokens, heads, dim = q.shape
    embed = heads * dim
    mha = torch.nn.MultiheadAttention(embed, heads, batch_first=True, dtype=q.dtype, device=q.device)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.eye(embed, dtype=q.dtype).repeat(3, 1))
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.copy_(torch.eye(embed, dtype=q.dtype))
        mha.out_proj.bias.zero_()
    flat = [t.reshape(batch, t.shape[1], embed) for t in (q, k, v)]
    out, _ = mha(*flat, need_weights=False)
    return out.reshape(batch, tokens, heads, dim)


def clean_dit() -> DiT:
    return DiT(TINY, dtype=torch.float32)


# ----------------------------------------------------------------------------------------
# Attention bugs


def wrong_scale(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: 1/D instead of 1/sqrt(D)."""
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1], dim=-1) @ v


def softmax_wrong_axis(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: softmax over the queries instead of the keys."""
    return torch.softmax(q @ k.transpose(-1, -2) * _scale(q), dim=-2) @ v


def kv_swapped(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: keys and values exchanged."""
    return torch.softmax(q @ v.transpose(-1, -2) * _scale(q), dim=-1) @ k


def no_max_subtraction(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: exp(s) / sum exp(s) without subtracting the row maximum: overflows at large logits."""
    e = torch.exp(q @ k.transpose(-1, -2) * _scale(q))
    return (e / e.sum(dim=-1, keepdim=True)) @ v


def dropped_token(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: an off-by-one loop bound drops the last key/value token."""
    return torch.softmax(q @ k[..., :-1, :].transpose(-1, -2) * _scale(q), dim=-1) @ v[..., :-1, :]


def low_precision_accumulation(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: products and sums carried out in bfloat16 whatever the input dtype."""
    low = [t.to(torch.bfloat16) for t in (q, k, v)]
    weights = torch.softmax(low[0] @ low[1].transpose(-1, -2) * _scale(q), dim=-1)
    return (weights @ low[2]).to(q.dtype)


def heads_merged_wrong(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted (layout blhd): computes per head on [B, H, L, D], then reshapes back without the transpose."""
    batch, tokens, heads, dim = q.shape
    out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
    return out.reshape(batch, tokens, heads, dim)


# ----------------------------------------------------------------------------------------
# DiT bugs: one change to a freshly built ditcheck.models.dit.DiT


def _attn_heads_merged_wrong(self: Any, x: Tensor) -> Tensor:
    n, tokens, channels = x.shape
    qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    out = self.attention_fn(q, k, v, self.scale)
    return self.proj(out.reshape(n, tokens, channels))  # [N, H, T, d] read as [N, T, H*d]


def dit_heads_merged_wrong() -> DiT:
    """Planted: attention output [N, H, T, d] merged into [N, T, D] without moving the head axis."""
    model = clean_dit()
    for block in model.blocks:
        block.attn.forward = types.MethodType(_attn_heads_merged_wrong, block.attn)
    return model


def dit_sin_cos_swapped() -> DiT:
    """Planted: timestep features [sin, cos] where DiT has [cos, sin]."""
    model = clean_dit()
    model.t_embedder.flip_sin_to_cos = False
    return model


def dit_shift_scale_swapped() -> DiT:
    """Planted: adaLN chunks read as (scale, shift, gate) instead of (shift, scale, gate)."""
    model = clean_dit()
    for block in model.blocks:
        block.chunk_order = ("scale_msa", "shift_msa", "gate_msa", "scale_mlp", "shift_mlp", "gate_mlp")
    return model


def dit_wrong_ln_eps() -> DiT:
    """Planted (float64): the MLP-branch LayerNorm with eps 1e-5 (diffusers' norm_eps) instead of DiT's 1e-6.

    A ~1e-6-relative effect: in float32 it sits next to the rounding of the timestep features at
    t ~ 1000 (caught there too, but with an error/tolerance ratio near 1.2), so the corpus runs it in
    float64, where it stands 1e8 above the tolerance.
    """
    model = DiT(TINY, dtype=torch.float64)
    for block in model.blocks:
        block.norm2.eps = 1e-5
    return model


def _block_without_gate(self: Any, x: Tensor, c: Tensor) -> Tensor:
    from ditcheck.models.dit import modulate

    m = dict(zip(self.chunk_order, self.adaLN_modulation(c).chunk(6, dim=1)))
    x = x + self.attn(modulate(self.norm1(x), m["shift_msa"], m["scale_msa"]))  # gate_msa forgotten
    return x + m["gate_mlp"].unsqueeze(1) * self.mlp(modulate(self.norm2(x), m["shift_mlp"], m["scale_mlp"]))


def dit_missing_gate() -> DiT:
    """Planted: the attention branch added without its adaLN gate."""
    model = clean_dit()
    for block in model.blocks:
        block.forward = types.MethodType(_block_without_gate, block)
    return model


def _unpatchify_transposed(self: Any, x: Tensor) -> Tensor:
    (h, w), p, c = self.config.grid, self.config.patch_size, self.config.out_channels
    x = torch.einsum("nhwpqc->ncwqhp", x.reshape(x.shape[0], h, w, p, p, c))  # H and W exchanged
    return x.reshape(x.shape[0], c, w * p, h * p)


def dit_unpatchify_transposed() -> DiT:
    """Planted: unpatchify writes the image transposed (H and W exchanged)."""
    model = clean_dit()
    model.unpatchify = types.MethodType(_unpatchify_transposed, model)
    return model


# ----------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Bug:
    """A planted bug: the target, the validator ("attention" or "dit"), its options, the check that must fail."""

    target: Callable[..., Any]
    validator: str
    options: dict[str, Any] = field(default_factory=dict)
    fails: str = ""


BUGS: dict[str, Bug] = {
    "wrong_scale": Bug(wrong_scale, "attention", fails="forward[normal]"),
    "softmax_wrong_axis": Bug(softmax_wrong_axis, "attention", fails="forward[normal]"),
    "kv_swapped": Bug(kv_swapped, "attention", fails="forward[normal]"),
    "no_max_subtraction": Bug(no_max_subtraction, "attention", fails="forward[large_logits]"),
    "dropped_token": Bug(dropped_token, "attention", fails="forward[normal]"),
    "low_precision_accumulation": Bug(low_precision_accumulation, "attention", fails="forward[normal]"),
    "heads_merged_wrong": Bug(heads_merged_wrong, "attention", {"layout": "blhd"}, fails="forward[normal]"),
    "dit_heads_merged_wrong": Bug(dit_heads_merged_wrong, "dit", fails="blocks.0"),
    "dit_sin_cos_swapped": Bug(dit_sin_cos_swapped, "dit", fails="t_embedder"),
    "dit_shift_scale_swapped": Bug(dit_shift_scale_swapped, "dit", fails="blocks.0"),
    "dit_wrong_ln_eps": Bug(dit_wrong_ln_eps, "dit", fails="blocks.0"),
    "dit_missing_gate": Bug(dit_missing_gate, "dit", fails="blocks.0"),
    "dit_unpatchify_transposed": Bug(dit_unpatchify_transposed, "dit", fails="output ~ unpatchify"),
}

#: Real implementations that must conform: (target, validate.attention options).
CLEAN_ATTENTION: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "sdpa_math": (sdpa_math, {}),
    "sdpa_flash": (sdpa_flash, {}),
    "sdpa_flash_float16": (sdpa_flash, {"dtype": torch.float16}),
    "multihead_attention": (multihead_attention, {"layout": "blhd"}),
}
