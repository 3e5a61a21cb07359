"""PixArt-alpha's denoiser (diffusers PixArtTransformer2DModel) as a reference forward in any precision.

Read top to bottom as diffusers 0.42.1 models/transformers/pixart_transformer_2d.py runs it (Chen et al. 2023,
PixArt-alpha, arXiv:2310.00426, sec. 2.3 and fig. 4):

1. the caption mask (1 keep / 0 pad) becomes the additive bias (1 - mask) x -10000 over the caption keys;
2. PatchEmbed: patch tokens + the sin-cos table (the stored one in float32, see diffusers_modules.patch_embed);
3. adaLN-single: t -> Timesteps(256) -> TimestepEmbedding = e (embedded_timestep), plus the embedded resolution
   and aspect ratio where the model takes them (use_additional_conditions); t_mod = linear(silu(e)) [B, 6D],
   shared by every block;
4. the caption projected by PixArtAlphaTextProjection (GELU tanh);
5. each BasicTransformerBlock(norm_type="ada_norm_single"): (shift, scale, gate)_(msa, mlp) = table + t_mod
   (chunk order of ADALN_ZERO_ORDER); x += gate_msa attn1(LN(x)(1 + scale_msa) + shift_msa);
   x += attn2(x, caption, caption bias) (no norm before the cross-attention, as in PixArt);
   x += gate_mlp ff(LN(x)(1 + scale_mlp) + shift_mlp);
6. the output layer: (shift, scale) = table + e (shift first, unlike AdaLayerNormContinuous), LN(x)(1 + scale) +
   shift, proj_out, unpatchify "nhwpqc->nchpwq".

Every operation runs in ``xp`` (Float64, reference.native.Native("float32" | "longdouble"), Mp, Arb); the LayerNorms
have no affine parameters unless the state dict holds them (norm_elementwise_affine).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .components import ADALN_ZERO_ORDER, scale_shift_table_chunks
from .diffusers_modules import (attention_module, config_int, feed_forward_module, linear_module, optional_parameter,
                                parameter, patch_embed, table_output_head, text_projection, timestep_embedder)
from .errors import InvalidArgumentError, ShapeError
from .layers import layer_norm, modulate, silu, unpatchify
from .precision import Precision, as_float64_array, require_positive_int, resolve_precision

__all__ = ["pixart_forward", "pixart_block", "size_embedding", "caption_mask_bias", "PIXART_MASK_BIAS"]

#: diffusers' additive bias for a masked caption token: (1 - mask) x -10000 (not -inf: its weight is e^-10000)
PIXART_MASK_BIAS = -10000.0
#: the diffusers class whose config pixart_forward reads (named in config errors)
_CLASS = "PixArtTransformer2DModel"


def caption_mask_bias(mask: Any, argument: str = "encoder_attention_mask") -> np.ndarray | None:
    """A [B, L] keep-mask (1 keep, 0 pad; bool or float) as diffusers' additive bias (1 - mask) x -10000, shaped [B, 1, 1, L].

    The values 0 and -10000 are exact in every format; the heads and query axes broadcast, as the
    [B, 1, L] bias does after Attention.prepare_attention_mask. A mask that is already a bias (not 2-D)
    is used as given, broadcast over the heads. ``argument`` names the mask in errors.
    """
    if mask is None:
        return None
    values = np.asarray(mask)
    # a boolean keep-mask is 1 / 0; -inf is a legitimate additive bias entry
    values = as_float64_array(values.astype(np.float64) if values.dtype == np.bool_ else values, argument,
                              allow_neg_inf=True)
    if values.ndim == 2:
        return ((1.0 - values) * PIXART_MASK_BIAS)[:, None, None, :]
    if values.ndim == 3:
        return values[:, None, :, :]
    raise ShapeError(argument, "a [B, L] keep-mask or a [B, 1, L] additive bias", str(values.shape))


def size_embedding(xp: Precision, params: Mapping[str, Any], prefix: str, conditions: Mapping[str, Any] | None,
                   batch: int) -> Any:
    """PixArt-alpha's micro-conditions (PixArtAlphaCombinedTimestepSizeEmbeddings, arXiv:2310.00426 sec. 2.3 / app.):
    [r_h, r_w, a] concatenated, each of the resolution's two entries and the aspect ratio embedded by Timesteps(256)
    and its TimestepEmbedding to D/3 channels; added to the embedded timestep."""
    if not conditions or conditions.get("resolution") is None or conditions.get("aspect_ratio") is None:
        raise InvalidArgumentError("inputs", "added_cond_kwargs with 'resolution' [B, 2] and 'aspect_ratio' [B, 1] "
                                   "(use_additional_conditions)", repr(conditions))
    parts = []
    for key, embedder in (("resolution", "resolution_embedder"), ("aspect_ratio", "aspect_ratio_embedder")):
        values = xp.asarray(as_float64_array(conditions[key], f"inputs['added_cond_kwargs'][{key!r}]").reshape(-1))
        embedded = timestep_embedder(xp, params, f"{prefix}.{embedder}", values)
        parts.append(np.reshape(embedded, (batch, -1)))
    return np.concatenate(parts, axis=1)


def pixart_block(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any, caption: Any, t_mod: Any,
                 heads: int, eps: float = 1e-6, self_mask: Any = None, caption_mask: Any = None) -> Any:
    """diffusers BasicTransformerBlock(norm_type="ada_norm_single") (attention.py): PixArt's block, adaLN-single modulation."""
    chunks = scale_shift_table_chunks.generic(xp, parameter(xp, params, f"{prefix}.scale_shift_table"), t_mod,
                                              ADALN_ZERO_ORDER)
    gate_msa, gate_mlp = chunks["gate_msa"][:, None, :], chunks["gate_mlp"][:, None, :]

    def norm(name: str, h: Any) -> Any:
        return layer_norm.generic(xp, h, optional_parameter(xp, params, f"{prefix}.{name}.weight"),
                                  optional_parameter(xp, params, f"{prefix}.{name}.bias"), eps)

    attn_input = modulate.generic(xp, norm("norm1", x), chunks["shift_msa"], chunks["scale_msa"])
    x = gate_msa * attention_module(xp, params, f"{prefix}.attn1", attn_input, heads, mask=self_mask) + x
    if f"{prefix}.attn2.to_q.weight" in params:
        x = attention_module(xp, params, f"{prefix}.attn2", x, heads, context=caption, mask=caption_mask) + x
    ff_input = modulate.generic(xp, norm("norm2", x), chunks["shift_mlp"], chunks["scale_mlp"])
    return gate_mlp * feed_forward_module(xp, params, f"{prefix}.ff", ff_input, "gelu-approximate") + x


