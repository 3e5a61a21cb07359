"""Wan 2.1 text-to-video (Wan Team, arXiv:2503.20314; diffusers 0.42.1 transformer_wan.py), whole model, top to bottom.

``wan_forward(xp, params, config, inputs, record)`` computes what diffusers' WanTransformer3DModel computes, in any
:class:`~ditcheck.reference.precision.Precision` (Float64, ``Native("float32")``, ``Native("longdouble")``, mp,
arb), from ``model.state_dict()`` as float64 NumPy arrays, ``dict(model.config)`` and the forward's keyword inputs
as float64 NumPy arrays. The conventions that ports get wrong are spelled out where they happen:

* the timestep is on the DDPM / FlowMatch scale [0, 1000) and embedded as is, Timesteps(freq_dim,
  flip_sin_to_cos=True, downscale_freq_shift=0): cos first, then sin;
* 3-D RoPE: a head's channels split over (frame, row, column) as d - 4 floor(d/6), 2 floor(d/6), 2 floor(d/6)
  (WanRotaryPosEmbed), theta 10000, channel pairs (2i, 2i+1), on the self-attention only; its cos / sin tables are
  float32 numbers in every diffusers Wan (WAN_ROPE_TABLE_FORMAT);
* QK-norm is one RMSNorm across all heads (weight [heads x head_dim]), before the head split;
* each block's modulation is its learned scale_shift_table [6, D] plus the shared time projection [B, 6 D],
  read (shift, scale, gate) for self-attention then (shift, scale, gate) for the MLP; diffusers computes it and the
  LayerNorms in float32 whatever the model dtype (FP32LayerNorm, temb.float()), by design;
* text enters through cross-attention (LayerNorm with affine parameters first when cross_attn_norm), no gate;
* the output head is LayerNorm modulated by scale_shift_table [2, D] + temb (read (shift, scale); temb, not its
  6-way projection), then unpatchify to [B, C, F, H, W].

Every block's output is stored in ``record`` (when a dict) under the diffusers module's name ``blocks.i``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .components import (ADALN_ZERO_ORDER, patchify_3d, rope_frequencies, rope_grid_positions, round_to_format,
                         scale_shift_table_chunks, unpatchify_3d, wan_rope_axes)
from .diffusers_modules import (attention_module, config_int, feed_forward_module, linear_module, parameter,
                                table_output_head, text_projection, timestep_embedder)
from .errors import InvalidArgumentError, ShapeError
from .layers import layer_norm, modulate, silu
from .precision import (FLOAT64, Precision, as_float64_array, require_choice, require_positive_int,
                        require_real)

__all__ = ["WAN_ROPE_THETA", "WAN_ROPE_TABLE_FORMAT", "wan_rope", "wan_conditioning", "wan_block", "wan_forward"]

#: WanRotaryPosEmbed(theta=10000.0)
WAN_ROPE_THETA = 10000.0
#: WanRotaryPosEmbed computes its cos / sin tables once, at construction, in float64 and keeps them .float()
#: (get_1d_rotary_pos_embed): a float32 buffer whatever the model's dtype, so the shipped model's tables are those
#: values rounded to float32, in a float64 run too (built before any forward, out of Float32AsFloat64's reach;
#: measured 2.7e-9 on the tiny model's output, 2e4 x its float64 tolerance). None: the exact tables in the precision.
WAN_ROPE_TABLE_FORMAT: str | None = "float32"
#: the diffusers class whose config wan_forward reads (named in config errors)
_CLASS = "WanTransformer3DModel"


def wan_rope(xp: Precision, grid: tuple[int, int, int], head_dim: int,
             table_format: str | None = WAN_ROPE_TABLE_FORMAT) -> tuple[Any, Any]:
    """WanRotaryPosEmbed: (cos, sin) [f h w, head_dim] of the patch grid's (frame, row, column), wan_rope_axes split, interleaved.

    table_format 'float32' (diffusers): the float64 tables rounded to float32, constants of the model like its
    weights; None: the tables evaluated in ``xp``.
    """
    axes = wan_rope_axes(head_dim)
    if table_format is None:
        return rope_frequencies.generic(xp, xp.asarray(rope_grid_positions(grid)), axes, WAN_ROPE_THETA, "interleaved")
    tables = rope_frequencies.generic(FLOAT64, rope_grid_positions(grid), axes, WAN_ROPE_THETA, "interleaved")
    return tuple(xp.asarray(round_to_format(table, table_format)) for table in tables)


def wan_conditioning(xp: Precision, params: Mapping[str, Any], timestep: Any, text: Any,
                     freq_dim: int) -> tuple[Any, Any, Any]:
    """WanTimeTextImageEmbedding (text-to-video): (temb [B, D], timestep_proj [B, 6 D], text [B, T, D]).

    temb = MLP_silu(sinusoid(t)) with t on the [0, 1000) scale, timestep_proj = Linear(silu(temb)) (diffusers
    views it [B, 6, D]; the blocks read it as 6 chunks of D), text = PixArtAlphaTextProjection(gelu-tanh) of the
    text encoder states.
    """
    prefix = "condition_embedder"
    temb = timestep_embedder(xp, params, f"{prefix}.time_embedder", timestep, channels=freq_dim)
    timestep_proj = linear_module(xp, params, f"{prefix}.time_proj", silu.generic(xp, temb))
    text = text_projection(xp, params, f"{prefix}.text_embedder", text, "gelu-tanh")
    return temb, timestep_proj, text


def wan_block(xp: Precision, params: Mapping[str, Any], prefix: str, hidden: Any, text: Any, timestep_proj: Any,
              rope: tuple[Any, Any], heads: int, eps: float, cross_attn_norm: bool) -> Any:
    """WanTransformerBlock: x += gate_msa attn1(mod(LN x)); x += attn2(LN_affine x, text); x += gate_mlp ffn(mod(LN x))."""
    table = parameter(xp, params, f"{prefix}.scale_shift_table")
    width = np.shape(hidden)[-1]
    # (scale_shift_table + temb).chunk(6): the adaLN-Zero order, (shift, scale, gate) of the attention, then the MLP
    chunks = scale_shift_table_chunks.generic(xp, np.reshape(table, (6, width)), timestep_proj, ADALN_ZERO_ORDER)
    normed = modulate.generic(xp, layer_norm.generic(xp, hidden, None, None, eps), chunks["shift_msa"],
                              chunks["scale_msa"])
    # WanAttnProcessor: the QK RMSNorm across all heads, before the split; RoPE on the self-attention only
    hidden = hidden + attention_module(xp, params, f"{prefix}.attn1", normed, heads, eps=eps,
                                       qk_norm="rms_norm_across_heads", rope=rope) * chunks["gate_msa"][:, None, :]
    normed = layer_norm.generic(xp, hidden, parameter(xp, params, f"{prefix}.norm2.weight"),
                                parameter(xp, params, f"{prefix}.norm2.bias"), eps) if cross_attn_norm else hidden
    hidden = hidden + attention_module(xp, params, f"{prefix}.attn2", normed, heads, context=text, eps=eps,
                                       qk_norm="rms_norm_across_heads")
    normed = modulate.generic(xp, layer_norm.generic(xp, hidden, None, None, eps), chunks["shift_mlp"],
                              chunks["scale_mlp"])
    ff = feed_forward_module(xp, params, f"{prefix}.ffn", normed)
    return hidden + ff * chunks["gate_mlp"][:, None, :]


def _check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The WanTransformer3DModel config fields the reference reads; image conditioning (I2V) is not modelled."""
    for name in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len"):
        if config.get(name) is not None:
            raise InvalidArgumentError(f"config[{name!r}]", "None (image-to-video conditioning is not modelled by the "
                                       "Wan reference)", repr(config.get(name)))
    patch = config.get("patch_size", (1, 2, 2))
    if not isinstance(patch, (tuple, list)) or len(patch) != 3:
        raise InvalidArgumentError("config['patch_size']", "a triple (pt, ph, pw)", repr(patch))
    return {"heads": config_int(config, "num_attention_heads", _CLASS),
            "head_dim": config_int(config, "attention_head_dim", _CLASS),
            "patch": tuple(require_positive_int(p, f"config['patch_size'][{i}]") for i, p in enumerate(patch)),
            "freq_dim": config_int(config, "freq_dim", _CLASS, 256),
            "layers": config_int(config, "num_layers", _CLASS, 40, minimum=0),
            "eps": require_real(config.get("eps", 1e-6), "config['eps']", low=0.0, low_inclusive=False),
            "cross_attn_norm": bool(config.get("cross_attn_norm", True)),
            "rope_max_seq_len": config_int(config, "rope_max_seq_len", _CLASS, 1024)}


