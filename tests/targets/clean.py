"""Small conforming targets for the CLI tests: real third-party code (torch SDPA, diffusers) and ditcheck's DiT."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ditcheck.models.dit import DiT
from ditcheck.reference.dit import DiTConfig

TINY = DiTConfig(input_size=4, patch_size=2, in_channels=2, hidden_size=16, depth=2, num_heads=2, num_classes=3)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def tiny_dit() -> DiT:
    """ditcheck's own DiT in the original layout (float32)."""
    return DiT(TINY, dtype=torch.float32)


def tiny_diffusers_dit() -> torch.nn.Module:
    """diffusers' DiTTransformer2DModel, tiny, on the CPU (random init; ditcheck loads its own weights)."""
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=2, out_channels=4,
                                 num_layers=2, sample_size=4, patch_size=2, num_embeds_ada_norm=3)
