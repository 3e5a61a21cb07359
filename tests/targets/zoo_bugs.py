"""Planted bugs in the DiTs people ship, each modelled on a reported one, for ditcheck.validate.components.

Tiny diffusers 0.42.1 models (random weights redrawn at scale 0.3 so that adaLN, gates and tables are not
zero; CPU; float32 unless a test converts them) for Wan, Sana, CogVideoX, SD3.5 (dual attention) and Flux
(with guidance), their inputs, and ``ZOO_BUGS``: one :class:`PlantedBug` per kind, the same tiny model with one
convention crossed the way a port or a patch crossed it, and what check_components must answer: the first
failing finding (a qualified module name), its status (``mismatch`` for a leaf, ``inline`` for a composite's
own code) and the knob setting that explains it (None where no knob does: then none may be reported).

The reports the bugs are modelled on (see the team's dit-zoo notes): a Wan port with the timestep sin/cos
halves swapped (flashinfer#3819); downscale_freq_shift 1 vs 0 (sd-scripts#1187); SD3's joint processor
ignoring attention masks (diffusers#8673); adaLN chunk orders that differ between classes
(AdaLayerNormContinuous is (scale, shift)); interleaved vs half-split RoPE (Flux vs Allegro); QK-norm per head
(Flux, CogVideoX) vs across heads (Wan, LTX); Flux's x1000 on timestep and guidance inside the model.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import (CogVideoXTransformer3DModel, FluxTransformer2DModel, SanaTransformer2DModel,
                       SD3Transformer2DModel, WanTransformer3DModel)
from diffusers.models.attention_processor import (AllegroAttnProcessor2_0, CogVideoXAttnProcessor2_0,
                                                  HunyuanAttnProcessor2_0)
from diffusers.models.embeddings import apply_rotary_emb, get_3d_rotary_pos_embed, get_timestep_embedding
from diffusers.models.transformers.sana_transformer import SanaAttnProcessor2_0
from diffusers.models.transformers.transformer_lumina2 import Lumina2AttnProcessor2_0
from diffusers.models.transformers.transformer_mochi import MochiAttnProcessor2_0
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0
from diffusers.models.transformers.transformer_ltx import LTXVideoAttnProcessor
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanRotaryPosEmbed

# every parameter redrawn N(0, 0.3^2): diffusers zero-initialises adaLN projections and gates
from ditcheck.validate.zoo import randomise_weights

logging.getLogger("diffusers").setLevel(logging.ERROR)  # "modules that should be kept in float32" on .to()

Built = tuple[torch.nn.Module, dict[str, Any]]


# ----------------------------------------------------------------------------------------
# Tiny models (configs from the smallest working ones; head dims chosen so RoPE axis splits differ)


def tiny_wan(seed: int) -> Built:
    """Wan 2.1 layout: head dim 16 splits (t, h, w) = (8, 4, 4); video latents [B, C, F, H, W] = [2, 4, 2, 4, 4]."""
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                  out_channels=4, text_dim=12, freq_dim=16, ffn_dim=32, num_layers=1,
                                  rope_max_seq_len=32)
    generator = torch.Generator().manual_seed(seed + 100)
    return randomise_weights(model, seed), dict(hidden_states=torch.randn(2, 4, 2, 4, 4, generator=generator),
                                        timestep=torch.tensor([3.0, 700.0]),
                                        encoder_hidden_states=torch.randn(2, 5, 12, generator=generator))


def tiny_sana(seed: int) -> Built:
    """Sana: linear self-attention, SDPA cross-attention with a padded caption (mask -> additive -10000), GLUMBConv."""
    model = SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                   num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                   cross_attention_dim=16, caption_channels=12, mlp_ratio=2.5, sample_size=8,
                                   patch_size=2)
    generator = torch.Generator().manual_seed(seed + 100)
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    return randomise_weights(model, seed), dict(hidden_states=torch.randn(2, 4, 8, 8, generator=generator),
                                        encoder_hidden_states=torch.randn(2, 5, 12, generator=generator),
                                        timestep=torch.tensor([3.0, 700.0]), encoder_attention_mask=mask)


def tiny_cogvideox(seed: int) -> Built:
    """CogVideoX 1.5-style with RoPE given by the caller (head dim 16: axes t, h, w = 4, 6, 6), one latent frame."""
    model = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                        time_embed_dim=8, text_embed_dim=12, num_layers=1, sample_width=8,
                                        sample_height=8, sample_frames=1, patch_size=2, temporal_compression_ratio=4,
                                        max_text_seq_length=5, use_rotary_positional_embeddings=True)
    generator = torch.Generator().manual_seed(seed + 100)
    rotary = get_3d_rotary_pos_embed(16, ((0, 0), (4, 4)), (4, 4), 1)
    return randomise_weights(model, seed), dict(hidden_states=torch.randn(2, 1, 4, 8, 8, generator=generator),
                                        encoder_hidden_states=torch.randn(2, 5, 12, generator=generator),
                                        timestep=torch.tensor([3.0, 700.0]), image_rotary_emb=rotary)


def tiny_sd3(seed: int, qk_norm: str | None = "rms_norm", dual_attention_layers: tuple[int, ...] = ()) -> Built:
    """SD3 (MMDiT, joint text-image attention), two blocks; ``dual_attention_layers`` as SD3.5's."""
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=12, caption_projection_dim=16,
                                  pooled_projection_dim=10, out_channels=4, pos_embed_max_size=8, qk_norm=qk_norm,
                                  dual_attention_layers=dual_attention_layers)
    generator = torch.Generator().manual_seed(seed + 100)
    return randomise_weights(model, seed), dict(hidden_states=torch.randn(2, 4, 8, 8, generator=generator),
                                        encoder_hidden_states=torch.randn(2, 5, 12, generator=generator),
                                        pooled_projections=torch.randn(2, 10, generator=generator),
                                        timestep=torch.tensor([3.0, 700.0]))


