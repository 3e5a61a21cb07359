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
    mha, flat = identity_multihead_attention(q, k, v)
    out, _ = mha(*flat, need_weights=False)
    return out.reshape(batch, tokens, heads, dim)


def identity_multihead_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[torch.nn.MultiheadAttention, list[Tensor]]:
    """torch.nn.MultiheadAttention over E = H D with identity projections and zero biases, and q, k, v as [B, L, E]."""
    batch, _, heads, dim = q.shape
    embed = heads * dim
    mha = torch.nn.MultiheadAttention(embed, heads, batch_first=True, dtype=q.dtype, device=q.device)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.eye(embed, dtype=q.dtype).repeat(3, 1))
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.copy_(torch.eye(embed, dtype=q.dtype))
        mha.out_proj.bias.zero_()
    return mha, [t.reshape(batch, t.shape[1], embed) for t in (q, k, v)]


def flash_style_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """A flash-attn-style function on [B, L, H, D] (layout blhd), as flash-attn's reference implementation is
    written: float32 einsums over the token axes, the scale folded into q, result cast back to the input dtype.
    k and v may have fewer heads (GQA: kv head h // (H / Hkv))."""
    group = q.shape[2] // k.shape[2]
    k, v = (t.repeat_interleave(group, dim=2).float() for t in (k, v))
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = torch.einsum("bthd,bshd->bhts", q.float() * s, k)
    return torch.einsum("bhts,bshd->bthd", torch.softmax(logits, dim=-1), v).to(q.dtype)


def repeat_kv(hidden_states: Tensor, n_rep: int) -> Tensor:
    """transformers' repeat_kv: [B, Hkv, L, D] -> [B, Hkv * n_rep, L, D], kv head h // n_rep for query head h."""
    batch, kv_heads, tokens, dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    expanded = hidden_states[:, :, None, :, :].expand(batch, kv_heads, n_rep, tokens, dim)
    return expanded.reshape(batch, kv_heads * n_rep, tokens, dim)


def gqa_repeat_kv(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Grouped-query attention as transformers' sdpa_attention_forward: repeat_kv, then SDPA."""
    group = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, repeat_kv(k, group), repeat_kv(v, group), scale=scale)


def gqa_enable_gqa(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Grouped-query attention through SDPA's own enable_gqa=True."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)


def sdpa_masked(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, attn_mask: Tensor | None = None) -> Tensor:
    """torch SDPA with an attn_mask (boolean: True attends; additive: -inf excludes)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)


def multihead_attention_key_padding(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """torch.nn.MultiheadAttention (identity projections, layout blhd) with its key_padding_mask (True = padded)."""
    batch, tokens, heads, dim = q.shape
    mha, flat = identity_multihead_attention(q, k, v)
    out, _ = mha(*flat, key_padding_mask=key_padding_mask, need_weights=False)
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


# Bugs that need the inputs real kernels break on (issue 14): long and tile-boundary lengths, grouped-query
# heads, half-precision overflow, masks with fully masked rows.

#: The "long sequence" switch of length_switched_path (q and k tokens multiplied, as memory heuristics do).
LONG_PATH_TOKENS = 1024 * 1024


def length_switched_path(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: a memory-saving path taken for long sequences (Lq Lk > 2^20) that slices the queries and
    forgets the scale (modelled on sliced / "long sequence" paths whose numerics differ from the short path)."""
    if q.shape[-2] * k.shape[-2] <= LONG_PATH_TOKENS:
        return F.scaled_dot_product_attention(q, k, v)
    slices = [torch.softmax(part @ k.transpose(-1, -2), dim=-1) @ v for part in q.split(256, dim=-2)]
    return torch.cat(slices, dim=-2)


def long_path_bf16_logits(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted (subtle): the long-sequence path forms q k^T from bfloat16 copies of q and k (a "fast" product),
    logits off by ~2^-9 relative: at logit range 8 a ~1e-3 change of the weights, only past Lq Lk = 2^20."""
    if q.shape[-2] * k.shape[-2] <= LONG_PATH_TOKENS:
        return F.scaled_dot_product_attention(q, k, v)
    logits = (q.bfloat16() @ k.bfloat16().transpose(-1, -2)).to(q.dtype) * _scale(q)
    return torch.softmax(logits, dim=-1) @ v


def tiled_kv_heads(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted (GQA): kv heads tiled (query head h reads kv head h % Hkv, k.repeat) where the convention
    interleaves (h // (H / Hkv), repeat_interleave / repeat_kv)."""
    group = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1))