def wan_forward(xp: Precision, params: Mapping[str, Any], config: Mapping[str, Any], inputs: Mapping[str, Any],
                record: dict[str, Any] | None = None, *, rope_table_format: str | None = WAN_ROPE_TABLE_FORMAT) -> Any:
    """WanTransformer3DModel.forward (diffusers transformer_wan.py; arXiv:2503.20314): video latents [B, C, F, H, W] -> [B, C_out, F, H, W].

    inputs: hidden_states, timestep [B] (one per sample, [0, 1000) scale), encoder_hidden_states. Per-token
    timesteps [B, L] (Wan 2.2 TI2V), image conditioning and attention_kwargs are not modelled.
    ``rope_table_format``: see WAN_ROPE_TABLE_FORMAT (None: exact RoPE tables).
    """
    cfg = _check_config(config)
    require_choice(rope_table_format, (None, "float32", "float16", "bfloat16"), "rope_table_format")
    for name in ("encoder_hidden_states_image", "attention_kwargs"):
        if inputs.get(name) is not None:
            raise InvalidArgumentError(f"inputs[{name!r}]", "None (not modelled by the Wan reference)", "given")
    latents = as_float64_array(inputs.get("hidden_states"), "inputs['hidden_states']")
    timestep = as_float64_array(inputs.get("timestep"), "inputs['timestep']")
    if timestep.ndim != 1:
        raise InvalidArgumentError("inputs['timestep']", "one timestep per sample, shape [B] (per-token timesteps are "
                                   "not modelled)", str(timestep.shape))
    if latents.ndim != 5:
        raise ShapeError("inputs['hidden_states']", "video latents [B, C, F, H, W]", str(latents.shape))
    grid = tuple(n // p for n, p in zip(latents.shape[2:], cfg["patch"]))
    if max(grid) > cfg["rope_max_seq_len"]:
        # diffusers slices a table of rope_max_seq_len positions per axis
        raise ShapeError("inputs['hidden_states']", f"at most rope_max_seq_len = {cfg['rope_max_seq_len']} patches "
                         "per axis", str(grid))
    heads = cfg["heads"]
    with xp.context():
        text = xp.asarray(as_float64_array(inputs.get("encoder_hidden_states"), "inputs['encoder_hidden_states']"))
        rope = wan_rope(xp, grid, cfg["head_dim"], rope_table_format)
        hidden = patchify_3d.generic(xp, xp.asarray(latents), parameter(xp, params, "patch_embedding.weight"),
                                     parameter(xp, params, "patch_embedding.bias"), cfg["patch"])
        temb, timestep_proj, text = wan_conditioning(xp, params, xp.asarray(timestep), text, cfg["freq_dim"])
        for i in range(cfg["layers"]):
            hidden = wan_block(xp, params, f"blocks.{i}", hidden, text, timestep_proj, rope, heads, cfg["eps"],
                               cfg["cross_attn_norm"])
            if record is not None:
                record[f"blocks.{i}"] = hidden
        # the head adds temb itself (not its 6-way projection) to both rows of its table
        hidden = table_output_head(xp, params, hidden, temb, cfg["eps"])
        return unpatchify_3d.generic(xp, hidden, cfg["patch"], grid)
