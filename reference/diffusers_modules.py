"""The diffusers modules the whole-model references (PixArt, SD3, Flux, Wan) share, read off a state dict: Linear, PatchEmbed, the timestep embedder, Attention.

Every function takes the Precision ``xp``, the model's parameters ``params`` (state-dict name -> float64 array)
and the module's qualified name ``prefix`` ("transformer_blocks.0.attn"), so a whole-model reference reads like
the diffusers forward it mirrors (diffusers 0.42.1: models/embeddings.py, attention_processor.py,
attention.py). The mathematics is that of :mod:`ditcheck.reference.layers`, :mod:`~ditcheck.reference.components`
and :mod:`~ditcheck.reference.attention`; this module only names the parameters and fixes diffusers' conventions
(docs/conventions.md): [B, L, H Dh] tokens split into heads as ``view(B, L, H, Dh).transpose(1, 2)``, the SDPA
scale 1/sqrt(Dh), the QK-norm per head (after the split) or across heads (before it, Wan), RoPE on q and k after
the QK-norm, and the PatchEmbed table stored in float32. :func:`attention_module` and
:func:`joint_attention_module` are the one attention of all four references: PixArt's and SD3's self- and
cross-attention, SD3's and Flux's joint text + image attention, Flux's single-stream and Wan's RoPE attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .attention import attention, merge_heads, split_heads
from .components import apply_rope, feed_forward, joint_attention, round_to_format, scale_shift_table_chunks, timestep_mlp
from .components import qk_norm as qk_norm_layer
from .errors import InvalidArgumentError, ShapeError
from .layers import layer_norm, linear, modulate, patchify, pos_embed_2d, timestep_embedding
from .precision import Precision, as_float64_array, require_choice

__all__ = ["parameter", "optional_parameter", "linear_module", "patch_embed", "patch_position_table",
           "timestep_embedder", "text_projection", "feed_forward_module", "attention_module", "joint_attention_module",
           "table_output_head", "config_int", "TIMESTEP_CHANNELS", "OUTPUT_TABLE_ORDER", "QK_NORMS"]

#: diffusers Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0) in PixArt and SD3
TIMESTEP_CHANNELS = 256
#: the output layer's two chunks of scale_shift_table [2, D] + embedded timestep, shift first (PixArt's
#: T2IFinalLayer, diffusers PixArtTransformer2DModel and WanTransformer3DModel norm_out)
OUTPUT_TABLE_ORDER = ("shift", "scale")


def config_int(config: Mapping[str, Any], key: str, cls_name: str, default: int | None = None, *,
               minimum: int = 1) -> int:
    """``config[key]`` (dict(model.config) of diffusers class ``cls_name``) as an int >= ``minimum``.

    A missing or None entry takes ``default``; with no default it raises InvalidArgumentError naming
    ``config[key]``, as does a bool, a non-integer or a value below ``minimum`` (1 for widths and counts
    that cannot be zero; 0 for a block count).
    """
    argument = f"config[{key!r}]"
    value = config.get(key)
    if value is None:
        if default is None:
            raise InvalidArgumentError(argument, f"an entry of the {cls_name} config", "missing")
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgumentError(argument, f"an integer >= {minimum} ({cls_name} config)", repr(value))
    return int(value)


def parameter(xp: Precision, params: Mapping[str, Any], name: str) -> Any:
    """The state-dict entry ``name`` (float64 values) in xp's arrays; a missing or non-finite one raises
    InvalidArgumentError naming ``params[name]``."""
    if name not in params:
        raise InvalidArgumentError(f"params[{name!r}]", "an entry of the model's state dict", "missing")
    return xp.asarray(as_float64_array(params[name], f"params[{name!r}]"))


def optional_parameter(xp: Precision, params: Mapping[str, Any], name: str) -> Any:
    """The entry ``name`` in xp's arrays, or None when the module has none (a Linear without bias, a norm without affine)."""
    return parameter(xp, params, name) if name in params else None


def linear_module(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any) -> Any:
    """torch Linear ``prefix``: x W^T + b with W = params[prefix.weight], b = params[prefix.bias] if present."""
    return linear.generic(xp, x, parameter(xp, params, f"{prefix}.weight"), optional_parameter(xp, params, f"{prefix}.bias"))


