"""Stable Diffusion 3's MMDiT (diffusers SD3Transformer2DModel, SD3 and SD3.5 layouts) as a reference forward in any precision.

Read top to bottom as diffusers 0.42.1 models/transformers/transformer_sd3.py runs it (Esser et al. 2024, Scaling
Rectified Flow Transformers, arXiv:2403.03206, sec. 4 and fig. 2):

1. PatchEmbed: patch tokens + the centred crop of the pos_embed_max_size^2 sin-cos table;
2. c = TimestepEmbedding(Timesteps(256)(t)) + PixArtAlphaTextProjection(pooled, SiLU), t as given (no x1000);
   the text tokens are context_embedder(encoder_hidden_states);
3. each JointTransformerBlock: adaLN-Zero of both streams from c (AdaLayerNormZero, chunk order
   ADALN_ZERO_ORDER; SD3.5's dual-attention blocks SD35AdaLayerNormZeroX with nine chunks, the second
   attention's input modulated from the same LayerNorm); one joint attention over [image, text] tokens with
   the QK RMS-norm per head when qk_norm="rms_norm"; x += gate_msa attn; (SD3.5) x += gate_msa2 attn2(x2);
   x += gate_mlp ff(LN(x)(1 + scale_mlp) + shift_mlp); the text stream likewise, except in the last block
   (context_pre_only): its text is modulated by AdaLayerNormContinuous (scale, shift) and only feeds the
   attention's keys and values; the block returns (None, x);
4. the output layer AdaLayerNormContinuous: (scale, shift) = linear(silu(c)) (scale first), LN(x)(1 + scale) +
   shift, proj_out, unpatchify "nhwpqc->nchpwq".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .components import (ADALN_CONTINUOUS_ORDER, ADALN_ZERO_ORDER, SD35_ADALN_ZERO_X_ORDER, adaln_chunks,
                         ada_layer_norm_continuous)
from .diffusers_modules import (attention_module, config_int, feed_forward_module, joint_attention_module,
                                linear_module, parameter, patch_embed, text_projection, timestep_embedder)
from .errors import InvalidArgumentError
from .layers import layer_norm, modulate, unpatchify
from .precision import Precision, as_float64_array, require_positive_int, resolve_precision

__all__ = ["sd3_forward", "sd3_block", "SD3_NORM_EPS"]

#: every LayerNorm of SD3 (adaLN-Zero, the blocks' norm2, AdaLayerNormContinuous) and the QK RMSNorms: eps = 1e-6
SD3_NORM_EPS = 1e-6
#: the diffusers class whose config sd3_forward reads (named in config errors)
_CLASS = "SD3Transformer2DModel"


def _adaln_zero(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any, c: Any,
                order: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """AdaLayerNormZero / SD35AdaLayerNormZeroX: (LN(x) without affine, eps 1e-6; chunks of linear(silu(c)) named by ``order``)."""
    chunks = adaln_chunks.generic(xp, c, parameter(xp, params, f"{prefix}.linear.weight"),
                                  parameter(xp, params, f"{prefix}.linear.bias"), order)
    return layer_norm.generic(xp, x, None, None, SD3_NORM_EPS), chunks


def _continuous(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any, c: Any) -> Any:
    """AdaLayerNormContinuous(elementwise_affine=False, eps=1e-6): LN(x)(1 + scale) + shift, (scale, shift) = linear(silu(c))."""
    return ada_layer_norm_continuous.generic(xp, x, c, parameter(xp, params, f"{prefix}.linear.weight"),
                                             parameter(xp, params, f"{prefix}.linear.bias"), None, None,
                                             SD3_NORM_EPS, "layer", ADALN_CONTINUOUS_ORDER)


def _gated_feed_forward(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any,
                        chunks: Mapping[str, Any]) -> Any:
    """A stream's MLP tail: x + gate_mlp ff(LN(x)(1 + scale_mlp) + shift_mlp), the FeedForward ``prefix``."""
    ff_input = modulate.generic(xp, layer_norm.generic(xp, x, None, None, SD3_NORM_EPS), chunks["shift_mlp"],
                                chunks["scale_mlp"])
    return x + chunks["gate_mlp"][:, None, :] * feed_forward_module(xp, params, prefix, ff_input)


