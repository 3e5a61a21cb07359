"""Replicas for float32 islands decided at run time (written here, modelled on a review's reproductions):

- RMS norms whose float64 run is or is not a float32 island: eps added outside the sqrt (a bug worth ~5e-7 in
  float64) written plainly, behind an upcast of half precision only (a branch a float64 run never takes), or under
  a comment naming float32; and a correct one upcasting with ``.to(torch.float)`` (no ``.float()`` in its text).
- A norm the engine recognises only by its parameter shapes (``gain``, ``eps``), with the same eps-outside-sqrt bug
  in float64, and a correct one normalising in float32.
- A block that upcasts a projection with ``.float()`` and then computes inline code in float32 (planted: a 3e-7
  scale), the engine recognising none of it: its float32 work must be named in the report.
- A norm stating no eps whose forward hard-codes one (a feed-forward beside it, w1/w2/w3 with no act child).
"""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 32


def inputs(seed: int) -> tuple[torch.Tensor]:
    """One batch of tokens [2, 6, HIDDEN] (scale 2: the eps-outside-sqrt bug is then ~5e-7 relative)."""
    return (2 * torch.randn(2, 6, HIDDEN, generator=torch.Generator().manual_seed(seed)),)


class _NormBase(nn.Module):
    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(HIDDEN))


class RMSNormHalfOnlyUpcast(_NormBase):
    """Planted: eps outside the sqrt; upcasts half precision only, so float64 stays float64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return (x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)) * self.weight


class RMSNormCommentOnly(_NormBase):
    """Planted: eps outside the sqrt; only a comment speaks of float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the upstream code normalises in float32
        return (x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)) * self.weight


class RMSNormToTorchFloat(_NormBase):
    """Correct: normalises in float32 reached by ``.to(torch.float)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.float)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


for _norm in (RMSNormHalfOnlyUpcast, RMSNormCommentOnly, RMSNormToTorchFloat):
    _norm.__name__ = "RMSNorm"  # recognised by name, as a fork's RMSNorm is


class Normalizer(nn.Module):
    """No known name: an RMS norm by its 1-D ``gain``. Planted unless ``upcast``: eps outside the sqrt, in the run's
    dtype; with ``upcast``: correct, in float32."""

    def __init__(self, upcast: bool = False, eps: float = 1e-6):
        super().__init__()
        self.upcast, self.eps = upcast, eps
        self.gain = nn.Parameter(torch.ones(HIDDEN))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upcast:
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.gain
        return (x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)) * self.gain


class NormThenProjection(nn.Module):
    def __init__(self, norm: type[nn.Module], **options: bool):
        super().__init__()
        self.norm = norm(**options)
        self.proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class UpcastBlock(nn.Module):
    """An upcast left in a block the engine does not recognise: the rest of it runs in float32."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.proj = nn.Linear(HIDDEN, HIDDEN)
        self.out = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x).float()
        return self.out(h * torch.sigmoid(h) * self.scale)


class UpcastResidual(nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.block = UpcastBlock(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class RMSNorm(nn.Module):
    """A norm stating no eps: its forward hard-codes ``eps``."""

    def __init__(self, eps: float):
        super().__init__()
        self.e = eps
        self.weight = nn.Parameter(torch.ones(HIDDEN))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.e) * self.weight


class FeedForward(nn.Module):
    """w2(gelu(w1 x) * w3 x) with the activation inline (no act child)."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Linear(HIDDEN, 64, bias=False)
        self.w2 = nn.Linear(64, HIDDEN, bias=False)
        self.w3 = nn.Linear(HIDDEN, 64, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(torch.nn.functional.gelu(self.w1(x)) * self.w3(x))


class NormFeedForward(nn.Module):
    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.norm = RMSNorm(eps)
        self.ffn = FeedForward()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.norm(x))