def fp16_no_upcast(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: q k^T formed in the input dtype before scaling, softmax in the input dtype (Stable Diffusion
    2.x's float16 NaNs before diffusers' upcast_attention): the unscaled product overflows float16."""
    logits = (q @ k.transpose(-1, -2)) * _scale(q)
    return torch.softmax(logits, dim=-1) @ v


#: Key block of chunked_attention_drops_partial_chunk.
KEY_CHUNK = 64


def chunked_attention_drops_partial_chunk(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: memory-efficient attention over key chunks with an online softmax whose loop runs over
    Lk // KEY_CHUNK full chunks only, losing the last partial chunk (Lk = 65, 129, 1025, ... lose keys;
    shorter sequences are one chunk and come out right)."""
    keys = k.shape[-2]
    ends = [keys] if keys <= KEY_CHUNK else [KEY_CHUNK * (i + 1) for i in range(keys // KEY_CHUNK)]
    starts = [0] + ends[:-1]
    running_max = torch.full(q.shape[:-1] + (1,), -math.inf, dtype=q.dtype, device=q.device)
    total = torch.zeros_like(running_max)
    acc = torch.zeros(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
    for start, end in zip(starts, ends):
        logits = (q * _scale(q)) @ k[..., start:end, :].transpose(-1, -2)
        new_max = torch.maximum(running_max, logits.amax(dim=-1, keepdim=True))
        correction = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max)
        total = total * correction + weights.sum(dim=-1, keepdim=True)
        acc = acc * correction + weights @ v[..., start:end, :]
        running_max = new_max
    return acc / total


#: Window of local_window_attention (tokens either side).
LOCAL_WINDOW = 512


def local_window_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Planted: a sliding-window kernel (|i - j| < LOCAL_WINDOW, Mistral/Longformer style) used where full
    attention is meant: identical up to 512 tokens, wrong beyond."""
    positions_q = torch.arange(q.shape[-2], device=q.device)[:, None]
    positions_k = torch.arange(k.shape[-2], device=q.device)[None, :]
    keep = (positions_q - positions_k).abs() < LOCAL_WINDOW
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def mask_nan_on_empty_rows(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """Planted: masked softmax by masked_fill(-inf) with no guard, NaN on a fully masked row (SDPA returns 0)."""
    logits = (q * _scale(q)) @ k.transpose(-1, -2)
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, -math.inf)
    return torch.softmax(logits, dim=-1) @ v


def key_padding_inverted(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """Planted: key_padding_mask read as True = keep (the SDPA attn_mask convention) instead of True = padded."""
    keep = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def self_attention_only(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Clean self-attention that, like timm's Attention, builds q, k, v from one sequence: Lq != Lk cannot work."""
    if q.shape[-2] != k.shape[-2]:
        raise RuntimeError(f"self-attention: query and key lengths differ ({q.shape[-2]} vs {k.shape[-2]})")
    return F.scaled_dot_product_attention(q, k, v)


def self_attention_one_input(x: Tensor) -> Tensor:
    """Clean self-attention of one input x ([B, H, L, D]): q = k = v = x."""
    return F.scaled_dot_product_attention(x, x, x)


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
    "length_switched_path": Bug(length_switched_path, "attention", fails="forward[normal]"),
    "long_path_bf16_logits": Bug(long_path_bf16_logits, "attention", fails="forward[large_logits]"),
    "tiled_kv_heads": Bug(tiled_kv_heads, "attention", {"gqa": True}, fails="forward[normal]"),
    "fp16_no_upcast": Bug(fp16_no_upcast, "attention", {"dtype": torch.float16}, fails="forward[overflow]"),
    # which family draws a length past a 64-key chunk depends on the seed: some forward check fails
    "chunked_attention_drops_partial_chunk": Bug(chunked_attention_drops_partial_chunk, "attention",
                                                 fails="forward["),
    "local_window_attention": Bug(local_window_attention, "attention", fails="forward[normal]"),
    "mask_nan_on_empty_rows": Bug(mask_nan_on_empty_rows, "attention", {"mask": "boolean"}, fails="forward[normal]"),
    "key_padding_inverted": Bug(key_padding_inverted, "attention", {"mask": "key-padding"}, fails="forward[normal]"),
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

#: Real implementations under the issue-14 options and dtypes: (target, validate.attention options).
CLEAN_KERNELS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    **{f"sdpa_{backend}_{dtype}": (fn, {"dtype": dtype})
       for backend, fn in (("math", sdpa_math), ("flash", sdpa_flash))
       for dtype in ("float32", "float16", "bfloat16")},
    "flash_style_float32": (flash_style_attention, {"layout": "blhd"}),
    "flash_style_float16_gqa": (flash_style_attention, {"layout": "blhd", "dtype": "float16", "gqa": True}),
    "gqa_repeat_kv": (gqa_repeat_kv, {"gqa": True}),
    "gqa_enable_gqa": (gqa_enable_gqa, {"gqa": True}),
    "sdpa_boolean_mask": (sdpa_masked, {"mask": "boolean"}),
    "sdpa_additive_mask_float16": (sdpa_masked, {"mask": "additive", "dtype": "float16"}),
    "mha_key_padding": (multihead_attention_key_padding, {"layout": "blhd", "mask": "key-padding"}),
    "self_attention_only": (self_attention_only, {"self_attention": True}),
    "self_attention_one_input": (self_attention_one_input, {"self_attention": True}),
}