def pixart_forward(xp: Precision | str, params: Mapping[str, Any], config: Mapping[str, Any],
                   inputs: Mapping[str, Any], record: dict[str, Any] | None = None) -> Any:
    """PixArtTransformer2DModel.forward (diffusers 0.42.1 pixart_transformer_2d.py; PixArt-alpha, arXiv:2310.00426) in ``xp``.

    params: state-dict name -> float64 array; config: dict(model.config); inputs: the forward's keyword
    arguments (hidden_states [B, C, H, W], encoder_hidden_states [B, L, caption_channels], timestep [B],
    encoder_attention_mask [B, L] or None, attention_mask [B, T] or None, added_cond_kwargs {"resolution" [B, 2],
    "aspect_ratio" [B, 1]} where use_additional_conditions) as float64 arrays. ``record``: each
    block's output stored under "transformer_blocks.i". Returns the output [B, out_channels, H, W] in xp.
    """
    xp = resolve_precision(xp)
    if config.get("norm_type", "ada_norm_single") != "ada_norm_single":
        raise InvalidArgumentError("config", "norm_type 'ada_norm_single' (the only one PixArt implements)",
                                   repr(config.get("norm_type")))
    if config.get("activation_fn", "gelu-approximate") != "gelu-approximate":
        raise InvalidArgumentError("config", "activation_fn 'gelu-approximate'", repr(config.get("activation_fn")))
    heads = config_int(config, "num_attention_heads", _CLASS)
    patch = config_int(config, "patch_size", _CLASS)
    sample_size = config_int(config, "sample_size", _CLASS)
    in_channels = config_int(config, "in_channels", _CLASS)
    out_channels = require_positive_int(config.get("out_channels") or in_channels, "config['out_channels']")
    eps = float(config.get("norm_eps", 1e-6))
    interpolation_scale = config.get("interpolation_scale") or max(sample_size // 64, 1)
    # PixArt-alpha's micro-conditions: diffusers resolves use_additional_conditions=None to sample_size == 128
    size_conditioned = config.get("use_additional_conditions")
    size_conditioned = sample_size == 128 if size_conditioned is None else bool(size_conditioned)
    with xp.context():
        latent = xp.asarray(as_float64_array(inputs.get("hidden_states"), "inputs['hidden_states']"))
        caption = xp.asarray(as_float64_array(inputs.get("encoder_hidden_states"), "inputs['encoder_hidden_states']"))
        timestep = xp.asarray(as_float64_array(inputs.get("timestep"), "inputs['timestep']").reshape(-1))
        height, width = np.shape(latent)[-2:]
        # 1. masks -> additive biases (self-attention mask too, though PixArt's pipelines pass none)
        self_mask = caption_mask_bias(inputs.get("attention_mask"), "inputs['attention_mask']")
        caption_mask = caption_mask_bias(inputs.get("encoder_attention_mask"), "inputs['encoder_attention_mask']")
        # 2. patches + the sin-cos table (float32 as stored for the sample_size grid); base size = sample_size / p
        stored = (sample_size // patch, sample_size // patch)
        x = patch_embed(xp, params, "pos_embed", latent, patch, sample_size // patch, interpolation_scale,
                        stored_grid=stored)
        # 3. adaLN-single: the embedded timestep e and the blocks' shared modulation linear(silu(e))
        embedded = timestep_embedder(xp, params, "adaln_single.emb.timestep_embedder", timestep)
        if size_conditioned:
            embedded = embedded + size_embedding(xp, params, "adaln_single.emb", inputs.get("added_cond_kwargs"),
                                                 np.shape(timestep)[0])
        t_mod = linear_module(xp, params, "adaln_single.linear", silu.generic(xp, embedded))
        # 4. the caption projection
        if "caption_projection.linear_1.weight" in params:
            caption = text_projection(xp, params, "caption_projection", caption, "gelu-tanh")
        # 5. the blocks
        for index in range(config_int(config, "num_layers", _CLASS)):
            name = f"transformer_blocks.{index}"
            x = pixart_block(xp, params, name, x, caption, t_mod, heads, eps, self_mask, caption_mask)
            if record is not None:
                record[name] = x
        # 6. the output layer: (shift, scale) = table + e, then proj_out and unpatchify
        x = table_output_head(xp, params, x, embedded)
        return unpatchify.generic(xp, x, patch, out_channels, (height // patch, width // patch))