def sd3_block(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any, text: Any, c: Any,
              heads: int, *, text_first: bool = False, rope: tuple[Any, Any] | None = None,
              qk_norm: str | None = None) -> tuple[Any | None, Any]:
    """diffusers JointTransformerBlock (attention.py; SD3 arXiv:2403.03206 fig. 2): returns (text or None, image).

    ``text_first``, ``rope`` and ``qk_norm`` go to the joint attention (joint_attention_module): Flux's
    double-stream block (FluxTransformerBlock) is this block with the text stream first, RoPE over [text, image]
    and qk_norm 'rms_norm' (see reference.flux).
    """
    dual = f"{prefix}.attn2.to_q.weight" in params
    context_pre_only = f"{prefix}.ff_context.net.0.proj.weight" not in params
    normed, chunks = _adaln_zero(xp, params, f"{prefix}.norm1", x, c, SD35_ADALN_ZERO_X_ORDER if dual else
                                 ADALN_ZERO_ORDER)
    if context_pre_only:
        text_input = _continuous(xp, params, f"{prefix}.norm1_context", text, c)
    else:
        text_normed, text_chunks = _adaln_zero(xp, params, f"{prefix}.norm1_context", text, c, ADALN_ZERO_ORDER)
        text_input = modulate.generic(xp, text_normed, text_chunks["shift_msa"], text_chunks["scale_msa"])
    image_input = modulate.generic(xp, normed, chunks["shift_msa"], chunks["scale_msa"])
    image_attn, text_attn = joint_attention_module(xp, params, f"{prefix}.attn", image_input, text_input, heads,
                                                   SD3_NORM_EPS, qk_norm=qk_norm, text_first=text_first, rope=rope)
    x = x + chunks["gate_msa"][:, None, :] * image_attn
    if dual:  # SD3.5: a second self-attention of the image tokens, its input modulated from norm1's LayerNorm
        second = attention_module(xp, params, f"{prefix}.attn2",
                                  modulate.generic(xp, normed, chunks["shift_msa2"], chunks["scale_msa2"]), heads,
                                  eps=SD3_NORM_EPS)
        x = x + chunks["gate_msa2"][:, None, :] * second
    x = _gated_feed_forward(xp, params, f"{prefix}.ff", x, chunks)
    if context_pre_only:
        return None, x
    text = text + text_chunks["gate_msa"][:, None, :] * text_attn
    return _gated_feed_forward(xp, params, f"{prefix}.ff_context", text, text_chunks), x


def sd3_forward(xp: Precision | str, params: Mapping[str, Any], config: Mapping[str, Any], inputs: Mapping[str, Any],
                record: dict[str, Any] | None = None) -> Any:
    """SD3Transformer2DModel.forward (diffusers 0.42.1 transformer_sd3.py; SD3, arXiv:2403.03206) in ``xp``.

    params: state-dict name -> float64 array; config: dict(model.config) (qk_norm None or "rms_norm",
    dual_attention_layers); inputs: hidden_states [B, C, H, W], encoder_hidden_states [B, L, joint_attention_dim],
    pooled_projections [B, pooled_projection_dim], timestep [B] as float64 arrays. ``record``: each block's
    output (text or None, image) under "transformer_blocks.i". Returns the output [B, out_channels, H, W] in xp.
    """
    xp = resolve_precision(xp)
    if config.get("qk_norm") not in (None, "rms_norm"):
        raise InvalidArgumentError("config", "qk_norm None or 'rms_norm'", repr(config.get("qk_norm")))
    for unsupported in ("skip_layers", "block_controlnet_hidden_states", "joint_attention_kwargs"):
        if inputs.get(unsupported) is not None:
            raise InvalidArgumentError("inputs", f"no {unsupported} (not modelled)", repr(sorted(inputs)))
    heads = config_int(config, "num_attention_heads", _CLASS)
    patch = config_int(config, "patch_size", _CLASS)
    sample_size = config_int(config, "sample_size", _CLASS)
    out_channels = require_positive_int(config.get("out_channels") or config_int(config, "in_channels", _CLASS), "config['out_channels']")
    max_size = config.get("pos_embed_max_size")
    with xp.context():
        latent = xp.asarray(as_float64_array(inputs.get("hidden_states"), "inputs['hidden_states']"))
        height, width = np.shape(latent)[-2:]
        # 1. patches + the cropped table (interpolation scale 1, base size sample_size / p)
        x = patch_embed(xp, params, "pos_embed", latent, patch, sample_size // patch, 1, max_size)
        # 2. the conditioning c and the text tokens
        timestep = xp.asarray(as_float64_array(inputs.get("timestep"), "inputs['timestep']").reshape(-1))
        pooled = xp.asarray(as_float64_array(inputs.get("pooled_projections"), "inputs['pooled_projections']"))
        c = timestep_embedder(xp, params, "time_text_embed.timestep_embedder", timestep) + \
            text_projection(xp, params, "time_text_embed.text_embedder", pooled, "silu")
        caption = xp.asarray(as_float64_array(inputs.get("encoder_hidden_states"), "inputs['encoder_hidden_states']"))
        text = linear_module(xp, params, "context_embedder", caption)
        # 3. the joint blocks
        for index in range(config_int(config, "num_layers", _CLASS)):
            name = f"transformer_blocks.{index}"
            text, x = sd3_block(xp, params, name, x, text, c, heads)
            if record is not None:
                record[name] = (text, x)
        # 4. the output layer, proj_out and unpatchify
        x = linear_module(xp, params, "proj_out", _continuous(xp, params, "norm_out", x, c))
        return unpatchify.generic(xp, x, patch, out_channels, (height // patch, width // patch))