def patch_embed(xp: Precision, params: Mapping[str, Any], prefix: str, latent: Any, patch_size: int,
                base_size: float, interpolation_scale: float, max_size: int | None = None,
                stored_grid: tuple[int, int] | None = None) -> Any:
    """diffusers PatchEmbed: Conv2d patches [B, (H/p)(W/p), D] + the 2-D sin-cos table (embeddings.py PatchEmbed).

    The table is diffusers' get_2d_sincos_pos_embed(D, grid, base_size, interpolation_scale). The one PatchEmbed
    builds at construction, for ``stored_grid``, is stored with ``.float()``: float32 whatever the model's dtype, a
    rounding no float64 run undoes, so it is rounded to float32 here too (the component check reports it as a
    float32 island). A table for another grid is recomputed in every forward (in float32 as written, an island a
    float64 run maps to float64) and is kept exact here. With ``max_size`` (SD3's pos_embed_max_size) the
    max_size x max_size table is a persistent buffer, ``prefix.pos_embed`` of the state dict, read as a checkpoint
    sets it (InvalidArgumentError naming params[...] when missing), and its centred (H/p) x (W/p) window is cropped.
    A ``prefix.pos_embed`` entry without max_size is read likewise.
    """
    tokens = patchify.generic(xp, latent, parameter(xp, params, f"{prefix}.proj.weight"),
                              optional_parameter(xp, params, f"{prefix}.proj.bias"), patch_size)
    stored = max_size is not None or f"{prefix}.pos_embed" in params
    # with pos_embed_max_size the table is a persistent buffer: a state dict without it raises (parameter)
    table = patch_position_table(xp, np.shape(latent), patch_size, np.shape(tokens)[-1], base_size,
                                 interpolation_scale, max_size,
                                 parameter(xp, params, f"{prefix}.pos_embed") if stored else None)
    grid = (np.shape(latent)[-2] // patch_size, np.shape(latent)[-1] // patch_size)
    if not stored and grid == stored_grid:
        table = xp.asarray(round_to_format(np.asarray(xp.to_float(table), dtype=np.float64), "float32"))
    return tokens + table[None]


def patch_position_table(xp: Precision, latent_shape: tuple[int, ...], patch_size: int, width: int, base_size: float,
                         interpolation_scale: float, max_size: int | None = None, table: Any = None) -> Any:
    """The position table [(H/p)(W/p), D] diffusers PatchEmbed adds to the patches of a latent [..., H, W].

    ``table`` is the module's stored one (max_size x max_size entries with ``max_size``, else the grid's); None
    stands for the exact get_2d_sincos_pos_embed(D, grid, base_size, interpolation_scale) of the max_size x max_size
    grid, or of the latent's own (H/p) x (W/p) grid without max_size. With ``max_size`` (pos_embed_max_size) the
    centred (H/p) x (W/p) window is cropped, as PatchEmbed.cropped_pos_embed does; more patches a side than
    max_size raise ShapeError naming hidden_states.
    """
    rows, cols = latent_shape[-2] // patch_size, latent_shape[-1] // patch_size
    if table is None:
        grid = (rows, cols) if max_size is None else (max_size, max_size)
        table = pos_embed_2d.generic(xp, width, grid, 10000, base_size, interpolation_scale)
    else:
        table = np.reshape(table, (-1, width))
    if max_size is None:
        return table
    if rows > max_size or cols > max_size:
        raise ShapeError("hidden_states", f"at most {max_size} patches per side (pos_embed_max_size)",
                         str(tuple(latent_shape)))
    top, left = (max_size - rows) // 2, (max_size - cols) // 2
    return np.reshape(np.reshape(table, (max_size, max_size, width))[top:top + rows, left:left + cols],
                      (rows * cols, width))


def timestep_embedder(xp: Precision, params: Mapping[str, Any], prefix: str, timestep: Any,
                      channels: int = TIMESTEP_CHANNELS) -> Any:
    """diffusers Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=0) then TimestepEmbedding (linear_1,
    SiLU, linear_2).

    The sinusoid is [cos(t f), sin(t f)], f_i = 10000^(-i/(channels/2)), as given t (no rescaling).
    """
    # TimestepEmbedding has PixArtAlphaTextProjection's parameters (linear_1, linear_2) and its SiLU form
    return text_projection(xp, params, prefix, timestep_embedding.generic(xp, timestep, channels, 10000, True, 0.0),
                           "silu")


def text_projection(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any, act: str) -> Any:
    """diffusers PixArtAlphaTextProjection: linear_2(act(linear_1 x)), act 'gelu-tanh' (PixArt captions) or 'silu' (SD3 pooled)."""
    return timestep_mlp.generic(xp, x, parameter(xp, params, f"{prefix}.linear_1.weight"),
                                parameter(xp, params, f"{prefix}.linear_1.bias"),
                                parameter(xp, params, f"{prefix}.linear_2.weight"),
                                parameter(xp, params, f"{prefix}.linear_2.bias"), act)


def table_output_head(xp: Precision, params: Mapping[str, Any], x: Any, embedded: Any, eps: float = 1e-6) -> Any:
    """The output head of PixArt (T2IFinalLayer) and Wan (norm_out): proj_out(LN(x)(1 + scale) + shift).

    (shift, scale) = ``scale_shift_table`` [2, D] (Wan stores it [1, 2, D]) + [e, e] in OUTPUT_TABLE_ORDER, e the
    embedded timestep [B, D] itself (not a projection of it); the LayerNorm has no affine parameters.
    """
    width = np.shape(x)[-1]
    chunks = scale_shift_table_chunks.generic(xp, np.reshape(parameter(xp, params, "scale_shift_table"), (-1, width)),
                                              np.concatenate([embedded, embedded], axis=-1), OUTPUT_TABLE_ORDER)
    normed = layer_norm.generic(xp, x, None, None, eps)
    return linear_module(xp, params, "proj_out", modulate.generic(xp, normed, chunks["shift"], chunks["scale"]))


def feed_forward_module(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any,
                        activation_fn: str = "gelu-approximate") -> Any:
    """diffusers FeedForward: net.2(act(net.0.proj x)); 'gelu-approximate' is GELU(approximate='tanh'), dropout the identity."""
    return feed_forward.generic(xp, x, parameter(xp, params, f"{prefix}.net.0.proj.weight"),
                                optional_parameter(xp, params, f"{prefix}.net.0.proj.bias"),
                                parameter(xp, params, f"{prefix}.net.2.weight"),
                                optional_parameter(xp, params, f"{prefix}.net.2.bias"), activation_fn)


#: the QK-norms diffusers' Attention(qk_norm=...) names: RMSNorm over each head's Dh channels after the split (SD3,
#: Flux; weight [Dh]) or one RMSNorm over all H Dh channels before it (Wan; weight [H Dh])
QK_NORMS = ("rms_norm", "rms_norm_across_heads")


def _heads(xp: Precision, params: Mapping[str, Any], projection: str, norm: str | None, x: Any, heads: int,
           eps: float, qk_norm: str | None) -> Any:
    """Linear ``projection`` of x [B, L, D] split into heads [B, H, L, Dh], QK-normed by ``norm`` (None for v).

    qk_norm None: RMS per head when the state dict has ``norm.weight`` (PixArt has none, SD3 per its config);
    'rms_norm' / 'rms_norm_across_heads': that norm, its weight required.
    """
    projected = linear_module(xp, params, projection, x)
    if norm is not None and (qk_norm is not None or f"{norm}.weight" in params):
        projected = qk_norm_layer.generic(xp, projected, parameter(xp, params, f"{norm}.weight"), num_heads=heads,
                                          eps=eps, kind="rms", across_heads=qk_norm == "rms_norm_across_heads")
    return split_heads(projected, heads)


def _rotated(xp: Precision, q: Any, k: Any, rope: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """q and k [B, H, L, Dh] with RoPE (cos, sin) [L, Dh] applied, channel pairs (2i, 2i+1); as given when rope is None."""
    if rope is None:
        return q, k
    cos, sin = rope
    return apply_rope.generic(xp, q, cos, sin, "interleaved"), apply_rope.generic(xp, k, cos, sin, "interleaved")


def attention_module(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any, heads: int,
                     context: Any = None, mask: Any = None, eps: float = 1e-6, *, qk_norm: str | None = None,
                     rope: tuple[Any, Any] | None = None, pre_only: bool = False) -> Any:
    """diffusers Attention (AttnProcessor2_0, JointAttnProcessor2_0 without a context, WanAttnProcessor,
    FluxAttnProcessor without a context): self- or cross-attention.

    q = to_q(x), k = to_k(c), v = to_v(c) with c = context or x, QK-normed (``qk_norm``: None, RMS per head when
    the state dict has norm_q / norm_k; 'rms_norm' per head or 'rms_norm_across_heads' before the split, required),
    split into heads, q and k rotated by ``rope`` = (cos, sin) [L, Dh] when given (pairs (2i, 2i+1); Wan's and
    Flux's self-attention: one table row per token), softmax(q k^T / sqrt(Dh) + mask) v, heads merged, to_out.0
    (none when ``pre_only``: Flux's single blocks project the attention output together with their MLP).
    ``mask``: an additive float bias broadcast to [B, H, Lq, Lk] (PixArt's [B, 1, 1, Lk] caption bias) or None.
    """
    require_choice(qk_norm, (None, *QK_NORMS), "qk_norm")
    source = x if context is None else context
    q = _heads(xp, params, f"{prefix}.to_q", f"{prefix}.norm_q", x, heads, eps, qk_norm)
    k = _heads(xp, params, f"{prefix}.to_k", f"{prefix}.norm_k", source, heads, eps, qk_norm)
    v = _heads(xp, params, f"{prefix}.to_v", None, source, heads, eps, qk_norm)
    q, k = _rotated(xp, q, k, rope)
    out = merge_heads(attention.generic(xp, q, k, v, scale=None, mask=mask))
    return out if pre_only else linear_module(xp, params, f"{prefix}.to_out.0", out)


def joint_attention_module(xp: Precision, params: Mapping[str, Any], prefix: str, x: Any, context: Any, heads: int,
                           eps: float = 1e-6, *, qk_norm: str | None = None, text_first: bool = False,
                           rope: tuple[Any, Any] | None = None) -> tuple[Any, Any | None]:
    """diffusers Attention with JointAttnProcessor2_0 (SD3's MMDiT attention, Esser et al. 2024, fig. 2) or
    FluxAttnProcessor with a context (Flux's double-stream blocks).

    Image stream q, k, v = to_q/k/v(x), text stream add_q/k/v_proj(context), each QK-normed (norm_q/k,
    norm_added_q/k; ``qk_norm`` as in :func:`attention_module`) and split into heads; one attention over the
    tokens [image, text] (SD3) or, ``text_first``, [text, image] (Flux); ``rope`` = (cos, sin) covers that joint
    sequence, one row per token in that order (Flux: cat(txt_ids, img_ids)), and rotates each stream's q and k
    by its rows. Returns (to_out.0(image part), to_add_out(text part)), the text part None when the module has
    no to_add_out (context_pre_only: SD3's last block discards it).
    """
    require_choice(qk_norm, (None, *QK_NORMS), "qk_norm")
    q, k, v = (_heads(xp, params, f"{prefix}.to_{name}", f"{prefix}.norm_{name}" if name != "v" else None, x, heads,
                      eps, qk_norm) for name in "qkv")
    q_text, k_text, v_text = (_heads(xp, params, f"{prefix}.add_{name}_proj",
                                     f"{prefix}.norm_added_{name}" if name != "v" else None, context, heads, eps,
                                     qk_norm) for name in "qkv")
    if rope is not None:
        cos, sin = rope
        split = np.shape(context)[1] if text_first else np.shape(x)[1]
        first, second = (cos[:split], sin[:split]), (cos[split:], sin[split:])
        text_rope, image_rope = (first, second) if text_first else (second, first)
        q_text, k_text = _rotated(xp, q_text, k_text, text_rope)
        q, k = _rotated(xp, q, k, image_rope)
    # order 'ba' concatenates the text stream first and still returns (image, text)
    image, text = joint_attention.generic(xp, q, k, v, q_text, k_text, v_text, order="ba" if text_first else "ab")
    image = linear_module(xp, params, f"{prefix}.to_out.0", merge_heads(image))
    if f"{prefix}.to_add_out.weight" not in params:
        return image, None
    return image, linear_module(xp, params, f"{prefix}.to_add_out", merge_heads(text))
