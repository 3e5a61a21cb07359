"""Real third-party attention modules wrapped as fn(q, k, v) on [B, L, H, D] (layout blhd) for ditcheck validate.

Each wrapper builds the module with identity projections (exact in every dtype: x * 1 plus exact zeros), so
what is validated is the module's own attention code: timm's ``Attention`` (fused SDPA path and manual path)
and diffusers' ``AttnProcessor2_0`` / ``AttnProcessor``.

timm's package ``__init__`` imports torchvision, which CPU-only installs often lack; ``timm_attention_class``
loads ``timm/layers/attention.py`` alone (it needs only torch and four small timm.layers helpers) under a
temporary stand-in for the two package modules, and raises ImportError with the reason when timm is absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

Attention = Callable[..., Tensor]


def timm_attention_class() -> type:
    """timm.layers.attention.Attention, imported without running timm's package __init__ (torchvision-free)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    saved = {name: sys.modules.get(name) for name in ("timm", "timm.layers")}
    loaded_before = set(sys.modules)
    try:
        for name, path in (("timm", root), ("timm.layers", root / "layers")):
            package = types.ModuleType(name)
            package.__path__ = [str(path)]  # a namespace stand-in: submodules import, __init__ does not run
            sys.modules[name] = package
        return importlib.import_module("timm.layers.attention").Attention
    finally:  # leave no stand-in behind for code that imports the real timm
        for name in set(sys.modules) - loaded_before:
            if name.startswith("timm"):
                del sys.modules[name]
        for name, module in saved.items():
            if module is not None:
                sys.modules[name] = module
            else:
                sys.modules.pop(name, None)


def _identity_(linear: torch.nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.out_features, linear.in_features, dtype=linear.weight.dtype))
        if linear.bias is not None:
            linear.bias.zero_()


class _FixedQKV(torch.nn.Module):
    """Stands in for timm's qkv projection: returns the given q, k, v packed as timm reads them ([B, N, 3 H D])."""

    def __init__(self, packed: Tensor) -> None:
        super().__init__()
        self.packed = packed

    def forward(self, x: Tensor) -> Tensor:
        return self.packed


def timm_attention(fused: bool) -> Attention:
    """timm's Attention as fn(q, k, v) (self-attention: q, k, v of one length), fused SDPA or manual path."""
    attention_class = timm_attention_class()

    def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        batch, tokens, heads, dim = q.shape
        module = attention_class(heads * dim, num_heads=heads, dtype=q.dtype, device=q.device)
        module.fused_attn = fused
        _identity_(module.proj)
        module.qkv = _FixedQKV(torch.stack([q, k, v], dim=2).reshape(batch, tokens, 3 * heads * dim))
        out = module(torch.zeros(batch, tokens, heads * dim, dtype=q.dtype, device=q.device))
        return out.reshape(batch, tokens, heads, dim)

    fn.__name__ = fn.__qualname__ = f"timm_attention_{'fused' if fused else 'manual'}"
    return fn


def diffusers_processor(processor: str, **attention_options: Any) -> Attention:
    """diffusers' Attention with ``processor`` (a class name in diffusers.models.attention_processor) as
    fn(q, k, v): cross-attention whose encoder states are [k, v] side by side, to_k / to_v selecting each."""
    from diffusers.models import attention_processor

    processor_class = getattr(attention_processor, processor)

    def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        batch, tokens, heads, dim = q.shape
        channels = heads * dim
        module = attention_processor.Attention(channels, cross_attention_dim=2 * channels, heads=heads, dim_head=dim,
                                               processor=processor_class(), **attention_options)
        module = module.to(dtype=q.dtype, device=q.device)
        for linear in (module.to_q, module.to_out[0]):
            _identity_(linear)
        with torch.no_grad():
            eye = torch.eye(channels, dtype=q.dtype, device=q.device)
            zero = torch.zeros_like(eye)
            module.to_k.weight.copy_(torch.cat([eye, zero], dim=1))
            module.to_v.weight.copy_(torch.cat([zero, eye], dim=1))
        encoder = torch.cat([k.reshape(batch, k.shape[1], channels), v.reshape(batch, v.shape[1], channels)], dim=-1)
        out = module(q.reshape(batch, tokens, channels), encoder_hidden_states=encoder)
        return out.reshape(batch, tokens, heads, dim)

    fn.__name__ = fn.__qualname__ = f"diffusers_{processor}"
    return fn
