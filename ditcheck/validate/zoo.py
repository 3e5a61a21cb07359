"""``ditcheck validate dit`` for the transformer classes diffusers ships: tiny builds, inputs, component checks.

Every transformer model class diffusers 0.42.1 exports is listed here (``diffusers_transformer_classes()``
enumerates them from ``diffusers.models.transformers``): the 2-D/3-D DiT-like denoisers are in scope and have a
documented tiny configuration in :data:`TINY_CONFIGS` (``build_model(name)`` builds it with random weights),
except those in :data:`PENDING` (in scope, inputs not built yet, with what is missing); the others are in
:data:`OUT_OF_SCOPE` with the reason. ``DiTTransformer2DModel`` keeps its own path (``ditcheck.validate.models``:
a whole-model reference in the ``dit`` / ``diffusers`` conventions; ``diffusers:DiTTransformer2DModel`` is built
with :data:`DIT_TINY_CONFIG`). :data:`FLOAT64_RAISES`: classes whose diffusers code cannot run in float64.

:func:`build_inputs` makes every input of one forward call from the model's config and
``inspect.signature(model.forward)``: latents of the class's rank and layout, text states and their masks
(the second sample's last text tokens masked out), pooled projections, per-sample timesteps on the model's
scale, guidance, image/text position ids and the RoPE tables a caller must pass; the user supplies nothing.

:func:`validate` runs the component engine (:func:`ditcheck.validate.components.check_components`) over several
examples (fresh random weights and inputs per example, batch 2, a different t per sample, masks where the
model takes one) and turns its findings into the standard :class:`~ditcheck.validate.report.Report`: one check
per component class (worst error/tolerance over its calls) and one per localised fault, the first divergence
(the first failing call in execution order), the convention knobs that explain it as the diagnosis, and the
output checked for shape and finiteness. The convention is ``diffusers``: each component is recomputed with
the conventions its module states (the engine reads them off the module). A target that raises is a failed
check; float32 islands of a float64 run are reported in ``report.precision`` (failures under
``strict_precision``).

  python -m ditcheck.validate._zoo_coverage [--names A,B] [--dtypes float32,float64]   # the README coverage table
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ditcheck.reference.errors import InvalidArgumentError

from ditcheck.loader import build, load

from ._attention import require_run_settings, resolve_device, resolve_dtype
from ._target import DEFAULT_TIMEOUT, Heartbeat, TargetError, TargetTimeoutError, call_isolated
from .call_inputs import draw_inputs, inputs_function, inputs_label
from .components import _float_tensors, _size_conditioned, check_components, unjudged_float32_note
from .dit_precision import PromoteMixedFloats
from .dit_reproducer import rerun_reproducer
from .report import Check, Report
from .zoo_reference import CHECK_PREFIX, WHOLE_MODEL_REFERENCES, add_whole_model_example, model_output

__all__ = ["TINY_CONFIGS", "FLOAT64_RAISES", "DIT_TINY_CONFIG", "PENDING", "OUT_OF_SCOPE", "ZOO_CONVENTIONS",
           "DEFAULT_ZOO_EXAMPLES", "ZooEntry", "ENTRIES", "diffusers_transformer_classes", "diffusers_class_name",
           "resolve_target", "dispatches_here", "build_model", "build_inputs", "to_device", "randomise_weights",
           "validate", "CoverageRow", "coverage_row", "coverage_table"]

#: conventions the zoo path accepts: each component is checked against diffusers' own conventions
ZOO_CONVENTIONS = ("diffusers",)
DEFAULT_ZOO_EXAMPLES = 3
#: batch size of every example (> 1: per-sample timesteps and masks must not leak across the batch)
BATCH = 2
#: text tokens per sample; the second sample's last MASKED_TOKENS are padding where the model takes a mask
TEXT_TOKENS = 5
MASKED_TOKENS = 2
#: audio tokens of the joint audio-video classes
AUDIO_TOKENS = 4
#: random weights are N(0, WEIGHT_SCALE^2): adaLN-Zero and gate weights are zero at a real init, which would make
#: every modulation check vacuous; 0.3 keeps the tiny models' activations O(1) (measured: no overflow, no NaN)
WEIGHT_SCALE = 0.3


#: the values of ZooEntry.time_layout, text_layout and packing (each documented on its field)
TIME_LAYOUTS = ("per-sample", "per-frame", "per-token", "per-frame-anchored", "per-modality")
TEXT_LAYOUTS = ("tokens", "one-frame", "packed")
PACKINGS = ("image", "video", "text-then-image")


@dataclass(frozen=True)
class ZooEntry:
    """A class in scope: its tiny configuration and how its inputs are laid out.

    latent: "image" [B, C, H, W], "video" [B, C, F, H, W], "video-frames-first" [B, F, C, H, W] (CogVideoX's
    layout), "video-last" [B, F, H, W, C], "tokens" [B, L, C]
    (packed patches, Flux / LTX: L as ``packing`` says), "patches" [B, N, C, pt, ph, pw] or "list" (one [C, 1, H, W]
    per sample).
    time_scale: timesteps are drawn in [0, time_scale), as the class's pipeline passes t (1000: DDPM indices or
    FlowMatch timesteps sigma x 1000; 1: where the pipeline divides by 1000 and the model scales t itself, as Flux
    multiplies t and guidance by 1000; read off the diffusers 0.42.1 pipelines). mask: the dtype of the text mask the
    model takes
    ("float": 1 keep / 0 pad, "bool": True keeps), None when the forward has none. note: why the config is so.
    time_layout (:data:`TIME_LAYOUTS`), text_layout (:data:`TEXT_LAYOUTS`) and packing (:data:`PACKINGS`): the
    layouts of the timestep, the text states and "tokens" latents where the class departs from the usual ones (one t
    per sample [B], text [B, L, D], one frame's patches); documented on each field below. A subclass of a diffusers
    class (a fork) is laid out by its base class's entry, these fields included.
    """

    config: Mapping[str, Any]
    latent: str
    time_scale: float = 1000.0
    #: latent channels when the config does not state them as in_channels, as a rule of the config (None: in_channels)
    channels: Callable[[Mapping[str, Any]], int] | None = None
    #: how the forward takes the timestep (T: latent frames, frames / pt): "per-sample" [B], one t per sample;
    #: "per-frame" [B, T], the sample's t repeated per latent frame (r_timestep too); "per-token" [B, L], the sample's t
    #: repeated per latent token; "per-frame-anchored" [B, 1, T], per latent frame with the anchor (encoded
    #: conditioning) frame 0 pinned to t = 0, as SanaWMPipeline passes it; "per-modality" [2], not per sample: the
    #: packed sequence's two distinct times (video and text, audio) that its rows index (MiniMax-H3's timestep_indices)
    time_layout: str = "per-sample"
    #: how encoder_hidden_states is laid out: "tokens" [B, L, D] (with a text-encoder layer axis where the config names
    #: layers, [B, L, layers, D]); "one-frame" [B, 1, L, D], one text "frame" (SANA-WM's pipeline); "packed" [B, N, D],
    #: text features at every position of the packed latent sequence, N its tokens, masked inside (Ideogram 4)
    text_layout: str = "tokens"
    #: the tokens L of "tokens" latents: "image", one frame's patch grid (H / ph) (W / pw); "video", every latent
    #: frame's grid, F (H / ph) (W / pw) / pt (the LTX layouts); "text-then-image", TEXT_TOKENS text positions, then
    #: the grid (Ideogram 4's packed sequence)
    packing: str = "image"
    #: the RoPE tables image_rotary_emb takes, built as the class's pipeline builds them: "cogvideox", the 3-D table
    #: of the CogVideoX pipelines (get_3d_rotary_pos_embed over the sample grid); None: by class (Lumina, HunyuanDiT,
    #: Allegro) or none
    rope: str | None = None
    #: the output holds the text tokens too: the prediction is its last L tokens (as the pipeline slices it)
    output_suffix: bool = False
    mask: str | None = None
    note: str = ""
    frames: int = 2
    size: int = 8

    def __post_init__(self) -> None:
        for field_name, allowed in (("time_layout", TIME_LAYOUTS), ("text_layout", TEXT_LAYOUTS),
                                    ("packing", PACKINGS)):
            if getattr(self, field_name) not in allowed:
                raise InvalidArgumentError(field_name, f"one of {allowed}", repr(getattr(self, field_name)))


ENTRIES: dict[str, ZooEntry] = {
    "PixArtTransformer2DModel": ZooEntry(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=8,
             patch_size=2, cross_attention_dim=16, caption_channels=12, use_additional_conditions=False),
        "image", mask="float", note="adaLN-single + cross-attention; learned sigma (out 2C)"),
    "SD3Transformer2DModel": ZooEntry(
        dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
             joint_attention_dim=12, caption_projection_dim=16, pooled_projection_dim=10, out_channels=4,
             pos_embed_max_size=8, qk_norm="rms_norm", dual_attention_layers=(0,)),
        "image", note="SD3.5 layout: RMSNorm QK-norm, block 0 with dual attention; caption_projection_dim = heads x "
                      "head_dim"),
    "FluxTransformer2DModel": ZooEntry(
        dict(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, pooled_projection_dim=10, guidance_embeds=True,
             axes_dims_rope=(4, 6, 6)),
        "tokens", time_scale=1.0, note="Flux-dev layout (guidance embedder); t and guidance x1000 inside; "
                                       "sum(axes_dims_rope) = head_dim"),
    "SanaTransformer2DModel": ZooEntry(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
             num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=12,
             sample_size=8, patch_size=2),
        "image", mask="float", note="linear self-attention, SDPA cross-attention, GLUMBConv"),
    "HunyuanDiT2DModel": ZooEntry(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, sample_size=8, hidden_size=16,
             num_layers=4, cross_attention_dim=12, cross_attention_dim_t5=16, pooled_projection_dim=10, text_len=5,
             text_len_t5=6),
        "image", mask="float", note="long skips need an even depth >= 4 (pushes = pops); AttentionPooling has 8 "
                                    "heads; 2-D RoPE built as the pipeline does"),
    "CogVideoXTransformer3DModel": ZooEntry(
        dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
             text_embed_dim=12, num_layers=1, sample_width=8, sample_height=8, sample_frames=5, patch_size=2,
             temporal_compression_ratio=4, max_text_seq_length=5, use_rotary_positional_embeddings=True),
        "video-frames-first", rope="cogvideox",
        note="CogVideoX 1.0 with 3-D RoPE (built as the pipeline does); latents [B, F, C, H, W]; head_dim 16 for the "
             "3-D RoPE split (4, 6, 6)"),
    "HunyuanVideoTransformer3DModel": ZooEntry(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
             num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=12,
             pooled_projection_dim=10, rope_axes_dim=(2, 2, 4)),
        "video", mask="bool", note="token refiner, dual- and single-stream blocks; guidance embedder"),
    "WanTransformer3DModel": ZooEntry(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
             text_dim=12, freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=32),
        "video", note="Wan 2.1 text-to-video; RoPE split d - 4[d/6], 2[d/6], 2[d/6]"),
    "LTXVideoTransformer3DModel": ZooEntry(
        dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
             cross_attention_dim=16, num_layers=1, caption_channels=12),
        "tokens", mask="float", packing="video", note="packed tokens with num_frames/height/width given"),
    "LatteTransformer3DModel": ZooEntry(
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
             cross_attention_dim=16, sample_size=8, patch_size=2, norm_type="ada_norm_single", caption_channels=12,
             video_length=2, activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_elementwise_affine=False,
             norm_eps=1e-6),
        "video", note="the released Latte config (adaLN-single, caption projection), spatial + temporal; no text "
                      "mask: the pipeline passes none, and a [B, L] mask raises (not repeated over frames)"),
    "MochiTransformer3DModel": ZooEntry(
        dict(patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=1, pooled_projection_dim=10,
             in_channels=4, text_embed_dim=16, time_embed_dim=16, max_sequence_length=5),
        "video", mask="bool", note="asymmetric joint attention, SwiGLU, learned RoPE mixing; the text pool has 8 "
                                   "heads"),
    "AllegroTransformer3DModel": ZooEntry(
        dict(patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
             num_layers=1, cross_attention_dim=24, sample_height=8, sample_width=8, sample_frames=2,
             caption_channels=12),
        "video", mask="float", note="3-D half-split RoPE built as the pipeline does; head_dim divisible by 3 x 2"),
    "AuraFlowTransformer2DModel": ZooEntry(
        dict(sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
             attention_head_dim=8, num_attention_heads=2, joint_attention_dim=12, caption_projection_dim=16,
             out_channels=4, pos_embed_max_size=16),
        "image", note="register tokens, SwiGLU with the gate first; caption_projection_dim = heads x head_dim"),
    "Lumina2Transformer2DModel": ZooEntry(
        dict(sample_size=8, patch_size=2, in_channels=4, hidden_size=16, num_layers=1, num_refiner_layers=1,
             num_attention_heads=2, num_kv_heads=1, multiple_of=16, axes_dim_rope=(2, 2, 4), axes_lens=(32, 16, 16),
             cap_feat_dim=12),
        "image", mask="bool", note="GQA (2 query heads, 1 key/value head), complex RoPE, RMSNorm-zero"),
    # Flux-like (double- and single-stream, [txt, img] joint attention, position ids)
    "BriaTransformer2DModel": ZooEntry(
        dict(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=[4, 6, 6]),
        "tokens", size=4, note="Flux-like with its own RoPE / time theta; no pooled projection"),
    "ChromaTransformer2DModel": ZooEntry(
        dict(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=(4, 6, 6), approximator_num_channels=8,
             approximator_hidden_dim=16, approximator_layers=1),
        "tokens", time_scale=1.0, size=4, note="Flux-like; modulation from a distilled approximator network"),
    "OvisImageTransformer2DModel": ZooEntry(
        dict(patch_size=1, in_channels=8, out_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=(4, 6, 6)),
        "tokens", time_scale=1.0, size=4, note="Flux-like, no pooled projection"),
    "LongCatImageTransformer2DModel": ZooEntry(
        dict(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, pooled_projection_dim=12, axes_dims_rope=[4, 6, 6]),
        "tokens", time_scale=1.0, size=4, note="Flux-like"),
    "Flux2Transformer2DModel": ZooEntry(
        dict(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, timestep_guidance_channels=16,
             axes_dims_rope=(4, 4, 4, 4)),
        "tokens", time_scale=1.0, size=4, note="FLUX.2: 4-axis position ids, shared modulation, SwiGLU"),
    # Wan-like
    "ChronoEditTransformer3DModel": ZooEntry(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
             text_dim=12, freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=32),
        "video", note="Wan block with a temporal RoPE skip"),
    "SkyReelsV2Transformer3DModel": ZooEntry(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
             text_dim=12, freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=32),
        "video", note="Wan block (diffusion forcing off: one timestep per sample)"),
    "WanVACETransformer3DModel": ZooEntry(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
             text_dim=12, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32, vace_layers=[0],
             vace_in_channels=8),
        "video", note="Wan with a VACE control branch on block 0 (control latents given, scale 1)"),
    # CogView / CogVideoX-like
    "CogView3PlusTransformer2DModel": ZooEntry(
        dict(patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2, out_channels=4,
             text_embed_dim=12, time_embed_dim=16, condition_dim=4, pos_embed_max_size=8, sample_size=8),
        "image", note="size / crop conditions given as [B, 2] pixel values"),
    "CogView4Transformer2DModel": ZooEntry(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
             text_embed_dim=12, time_embed_dim=16, condition_dim=4, pos_embed_max_size=8, sample_size=8,
             rope_axes_dim=(8, 8)),
        "image", note="2-D RoPE inside; size / crop conditions given"),
    "ConsisIDTransformer3DModel": ZooEntry(
        dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
             text_embed_dim=12, num_layers=1, sample_width=8, sample_height=8, sample_frames=5, patch_size=2,
             max_text_seq_length=5, use_rotary_positional_embeddings=True),
        "video-frames-first", rope="cogvideox", note="CogVideoX block without the face branch (is_train_face=False)"),
    # Sana / Hunyuan-like
    "SanaVideoTransformer3DModel": ZooEntry(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=1,
             num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=12,
             sample_size=8, patch_size=(1, 2, 2), rope_max_seq_len=32),
        "video", mask="float", note="linear attention with Wan RoPE, GLUMBConv"),
    "HunyuanImageTransformer2DModel": ZooEntry(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
             num_single_layers=1, num_refiner_layers=1, patch_size=(2, 2), text_embed_dim=12, rope_axes_dim=(4, 4)),
        "image", mask="bool", note="HunyuanVideo-style token refiner, dual and single blocks, 2-D RoPE"),
    "HunyuanVideo15Transformer3DModel": ZooEntry(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
             num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=12, text_embed_2_dim=10,
             image_embed_dim=12, rope_axes_dim=(2, 2, 4), task_type="t2v"),
        "video", mask="bool", note="text-to-video task; second text encoder and image embeddings given; the glyph "
                                   "text projection has a fixed 2048-wide hidden layer (4.2M of the 4.3M parameters)"),
    "MotifVideoTransformer3DModel": ZooEntry(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
             num_single_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=12, rope_axes_dim=(2, 2, 4)),
        "video", mask="bool", note="HunyuanVideo-style dual / single blocks; raises in float64 (FLOAT64_RAISES)"),
    "QwenImageTransformer2DModel": ZooEntry(
        dict(patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=(4, 6, 6)),
        "tokens", time_scale=1.0, mask="float", size=8,
        note="packed 2x2 patches (in_channels = 4 C); img_shapes given per sample"),
    "Kandinsky6SRTransformer3DModel": ZooEntry(
        dict(in_visual_dim=4, out_visual_dim=4, time_dim=16, patch_size=(1, 1, 1), model_dim=16, ff_dim=32,
             num_visual_blocks=1, axes_dims=(4, 6, 6)),
        "video-last", channels=lambda config: 2 * int(config["in_visual_dim"]) + 1,
        note="super-resolution denoiser: [B, F, H, W, 2C + 1] (noisy latents, the "
                                       "low-resolution condition and the anchor mask), timestep only"),
    "ErnieImageTransformer2DModel": ZooEntry(
        dict(hidden_size=16, num_attention_heads=2, num_layers=1, ffn_hidden_size=32, in_channels=4, out_channels=4,
             patch_size=2, text_in_dim=12, rope_axes_dim=(2, 2, 4)),
        "image", note="text given as [B, L, D] with per-sample lengths"),
    "PRXTransformer2DModel": ZooEntry(
        dict(in_channels=4, patch_size=2, context_in_dim=12, hidden_size=16, num_heads=2, depth=1, axes_dim=[4, 4]),
        "image", time_scale=1.0, mask="bool",
        note="text as context tokens with an attention mask; t in [0, 1] (its pipeline divides by 1000)"),
    "Flux3Transformer2DModel": ZooEntry(
        dict(in_channels=8, cond_in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, timestep_channels=16, axes_dims_rope=(4, 4, 4, 4)),
        "tokens", time_scale=1.0, size=4, note="FLUX.3 text-to-image (no image condition): 4-axis position ids"),
    "HeliosTransformer3DModel": ZooEntry(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
             text_dim=12, freq_dim=16, ffn_dim=32, num_layers=1, rope_dim=(4, 4, 4)),
        "video", note="Wan-like, no history latents (the first chunk)"),
    "AnyFlowTransformer3DModel": ZooEntry(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
             text_dim=12, freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=32),
        "video-frames-first", time_layout="per-frame",
        note="Wan-like flow map: per-frame times t and r <= t given; latents [B, F, C, H, W]"),
    "NucleusMoEImageTransformer2DModel": ZooEntry(
        dict(patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16, num_attention_heads=2,
             joint_attention_dim=12, axes_dims_rope=(4, 6, 6), moe_enabled=False),
        "tokens", time_scale=1.0, mask="float", size=8, note="QwenImage-like; dense feed-forward (moe_enabled=False)"),
    "QwenImage21Transformer2DModel": ZooEntry(
        dict(patch_size=1, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=16, num_attention_heads=2,
             context_in_dim=12, axes_dims_rope=(4, 6, 6)),
        "tokens", time_scale=1.0, mask="float", size=4, output_suffix=True,
        note="packed tokens, img_shapes and the image-slot mask given; returns [text, image]: the image tokens are "
             "the prediction (as the pipeline slices them)"),
    "Krea2Transformer2DModel": ZooEntry(
        dict(in_channels=8, num_layers=1, attention_head_dim=16, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=32, timestep_embed_dim=16, text_hidden_dim=12, num_text_layers=1,
             text_num_attention_heads=2, text_num_key_value_heads=2, text_intermediate_size=24,
             num_layerwise_text_blocks=1, num_refiner_text_blocks=1, axes_dims_rope=(4, 6, 6)),
        "tokens", time_scale=1.0, mask="bool", size=4, note="GQA; position ids built as the pipeline does"),
    "LuminaNextDiT2DModel": ZooEntry(
        dict(sample_size=8, patch_size=2, in_channels=4, hidden_size=16, num_layers=1, num_attention_heads=2,
             num_kv_heads=1, multiple_of=16, cross_attention_dim=12),
        "image", mask="bool", note="2-D RoPE table built as the pipeline does (384 x 384, no NTK scaling)"),
    "EasyAnimateTransformer3DModel": ZooEntry(
        dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, patch_size=2,
             sample_width=8, sample_height=8, num_layers=1, mmdit_layers=1, time_embed_dim=16, text_embed_dim=12),
        "video", note="MMDiT video blocks, 3-D RoPE inside"),
    "Kandinsky5Transformer3DModel": ZooEntry(
        dict(in_visual_dim=4, in_text_dim=12, in_text_dim2=10, time_dim=16, out_visual_dim=4, patch_size=(1, 2, 2),
             model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=1, axes_dims=(2, 2, 4)),
        "video-last", note="[B, F, H, W, C] latents; RoPE positions given as the pipeline makes them; raises in "
                           "float64 (FLOAT64_RAISES)"),
    "Kandinsky6Transformer3DModel": ZooEntry(
        dict(in_visual_dim=4, out_visual_dim=4, in_text_dim=12, in_text_dim2=10, time_dim=16, patch_size=(1, 2, 2),
             model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=1, axes_dims=(2, 2, 4), visual_cond=False),
        "video-last", mask="bool", note="video only (no audio stream), no visual condition"),
    "JoyImageEditTransformer3DModel": ZooEntry(
        dict(patch_size=[1, 2, 2], in_channels=4, hidden_size=16, num_attention_heads=2, text_dim=12, num_layers=1,
             rope_dim_list=[2, 2, 4]),
        "video", note="text-to-image/video path (no edit image)"),
    "BriaFiboTransformer2DModel": ZooEntry(
        dict(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
             num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=[4, 6, 6], text_encoder_dim=10),
        "tokens", size=4, note="Flux-like; one text-encoder layer's states per block (text_encoder_layers) given"),
    "ZImageTransformer2DModel": ZooEntry(
        dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=16, n_layers=1, n_refiner_layers=1,
             n_heads=2, n_kv_heads=2, cap_feat_dim=12, axes_dims=[2, 2, 4], axes_lens=[64, 16, 16]),
        "list", time_scale=1.0, note="lists of per-sample [C, 1, H, W] latents and caption features of different "
                                     "lengths (the second caption 2 tokens shorter), as the pipeline passes them"),
    "LTX2VideoTransformer3DModel": ZooEntry(
        dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
             cross_attention_dim=16, audio_in_channels=6, audio_out_channels=6, audio_num_attention_heads=2,
             audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=1, caption_channels=12),
        "tokens", mask="float", size=4, packing="video",
        note="joint audio-video: 4 audio tokens and the same text for both streams (as the pipeline passes them)"),
    "HiDreamImageTransformer2DModel": ZooEntry(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
             num_attention_heads=2, caption_channels=[12, 10], text_emb_dim=10, num_routed_experts=2,
             num_activated_experts=1, axes_dims_rope=(2, 2, 4), max_resolution=(16, 16), llama_layers=[0, 1]),
        "image", note="T5 states and two Llama-3 layers' states given; a 2-expert MoE routing top-1"),
    "GlmImageTransformer2DModel": ZooEntry(
        dict(patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
             text_embed_dim=12, time_embed_dim=16, condition_dim=4, prior_vq_quantizer_codebook_size=16),
        "image", note="prior VQ token ids (one per latent patch, drawn uniformly) given as its autoregressive stage "
                      "would; none dropped"),
    "Ideogram4Transformer2DModel": ZooEntry(
        dict(in_channels=8, num_layers=1, attention_head_dim=16, num_attention_heads=2, intermediate_size=32,
             adaln_dim=16, llm_features_dim=12, mrope_section=(4, 2, 2)),
        "tokens", time_scale=1.0, size=4, text_layout="packed", packing="text-then-image",
        note="one packed sequence per sample: text tokens (indicator 3, origin positions) then image tokens "
             "(indicator 2, positions from the model's IMAGE_POSITION_OFFSET), one segment; output over the whole "
             "sequence"),
    "CosmosTransformer3DModel": ZooEntry(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=1,
             text_embed_dim=12, adaln_lora_dim=8, max_size=(4, 16, 16), patch_size=(1, 2, 2),
             encoder_hidden_states_channels=12, crossattn_proj_in_channels=12, concat_padding_mask=False),
        "video", time_scale=1.0, note="adaLN-LoRA modulation, learnable extra position embedding; no padding mask "
                                      "channel; raises in float64 (FLOAT64_RAISES)"),
    "JoyImageEditPlusTransformer3DModel": ZooEntry(
        dict(patch_size=[1, 2, 2], in_channels=4, hidden_size=16, num_attention_heads=2, text_dim=12, num_layers=1,
             rope_dim_list=[2, 2, 4]),
        "patches", mask="float", frames=1,
        note="pre-patchified [B, N, C, pt, ph, pw] target latents alone (no reference images), shape_list given"),
    "HunyuanVideoFramepackTransformer3DModel": ZooEntry(
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
             num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=12,
             pooled_projection_dim=10, rope_axes_dim=(2, 2, 4), has_image_proj=True, image_proj_dim=12,
             has_clean_x_embedder=True),
        "video", mask="bool", note="one section of vanilla sampling as the pipeline lays it out: history sizes "
                                   "(16, 2, 1) frames at 4x, 2x, 1x, a prefix frame, then the 2-frame window; image "
                                   "embeddings given"),
    "BriaFibo2Transformer2DModel": ZooEntry(
        dict(in_channels=4, patch_size=2, dim=16, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=12,
             injection_layer_ids=(1,), perceiver_num_layers=1, min_num_gist_tokens=2, max_num_gist_tokens=4,
             gist_step=2, gist_min_text_len=2, gist_max_text_len=8, axes_dims=(2, 2, 4), axes_lens=(64, 16, 16)),
        "image", time_scale=1.0,
        note="text bundles [B, 1 + injections, L, D] (the perceiver's, then block 1's); no context images; no text "
             "mask: a [B, L] one raises at this size (its length meets the 2 gist tokens' in SDPA; not investigated)"),
    "SanaWMLTX2RefinerTransformer3DModel": ZooEntry(
        dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
             cross_attention_dim=16, audio_in_channels=6, audio_out_channels=6, audio_num_attention_heads=2,
             audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=1, caption_channels=12),
        "tokens", mask="float", size=4, time_layout="per-token", packing="video",
        note="one bidirectional window without KV cache: sigma x 1000 per token as the refiner pipeline passes it; "
             "video RoPE from the model's build_rotary_emb_for_absolute_positions (frames 0..F-1, 24 fps)"),
    "WanAnimateTransformer3DModel": ZooEntry(
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=12, latent_channels=4,
             out_channels=4, text_dim=12, freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=32, image_dim=12,
             motion_encoder_channel_sizes={"4": 8, "8": 8}, motion_encoder_size=8, motion_style_dim=16,
             motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
             inject_face_latents_blocks=1, motion_encoder_batch_size=8),
        "video", frames=3,
        note="one animation segment as the pipeline lays it out: [B, 2C + 4, 1 + T, H, W] (noisy latents and the "
             "reference / previous-segment latents), pose latents [B, C, T, H, W], face pixels in [-1, 1] "
             "[B, 3, 4(T - 1) + 1, s, s] at s = motion_encoder_size (8: one blurred down-sampling block; the face "
             "encoder's two stride-2 convolutions bring them to T frames), CLIP image states at image_dim; face "
             "adapter after block 0; the motion encoder's QR runs in float32 by design"),
    "SanaWMTransformer3DModel": ZooEntry(
        dict(in_channels=4, num_layers=2, hidden_size=16, num_attention_heads=2, softmax_every_n=2,
             linear_head_dim=8, caption_channels=12),
        "video", time_layout="per-frame-anchored", text_layout="one-frame", mask="float", frames=3,
        note="world model without camera control (camera_conditions, chunk_plucker, pos embeds optional: none "
             "given): block 0 gated-delta-net linear attention, block 1 softmax (softmax_every_n=2); per-frame t "
             "[B, 1, F] with the anchor frame 0 pinned to t = 0, text [B, 1, L, D] and its mask, as the pipeline "
             "passes them"),
    "MiniMaxH3Transformer3DModel": ZooEntry(
        dict(num_attention_heads=2, attention_head_dim=12, hidden_size=24, num_layers=1, num_refiner_layers=1,
             ffn_dim=32, in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=12, freq_dim=16,
             time_embed_hidden_dim=16, time_embed_dim=8, rope_freq_dim=2),
        "tokens", time_scale=1.0, frames=1, time_layout="per-modality",
        channels=lambda config: int(config["in_channels"]) * math.prod(_patch(config)),
        note="one packed layout shared by the batch: text, then the video patches [B, N, C p p], then 4 audio "
             "tokens; two distinct times (video, audio) in [0, 1] indexed per row; RoPE head split 6 x "
             "rope_freq_dim = head_dim"),
}

#: classes whose diffusers code raises in float64 (measured): the float32 timestep sinusoid reaches a float64 Linear
#: because only float16 / bfloat16 are cast back; a float64 validation of them is a failed call (exit 2), as written
FLOAT64_RAISES: dict[str, str] = {
    "MotifVideoTransformer3DModel": "MotifVideoTimeEmbedding casts the float32 sinusoid only to float16 / bfloat16",
    "Kandinsky5Transformer3DModel": "Kandinsky5TimeEmbeddings feeds its float32 sinusoid to a Linear of the "
                                    "model's dtype",
    "CosmosTransformer3DModel": "its RMS normalisation of the time embedding calls vector_norm(dtype=float32), "
                                "which refuses float64 input",
}

#: DiTTransformer2DModel's tiny build (``diffusers:DiTTransformer2DModel`` on the command line): validated by its own
#: whole-model path (ditcheck.validate.models), 2 blocks, 16 tokens, 10 classes
DIT_TINY_CONFIG: dict[str, Any] = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                       num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10)

#: class name -> the documented tiny kwargs it is built with (``build_model``)
TINY_CONFIGS: dict[str, dict[str, Any]] = {name: dict(entry.config) for name, entry in ENTRIES.items()}
TINY_CONFIGS["DiTTransformer2DModel"] = dict(DIT_TINY_CONFIG)

#: classes diffusers 0.42.1 exports that are not 2-D/3-D DiT denoisers of latents, or keep their own path
OUT_OF_SCOPE: dict[str, str] = {
    "DiTTransformer2DModel": "validated by its own whole-model reference (ditcheck.validate.models, conventions "
                             "dit / diffusers), not by this component path",
    "PriorTransformer": "a CLIP-embedding prior (Kandinsky / unCLIP): denoises a 1-D embedding, not latents",
    "T5FilmDecoder": "a spectrogram decoder for music (T5 + FiLM), not a latent DiT",
    "Transformer2DModel": "the generic transformer UNets embed inside cross-attention blocks (deprecated for DiT / "
                          "PixArt, which have their own classes here)",
    "TransformerTemporalModel": "a temporal layer inside video UNets, not a denoiser of its own",
    "DualTransformer2DModel": "two Transformer2DModels mixed for dual-guided UNets (not exported at the top level)",
    "StableAudioDiTModel": "a 1-D audio DiT (waveform latents), outside the 2-D/3-D DiTs ditcheck validates",
    "StableAudio3DiTModel": "a 1-D audio DiT (waveform latents), outside the 2-D/3-D DiTs ditcheck validates",
    "AceStepTransformer1DModel": "a 1-D music DiT, outside the 2-D/3-D DiTs ditcheck validates",
    "LongCatAudioDiTTransformer": "a 1-D audio DiT, outside the 2-D/3-D DiTs ditcheck validates",
    "MiniMaxMusic3Transformer1DModel": "a 1-D music transformer, outside the 2-D/3-D DiTs ditcheck validates",
    "MiniMaxMusic3RVQDepthDecoder": "a residual-VQ depth decoder of discrete audio codes, not a diffusion transformer",
    "RFD4ProteinaTransformer": "a protein-structure transformer (residue frames), not a latent image/video DiT",
    "DreamLiteTransformer2DModel": "the transformer DreamLite's UNet embeds in its cross-attention blocks (a "
                                   "Transformer2DModel counterpart), not a denoiser of its own",
    "Cosmos3OmniTransformer": "an omni-modal sequence model (token ids, packed vision / sound / action tokens with "
                              "their indexes), not a latent-in, latent-out denoiser call",
    "OmniGenTransformer2DModel": "a Phi-3 language model over token ids with interleaved image latents (input_ids, "
                                 "position ids, per-image sizes), not a latent-in, latent-out denoiser call",
    "AnyFlowFARTransformer3DModel": "frame-autoregressive: a chunk schedule, a KV cache and a flex-attention "
                                    "BlockMask drive each call (its one-shot counterpart AnyFlowTransformer3DModel is "
                                    "the denoiser)",
    "WanAnimate2Transformer3DModel": "streaming: lists of per-sample latents with a KV cache and its mode drive each "
                                     "call",
}


#: 2-D/3-D DiT denoisers in scope whose inputs ditcheck does not build yet (``validate`` refuses them with the reason;
#: the coverage table lists them): each needs conditioning a pipeline makes from another stage or sampler state
PENDING: dict[str, str] = {
}


def diffusers_transformer_classes() -> dict[str, type]:
    """name -> class of every nn.Module class ``diffusers.models.transformers`` exports (diffusers imported here)."""
    # lazy: diffusers is optional (the test extra); only a zoo class needs it
    import diffusers.models.transformers as module

    found = {}
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        try:
            value = getattr(module, name)
        except Exception:  # noqa: BLE001 - a lazy attribute whose backend is missing is not a class we can build
            continue
        if inspect.isclass(value) and issubclass(value, nn.Module):
            found[name] = value
    return found


def _entry(name: str) -> ZooEntry:
    if name not in ENTRIES:
        reason = OUT_OF_SCOPE.get(name) or PENDING.get(name)
        expected = "a diffusers transformer class in scope (" + ", ".join(sorted(ENTRIES)) + ")"
        raise InvalidArgumentError("model", expected, repr(name) + (f" ({reason})" if reason else ""))
    return ENTRIES[name]


def randomise_weights(model: nn.Module, seed: int, scale: float = WEIGHT_SCALE) -> nn.Module:
    """Every parameter redrawn N(0, scale^2) (float64 draws rounded to the parameter's dtype), in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * scale
            parameter.copy_(draw.to(parameter.dtype))
    return model


def build_model(name: str, dtype: torch.dtype | str = torch.float32, seed: int = 0) -> nn.Module:
    """The class ``name`` of diffusers built with its tiny configuration (:data:`TINY_CONFIGS`), random weights."""
    if not isinstance(name, str):
        raise InvalidArgumentError("model", "a diffusers transformer class name", type(name).__name__)
    config = DIT_TINY_CONFIG if name == "DiTTransformer2DModel" else _entry(name).config
    cls = diffusers_transformer_classes().get(name)
    if cls is None:
        raise InvalidArgumentError("model", "a class diffusers exports (is diffusers 0.42.1 installed?)", repr(name))
    with _quiet_diffusers():
        model = cls(**config)
        model = randomise_weights(model, seed).to(resolve_dtype(dtype)).eval()
    return model


@contextlib.contextmanager
def _quiet_diffusers() -> Any:
    """diffusers warns on every .to(dtype) of a model listing float32 modules: not a finding, kept out of reports."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)




# ----------------------------------------------------------------------------------------
# Inputs


def _config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    return dict(config) if config is not None else {}


#: the config keys giving the width of the text states, in the order they are looked for
TEXT_DIM_KEYS = ("joint_attention_dim", "caption_channels", "text_embed_dim", "text_dim", "cap_feat_dim",
                 "text_in_dim", "context_in_dim", "text_hidden_dim", "in_text_dim", "llm_features_dim",
                 "cross_attention_dim")


def _text_dim(config: Mapping[str, Any]) -> int:
    for key in TEXT_DIM_KEYS:
        if config.get(key):
            return int(config[key])
    raise InvalidArgumentError("model", f"a config stating the text width (one of {TEXT_DIM_KEYS})", "none")


def _mask(entry: ZooEntry, tokens: int, masked: int = MASKED_TOKENS) -> torch.Tensor:
    """[BATCH, tokens]: every token kept for sample 0, the last ``masked`` padded for sample 1."""
    keep = torch.ones(BATCH, tokens, dtype=torch.bool)
    keep[1, tokens - masked:] = False
    return keep if entry.mask == "bool" else keep.to(torch.float32)


def _patch(config: Mapping[str, Any]) -> tuple[int, int, int]:
    """(temporal, height, width) patch size of a config."""
    patch = config.get("patch_size") or 1
    if isinstance(patch, (tuple, list)):
        return tuple(int(p) for p in ([1] * (3 - len(patch)) + list(patch)))  # type: ignore[return-value]
    return int(config.get("patch_size_t") or 1), int(patch), int(patch)


def _entry_at(entry: ZooEntry, config: Mapping[str, Any]) -> ZooEntry:
    """The entry's input layout at this model's configuration: as many latent frames as a fixed temporal position
    table has rows (config video_length: Latte adds its whole table to the frames)."""
    if entry.latent in ("video", "video-frames-first") and config.get("video_length"):
        return dataclasses.replace(entry, frames=int(config["video_length"]))
    return entry


def _latents(entry: ZooEntry, config: Mapping[str, Any], generator: torch.Generator,
             width: int | None = None) -> torch.Tensor:
    """Random latents of the class's layout; ``width``: an "image" latent's width (default: square, entry.size)."""
    channels = entry.channels(config) if entry.channels else int(config.get("in_channels") or
                                                                 config.get("in_visual_dim") or 4)
    size, frames = entry.size, entry.frames
    if entry.latent == "video-last":
        shape = (BATCH, frames, size, size, channels)
    elif entry.latent == "patches":
        pt, ph, pw = _patch(config)
        shape = (BATCH, (frames // pt) * (size // ph) * (size // pw), channels, pt, ph, pw)
    elif entry.latent == "image":
        shape = (BATCH, channels, size, width or size)
    elif entry.latent == "video":
        shape = (BATCH, channels, frames, size, size)
    elif entry.latent == "video-frames-first":
        shape = (BATCH, frames, channels, size, size)
    else:
        pt, ph, pw = _patch(config)
        tokens = (frames if entry.packing == "video" else 1) * (size // ph) * (size // pw) // pt
        if entry.packing == "text-then-image":
            tokens += TEXT_TOKENS  # the packed sequence holds the text positions too (masked out inside)
        shape = (BATCH, tokens, channels)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _rope_inputs(name: str, model: nn.Module, entry: ZooEntry, config: Mapping[str, Any]) -> Any:
    """The RoPE tables the class's pipeline builds and passes in (as the pipeline builds them)."""
    # lazy: diffusers is optional (the test extra); only a zoo class needs it
    from diffusers.models import embeddings

    pt, ph, pw = _patch(config)
    grid = (entry.size // ph, entry.size // pw)
    if name == "LuminaNextDiT2DModel":
        head_dim = config["hidden_size"] // config["num_attention_heads"]
        return embeddings.get_2d_rotary_pos_embed_lumina(head_dim, 384, 384, linear_factor=1.0, ntk_factor=1.0)
    if name == "HunyuanDiT2DModel":
        crops = _resize_crop_region(grid, grid[1])  # the pipeline's base size in patches: the tiny grid is its own
        return embeddings.get_2d_rotary_pos_embed(model.inner_dim // model.num_heads, crops, grid, output_type="pt")
    if entry.rope == "cogvideox":
        crops = _resize_crop_region(grid, config["sample_width"] // pw, config["sample_height"] // ph)
        return embeddings.get_3d_rotary_pos_embed(embed_dim=config["attention_head_dim"], crops_coords=crops,
                                                  grid_size=grid, temporal_size=entry.frames)
    if name == "AllegroTransformer3DModel":
        tables = embeddings.get_3d_rotary_pos_embed_allegro(
            embed_dim=config["attention_head_dim"], crops_coords=((0, 0), grid), grid_size=grid,
            temporal_size=entry.frames, interpolation_scale=(config["interpolation_scale_t"],
                                                             config["interpolation_scale_h"],
                                                             config["interpolation_scale_w"]))
        freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = tables
        pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long())
        grid_t, grid_h, grid_w = pos.reshape(-1, 3).transpose(0, 1).reshape(3, 1, -1).contiguous()
        return (freqs_t, freqs_h, freqs_w), (grid_t, grid_h, grid_w)
    return None


#: the history inputs of HunyuanVideo Framepack (its pipeline's vanilla layout, history sizes 16, 2, 1)
FRAMEPACK_HISTORY = ("indices_latents", "latents_clean", "indices_latents_clean", "latents_history_2x",
                     "indices_latents_history_2x", "latents_history_4x", "indices_latents_history_4x")


def _framepack_history(entry: ZooEntry, config: Mapping[str, Any], generator: torch.Generator) -> dict[str, Any]:
    """Frame indices [prefix 1 | 4x 16 | 2x 2 | 1x 1 | window F] and the history latents, as the pipeline splits
    them."""
    channels, size = int(config["in_channels"]), entry.size
    indices = torch.arange(0, 1 + 16 + 2 + 1 + entry.frames)
    prefix, four, two, one, window = indices.split([1, 16, 2, 1, entry.frames])

    def latents(frames: int) -> torch.Tensor:
        return torch.randn(BATCH, channels, frames, size, size, generator=generator, dtype=torch.float64)

    return {"indices_latents": window, "latents_clean": latents(2), "indices_latents_clean": torch.cat([prefix, one]),
            "latents_history_2x": latents(2), "indices_latents_history_2x": two,
            "latents_history_4x": latents(16), "indices_latents_history_4x": four}


#: the packed-sequence inputs of MiniMax-H3 (one layout shared by the batch)
MINIMAX_SEQUENCE = ("timestep_indices", "token_tags", "position_ids", "video_indices", "audio_indices",
                    "text_indices")


def _minimax_sequence(text_tokens: int, rows: int, cols: int) -> dict[str, torch.Tensor]:
    """MiniMax-H3's packed rows [text | video grid | audio]: modality tags (0 video, 1 text, 2 audio), each row's
    index into the two distinct times (0: video and text, 1: audio), (t, h, w) positions (the video grid; text and
    audio at the origin) and each modality's row positions."""
    video = rows * cols
    total = text_tokens + video + AUDIO_TOKENS
    grid = torch.stack(torch.meshgrid(torch.zeros(1, dtype=torch.long), torch.arange(rows), torch.arange(cols),
                                      indexing="ij"), -1).reshape(-1, 3)
    return {"token_tags": torch.cat([torch.ones(text_tokens), torch.zeros(video),
                                     torch.full((AUDIO_TOKENS,), 2)]).long(),
            "timestep_indices": torch.cat([torch.zeros(text_tokens + video), torch.ones(AUDIO_TOKENS)]).long(),
            "position_ids": torch.cat([torch.zeros(text_tokens, 3, dtype=torch.long), grid,
                                       torch.zeros(AUDIO_TOKENS, 3, dtype=torch.long)]),
            "text_indices": torch.arange(text_tokens), "video_indices": torch.arange(text_tokens, text_tokens + video),
            "audio_indices": torch.arange(text_tokens + video, total)}


def _ideogram_sequence(entry: ZooEntry, text_tokens: int, ph: int, pw: int) -> dict[str, torch.Tensor]:
    """Ideogram 4's packed sequence: text at the origin (indicator 3), then the image grid (indicator 2) at
    positions offset by the module's IMAGE_POSITION_OFFSET, every token in segment 0."""
    # lazy: diffusers is optional (the test extra); only a zoo class needs it
    from diffusers.models.transformers import transformer_ideogram4 as module

    rows, cols = entry.size // ph, entry.size // pw
    offset = getattr(module, "IMAGE_POSITION_OFFSET", 65536)
    grid = torch.stack(torch.meshgrid(torch.zeros(1, dtype=torch.long), torch.arange(rows), torch.arange(cols),
                                      indexing="ij"), -1).reshape(-1, 3) + offset
    positions = torch.cat([torch.zeros(text_tokens, 3, dtype=torch.long), grid])
    indicator = torch.cat([torch.full((text_tokens,), module.LLM_TOKEN_INDICATOR),
                           torch.full((rows * cols,), module.OUTPUT_IMAGE_INDICATOR)])
    return {"position_ids": positions.expand(BATCH, -1, -1), "indicator": indicator.expand(BATCH, -1),
            "segment_ids": torch.zeros(BATCH, text_tokens + rows * cols, dtype=torch.long)}


#: pixels per latent pixel of the image VAEs the 2-D pipelines decode with (4 downsamplings): the pipelines' height and
#: width are latent sizes x 8
VAE_SCALE = 8


#: frames per latent frame of the Wan VAE (the Wan pipelines' vae_scale_factor_temporal): a segment of T latent
#: frames is 4 (T - 1) + 1 pixel frames
VAE_SCALE_TEMPORAL = 4


def _size_conditions(latents: torch.Tensor) -> dict[str, torch.Tensor]:
    """PixArt-alpha's micro-conditions as its pipeline makes them from the image size: resolution [B, 2] = (height,
    width) in pixels and aspect_ratio [B, 1] = height / width (pipeline_pixart_alpha, "Prepare micro-conditions")."""
    height, width = (VAE_SCALE * int(n) for n in latents.shape[-2:])
    return {"resolution": torch.tensor([[float(height), float(width)]] * BATCH, dtype=torch.float64),
            "aspect_ratio": torch.tensor([[height / width]] * BATCH, dtype=torch.float64)}


def _resize_crop_region(grid: tuple[int, int], base_width: int, base_height: int | None = None) -> tuple:
    """diffusers pipelines' get_resize_crop_region_for_grid: the crop of a base-size grid the latent grid covers."""
    height, width = grid
    base_height = base_width if base_height is None else base_height
    ratio = height / width
    if ratio > base_height / base_width:
        resize_height = base_height
        resize_width = int(round(base_height / height * width))
    else:
        resize_width = base_width
        resize_height = int(round(base_width / width * height))
    top = int(round((base_height - resize_height) / 2.0))
    left = int(round((base_width - resize_width) / 2.0))
    return (top, left), (top + resize_height, left + resize_width)


def build_inputs(model: nn.Module, seed: int = 0, dtype: torch.dtype | None = None, *,
                 name: str | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of one forward call of a zoo model, every input built from its config and forward signature.

    Batch :data:`BATCH`; timesteps differ per sample and are drawn on the model's scale (``ZooEntry.time_scale``);
    the second sample's last :data:`MASKED_TOKENS` text tokens are masked where the forward takes a text mask.
    Floating tensors are in ``dtype`` (default: the model's), RoPE tables as the class's pipeline makes them.
    A required forward parameter ditcheck cannot build raises InvalidArgumentError naming it.
    """
    name = name or diffusers_class_name(model) or type(model).__name__
    config = _config(model)
    entry = _entry_at(_entry(name), config)
    if dtype is None:
        first = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype = first.dtype if first is not None else torch.float32
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    # distinct times per sample, one near each end of the range (embeddings are largest / smallest there)
    times = torch.as_tensor([entry.time_scale * rng.uniform(0.0, 0.5), entry.time_scale * rng.uniform(0.5, 1.0)],
                            dtype=torch.float64)
    text_tokens = int(config.get("max_text_seq_length") or config.get("text_len") or config.get("max_sequence_length")
                      or TEXT_TOKENS)
    pt, ph, pw = _patch(config)
    values: dict[str, Any] = {}
    history: dict[str, Any] = {}
    sequence: dict[str, torch.Tensor] = {}  # a packed sequence's index tensors, built once for all of them
    parameters = dict(inspect.signature(model.forward).parameters)
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters.values()):
        # a fork's forward(*args, **kwargs) passing through: the diffusers class's own signature names the inputs
        base = next((c for c in type(model).__mro__ if c.__name__ == name and c.__module__.startswith("diffusers.")),
                    None)
        if base is not None:
            parameters = {**dict(list(inspect.signature(base.forward).parameters.items())[1:]), **parameters}
    # with (height, width) conditions a non-square image makes their order observable: (h, w) vs (w, h)
    size_conditioned = entry.latent == "image" and "added_cond_kwargs" in parameters and _size_conditioned(model)
    image_width = entry.size + 2 * pw if size_conditioned else entry.size
    for parameter_name, parameter in parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        value: Any = None
        if parameter_name == "hidden_states":
            value = _latents(entry, config, generator, image_width)
        elif parameter_name == "encoder_hidden_states":
            # Krea2 takes every text-encoder layer's states, [B, L, layers, D]
            layers = (int(config["num_text_layers"]),) if config.get("num_text_layers") else \
                (1 + len(config["injection_layer_ids"]),) if config.get("injection_layer_ids") else ()
            length = values["hidden_states"].shape[1] if entry.text_layout == "packed" else text_tokens
            lead = (1,) if entry.text_layout == "one-frame" else ()
            value = torch.randn(BATCH, *lead, length, *layers, _text_dim(config), generator=generator,
                                dtype=torch.float64)
        elif parameter_name == "encoder_hidden_states_t5" and config.get("cross_attention_dim_t5"):
            value = torch.randn(BATCH, int(config["text_len_t5"]), int(config["cross_attention_dim_t5"]),
                                generator=generator, dtype=torch.float64)
        elif parameter_name in ("encoder_attention_mask", "text_embedding_mask") and entry.mask:
            value = _mask(entry, text_tokens)
        elif parameter_name == "text_embedding_mask_t5" and entry.mask and config.get("text_len_t5"):
            value = _mask(entry, int(config["text_len_t5"]))
        elif parameter_name == "pooled_projections" and (config.get("pooled_projection_dim") or
                                                         config.get("in_text_dim2")):
            width = int(config.get("pooled_projection_dim") or config["in_text_dim2"])
            value = torch.randn(BATCH, width, generator=generator, dtype=torch.float64)
        elif parameter_name == "image_embeds" and (config.get("has_image_proj") or
                                                  (parameter.default is inspect.Parameter.empty and
                                                   config.get("image_proj_dim"))):
            # Framepack's forward requires them even when has_image_proj is off (its default; the released
            # checkpoints turn it on): given at image_proj_dim, the target's own behaviour is then what is reported
            value = torch.randn(BATCH, text_tokens, int(config["image_proj_dim"]), generator=generator,
                                dtype=torch.float64)
        elif parameter_name in FRAMEPACK_HISTORY and config.get("has_clean_x_embedder"):
            history = history or _framepack_history(entry, config, generator)
            value = history[parameter_name]
        elif parameter_name == "indices_latents":
            value = torch.arange(entry.frames // pt)
        elif parameter_name == "visual_rope_pos":
            # as the Kandinsky pipelines make them: the latent frame, row and column indices after patching
            value = [torch.arange(entry.frames // pt), torch.arange(entry.size // ph), torch.arange(entry.size // pw)]
        elif parameter_name == "text_rope_pos":
            value = torch.arange(text_tokens)
        elif parameter_name == "timestep" and entry.time_layout == "per-frame-anchored":
            value = times[:, None, None].repeat(1, 1, entry.frames // pt)
            value[:, :, 0] = 0.0
        elif parameter_name == "timestep":
            # "per-modality": not per sample, the packed sequence's two distinct times as they are
            value = times[:, None].expand(BATCH, entry.frames // pt) if entry.time_layout == "per-frame" else \
                times[:, None].expand(BATCH, values["hidden_states"].shape[1]) if entry.time_layout == "per-token" \
                else times
        elif parameter_name == "video_rotary_emb" and hasattr(model, "build_rotary_emb_for_absolute_positions"):
            value = model.build_rotary_emb_for_absolute_positions(
                batch_size=BATCH, frame_positions=list(range(entry.frames // pt)), height=entry.size // ph,
                width=entry.size // pw, device=torch.device("cpu"), fps=24.0)
        elif parameter_name == "guidance" and config.get("guidance_embeds"):
            # a guidance scale (Flux multiplies it by 1000 inside, as it does t)
            value = torch.as_tensor(rng.uniform(1.0, 8.0, BATCH), dtype=torch.float64)
        elif parameter_name == "img_ids":
            rows, cols = entry.size // ph, entry.size // pw
            axes = len(config.get("axes_dims_rope") or (0, 0, 0))
            grid = torch.meshgrid(*[torch.zeros(1)] * (axes - 2), torch.arange(float(rows)), torch.arange(float(cols)),
                                  indexing="ij")
            value = torch.stack(grid, -1).reshape(-1, axes)
        elif parameter_name == "txt_ids":
            value = torch.zeros(text_tokens, len(config.get("axes_dims_rope") or (0, 0, 0)))
        elif parameter_name == "image_rotary_emb":
            value = _rope_inputs(name, model, entry, config)
        elif parameter_name == "image_meta_size" and config.get("use_style_cond_and_image_meta_size"):
            size = float(entry.size * 8)  # (original h, w, target h, w, crop top, left) in pixels, as the pipeline
            value = torch.as_tensor([[size, size, size, size, 0.0, 0.0]] * BATCH, dtype=torch.float64)
        elif parameter_name == "style" and config.get("use_style_cond_and_image_meta_size"):
            value = torch.zeros(BATCH, dtype=torch.long)
        elif parameter_name == "num_frames" and entry.latent == "tokens":
            value = entry.frames // pt
        elif parameter_name == "height" and entry.latent == "tokens":
            value = entry.size // ph
        elif parameter_name == "width" and entry.latent == "tokens":
            value = entry.size // pw
        elif parameter_name == "rope_interpolation_scale":
            value = (1.0 / 25.0 * 8, 32.0, 32.0)  # the LTX pipeline's (temporal ratio / frame rate, spatial, spatial)
        elif parameter_name in ("original_size", "target_size"):
            value = torch.full((BATCH, 2), float(entry.size * 8), dtype=torch.float64)  # pixels, as the pipeline
        elif parameter_name == "crop_coords":
            value = torch.zeros(BATCH, 2, dtype=torch.float64)
        elif parameter_name == "img_shapes":
            value = [[(1, entry.size // ph, entry.size // pw)]] * BATCH
        elif parameter_name == "encoder_hidden_states_mask" and entry.mask:
            value = _mask(entry, text_tokens)
        elif parameter_name == "control_hidden_states" and config.get("vace_in_channels"):
            value = torch.randn(BATCH, int(config["vace_in_channels"]), entry.frames, entry.size, entry.size,
                                generator=generator, dtype=torch.float64)
        elif parameter_name == "text_bth":
            value = torch.randn(BATCH, text_tokens, _text_dim(config), generator=generator, dtype=torch.float64)
        elif parameter_name == "text_lens":
            value = torch.as_tensor([text_tokens, text_tokens - MASKED_TOKENS])
        elif parameter_name == "encoder_hidden_states_2" and config.get("text_embed_2_dim"):
            value = torch.randn(BATCH, text_tokens, int(config["text_embed_2_dim"]), generator=generator,
                                dtype=torch.float64)
        elif parameter_name == "encoder_attention_mask_2" and entry.mask and config.get("text_embed_2_dim"):
            value = _mask(entry, text_tokens)
        elif parameter_name == "encoder_hidden_states_image" and config.get("image_dim"):
            # the reference image's CLIP hidden states (the Wan image-to-video / Animate pipelines' image_embeds)
            value = torch.randn(BATCH, text_tokens, int(config["image_dim"]), generator=generator,
                                dtype=torch.float64)
        elif parameter_name == "pose_hidden_states":
            # Wan Animate's pose-video latents: one frame fewer than hidden_states (no reference frame)
            channels = int(config.get("latent_channels") or (int(config["in_channels"]) - 4) // 2)
            value = torch.randn(BATCH, channels, entry.frames // pt - 1, entry.size, entry.size, generator=generator,
                                dtype=torch.float64)
        elif parameter_name == "face_pixel_values" and config.get("motion_encoder_size"):
            # the face video segment in pixels, [-1, 1] (VideoProcessor.preprocess_video), RGB at the motion encoder's
            # resolution: VAE_SCALE_TEMPORAL (T - 1) + 1 frames for T pose-latent frames, as the pipeline cuts it
            side = int(config["motion_encoder_size"])
            frames = VAE_SCALE_TEMPORAL * (entry.frames // pt - 2) + 1
            value = torch.rand(BATCH, 3, frames, side, side, generator=generator, dtype=torch.float64) * 2.0 - 1.0
        elif parameter_name == "image_embeds" and config.get("image_embed_dim"):
            value = torch.randn(BATCH, text_tokens, int(config["image_embed_dim"]), generator=generator,
                                dtype=torch.float64)
        elif parameter_name == "attention_mask" and name == "PRXTransformer2DModel":
            value = _mask(entry, text_tokens)
        elif parameter_name == "x" and entry.latent == "list":
            value = [torch.randn(int(config["in_channels"]), 1, entry.size, entry.size, generator=generator,
                                 dtype=torch.float64) for _ in range(BATCH)]
        elif parameter_name == "t" and entry.latent == "list":
            value = times
        elif parameter_name == "cap_feats":
            value = [torch.randn(text_tokens - MASKED_TOKENS * i, int(config["cap_feat_dim"]), generator=generator,
                                 dtype=torch.float64) for i in range(BATCH)]
        elif parameter_name == "text_encoder_layers" and config.get("text_encoder_dim"):
            value = [torch.randn(BATCH, text_tokens, int(config["text_encoder_dim"]), generator=generator,
                                 dtype=torch.float64)
                     for _ in range(int(config["num_layers"]) + int(config["num_single_layers"]))]
        elif parameter_name in MINIMAX_SEQUENCE and entry.time_layout == "per-modality":
            sequence = sequence or _minimax_sequence(text_tokens, entry.size // ph, entry.size // pw)
            value = sequence[parameter_name]
        elif parameter_name in ("position_ids", "segment_ids", "indicator") and entry.packing == "text-then-image":
            sequence = sequence or _ideogram_sequence(entry, text_tokens, ph, pw)
            value = sequence[parameter_name]
        elif parameter_name == "shape_list":
            value = [[(entry.frames // pt, entry.size // ph, entry.size // pw)]] * BATCH
        elif parameter_name == "prior_token_id":
            tokens = (entry.size // ph) * (entry.size // pw)
            value = torch.as_tensor(rng.integers(0, int(config["prior_vq_quantizer_codebook_size"]), (BATCH, tokens)))
        elif parameter_name == "prior_token_drop":
            value = torch.zeros(BATCH, dtype=torch.bool)
        elif parameter_name == "timesteps" and name == "HiDreamImageTransformer2DModel":
            value = times
        elif parameter_name == "encoder_hidden_states_t5" and config.get("llama_layers"):
            value = torch.randn(BATCH, text_tokens, int(config["caption_channels"][0]), generator=generator,
                                dtype=torch.float64)
        elif parameter_name == "encoder_hidden_states_llama3":
            # one [B, L, D] per Llama-3 layer, indexed by the layer numbers llama_layers names
            layers = max(config["llama_layers"]) + 1
            value = torch.randn(layers, BATCH, text_tokens, int(config["caption_channels"][1]), generator=generator,
                                dtype=torch.float64)
        elif parameter_name == "pooled_embeds":
            value = torch.randn(BATCH, int(config["text_emb_dim"]), generator=generator, dtype=torch.float64)
        elif parameter_name == "audio_hidden_states" and config.get("audio_in_channels"):
            value = torch.randn(BATCH, AUDIO_TOKENS, int(config["audio_in_channels"]), generator=generator,
                                dtype=torch.float64)
        elif parameter_name == "audio_encoder_hidden_states" and config.get("audio_in_channels"):
            value = values["encoder_hidden_states"]
        elif parameter_name == "audio_encoder_attention_mask" and entry.mask and config.get("audio_in_channels"):
            value = _mask(entry, text_tokens)
        elif parameter_name == "audio_num_frames" and config.get("audio_in_channels"):
            value = AUDIO_TOKENS
        elif parameter_name == "r_timestep":
            value = times * torch.as_tensor(rng.uniform(0.0, 1.0, BATCH))  # the flow map's earlier time, r <= t
            value = value[:, None].expand(BATCH, entry.frames // pt) if entry.time_layout == "per-frame" else value
        elif parameter_name == "img_mask":
            # the vision-language sequence: the text slots, then one slot per 2x2 target latent tokens (True)
            slots = (entry.size // ph) * (entry.size // pw) // 4
            value = torch.cat([torch.zeros(BATCH, text_tokens, dtype=torch.bool),
                               torch.ones(BATCH, slots, dtype=torch.bool)], dim=1)
        elif parameter_name == "cross_attention_kwargs" and name == "LuminaNextDiT2DModel":
            value = {}  # its forward unpacks it without a None check
        elif parameter_name == "position_ids" and name == "Krea2Transformer2DModel":
            # Krea2Pipeline.prepare_position_ids (its module needs transformers): text at the origin, then (0, h, w)
            rows, cols = entry.size // ph, entry.size // pw
            image_ids = torch.zeros(rows, cols, 3)
            image_ids[..., 1] = torch.arange(rows)[:, None]
            image_ids[..., 2] = torch.arange(cols)[None, :]
            value = torch.cat([torch.zeros(text_tokens, 3), image_ids.reshape(rows * cols, 3)])
        elif parameter_name == "encoder_mask" and entry.mask:
            value = _mask(entry, text_tokens)
        elif parameter_name == "padding_mask" and config.get("concat_padding_mask"):
            # the Cosmos pipelines' zeros(1, 1, height, width) in pixels (resized to the latent grid inside)
            value = torch.zeros(1, 1, VAE_SCALE * entry.size, VAE_SCALE * entry.size, dtype=torch.float64)
        elif parameter_name == "added_cond_kwargs" and size_conditioned:
            value = _size_conditions(values["hidden_states"])
        elif parameter_name == "return_dict":
            value = False
        if value is None:
            if parameter.default is inspect.Parameter.empty:
                raise InvalidArgumentError(f"forward parameter {parameter_name!r} of {name}",
                                           "an input ditcheck knows how to build", "no rule for it")
            continue
        values[parameter_name] = value
    return (), to_device(values, None, dtype)


# ----------------------------------------------------------------------------------------
# The validation run


def _expected_output_shape(entry: ZooEntry, config: Mapping[str, Any],
                           latents: torch.Tensor) -> tuple[int, ...] | None:
    """The denoiser's output shape: the latents' with the channel axis holding the model's output channels."""
    channels = config.get("out_channels") or config.get("out_visual_dim") or config.get("in_channels")
    if channels is None:
        return None
    channels = int(channels) * (2 if config.get("learn_sigma") else 1)
    shape = list(latents.shape)
    if entry.latent == "patches":
        shape[2] = channels
    elif entry.latent == "video-last":
        shape[-1] = channels
    elif entry.latent == "tokens":
        pt, ph, pw = _patch(config)
        shape[-1] = channels * pt * ph * pw
    elif entry.latent == "video-frames-first":
        shape[2] = channels
    else:
        shape[1] = channels
    return tuple(shape)


@dataclass
class _ClassSummary:
    """What the examples measured for one module class: calls by status and the worst comparison."""

    calls: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    worst: Any = None  # the ComponentFinding with the largest error/tolerance (non-island)
    worst_island: Any = None

    def add(self, finding: Any) -> None:
        self.calls += 1
        self.statuses[finding.status] = self.statuses.get(finding.status, 0) + 1
        if finding.ratio is None:
            return
        slot = "worst_island" if finding.status == "precision" else "worst"
        current = getattr(self, slot)
        if current is None or finding.ratio > current.ratio:
            setattr(self, slot, finding)


def resolve_target(model: Any, dtype: torch.dtype | str | None = None,
                   target: str | None = None, *, argument: str = "model") -> tuple[nn.Module, str]:
    """An nn.Module and its label from an instance, a class or "diffusers:ClassName" (built tiny), or a factory.

    A diffusers class (or its name) is built with its tiny configuration (:func:`build_model`) and labelled
    ``diffusers:ClassName``; another ``MODULE:ATTR`` string goes through :mod:`ditcheck.loader`; a zero-argument
    factory is called once. Failures raise :class:`~ditcheck.loader.LoadError` (an InvalidArgumentError) naming
    ``argument``.
    """
    if isinstance(model, str):
        module_name, _, attribute = model.rpartition(":")
        if module_name == "diffusers":
            return build_model(attribute, dtype or torch.float32), target or model
        label = target or model
        model = load(model, argument=argument)
    else:
        label = target
    if inspect.isclass(model) and model.__module__.startswith("diffusers."):
        return build_model(model.__name__, dtype or torch.float32), label or f"diffusers:{model.__name__}"
    module = build(model, lambda o: isinstance(o, nn.Module), "an nn.Module", argument=argument)
    return module, label or f"{type(module).__module__}:{type(module).__qualname__}"


def diffusers_class_name(model: Any) -> str | None:
    """The diffusers transformer class ``model`` is (or subclasses, as forks do): the first in its MRO, else None."""
    cls = model if inspect.isclass(model) else type(model)
    known = set(ENTRIES) | set(OUT_OF_SCOPE) | set(PENDING)
    for base in cls.__mro__:
        if base.__module__.startswith("diffusers.") and base.__name__ in known:
            return base.__name__
    return None


def dispatches_here(model: Any) -> bool:
    """Whether ``ditcheck.validate.dit`` hands ``model`` (an nn.Module) to this path: a diffusers transformer class
    other than DiTTransformer2DModel, or a subclass of one (out-of-scope ones too: they get their reason)."""
    return diffusers_class_name(model) not in (None, "DiTTransformer2DModel")


def validate(model: Any, *, convention: str | None = None, examples: int = DEFAULT_ZOO_EXAMPLES, seed: int = 0,
             dtype: torch.dtype | str | None = None, device: str | torch.device | None = None, weights: str = "random",
             diagnose: bool = True, timeout: float | None = None, target: str | None = None,
             strict_precision: bool = False, inputs: Any = None, copy_model: bool | None = None) -> Report:
    """Validate a diffusers transformer (instance, class, "diffusers:ClassName" or a zero-argument factory), or any
    torch model given ``inputs``.

    Each of ``examples`` examples draws fresh weights (``weights="random"``: every parameter, adaLN-Zero and gates
    included; "model": the target's own) and fresh inputs (:func:`build_inputs`, seeded by ``seed``) and runs the
    component engine once; the findings of all examples make one :class:`~ditcheck.validate.report.Report`.
    ``dtype`` / ``device``: where the target runs (default: its own; a copy is converted). ``diagnose``: report
    the convention knobs explaining the first divergence (the engine tries them on every mismatch). A class or
    name outside the zoo raises InvalidArgumentError naming ``model``; a target that raises or returns a wrong
    or non-finite output is a failed check.

    ``inputs`` (:mod:`ditcheck.validate.call_inputs`: a function of the example seed returning the forward call's
    arguments, or a ``MODULE:ATTR`` naming one) replaces :func:`build_inputs`, and lets ``model`` be any torch
    model: each recognised submodule is checked against the conventions its own module states, the output for
    finiteness only (no expected shape is known), and the classes the engine does not recognise are listed.

    ``copy_model``: copy the model before its weights or dtype are changed (the caller's model is never changed);
    None: copy unless it was built here from a class, a name or a factory.
    """
    examples, seed, timeout = require_run_settings(examples, seed, DEFAULT_TIMEOUT if timeout is None else timeout)
    if weights not in ("random", "model"):
        raise InvalidArgumentError("weights", "'random' or 'model'", repr(weights))
    requested = None if dtype is None else resolve_dtype(dtype)
    user_inputs = None if inputs is None else inputs_function(inputs)
    module, label = resolve_target(model, requested, target)
    if copy_model is None:  # a model built here (from a class, a name or a factory) is held by no caller: no copy
        copy_model = module is model
    name = diffusers_class_name(module) or type(module).__name__
    entry = _entry(name) if user_inputs is None or name in ENTRIES else None
    if convention is None:
        convention = "diffusers" if entry is not None else "as each module states"
    elif convention not in ZOO_CONVENTIONS or entry is None:
        expected = (f"one of {ZOO_CONVENTIONS} for a diffusers transformer class" if entry is not None else
                    f"None for {name}: outside the diffusers zoo each component is checked against its own settings")
        raise InvalidArgumentError("convention", expected, repr(convention))
    own = next((p for p in module.parameters() if p.is_floating_point()), None)
    if own is None:
        raise InvalidArgumentError("model", "an nn.Module with floating parameters", name)
    run_dtype = own.dtype if requested is None else requested
    run_device = own.device if device is None else resolve_device(device)
    if weights == "random" or (run_dtype, run_device) != (own.dtype, own.device):
        if copy_model:
            module = copy.deepcopy(module)  # the caller's model is never changed
        with _quiet_diffusers():
            module.to(device=run_device, dtype=run_dtype)
    fmt = str(run_dtype).removeprefix("torch.")
    report = Report(target=label, kind="dit", settings={"class": name, "convention": convention, "dtype": fmt,
                                                        "device": str(run_device), "examples": examples, "seed": seed,
                                                        "weights": weights, "path": "components"})
    if user_inputs is not None:
        report.settings["inputs"] = inputs_label(inputs)
    if label == f"diffusers:{name}":
        report.notes.append("built by ditcheck with the tiny configuration " +
                            ", ".join(f"{k}={v}" for k, v in entry.config.items()) + f" ({entry.note})")
    config = _config(module) if entry is not None else {}  # a user's model may keep anything in .config
    summaries: dict[str, _ClassSummary] = {}
    failing: dict[str, Any] = {}  # name -> worst failing finding over the examples
    first_failure = None
    call_errors: list[str] = []
    output_problems: list[str] = []
    returned = 0
    total_calls = checked_calls = 0
    unchecked: set[str] = set()
    unsupported: dict[str, str] = {}
    remarks: dict[tuple[str, str, str], None] = {}  # (call, class, the engine's note on a passing call), in order
    unjudged: dict[tuple[str, str, str], None] = {}  # float32 work of a float64 run no precision finding covers
    was_training = module.training
    module.eval()
    try:
        for index in range(examples):
            example_seed = seed * 7919 + index  # distinct per example and per run seed
            if weights == "random":
                randomise_weights(module, example_seed)
            try:
                if user_inputs is None:
                    args, kwargs = to_device(build_inputs(module, example_seed, run_dtype, name=name), run_device)
                else:  # the user's function: it may raise or hang like the target
                    args, kwargs = to_device(draw_inputs(user_inputs, example_seed, timeout), run_device, run_dtype,
                                             every_float=True)
            except InvalidArgumentError as error:  # a TargetError is one
                report.loaded = False
                report.checks.append(Check("inputs", False, message=str(error)))
                return report
            outputs: list[Any] = []
            handle = module.register_forward_hook(lambda m, a, out: outputs.append(out))
            try:
                # the time-out counts from the last submodule call checked: a full-size model is slow, not hung
                heartbeat = Heartbeat()
                promote = run_dtype == torch.float64 and user_inputs is not None  # the zoo's classes: as written
                components = call_isolated(_check_as_written, module, args, kwargs, promote,
                                           strict_precision=strict_precision, progress=heartbeat.beat,
                                           timeout=timeout, heartbeat=heartbeat)
            except TargetTimeoutError as error:
                call_errors.append(error.describe())
                break  # a hung call may still be running: make no more
            except TargetError as error:  # the engine itself failed on this target
                call_errors.append(error.describe())
                continue
            finally:
                handle.remove()
            unjudged.update(dict.fromkeys((name.split("#")[0], cls, what)
                                          for name, cls, what in components.unjudged_float32))
            for finding in components.findings:
                if finding.status == "error":
                    call_errors.append(finding.message)
                    continue
                if finding.remark and finding.status in ("conforms", "precision"):
                    remarks[(finding.name.split("#")[0], finding.cls, finding.remark)] = None
                total_calls += 1
                if finding.status == "not-checked":
                    unchecked.add(finding.cls)
                    continue
                if finding.status == "unsupported":
                    unsupported.setdefault(finding.cls, finding.message)
                    continue
                checked_calls += 1
                summaries.setdefault(finding.cls, _ClassSummary()).add(finding)
            for finding in components.failures:
                if finding.status == "error":
                    continue
                if first_failure is None:
                    first_failure = finding
                known = failing.get(finding.name)
                if known is None or (finding.ratio or math.inf) > (known.ratio or math.inf):
                    failing[finding.name] = finding
            if outputs:
                returned += 1
                out = model_output(outputs[0])
                if user_inputs is not None:  # the user's inputs: no expected shape is known, the output must be finite
                    problem = _any_output_problem(outputs[0])
                    output_problems.extend([f"example {index}: {problem}"] if problem else [])
                    continue
                latents = kwargs.get("hidden_states", kwargs.get("x"))
                if entry.latent == "list" and isinstance(out, (list, tuple)) and \
                        all(isinstance(o, torch.Tensor) for o in out) and len(out) == len(latents):
                    # per-sample outputs (Z-Image): checked as one batch when every sample has its latent's shape
                    out = torch.stack(list(out)) if all(o.shape == x.shape for o, x in zip(out, latents)) else out
                    latents = torch.stack(latents)
                if entry.output_suffix and isinstance(out, torch.Tensor) and out.ndim == 3:
                    out = out[:, -latents.shape[1]:]
                problem = _output_problem(out, _expected_output_shape(entry, config, latents))
                output_problems.extend([f"example {index}: {problem}"] if problem else [])
            if name in WHOLE_MODEL_REFERENCES and user_inputs is None:  # the whole forward, each block's output too, against its reference
                add_whole_model_example(report, module, kwargs, run_dtype, name=name, timeout=timeout)
    finally:
        module.train(was_training)
    _fill_report(report, summaries, failing, first_failure, call_errors, output_problems, returned, examples,
                 strict_precision, diagnose)
    report.settings["components"] = f"{checked_calls} of {total_calls} calls recomputed"
    if unchecked:
        report.notes.append("not recognised (run, not checked): " + ", ".join(sorted(unchecked)))
    # what the numbers said that the modules do not state (an eps found only in a forward, which activation fits)
    report.notes.extend(f"{name} ({cls}): {remark}" for name, cls, remark in remarks)
    if unjudged:
        report.notes.append(unjudged_float32_note(list(unjudged)))
    for cls, why in sorted(unsupported.items()):
        report.notes.append(f"recognised, configuration not modelled (not checked): {cls}: {why}")
    if report.loaded and not report.ok:
        report.failures.append(rerun_reproducer(report, "components", {
            "examples": examples, "seed": seed, "dtype": fmt, "device": str(run_device), "weights": weights,
            "inputs": inputs, "strict_precision": strict_precision or None, "timeout": timeout}))
    return report


def to_device(value: Any, device: torch.device | None, dtype: torch.dtype | None = None, *,
              every_float: bool = False) -> Any:
    """build_inputs' values on ``device`` (None: where they are), float64 tensors (build_inputs' draws; with
    ``every_float``, every floating tensor: a user's inputs) cast to ``dtype`` when given: a tensor, or the tensors of
    a list, tuple, namedtuple (RoPE tables, per-sample latents) or dict (PixArt's added_cond_kwargs), at any depth;
    anything else as it is."""
    if isinstance(value, torch.Tensor):
        if dtype is not None and (value.dtype == torch.float64 or (every_float and value.is_floating_point())):
            value = value.to(dtype)
        return value if device is None else value.to(device)
    if isinstance(value, (list, tuple)):
        moved = [to_device(v, device, dtype, every_float=every_float) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else type(value)(moved)  # a namedtuple takes fields
    if isinstance(value, dict):
        return {key: to_device(v, device, dtype, every_float=every_float) for key, v in value.items()}
    return value


def _output_problem(out: Any, expected: tuple[int, ...] | None) -> str:
    """What is wrong with a model's output: not a tensor, a shape other than ``expected`` (None: any), non-finite."""
    if not isinstance(out, torch.Tensor):
        return f"returned a {type(out).__name__}, not a tensor"
    if expected is not None and tuple(out.shape) != expected:
        return f"shape {tuple(out.shape)}, expected {expected}"
    if not bool(torch.isfinite(out).all()):
        return f"{int((~torch.isfinite(out)).sum())} non-finite values"
    return ""


def _check_as_written(module: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any], float64: bool,
                      **options: Any) -> Any:
    """check_components of one call, run as written; in a float64 run under dit_precision.PromoteMixedFloats (in the
    thread that runs the target: modes are per thread), so that code computing a part in float32 before a float64
    layer (DDT's, Latte's, U-ViT's timestep sinusoid `.float()` before the MLP: F.linear refuses mixed dtypes) runs
    as the whole-model path runs it, its float32 part then judged as a float32 island instead of raising. Only for
    the user's inputs (--inputs): a diffusers class that raises in float64 in its own code is reported as such."""
    with PromoteMixedFloats() if float64 else contextlib.nullcontext():
        return check_components(module, args, kwargs, **options)


def _any_output_problem(out: Any) -> str:
    """What is wrong with the output of a model called with the user's inputs, whose form no convention fixes (a
    tensor, HunyuanDiT's {"x": x}, DDT's (x, s), an output object): no floating tensor in it, or a non-finite one."""
    tensors = _float_tensors(out)
    if not tensors:
        return f"returned a {type(out).__name__} holding no floating tensor"
    return "; ".join(problem for problem in (_output_problem(t, None) for t in tensors) if problem)


def _fill_report(report: Report, summaries: Mapping[str, _ClassSummary], failing: Mapping[str, Any], first_failure: Any,
                 call_errors: Sequence[str], output_problems: Sequence[str], returned: int, examples: int,
                 strict_precision: bool, diagnose: bool) -> None:
    """Checks per component class and per localised fault, the first divergence, the diagnosis, the output checks."""
    for cls, summary in summaries.items():
        faults = sum(summary.statuses.get(s, 0) for s in ("mismatch", "inline"))
        follows = summary.statuses.get("follows", 0)
        worst = summary.worst
        detail = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items()))
        if worst is not None:
            message = "" if not faults else f"{faults} of {summary.calls} calls outside tolerance ({detail})"
            if follows and not faults:
                message = f"{follows} call(s) follow from a failing child ({detail})"
            report.checks.append(Check(f"{cls} ({summary.calls} calls)", faults == 0, worst.error, worst.tolerance,
                                       message, summary.calls, worst.name))
        island = summary.worst_island
        if island is not None:
            islands = summary.statuses.get("precision", 0)
            message = (f"computes in float32 by design ({islands} of {summary.calls} calls; worst at {island.name}, "
                       f"error {island.error:.2g} within float32's bound {island.tolerance.value:.2g})")
            finding = Check(f"precision: {cls}", True, island.error, island.tolerance, message, islands, island.name)
            report.precision.append(finding)
            if strict_precision:
                report.checks.append(Check(finding.id, False, finding.observed, finding.tolerance,
                                           finding.message + " (--strict-precision)", finding.examples))
    for finding in failing.values():
        if finding.status == "precision":
            continue  # reported with its class above
        explained = ("; explained by " + " or ".join(", ".join(f"{k}={v!r}" for k, v in e.items())
                                                     for e in finding.explanations)) if finding.explanations else ""
        report.checks.append(Check(f"{finding.name} ({finding.cls})", False, finding.error, finding.tolerance,
                                   f"{finding.status} at {finding.location}{explained}"
                                   + (f" ({finding.message})" if finding.message else ""), 1, finding.name))
    if first_failure is not None:
        report.first_divergence = f"{first_failure.name} ({first_failure.cls}) at {first_failure.location}"
        if diagnose:
            report.diagnosis.extend({"knobs": dict(e), "ratio": None, "where": first_failure.name}
                                    for e in first_failure.explanations)
            if not first_failure.explanations and first_failure.status in ("mismatch", "inline"):
                report.notes.append(f"no convention knob explains {first_failure.name}")
    if call_errors:
        report.checks.append(Check("call", False, message=f"{len(call_errors)} of {examples} calls failed; first: "
                                   f"{call_errors[0]}", examples=examples))
        if report.first_divergence is None:
            report.first_divergence = "the call (the target raised)"
    if returned:
        report.checks.append(Check("output", not output_problems, message="; ".join(output_problems[:3]),
                                   examples=returned))
    else:
        report.loaded = False
        if not call_errors:
            report.checks.append(Check("output", False, message="no call returned an output"))


# ----------------------------------------------------------------------------------------
# The coverage table (README)


@dataclass(frozen=True)
class CoverageRow:
    """One diffusers transformer class: built, its runs per dtype, components recognised, block references, time."""

    name: str
    scope: str  # "in scope" | the reason it is not
    built: bool = False
    results: dict[str, str] = field(default_factory=dict)  # dtype -> "conforms" / "DISCREPANCY ..." / "error"
    seconds: dict[str, float] = field(default_factory=dict)  # dtype -> wall time
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # dtype -> this process's CPU time
    components: str = ""
    block_reference: str = ""
    whole_model: str = ""  # "2 blocks + output" where a whole-model reference ran (zoo_reference), else "no"


def coverage_row(name: str, dtypes: Sequence[str] = ("float32", "float64"), examples: int = DEFAULT_ZOO_EXAMPLES,
                 seed: int = 0) -> CoverageRow:
    """Build and validate one class in each dtype (wall and CPU time measured per dtype).

    The block-reference column lists the transformer-block classes whose inline code (modulation, gates, residuals,
    joins) the engine recomputed from their children's recorded outputs in these runs; the whole-model column counts
    the block outputs the whole-model reference (ditcheck.validate.zoo_reference) compared, besides the output.
    """
    if name == "DiTTransformer2DModel":
        return _dit_coverage_row(dtypes, examples, seed)
    if name not in ENTRIES:
        return CoverageRow(name, OUT_OF_SCOPE.get(name) or PENDING.get(name) or "not a class diffusers exports")
    results, seconds, cpu = {}, {}, {}
    components, blocks, whole_model = "", set(), "no"
    built = True
    for fmt in dtypes:
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            report = validate(f"diffusers:{name}", dtype=fmt, examples=examples, seed=seed)
        except Exception as error:  # noqa: BLE001 - a class that does not build is a row saying so
            results[fmt] = f"error: {type(error).__name__}: {str(error)[:80]}"
            built = False
            continue
        seconds[fmt], cpu[fmt] = time.perf_counter() - start, time.process_time() - start_cpu
        islands = len(report.precision)
        if report.ok:
            results[fmt] = "conforms" + (f" ({islands} island classes)" if islands else "")
        elif not report.loaded:
            message = next((c.message for c in report.checks if c.id == "call"), "no output")
            results[fmt] = "raises: " + (FLOAT64_RAISES[name] if fmt == "float64" and name in FLOAT64_RAISES and
                                         "dtype" in message else message[:90])
        else:
            results[fmt] = f"DISCREPANCY at {report.first_divergence}"
        components = report.settings.get("components", "").replace(" calls recomputed", "").replace(" of ", " / ")
        blocks |= {c.id.split(" (")[0] for c in report.checks
                   if c.observed is not None and c.id.split(" (")[0].endswith("Block")}
        compared = [c.id for c in report.checks if c.id.startswith(CHECK_PREFIX) and c.observed is not None]
        if compared:
            blocks_compared = sum(not i.endswith(": output") for i in compared)
            whole_model = f"{blocks_compared} block{'s' if blocks_compared != 1 else ''} + output"
    return CoverageRow(name, "in scope", built, results, seconds, cpu, components,
                       ", ".join(sorted(blocks)) if blocks else "no", whole_model)


def _dit_coverage_row(dtypes: Sequence[str], examples: int, seed: int) -> CoverageRow:
    """DiTTransformer2DModel on its own path: the whole-model reference, convention diffusers."""
    from .models import dit  # lazy: a cycle (models imports zoo)

    results, seconds, cpu = {}, {}, {}
    checks = ""
    for fmt in dtypes:
        start, start_cpu = time.perf_counter(), time.process_time()
        report = dit("diffusers:DiTTransformer2DModel", convention="diffusers", dtype=fmt, examples=examples,
                     seed=seed)
        seconds[fmt], cpu[fmt] = time.perf_counter() - start, time.process_time() - start_cpu
        islands = len(report.precision)
        results[fmt] = ("conforms" if report.ok else f"DISCREPANCY at {report.first_divergence}") + \
            (f" ({islands} island findings)" if islands else "")
        checks = f"{len(report.checks)} activation checks (whole model)"
    return CoverageRow("DiTTransformer2DModel", "in scope", True, results, seconds, cpu, checks,
                       "DiT blocks (inside the whole-model reference)", "every block + output")


def coverage_table(names: Sequence[str] | None = None, dtypes: Sequence[str] = ("float32", "float64"),
                   examples: int = DEFAULT_ZOO_EXAMPLES) -> str:
    """The README's coverage table (Markdown): one row per diffusers transformer class."""
    names = list(names) if names else sorted(set(diffusers_transformer_classes()) | set(ENTRIES) | set(OUT_OF_SCOPE))
    diffusers_transformer_classes()  # import every transformer module before any timing (the first row paid ~8 s)
    validate("diffusers:SD3Transformer2DModel", examples=1)  # and the engine's own first-call costs
    lines = ["| class | built | " + " | ".join(f"{d}" for d in dtypes) + " | components recognised / calls | "
             "inline code by a block reference | whole-model reference | wall (CPU) time " + " / ".join(dtypes) + " |",
             "|---|---|" + "---|" * len(dtypes) + "---|---|---|---|"]
    for name in names:
        row = coverage_row(name, dtypes, examples)
        if row.scope != "in scope":
            label = row.scope if name in PENDING else f"out of scope: {row.scope}"
            lines.append(f"| {name} | no: {label} |" + " |" * (len(dtypes) + 4))
            continue
        times = " / ".join(f"{row.seconds[d]:.1f} s ({row.cpu_seconds[d]:.1f} s)" if d in row.seconds else "-"
                           for d in dtypes)
        lines.append(f"| {name} | {'yes' if row.built else 'no'} | " + " | ".join(row.results.get(d, "-")
                     for d in dtypes) + f" | {row.components} | {row.block_reference} | {row.whole_model} | {times} |")
    return "\n".join(lines)