def tiny_sd35(seed: int) -> Built:
    """SD3.5 medium layout: RMSNorm QK-norm, block 0 with dual attention (SD35AdaLayerNormZeroX, attn2)."""
    return tiny_sd3(seed, "rms_norm", dual_attention_layers=(0,))


def tiny_flux_guidance(seed: int) -> Built:
    """Flux dev layout (guidance_embeds): t in [0, 1] and the guidance scale as the pipeline passes them."""
    model = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=12,
                                   pooled_projection_dim=10, axes_dims_rope=(4, 6, 6), guidance_embeds=True)
    generator = torch.Generator().manual_seed(seed + 100)
    grid = torch.meshgrid(torch.zeros(1), torch.arange(3.0), torch.arange(3.0), indexing="ij")
    return randomise_weights(model, seed), dict(hidden_states=torch.randn(2, 9, 8, generator=generator),
                                        encoder_hidden_states=torch.randn(2, 4, 12, generator=generator),
                                        pooled_projections=torch.randn(2, 10, generator=generator),
                                        timestep=torch.tensor([0.003, 0.7]), guidance=torch.tensor([3.5, 7.0]),
                                        img_ids=torch.stack(grid, -1).reshape(-1, 3), txt_ids=torch.zeros(4, 3))


ZOO_MODELS: dict[str, Callable[[int], Built]] = {"wan": tiny_wan, "sana": tiny_sana, "cogvideox": tiny_cogvideox,
                                                 "sd35": tiny_sd35, "flux-guidance": tiny_flux_guidance}


def patch(module: torch.nn.Module, forward: Callable[..., Any]) -> None:
    """Replace one module's forward (an instance attribute: forward hooks still run)."""
    module.forward = functools.partial(forward, module)


def with_processor(build: Callable[[int], Built], attention: str, processor: Callable[..., Any],
                   **options: Any) -> Callable[[int], Built]:
    """``build``'s model and inputs, its attention module ``attention`` (a dotted submodule name) set to run
    ``processor(**options)``: a planted processor bug, or with no options a rewritten processor as a control."""
    def built(seed: int) -> Built:
        model, kwargs = build(seed)
        model.get_submodule(attention).set_processor(processor(**options))
        return model, kwargs
    return built


# ----------------------------------------------------------------------------------------
# Rewritten processors: with the defaults each is the real thing (tests hold that), one argument plants the bug


class PlantedWanProcessor(WanAttnProcessor):
    """WanAttnProcessor (text-to-video path) rewritten; ``qk_per_head`` normalises q and k per head, as Flux does."""

    def __init__(self, qk_per_head: bool = False):
        super().__init__()
        self.qk_per_head = qk_per_head

    def _norm(self, norm: torch.nn.RMSNorm, x: torch.Tensor, heads: int) -> torch.Tensor:
        if not self.qk_per_head:
            return norm(x)
        per_head = x.unflatten(-1, (heads, -1))
        return F.rms_norm(per_head, (per_head.shape[-1],), None, norm.eps).flatten(-2) * norm.weight

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, rotary_emb: Any = None) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = self._norm(attn.norm_q, attn.to_q(hidden_states), attn.heads).unflatten(2, (attn.heads, -1))
        key = self._norm(attn.norm_k, attn.to_k(context), attn.heads).unflatten(2, (attn.heads, -1))
        value = attn.to_v(context).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
                x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
                out = torch.empty_like(x)
                out[..., 0::2] = x1 * cos[..., 0::2] - x2 * sin[..., 1::2]
                out[..., 1::2] = x1 * sin[..., 1::2] + x2 * cos[..., 0::2]
                return out.type_as(x)
            query, key = rotate(query, *rotary_emb), rotate(key, *rotary_emb)
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                             attn_mask=attention_mask)
        return attn.to_out[0](out.transpose(1, 2).flatten(2, 3).type_as(query))


