"""DiT building blocks in every precision: linear, norms, activations, embeddings, patchify.

Each function follows the original DiT code (facebookresearch/DiT models.py) exactly,
with every convention that real code varies exposed as a named keyword (conventions.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ShapeError
from .precision import Precision, reference_function

__all__ = ["linear"]


@reference_function(arrays=("x", "weight", "bias"))
def linear(xp: Precision, x: Any, weight: Any, bias: Any = None) -> Any:
    """torch ``Linear``: y = x W^T + b, W of shape [out, in]."""
    if np.ndim(weight) != 2 or np.shape(x)[-1] != np.shape(weight)[1]:
        raise ShapeError("weight", f"shape [out, {np.shape(x)[-1]}] (torch Linear layout)", str(np.shape(weight)))
    out = xp.matmul(x, np.transpose(weight))
    if bias is None:
        return out
    if np.shape(bias) != (np.shape(weight)[0],):
        raise ShapeError("bias", f"shape ({np.shape(weight)[0]},)", str(np.shape(bias)))
    return out + bias

