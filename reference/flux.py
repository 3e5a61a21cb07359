"""FLUX.1 (Black Forest Labs, FLUX.1 model card; diffusers 0.42.1 transformer_flux.py), whole model, readable top to bottom.

``flux_forward(xp, params, config, inputs, record)`` computes what diffusers' FluxTransformer2DModel computes, in
any :class:`~ditcheck.reference.precision.Precision` (Float64, ``Native("float32")``, ``Native("longdouble")``, mp,
arb), from ``model.state_dict()`` as float64 NumPy arrays, ``dict(model.config)`` and the forward's keyword inputs
as float64 NumPy arrays. The conventions that ports get wrong are spelled out where they happen:

* the timestep t in [0, 1) and the guidance scale are multiplied by 1000 inside the model, then embedded with
  Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0);
* RoPE angles come from the position ids (text ids first, then image ids), one axis per column, split over the
  head's channels by ``axes_dims_rope`` with theta 10000, channel pairs (2i, 2i+1) ("interleaved");
* QK-norm is an RMSNorm over each head's channels (weight [head_dim]), text and image streams with their own;
* double-stream blocks attend over [text, image] jointly, single-stream blocks run attention and MLP in parallel
  on the concatenated sequence;
* norm_out is AdaLayerNormContinuous, whose projection is read (scale, shift), not DiT's (shift, scale).

Every block's output is stored in ``record`` (when a dict) under the diffusers module's name, as the module returns
it: ``transformer_blocks.i`` and ``single_transformer_blocks.i`` both return (encoder_hidden_states, hidden_states).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .components import ADALN_CONTINUOUS_ORDER, ada_layer_norm_continuous, ada_layer_norm_zero_single, rope_frequencies
from .diffusers_modules import (attention_module, config_int, linear_module, parameter, text_projection,
                                timestep_embedder)
from .errors import InvalidArgumentError, ShapeError
from .layers import gelu
from .precision import Precision, as_float64_array
from .sd3 import sd3_block

__all__ = ["FLUX_ROPE_THETA", "FLUX_TIME_FACTOR", "FLUX_EPS", "flux_rope", "flux_conditioning", "flux_double_block",
           "flux_single_block", "flux_forward"]

#: FluxPosEmbed(theta=10000, ...)
FLUX_ROPE_THETA = 10000.0
#: FluxTransformer2DModel.forward: timestep * 1000 and guidance * 1000 (the pipeline passes sigma in [0, 1))
FLUX_TIME_FACTOR = 1000
#: the eps of every norm in Flux: AdaLayerNormZero(-Single)'s LayerNorm, norm2, QK RMSNorm, norm_out
FLUX_EPS = 1e-6


def flux_rope(xp: Precision, txt_ids: Any, img_ids: Any, axes_dims: tuple[int, ...]) -> tuple[Any, Any]:
    """FluxPosEmbed: (cos, sin) [T + L, head_dim] of the ids cat(txt_ids, img_ids), axes_dims_rope split, theta 10000, interleaved."""
    ids = np.concatenate([txt_ids, img_ids], axis=0)
    return rope_frequencies.generic(xp, ids, tuple(axes_dims), FLUX_ROPE_THETA, "interleaved")


def flux_conditioning(xp: Precision, params: Mapping[str, Any], timestep: Any, guidance: Any,
                      pooled_projections: Any) -> Any:
    """CombinedTimestep(Guidance)TextProjEmbeddings: MLP(sin(1000 t)) [+ MLP(sin(1000 g))] + MLP_silu(pooled)."""
    prefix = "time_text_embed"

    def embedded(value: Any, embedder: str) -> Any:
        # x1000 inside the model: t in [0, 1) from the pipeline; a port that forgets it embeds ~0 for every t
        return timestep_embedder(xp, params, f"{prefix}.{embedder}", value * xp.const(FLUX_TIME_FACTOR))

    temb = embedded(timestep, "timestep_embedder")
    if guidance is not None:
        temb = temb + embedded(guidance, "guidance_embedder")
    pooled = text_projection(xp, params, f"{prefix}.text_embedder", pooled_projections, "silu")
    return temb + pooled


def flux_double_block(xp: Precision, params: Mapping[str, Any], prefix: str, hidden: Any, context: Any, temb: Any,
                      cos: Any, sin: Any, heads: int) -> tuple[Any, Any]:
    """FluxTransformerBlock (MMDiT double stream): adaLN-Zero per stream, joint attention, gated GELU-tanh MLPs.

    SD3's JointTransformerBlock (reference.sd3.sd3_block, eps 1e-6 as FLUX_EPS) with the text stream first in the
    joint attention, RoPE over [text, image] and the QK RMSNorm per head. Returns (encoder_hidden_states,
    hidden_states), the module's order.
    """
    return sd3_block(xp, params, prefix, hidden, context, temb, heads, text_first=True, rope=(cos, sin),
                     qk_norm="rms_norm")


def flux_single_block(xp: Precision, params: Mapping[str, Any], prefix: str, hidden: Any, context: Any, temb: Any,
                      cos: Any, sin: Any, heads: int) -> tuple[Any, Any]:
    """FluxSingleTransformerBlock: on x = [text, image], x + gate proj_out([attn(n), gelu_tanh(proj_mlp(n))]), n = adaLN(x).

    Returns (encoder_hidden_states, hidden_states), the module's order.
    """
    text = np.shape(context)[1]
    x = np.concatenate([context, hidden], axis=1)
    normed, gate = ada_layer_norm_zero_single.generic(xp, x, temb, parameter(xp, params, f"{prefix}.norm.linear.weight"),
                                                      parameter(xp, params, f"{prefix}.norm.linear.bias"), FLUX_EPS)
    mlp_hidden = gelu.generic(xp, linear_module(xp, params, f"{prefix}.proj_mlp", normed), "tanh")
    # FluxAttnProcessor without a context: per-head QK RMSNorm, RoPE over [text, image], no output projection (pre_only)
    attn_out = attention_module(xp, params, f"{prefix}.attn", normed, heads, eps=FLUX_EPS, qk_norm="rms_norm",
                                rope=(cos, sin), pre_only=True)
    x = x + gate[:, None, :] * linear_module(xp, params, f"{prefix}.proj_out",
                                             np.concatenate([attn_out, mlp_hidden], axis=2))
    return x[:, :text], x[:, text:]


def _check_config(config: Mapping[str, Any]) -> tuple[int, int, int, tuple[int, ...]]:
    """(heads, double blocks, single blocks, axes_dims_rope) of a FluxTransformer2DModel config."""
    heads = config_int(config, "num_attention_heads", "FluxTransformer2DModel")
    head_dim = config_int(config, "attention_head_dim", "FluxTransformer2DModel")
    layers = config_int(config, "num_layers", "FluxTransformer2DModel", 19, minimum=0)
    single_layers = config_int(config, "num_single_layers", "FluxTransformer2DModel", 38, minimum=0)
    axes = tuple(config.get("axes_dims_rope") or ())
    if not axes or sum(axes) != head_dim:
        raise InvalidArgumentError("config['axes_dims_rope']", f"per-axis RoPE widths summing to attention_head_dim "
                                   f"= {head_dim}", repr(config.get("axes_dims_rope")))
    return heads, layers, single_layers, axes


def _ids(value: Any, name: str, axes: int) -> np.ndarray:
    ids = as_float64_array(value, f"inputs[{name!r}]")
    if ids.ndim == 3:  # diffusers still accepts the deprecated batched ids and takes the first sample's
        ids = ids[0]
    if ids.ndim != 2 or ids.shape[1] != axes:
        raise ShapeError(f"inputs[{name!r}]", f"shape [tokens, {axes}] (one column per RoPE axis)", str(ids.shape))
    return ids


_UNSUPPORTED_INPUTS = ("joint_attention_kwargs", "controlnet_block_samples", "controlnet_single_block_samples")


def flux_forward(xp: Precision, params: Mapping[str, Any], config: Mapping[str, Any], inputs: Mapping[str, Any],
                 record: dict[str, Any] | None = None) -> Any:
    """FluxTransformer2DModel.forward (diffusers transformer_flux.py; BFL FLUX.1): packed tokens [B, L, C_in] -> [B, L, p^2 C_out].

    inputs: hidden_states, encoder_hidden_states, pooled_projections, timestep (t in [0, 1)), img_ids, txt_ids and
    guidance (when config['guidance_embeds']). IP-adapter / LoRA kwargs and ControlNet residuals are not modelled.
    """
    heads, layers, single_layers, axes = _check_config(config)
    for name in _UNSUPPORTED_INPUTS:
        if inputs.get(name) is not None:
            raise InvalidArgumentError(f"inputs[{name!r}]", "None (not modelled by the Flux reference)", "given")
    guidance = inputs.get("guidance")
    if bool(config.get("guidance_embeds", False)) != (guidance is not None):
        raise InvalidArgumentError("inputs['guidance']", "given exactly when config['guidance_embeds'] is true",
                                   "missing" if guidance is None else "given")
    with xp.context():

        def array(name: str) -> Any:
            return xp.asarray(as_float64_array(inputs.get(name), f"inputs[{name!r}]"))

        hidden = linear_module(xp, params, "x_embedder", array("hidden_states"))
        context = linear_module(xp, params, "context_embedder", array("encoder_hidden_states"))
        temb = flux_conditioning(xp, params, array("timestep"), None if guidance is None else array("guidance"),
                                 array("pooled_projections"))
        cos, sin = flux_rope(xp, xp.asarray(_ids(inputs.get("txt_ids"), "txt_ids", len(axes))),
                             xp.asarray(_ids(inputs.get("img_ids"), "img_ids", len(axes))), axes)
        if np.shape(cos)[0] != np.shape(context)[1] + np.shape(hidden)[1]:
            raise ShapeError("inputs['img_ids']", "one id row per text and image token",
                             f"{np.shape(cos)[0]} rows for {np.shape(context)[1]} + {np.shape(hidden)[1]} tokens")
        for i in range(layers):
            context, hidden = flux_double_block(xp, params, f"transformer_blocks.{i}", hidden, context, temb, cos, sin,
                                                heads)
            if record is not None:
                record[f"transformer_blocks.{i}"] = (context, hidden)
        for i in range(single_layers):
            context, hidden = flux_single_block(xp, params, f"single_transformer_blocks.{i}", hidden, context, temb,
                                                cos, sin, heads)
            if record is not None:
                record[f"single_transformer_blocks.{i}"] = (context, hidden)
        # AdaLayerNormContinuous reads its projection (scale, shift): the reverse of DiT's final layer
        hidden = ada_layer_norm_continuous.generic(xp, hidden, temb, parameter(xp, params, "norm_out.linear.weight"),
                                                   parameter(xp, params, "norm_out.linear.bias"), eps=FLUX_EPS, norm="layer",
                                                   order=ADALN_CONTINUOUS_ORDER)
        return linear_module(xp, params, "proj_out", hidden)