class PlantedCogVideoXProcessor(CogVideoXAttnProcessor2_0):
    """CogVideoXAttnProcessor2_0 rewritten; ``rope_unbind_dim=-2`` rotates half-split pairs, ``qk_across_heads``
    normalises q and k over all heads' channels (the per-head LayerNorm's weight and bias tiled)."""

    def __init__(self, rope_unbind_dim: int = -1, qk_across_heads: bool = False):
        super().__init__()
        self.rope_unbind_dim, self.qk_across_heads = rope_unbind_dim, qk_across_heads

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: Any = None, image_rotary_emb: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        text = encoder_hidden_states.shape[1]
        joined = torch.cat([encoder_hidden_states, hidden_states], dim=1)

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)

        def normed(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
            if not self.qk_across_heads:
                return norm(split(x))
            return split(F.layer_norm(x, (x.shape[-1],), norm.weight.repeat(attn.heads), norm.bias.repeat(attn.heads),
                                      norm.eps))

        query, key = normed(attn.norm_q, attn.to_q(joined)), normed(attn.norm_k, attn.to_k(joined))
        value = split(attn.to_v(joined))
        if image_rotary_emb is not None:
            query[:, :, text:] = apply_rotary_emb(query[:, :, text:], image_rotary_emb,
                                                  use_real_unbind_dim=self.rope_unbind_dim)
            key[:, :, text:] = apply_rotary_emb(key[:, :, text:], image_rotary_emb,
                                                use_real_unbind_dim=self.rope_unbind_dim)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        out = attn.to_out[0](out.transpose(1, 2).flatten(2))
        return out[:, text:], out[:, :text]


class MaskIgnoringSanaProcessor(SanaAttnProcessor2_0):
    """Sana's cross-attention processor that drops the caption mask (padded tokens attended to), as SD3's does."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, None)


# ----------------------------------------------------------------------------------------
# Planted bugs


def _wan_sin_cos_swapped(seed: int) -> Built:
    model, kwargs = tiny_wan(seed)

    def forward(self: Any, timesteps: torch.Tensor) -> torch.Tensor:
        return get_timestep_embedding(timesteps, self.num_channels, flip_sin_to_cos=not self.flip_sin_to_cos,
                                      downscale_freq_shift=self.downscale_freq_shift, scale=self.scale)
    patch(model.condition_embedder.timesteps_proj, forward)
    return model, kwargs


def _cogvideox_frequency_shift_1(seed: int) -> Built:
    model, kwargs = tiny_cogvideox(seed)
    assert model.time_proj.downscale_freq_shift == 0

    def forward(self: Any, timesteps: torch.Tensor) -> torch.Tensor:
        return get_timestep_embedding(timesteps, self.num_channels, flip_sin_to_cos=self.flip_sin_to_cos,
                                      downscale_freq_shift=1, scale=self.scale)
    patch(model.time_proj, forward)
    return model, kwargs


def _wan_block_scale_shift_swapped(seed: int) -> Built:
    """WanTransformerBlock reading the table's chunks as (scale, shift, gate) x (msa, mlp)."""
    model, kwargs = tiny_wan(seed)

    def forward(self: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                rotary_emb: Any) -> torch.Tensor:
        scale_msa, shift_msa, gate_msa, c_scale_msa, c_shift_msa, c_gate_msa = (
            self.scale_shift_table + temb.float()).chunk(6, dim=1)
        norm = (self.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa).type_as(hidden_states)
        hidden_states = (hidden_states.float() + self.attn1(norm, None, None, rotary_emb) * gate_msa
                         ).type_as(hidden_states)
        norm = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(norm, encoder_hidden_states, None, None)
        norm = (self.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(hidden_states)
        return (hidden_states.float() + self.ffn(norm).float() * c_gate_msa).type_as(hidden_states)
    patch(model.blocks[0], forward)
    return model, kwargs


def _wan_rope_theta_256(seed: int) -> Built:
    """Wan's 3-D RoPE tables built with HunyuanVideo's theta 256 instead of 10000."""
    model, kwargs = tiny_wan(seed)
    rope = model.rope
    model.rope = WanRotaryPosEmbed(rope.attention_head_dim, rope.patch_size, rope.max_seq_len, theta=256.0)
    return model, kwargs


def _cogvideox_feed_forward_image_first(seed: int) -> Built:
    """CogVideoXBlock feeding its feed-forward [image, text] and splitting it back as if [text, image]."""
    model, kwargs = tiny_cogvideox(seed)

    def forward(self: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: Any = None, attention_kwargs: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        text = encoder_hidden_states.size(1)
        norm, norm_text, gate, text_gate = self.norm1(hidden_states, encoder_hidden_states, temb)
        attn, attn_text = self.attn1(hidden_states=norm, encoder_hidden_states=norm_text,
                                     image_rotary_emb=image_rotary_emb)
        hidden_states = hidden_states + gate * attn
        encoder_hidden_states = encoder_hidden_states + text_gate * attn_text
        norm, norm_text, gate, text_gate = self.norm2(hidden_states, encoder_hidden_states, temb)
        ff = self.ff(torch.cat([norm, norm_text], dim=1))
        return hidden_states + gate * ff[:, text:], encoder_hidden_states + text_gate * ff[:, :text]
    patch(model.transformer_blocks[0], forward)
    return model, kwargs


def _sana_glumbconv_gate_first(seed: int) -> Built:
    """GLUMBConv gating with the first channel half (silu(first) * second): AuraFlow's gate-first order."""
    model, kwargs = tiny_sana(seed)

    def forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv_depth(self.nonlinearity(self.conv_inverted(hidden_states)))
        gate, hidden_states = torch.chunk(hidden_states, 2, dim=1)
        return self.conv_point(hidden_states * self.nonlinearity(gate))
    patch(model.transformer_blocks[0].ff, forward)
    return model, kwargs


def _sd35_adaln_x_second_group_swapped(seed: int) -> Built:
    """SD35AdaLayerNormZeroX reading the dual attention's chunks as (scale_msa2, shift_msa2, gate_msa2)."""
    model, kwargs = tiny_sd35(seed)

    def forward(self: Any, hidden_states: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        chunks = self.linear(self.silu(emb)).chunk(9, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, scale_msa2, shift_msa2, gate_msa2 = chunks
        norm = self.norm(hidden_states)
        return (norm * (1 + scale_msa[:, None]) + shift_msa[:, None], gate_msa, shift_mlp, scale_mlp, gate_mlp,
                norm * (1 + scale_msa2[:, None]) + shift_msa2[:, None], gate_msa2)
    patch(model.transformer_blocks[0].norm1, forward)
    return model, kwargs


def _sd35_second_gate_off_by_1e3(seed: int) -> Built:
    """SD3.5's dual-attention block adding gate_msa2 (1 + 1e-3) attn2: the subtle one, no knob explains it."""
    model, kwargs = tiny_sd35(seed)

    def forward(self: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                joint_attention_kwargs: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp, norm2, gate_msa2 = self.norm1(hidden_states, emb=temb)
        norm_text, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(encoder_hidden_states,
                                                                                          emb=temb)
        attn, attn_text = self.attn(hidden_states=norm, encoder_hidden_states=norm_text)
        hidden_states = hidden_states + gate_msa.unsqueeze(1) * attn
        hidden_states = hidden_states + (1 + 1e-3) * gate_msa2.unsqueeze(1) * self.attn2(hidden_states=norm2)
        norm = self.norm2(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        hidden_states = hidden_states + gate_mlp.unsqueeze(1) * self.ff(norm)
        encoder_hidden_states = encoder_hidden_states + c_gate_msa.unsqueeze(1) * attn_text
        norm_text = self.norm2_context(encoder_hidden_states) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        encoder_hidden_states = encoder_hidden_states + c_gate_mlp.unsqueeze(1) * self.ff_context(norm_text)
        return encoder_hidden_states, hidden_states
    patch(model.transformer_blocks[0], forward)
    return model, kwargs


def _flux_guidance_unscaled(seed: int) -> Built:
    """A Flux port whose forward embeds the guidance scale without Flux's x1000 (the timestep keeps it)."""
    model, kwargs = tiny_flux_guidance(seed)
    original = type(model).forward.__get__(model)

    def forward(*args: Any, guidance: Any = None, **kw: Any) -> Any:
        return original(*args, guidance=None if guidance is None else guidance / 1000, **kw)
    model.forward = forward
    return model, kwargs


@dataclass(frozen=True)
class PlantedBug:
    """One planted bug: the model that carries it and what check_components must report first."""

    architecture: str
    modelled_on: str
    build: Callable[[int], Built]
    #: qualified module name of the first failing finding ("FluxTransformer2DModel" for the top-level model)
    finding: str
    #: "mismatch" (a leaf) or "inline" (a composite's own code)
    status: str
    #: the knob setting that must be among the explanations; None: no knob explains it (none may be reported)
    explanation: dict[str, Any] | None


#: The rewritten processors with no bug planted (controls: they must conform), one per architecture whose bugs
#: switch an option of a rewrite (processor_bug registers it)
CONTROLS: dict[str, Callable[[int], Built]] = {}


def processor_bug(architecture: str, modelled_on: str, build: Callable[[int], Built], attention: str,
                  processor: Callable[..., Any], explanation: dict[str, Any] | None, **options: Any) -> PlantedBug:
    """A bug planted in the processor of the attention module ``attention`` (with_processor): the first failing
    finding is that module, as inline code (a processor's own code is not a leaf the engine recomputes). When
    ``options`` switch the bug on in a rewritten processor, the same rewrite with none is the architecture's control."""
    if options:
        CONTROLS.setdefault(f"{architecture}-processor-rewrite", with_processor(build, attention, processor))
    return PlantedBug(architecture, modelled_on, with_processor(build, attention, processor, **options), attention,
                      "inline", explanation)


_SCALE_FIRST = ("scale_msa", "shift_msa", "gate_msa", "scale_mlp", "shift_mlp", "gate_mlp")

ZOO_BUGS: dict[str, PlantedBug] = {
    "wan-timestep-sin-cos-swapped": PlantedBug(
        "wan", "a Wan port with the sinusoid's halves swapped, 37% error (flashinfer#3819)", _wan_sin_cos_swapped,
        "condition_embedder.timesteps_proj", "mismatch", {"flip_sin_to_cos": False}),
    "cogvideox-frequency-shift-1": PlantedBug(
        "cogvideox", "downscale_freq_shift 1 where the model uses 0 (sd-scripts#1187)", _cogvideox_frequency_shift_1,
        "time_proj", "mismatch", {"downscale_freq_shift": 1.0}),
    "wan-block-scale-shift-swapped": PlantedBug(
        "wan", "an adaLN chunk order read the other way (AdaLayerNormContinuous is (scale, shift))",
        _wan_block_scale_shift_swapped, "blocks.0", "inline", {"order": _SCALE_FIRST}),
    "wan-rope-theta-256": PlantedBug(
        "wan", "RoPE theta of another model (HunyuanVideo's 256)", _wan_rope_theta_256, "rope", "mismatch",
        {"theta": 256.0}),
    "wan-qk-norm-per-head": processor_bug(
        "wan", "QK-norm per head where Wan normalises across heads", tiny_wan, "blocks.0.attn1", PlantedWanProcessor,
        {"qk_norm": "per-head"}, qk_per_head=True),
    "cogvideox-rope-half-split": processor_bug(
        "cogvideox", "RoPE applied with the other pairing (half-split, Allegro's, where interleaved is expected)",
        tiny_cogvideox, "transformer_blocks.0.attn1", PlantedCogVideoXProcessor, {"rope_pairing": "half"},
        rope_unbind_dim=-2),
    "cogvideox-qk-norm-across-heads": processor_bug(
        "cogvideox", "QK-norm across heads where the model normalises per head",
        tiny_cogvideox, "transformer_blocks.0.attn1", PlantedCogVideoXProcessor, {"qk_norm": "across-heads"},
        qk_across_heads=True),
    "cogvideox-feed-forward-image-first": PlantedBug(
        "cogvideox", "the joint token order crossed ([image, text] in, split as [text, image])",
        _cogvideox_feed_forward_image_first, "transformer_blocks.0", "inline", {"token_order": "image-first"}),
    "sana-cross-attention-mask-ignored": processor_bug(
        "sana", "an attention mask silently ignored (diffusers#8673)",
        tiny_sana, "transformer_blocks.0.attn2", MaskIgnoringSanaProcessor, {"mask": "ignored"}),
    "sana-glumbconv-gate-first": PlantedBug(
        "sana", "a GLU's gate and value halves crossed (AuraFlow gates with the first half)",
        _sana_glumbconv_gate_first, "transformer_blocks.0.ff", "inline", {"gate_first": True}),
    "sd35-adaln-x-second-group-swapped": PlantedBug(
        "sd35", "an adaLN chunk order read the other way, in SD3.5's nine chunks",
        _sd35_adaln_x_second_group_swapped, "transformer_blocks.0.norm1", "inline",
        {"order": ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp",
                   "scale_msa2", "shift_msa2", "gate_msa2")}),
    "sd35-second-gate-off-by-1e-3": PlantedBug(
        "sd35", "a 1e-3 relative error in inline block code (no convention explains it)",
        _sd35_second_gate_off_by_1e3, "transformer_blocks.0", "inline", None),
    "flux-guidance-unscaled": PlantedBug(
        "flux-guidance", "a guidance embedding on the wrong scale (Flux multiplies guidance by 1000 inside)",
        _flux_guidance_unscaled, "FluxTransformer2DModel", "inline", {"guidance_scale": 1.0}),
}



# ----------------------------------------------------------------------------------------
# Classes built by ditcheck.validate.zoo (its tiny configs and input builders)


def zoo_built(name: str) -> Callable[[int], Built]:
    """A zoo class's tiny model and inputs (ditcheck.validate.zoo), as (model, kwargs)."""
    def build(seed: int) -> Built:
        from ditcheck.validate import zoo

        model = zoo.build_model(name, torch.float32, seed)
        args, kwargs = zoo.build_inputs(model, seed, torch.float32)
        assert not args, f"{name}: positional inputs"
        return model, kwargs
    return build


ZOO_MODELS["hunyuan-video"] = zoo_built("HunyuanVideoTransformer3DModel")
ZOO_MODELS["ltx-video"] = zoo_built("LTXVideoTransformer3DModel")


class MaskIgnoringHunyuanVideoProcessor(HunyuanVideoAttnProcessor2_0):
    """HunyuanVideo's joint processor dropping the boolean text-padding mask (padded prompt tokens attended to)."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, image_rotary_emb: Any = None) -> Any:
        return super().__call__(attn, hidden_states, encoder_hidden_states, None, image_rotary_emb)


class PlantedLTXProcessor(LTXVideoAttnProcessor):
    """LTXVideoAttnProcessor rewritten; ``half_split`` rotates channel i with i + C/2 (rotate_half) instead of (2i, 2i+1)."""

    def __init__(self, half_split: bool = False):
        super().__init__()
        self.half_split = half_split

    def _rotate(self, x: torch.Tensor, freqs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cos, sin = freqs
        if self.half_split:
            first, second = x.chunk(2, dim=-1)
            rotated = torch.cat([-second, first], dim=-1)
        else:
            real, imag = x.unflatten(2, (-1, 2)).unbind(-1)
            rotated = torch.stack([-imag, real], dim=-1).flatten(2)
        return (x.float() * cos + rotated.float() * sin).to(x.dtype)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, image_rotary_emb: Any = None) -> torch.Tensor:
        batch, _, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            length = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key = attn.norm_q(attn.to_q(hidden_states)), attn.norm_k(attn.to_k(context))
        value = attn.to_v(context)
        if image_rotary_emb is not None:
            query, key = self._rotate(query, image_rotary_emb), self._rotate(key, image_rotary_emb)
        split = lambda x: x.unflatten(2, (attn.heads, -1)).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(query), split(key), split(value), attn_mask=attention_mask)
        return attn.to_out[0](out.transpose(1, 2).flatten(2, 3).to(query.dtype))


ZOO_BUGS["hunyuan-video-text-mask-ignored"] = processor_bug(
    "hunyuan-video", "a boolean text-padding mask silently ignored (diffusers#8673's kind)",
    ZOO_MODELS["hunyuan-video"], "transformer_blocks.0.attn", MaskIgnoringHunyuanVideoProcessor, {"mask": "ignored"})
ZOO_BUGS["ltx-rope-half-split"] = processor_bug(
    "ltx-video", "RoPE applied with the other pairing (rotate_half over the full width)",
    ZOO_MODELS["ltx-video"], "transformer_blocks.0.attn1", PlantedLTXProcessor, {"rope_pairing": "half"},
    half_split=True)
ZOO_MODELS["hunyuan-dit"] = zoo_built("HunyuanDiT2DModel")
ZOO_MODELS["aura-flow"] = zoo_built("AuraFlowTransformer2DModel")
ZOO_MODELS["lumina2"] = zoo_built("Lumina2Transformer2DModel")


class PlantedHunyuanDiTProcessor(HunyuanAttnProcessor2_0):
    """HunyuanAttnProcessor2_0 rewritten; ``qk_across_heads`` applies the per-head QK LayerNorm over all heads' channels."""

    def __init__(self, qk_across_heads: bool = False):
        super().__init__()
        self.qk_across_heads = qk_across_heads

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, temb: Any = None, image_rotary_emb: Any = None) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        split = lambda x: x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # noqa: E731

        def normed(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
            if not self.qk_across_heads:
                return norm(split(x))
            return split(F.layer_norm(x, (x.shape[-1],), norm.weight.repeat(attn.heads), norm.bias.repeat(attn.heads),
                                      norm.eps))
        query, key, value = normed(attn.norm_q, query), normed(attn.norm_k, key), split(value)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb)
            if not attn.is_cross_attention:
                key = apply_rotary_emb(key, image_rotary_emb)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        return attn.to_out[0](out.transpose(1, 2).flatten(2))


def _aura_flow_scale_one_over_head_dim(seed: int) -> Built:
    """AuraFlow passes scale=attn.scale to SDPA: a port storing 1/head_dim there (muP-style) instead of 1/sqrt(head_dim)."""
    model, kwargs = ZOO_MODELS["aura-flow"](seed)
    attn = model.joint_transformer_blocks[0].attn
    attn.scale = 1.0 / (attn.inner_dim // attn.heads)
    return model, kwargs


ZOO_BUGS["hunyuan-dit-qk-norm-across-heads"] = processor_bug(
    "hunyuan-dit", "QK-norm across heads where the model normalises per head",
    ZOO_MODELS["hunyuan-dit"], "blocks.0.attn1", PlantedHunyuanDiTProcessor, {"qk_norm": "across-heads"},
    qk_across_heads=True)
ZOO_BUGS["aura-flow-scale-one-over-head-dim"] = PlantedBug(
    "aura-flow", "an attention scale of 1/head_dim where 1/sqrt(head_dim) is meant", _aura_flow_scale_one_over_head_dim,
    "joint_transformer_blocks.0.attn", "inline", {"scale": "1/head_dim"})


class MaskIgnoringLumina2Processor(Lumina2AttnProcessor2_0):
    """Lumina2's processor dropping the boolean caption-padding mask."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: Any = None, image_rotary_emb: Any = None, base_sequence_length: Any = None) -> Any:
        return super().__call__(attn, hidden_states, encoder_hidden_states, None, image_rotary_emb,
                                base_sequence_length)


ZOO_BUGS["lumina2-caption-mask-ignored"] = processor_bug(
    "lumina2", "a boolean caption-padding mask silently ignored (diffusers#8673's kind)",
    ZOO_MODELS["lumina2"], "layers.0.attn", MaskIgnoringLumina2Processor, {"mask": "ignored"})
ZOO_MODELS["allegro"] = zoo_built("AllegroTransformer3DModel")


class PlantedAllegroProcessor(AllegroAttnProcessor2_0):
    """AllegroAttnProcessor2_0 rewritten; ``interleaved`` rotates pairs (2i, 2i+1), Flux's way, where Allegro uses
    rotate_half pairs (i, i + d/2) in each of its three axis chunks."""

    def __init__(self, interleaved: bool = False):
        super().__init__()
        self.interleaved = interleaved

    def _rope(self, x: torch.Tensor, tables: Any, positions: Any) -> torch.Tensor:
        out = []
        for chunk, (cos, sin), position in zip(x.chunk(3, dim=-1), tables, positions):
            cos, sin = F.embedding(position, cos)[:, None], F.embedding(position, sin)[:, None]
            if self.interleaved:
                real, imag = chunk.unflatten(-1, (-1, 2)).unbind(-1)
                rotated = torch.stack([-imag, real], dim=-1).flatten(-2)
            else:
                first, second = chunk.chunk(2, dim=-1)
                rotated = torch.cat([-second, first], dim=-1)
            out.append((chunk.float() * cos + rotated.float() * sin).to(chunk.dtype))
        return torch.cat(out, dim=-1)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, temb: Any = None, image_rotary_emb: Any = None) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        split = lambda x: x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # noqa: E731
        query, key, value = split(attn.to_q(hidden_states)), split(attn.to_k(context)), split(attn.to_v(context))
        if image_rotary_emb is not None and not attn.is_cross_attention:
            query, key = (self._rope(x, *image_rotary_emb) for x in (query, key))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        return attn.to_out[0](out.transpose(1, 2).flatten(2))


ZOO_BUGS["allegro-rope-interleaved"] = processor_bug(
    "allegro", "RoPE applied with the other pairing (interleaved where Allegro rotates halves)",
    ZOO_MODELS["allegro"], "transformer_blocks.0.attn1", PlantedAllegroProcessor, {"rope_pairing": "interleaved"},
    interleaved=True)
ZOO_MODELS["pixart"] = zoo_built("PixArtTransformer2DModel")


def _pixart_final_scale_shift_swapped(seed: int) -> Built:
    """PixArt's final layer reading its table as (scale, shift), AdaLayerNormContinuous's order, where PixArt (like
    DiT's final layer) uses (shift, scale): the text-to-image path of PixArtTransformer2DModel.forward, rewritten."""
    model, kwargs = ZOO_MODELS["pixart"](seed)
    assert model.caption_projection is not None and not model.config.use_additional_conditions

    def forward(hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: torch.Tensor,
                encoder_attention_mask: Any = None, **unused: Any) -> tuple[torch.Tensor]:
        if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
            encoder_attention_mask = ((1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)
        batch, patch = hidden_states.shape[0], model.config.patch_size
        height, width = hidden_states.shape[-2] // patch, hidden_states.shape[-1] // patch
        hidden_states = model.pos_embed(hidden_states)
        timestep, embedded = model.adaln_single(timestep, {"resolution": None, "aspect_ratio": None},
                                                batch_size=batch, hidden_dtype=hidden_states.dtype)
        encoder_hidden_states = model.caption_projection(encoder_hidden_states).view(batch, -1, hidden_states.shape[-1])
        for block in model.transformer_blocks:
            hidden_states = block(hidden_states, encoder_hidden_states=encoder_hidden_states,
                                  encoder_attention_mask=encoder_attention_mask, timestep=timestep)
        scale, shift = (model.scale_shift_table[None] + embedded[:, None]).chunk(2, dim=1)
        hidden_states = model.proj_out(model.norm_out(hidden_states) * (1 + scale) + shift)
        hidden_states = hidden_states.reshape(-1, height, width, patch, patch, model.out_channels)
        hidden_states = torch.einsum("nhwpqc->nchpwq", hidden_states)
        return (hidden_states.reshape(-1, model.out_channels, height * patch, width * patch),)
    model.forward = forward
    return model, kwargs


ZOO_BUGS["pixart-final-scale-shift-swapped"] = PlantedBug(
    "pixart", "an adaLN chunk order read the other way in the final layer ((scale, shift) where PixArt uses (shift, "
    "scale))", _pixart_final_scale_shift_swapped, "PixArtTransformer2DModel", "inline", {"order": ("scale", "shift")})
ZOO_MODELS["mochi"] = zoo_built("MochiTransformer3DModel")


class MaskIgnoringMochiProcessor(MochiAttnProcessor2_0):
    """Mochi's processor treating every prompt token as valid (the padding attended to and attending)."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor, image_rotary_emb: Any = None) -> Any:
        return super().__call__(attn, hidden_states, encoder_hidden_states, torch.ones_like(attention_mask),
                                image_rotary_emb)


def _mochi_prompt_mask_ignored(seed: int) -> Built:
    model, kwargs = ZOO_MODELS["mochi"](seed)
    model.transformer_blocks[0].attn1.processor = MaskIgnoringMochiProcessor()
    return model, kwargs


ZOO_BUGS["mochi-prompt-mask-ignored"] = PlantedBug(
    "mochi", "a prompt-padding mask silently ignored (diffusers#8673's kind)", _mochi_prompt_mask_ignored,
    "transformer_blocks.0.attn1", "inline", {"mask": "ignored"})


def _aura_flow_feed_forward_gate_swapped(seed: int) -> Built:
    """AuraFlowFeedForward gating with the second projection (silu(linear_2 x) * linear_1 x): the FeedForward form."""
    model, kwargs = ZOO_MODELS["aura-flow"](seed)
    patch(model.joint_transformer_blocks[0].ff,
          lambda self, x: self.out_projection(F.silu(self.linear_2(x)) * self.linear_1(x)))
    return model, kwargs


def _aura_flow_sd3_style_mlp_residual(seed: int) -> Built:
    """An AuraFlow port adding the MLP branch to x + gate_msa attn (SD3's block) where AuraFlow adds it to x."""
    model, kwargs = ZOO_MODELS["aura-flow"](seed)

    def forward(self: Any, hidden_states: torch.Tensor, temb: torch.Tensor, attention_kwargs: Any = None) -> Any:
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=temb)
        hidden_states = hidden_states + gate_msa.unsqueeze(1) * self.attn(hidden_states=norm)
        norm = self.norm2(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return hidden_states + gate_mlp.unsqueeze(1) * self.ff(norm)
    patch(model.single_transformer_blocks[0], forward)
    return model, kwargs


ZOO_BUGS["aura-flow-feed-forward-gate-swapped"] = PlantedBug(
    "aura-flow", "a gated feed-forward's gate and value crossed (the FeedForward form)",
    _aura_flow_feed_forward_gate_swapped, "joint_transformer_blocks.0.ff", "inline", {"gate": "linear_2"})
ZOO_BUGS["aura-flow-sd3-style-mlp-residual"] = PlantedBug(
    "aura-flow", "a block's residual wiring taken from another architecture (SD3's, in an AuraFlow port)",
    _aura_flow_sd3_style_mlp_residual, "single_transformer_blocks.0", "inline", {"mlp_residual": "after-attention"})


def _lumina2_gates_without_tanh(seed: int) -> Built:
    """A Lumina2 port gating with the raw chunks where Lumina2 squashes them with tanh (DiT-style gates)."""
    model, kwargs = ZOO_MODELS["lumina2"](seed)

    def forward(self: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor, image_rotary_emb: Any,
                temb: Any = None) -> torch.Tensor:
        norm, gate_msa, scale_mlp, gate_mlp = self.norm1(hidden_states, temb)
        attn = self.attn(hidden_states=norm, encoder_hidden_states=norm, attention_mask=attention_mask,
                         image_rotary_emb=image_rotary_emb)
        hidden_states = hidden_states + gate_msa.unsqueeze(1) * self.norm2(attn)
        mlp = self.feed_forward(self.ffn_norm1(hidden_states) * (1 + scale_mlp.unsqueeze(1)))
        return hidden_states + gate_mlp.unsqueeze(1) * self.ffn_norm2(mlp)
    assert model.layers[0].modulation
    patch(model.layers[0], forward)
    return model, kwargs


ZOO_BUGS["lumina2-gates-without-tanh"] = PlantedBug(
    "lumina2", "a gate convention taken from another architecture (raw DiT gates where Lumina2 applies tanh)",
    _lumina2_gates_without_tanh, "layers.0", "inline", {"gate_activation": "identity"})


def _hunyuan_dit_long_skip_reversed(seed: int) -> Built:
    """A HunyuanDiT port joining a long skip as [skip, x] where the checkpoint's skip_linear expects [x, skip]."""
    model, kwargs = ZOO_MODELS["hunyuan-dit"](seed)
    block = next(b for b in model.blocks if b.skip_linear is not None)

    def forward(hidden_states: torch.Tensor, encoder_hidden_states: Any = None, temb: Any = None,
                image_rotary_emb: Any = None, skip: Any = None) -> torch.Tensor:
        hidden = block.skip_linear(block.skip_norm(torch.cat([skip, hidden_states], dim=-1)))
        norm = block.norm1(hidden, temb)
        hidden = hidden + block.attn1(norm, image_rotary_emb=image_rotary_emb)
        hidden = hidden + block.attn2(block.norm2(hidden), encoder_hidden_states=encoder_hidden_states,
                                      image_rotary_emb=image_rotary_emb)
        return hidden + block.ff(block.norm3(hidden))
    block.forward = forward
    return model, kwargs


def _first_skip_block() -> str:
    """HunyuanDiT2DModel gives block i a long skip when i > num_layers // 2 (read from the zoo's tiny config)."""
    from ditcheck.validate import zoo

    return f"blocks.{zoo.TINY_CONFIGS['HunyuanDiT2DModel']['num_layers'] // 2 + 1}"


ZOO_BUGS["hunyuan-dit-long-skip-reversed"] = PlantedBug(
    "hunyuan-dit", "a long skip joined in the other order ([skip, x] for [x, skip])", _hunyuan_dit_long_skip_reversed,
    _first_skip_block(), "inline", {"skip_order": "skip-first"})


def _ltx_rope_tables_half_split(seed: int) -> Built:
    """LTX-Video's RoPE tables laid out for half-split pairs (c0 c1 ... c0 c1 ...) where LTX repeats each angle
    in place (c0 c0 c1 c1 ...): a table builder ported from a rotate_half model."""
    model, kwargs = ZOO_MODELS["ltx-video"](seed)
    rope = model.rope
    original = type(rope).forward.__get__(rope)

    def forward(hidden_states: torch.Tensor, num_frames: Any = None, height: Any = None, width: Any = None,
                rope_interpolation_scale: Any = None, video_coords: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        pad = rope.dim % 6

        def half(table: torch.Tensor) -> torch.Tensor:
            angles = table[..., pad:][..., 0::2]
            return torch.cat([table[..., :pad], angles, angles], dim=-1)
        cos, sin = original(hidden_states, num_frames, height, width, rope_interpolation_scale, video_coords)
        return half(cos), half(sin)
    rope.forward = forward
    return model, kwargs


ZOO_BUGS["ltx-rope-tables-half-split"] = PlantedBug(
    "ltx-video", "RoPE tables built for the other pairing (half-split layout)", _ltx_rope_tables_half_split, "rope",
    "mismatch", {"pairing": "half"})


def _mochi_gates_without_tanh(seed: int) -> Built:
    """A Mochi port scaling both branches by the raw gates (DiT-style) where Mochi feeds tanh(gate) to its modulated
    norms (the tiny model's block is the last one: text pre-only)."""
    model, kwargs = ZOO_MODELS["mochi"](seed)
    block = model.transformer_blocks[0]
    assert block.context_pre_only

    def forward(self: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                encoder_attention_mask: torch.Tensor, image_rotary_emb: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        norm, gate_msa, scale_mlp, gate_mlp = self.norm1(hidden_states, temb)
        attn, _ = self.attn1(hidden_states=norm, encoder_hidden_states=self.norm1_context(encoder_hidden_states, temb),
                             image_rotary_emb=image_rotary_emb, attention_mask=encoder_attention_mask)
        hidden_states = hidden_states + self.norm2(attn, gate_msa.unsqueeze(1))
        ff = self.ff(self.norm3(hidden_states, (1 + scale_mlp.unsqueeze(1).to(torch.float32))))
        return hidden_states + self.norm4(ff, gate_mlp.unsqueeze(1)), encoder_hidden_states
    patch(block, forward)
    return model, kwargs


ZOO_BUGS["mochi-gates-without-tanh"] = PlantedBug(
    "mochi", "a gate convention taken from another architecture (a raw gate where Mochi applies tanh)",
    _mochi_gates_without_tanh, "transformer_blocks.0", "inline", {"gate_activation": "identity"})
