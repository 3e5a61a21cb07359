"""ditcheck.reference: the truth. NumPy float64, mpmath and certified arb balls; no torch.

Every function takes float64 arrays (read as exact binary numbers) and a
``precision`` keyword: ``"float64"``, ``"mp[:digits]"`` or ``"arb[:bits]"``.
With arb the result is a :class:`BallArray` that contains the exact real result.
"""

from .attention import (attention, attention_vjp, attention_weight_gradient, attention_weight_loss,
                        multi_head_attention, softmax)
from .errors import (DTypeError, FullyMaskedRowError, InvalidArgumentError, NonFiniteError, NotOrthonormalError,
                     NotPositiveDefiniteError, PrecisionError, ShapeError, TimeOutOfRangeError)
from .layers import linear
from .precision import Arb, BallArray, Float64, Mp, Precision, resolve_precision

__all__ = [
    "Arb", "BallArray", "Float64", "Mp", "Precision", "resolve_precision",
    "softmax", "attention", "attention_vjp", "multi_head_attention",
    "attention_weight_loss", "attention_weight_gradient", "linear",
    "InvalidArgumentError", "NonFiniteError", "ShapeError", "DTypeError", "NotOrthonormalError",
    "NotPositiveDefiniteError", "TimeOutOfRangeError", "FullyMaskedRowError", "PrecisionError",
]
