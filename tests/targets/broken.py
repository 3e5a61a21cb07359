"""Targets that cannot be used: the CLI must exit with code 2 and say why."""

from __future__ import annotations

import torch


def raises(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("kernel not compiled for this head size")


def not_a_model() -> int:
    return 3


class Unrecognised(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)
