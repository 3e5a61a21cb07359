"""ditcheck.reference: the truth. NumPy float64, mpmath and certified arb balls; no torch.

Every function takes float64 arrays (read as exact binary numbers) and a
``precision`` keyword: ``"float64"``, ``"mp[:digits]"`` or ``"arb[:bits]"``.
With arb the result is a :class:`BallArray` that contains the exact real result.
"""

from . import distances, gp, mixtures
from .attention import (attention, attention_vjp, attention_weight_gradient, attention_weight_loss,
                        multi_head_attention, softmax)
from .errors import (DTypeError, FullyMaskedRowError, InvalidArgumentError, NonFiniteError, NotOrthonormalError,
                     NotPositiveDefiniteError, PrecisionError, ShapeError, TimeOutOfRangeError)
from .dit import (DIFFUSERS_DIT_KNOBS, DiTConfig, dit_block, dit_forward, dit_intermediates, dit_latent_score,
                  dit_param_shapes, final_layer, random_dit_params, timestep_embedder, zero_adaln)
from .latent import check_orthonormal, ld2_score
from .mixtures import ConditionalMixture, LatentMixture
from .layers import (gelu, layer_norm, linear, mlp, modulate, patchify, pos_embed_2d, silu, timestep_embedding,
                     unpatchify)
from .schedules import SCHEDULES, alpha, convert_prediction, get_schedule, sigma, sigma2
from .precision import Arb, BallArray, Float64, Mp, Precision, resolve_precision

__all__ = [
    "Arb", "BallArray", "Float64", "Mp", "Precision", "resolve_precision",
    "softmax", "attention", "attention_vjp", "multi_head_attention",
    "attention_weight_loss", "attention_weight_gradient",
    "linear", "layer_norm", "gelu", "silu", "modulate", "mlp", "timestep_embedding", "pos_embed_2d", "patchify",
    "unpatchify",
    "DiTConfig", "DIFFUSERS_DIT_KNOBS", "dit_param_shapes", "random_dit_params", "zero_adaln", "timestep_embedder",
    "dit_block", "final_layer", "dit_forward", "dit_intermediates", "dit_latent_score",
    "distances", "gp", "mixtures", "LatentMixture", "ConditionalMixture",
    "SCHEDULES", "get_schedule", "alpha", "sigma", "sigma2", "convert_prediction", "ld2_score", "check_orthonormal",
    "InvalidArgumentError", "NonFiniteError", "ShapeError", "DTypeError", "NotOrthonormalError",
    "NotPositiveDefiniteError", "TimeOutOfRangeError", "FullyMaskedRowError", "PrecisionError",
]
