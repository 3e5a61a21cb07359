"""ditcheck.validate.components on real diffusers 0.42 models built tiny with random weights on the CPU.

Clean models: every recognised component conforms in float32 and float64 (float32 islands of a float64
run reported as ``precision``, never as failures) over several seeds. Planted bugs, each modelled on a
real one (the team's dit-zoo notes): caught, localised to the right module (a leaf, or "inline code in
<Class>.forward"), and the convention knob that explains it named where one does.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

diffusers = pytest.importorskip("diffusers")
from diffusers import DiTTransformer2DModel, FluxTransformer2DModel, PixArtTransformer2DModel  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: E402
from diffusers.models.embeddings import get_timestep_embedding  # noqa: E402
from diffusers.models.transformers import transformer_flux  # noqa: E402

from ditcheck.reference.errors import InvalidArgumentError  # noqa: E402
from ditcheck.validate.components import (ComponentReport, check_components, recognised_classes)  # noqa: E402
from targets import zoo_bugs  # noqa: E402
from ditcheck.validate.zoo import randomise_weights  # noqa: E402
from targets.zoo_bugs import Built, tiny_sd3  # noqa: E402

logging.getLogger("diffusers").setLevel(logging.ERROR)  # "modules that should be kept in float32: []" on .to()


# ----------------------------------------------------------------------------------------
# Tiny real models (configs from the smallest working ones; weights redrawn so adaLN is not zero)


def tiny_dit(seed: int, activation_fn: str = "gelu-approximate", scale: float = 0.3) -> Built:
    model = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                  num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
                                  activation_fn=activation_fn)
    generator = torch.Generator().manual_seed(seed + 100)
    return randomise_weights(model, seed, scale), dict(hidden_states=torch.randn(2, 4, 8, 8, generator=generator),
                                               timestep=torch.tensor([3.0, 700.0]), class_labels=torch.tensor([1, 10]))


def tiny_pixart(seed: int) -> Built:
    model = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                     num_layers=2, sample_size=8, patch_size=2, cross_attention_dim=16,
                                     caption_channels=12, use_additional_conditions=False)
    generator = torch.Generator().manual_seed(seed + 100)
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0  # padded caption tokens: PixArt turns this into an additive -10000 bias
    return randomise_weights(model, seed), dict(hidden_states=torch.randn(2, 4, 8, 8, generator=generator),
                                        encoder_hidden_states=torch.randn(2, 5, 12, generator=generator),
                                        timestep=torch.tensor([3.0, 700.0]), encoder_attention_mask=mask)


def tiny_flux(seed: int) -> Built:
    model = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=12,
                                   pooled_projection_dim=10, axes_dims_rope=(4, 6, 6))
    generator = torch.Generator().manual_seed(seed + 100)
    grid = torch.meshgrid(torch.zeros(1), torch.arange(3.0), torch.arange(3.0), indexing="ij")
    return randomise_weights(model, seed), dict(hidden_states=torch.randn(2, 9, 8, generator=generator),
                                        encoder_hidden_states=torch.randn(2, 4, 12, generator=generator),
                                        pooled_projections=torch.randn(2, 10, generator=generator),
                                        timestep=torch.tensor([0.003, 0.7]),
                                        img_ids=torch.stack(grid, -1).reshape(-1, 3), txt_ids=torch.zeros(4, 3))


MODELS: dict[str, Callable[[int], Built]] = {"dit": tiny_dit, "pixart": tiny_pixart, "sd3": tiny_sd3,
                                             "flux": tiny_flux}


def run(built: Built, dtype: torch.dtype) -> ComponentReport:
    model, kwargs = built
    return check_components(model, (), kwargs, dtype=dtype)


# ----------------------------------------------------------------------------------------
# Clean models: no false alarms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_clean_model_conforms_over_seeds(name: str, dtype: torch.dtype) -> None:
    for seed in range(3):
        report = run(MODELS[name](seed), dtype)
        assert report.ok, f"{name} seed {seed}:\n{report}"
        assert len(report.checked) >= 30, report
        assert not report.by_status("unsupported"), report
        for finding in report.checked:
            if finding.status == "conforms":
                assert finding.error <= finding.tolerance.value


def test_float64_run_reports_the_known_float32_islands_apart() -> None:
    """diffusers computes timestep sinusoids, RMSNorm variances, RoPE tables and their application in float32."""
    sd3 = run(tiny_sd3(0), torch.float64)
    assert sd3.ok and sd3.islands
    island_classes = {f.cls for f in sd3.islands}
    assert {"Timesteps", "RMSNorm", "PatchEmbed"} <= island_classes
    assert all(f.fmt == "float32" and f.error <= f.tolerance.value for f in sd3.islands)
    flux = run(tiny_flux(0), torch.float64)
    assert {"FluxPosEmbed", "FluxAttention"} <= {f.cls for f in flux.islands}
    # under strict precision the islands fail the report
    model, kwargs = tiny_sd3(0)
    assert not check_components(model, (), kwargs, dtype=torch.float64, strict_precision=True).ok
    # and a float32 run has no islands
    assert not run(tiny_sd3(0), torch.float32).islands


def test_recognised_classes_cover_the_zoo() -> None:
    classes = set(recognised_classes())
    assert {"Linear", "LayerNorm", "RMSNorm", "GELU", "SiLU", "Conv2d", "Conv3d", "Embedding", "FeedForward",
            "GEGLU", "SwiGLU", "ApproximateGELU", "Timesteps", "TimestepEmbedding", "PatchEmbed",
            "AdaLayerNormZero", "AdaLayerNormContinuous", "Attention", "FluxAttention", "FluxPosEmbed",
            "PixArtAlphaTextProjection", "timm.Attention", "timm.Mlp"} <= classes


# ----------------------------------------------------------------------------------------
# Planted bugs


def failures(report: ComponentReport) -> list[tuple[str, str, list[dict[str, Any]]]]:
    return [(f.name, f.location, f.explanations) for f in report.failures]


def only_failure(report: ComponentReport, name: str) -> Any:
    assert not report.ok, report
    found = report.failures
    assert [f.name for f in found] == [name], f"expected only {name}:\n{report}"
    return found[0]


def patch(module: torch.nn.Module, forward: Callable[..., Any]) -> None:
    module.forward = functools.partial(forward, module)  # an instance attribute: hooks still run


@pytest.mark.parametrize(("dtype", "scale"), [(torch.float64, 0.3), (torch.float32, 0.1)], ids=["float64", "float32"])
def test_planted_layer_norm_eps(dtype: torch.dtype, scale: float) -> None:
    """diffusers DiT's MLP-branch LayerNorm uses eps 1e-5; the planted one uses 1e-6 while its attribute says 1e-5.

    The change moves the output by about (1e-5 - 1e-6) / (2 var) relative: with weights of scale 0.3 the
    input variance is about 10 (4.5e-7 relative, inside float32's tolerance, caught in float64 only); with
    weights of scale 0.1 it is about 0.2 (2e-5 relative), caught in float32 too.
    """
    model, kwargs = tiny_dit(0, scale=scale)
    norm = model.transformer_blocks[0].norm3
    assert norm.eps == 1e-5
    patch(norm, lambda self, x: F.layer_norm(x, self.normalized_shape, self.weight, self.bias, 1e-6))
    finding = only_failure(check_components(model, (), kwargs, dtype=dtype), "transformer_blocks.0.norm3")
    assert finding.status == "mismatch" and finding.location == "transformer_blocks.0.norm3"
    assert {"eps": 1e-6} in finding.explanations


def test_planted_rms_norm_variance_in_bfloat16() -> None:
    """A port that computes RMSNorm's variance in bfloat16 (diffusers: float32 always)."""
    model, kwargs = tiny_sd3(0)
    norm = model.transformer_blocks[1].attn.norm_k

    def forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.to(torch.bfloat16).pow(2).mean(-1, keepdim=True).to(hidden_states.dtype)
        return hidden_states * torch.rsqrt(variance + self.eps) * self.weight

    patch(norm, forward)
    finding = only_failure(check_components(model, (), kwargs, dtype=torch.float32), "transformer_blocks.1.attn.norm_k")
    assert finding.status == "mismatch"
    assert {"variance_format": "bfloat16"} in finding.explanations


def test_planted_gelu_tanh_where_erf_is_expected() -> None:
    """FeedForward(activation_fn='gelu') computing the tanh approximation: inline code of diffusers' GELU."""
    model, kwargs = tiny_dit(0, activation_fn="gelu")
    act = model.transformer_blocks[1].ff.net[0]
    assert act.approximate == "none"
    act.gelu = lambda gate: F.gelu(gate, approximate="tanh")
    finding = only_failure(run((model, kwargs), torch.float32), "transformer_blocks.1.ff.net.0")
    assert finding.status == "inline" and finding.location == "inline code in GELU.forward"
    assert {"activation": "gelu-tanh"} in finding.explanations


def test_planted_adaln_chunk_order_swapped() -> None:
    """AdaLayerNormZero chunking (scale, shift, gate) instead of (shift, scale, gate)."""
    model, kwargs = tiny_dit(0)
    norm = model.transformer_blocks[0].norm1

    def forward(self: Any, x: torch.Tensor, timestep: Any = None, class_labels: Any = None, hidden_dtype: Any = None,
                emb: Any = None) -> tuple[torch.Tensor, ...]:
        emb = self.linear(self.silu(self.emb(timestep, class_labels, hidden_dtype=hidden_dtype)))
        scale_msa, shift_msa, gate_msa, scale_mlp, shift_mlp, gate_mlp = emb.chunk(6, dim=1)
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return x, gate_msa, shift_mlp, scale_mlp, gate_mlp

    patch(norm, forward)
    finding = only_failure(run((model, kwargs), torch.float32), "transformer_blocks.0.norm1")
    assert finding.status == "inline" and finding.location == "inline code in AdaLayerNormZero.forward"
    assert {"order": ("scale_msa", "shift_msa", "gate_msa", "scale_mlp", "shift_mlp", "gate_mlp")} in \
        finding.explanations


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_planted_one_linear_off_by_1e3_relative(dtype: torch.dtype) -> None:
    """One projection's output scaled by 1 + 1e-3: the leaf is the finding, its attention composite conforms."""
    model, kwargs = tiny_flux(0)
    to_k = model.transformer_blocks[0].attn.to_k
    patch(to_k, lambda self, x: F.linear(x, self.weight, self.bias) * (1 + 1e-3))
    finding = only_failure(run((model, kwargs), dtype), "transformer_blocks.0.attn.to_k")
    assert finding.status == "mismatch" and finding.cls == "Linear" and not finding.explanations


def test_planted_timestep_flip_sin_to_cos() -> None:
    """Timesteps returning [sin, cos] while configured flip_sin_to_cos=True."""
    model, kwargs = tiny_sd3(0)
    proj = model.time_text_embed.time_proj
    assert proj.flip_sin_to_cos

    def forward(self: Any, timesteps: torch.Tensor) -> torch.Tensor:
        return get_timestep_embedding(timesteps, self.num_channels, flip_sin_to_cos=False,
                                      downscale_freq_shift=self.downscale_freq_shift, scale=self.scale)

    patch(proj, forward)
    finding = only_failure(run((model, kwargs), torch.float32), "time_text_embed.time_proj")
    assert finding.status == "mismatch" and {"flip_sin_to_cos": False} in finding.explanations


def test_planted_timestep_shift_in_float64_is_a_failure_not_an_island() -> None:
    """downscale_freq_shift 0 where 1 is configured (sd-scripts#1187): far outside even float32's tolerance."""
    model, kwargs = tiny_dit(0)
    proj = model.transformer_blocks[0].norm1.emb.time_proj
    assert proj.downscale_freq_shift == 1

    def forward(self: Any, timesteps: torch.Tensor) -> torch.Tensor:
        return get_timestep_embedding(timesteps, self.num_channels, flip_sin_to_cos=self.flip_sin_to_cos,
                                      downscale_freq_shift=0, scale=self.scale)

    patch(proj, forward)
    report = run((model, kwargs), torch.float64)
    # the module runs twice per forward (once for the model's own timestep embedding): both calls are findings
    assert [f.name for f in report.failures] == ["transformer_blocks.0.norm1.emb.time_proj",
                                                 "transformer_blocks.0.norm1.emb.time_proj#1"], report
    assert all({"downscale_freq_shift": 0.0} in f.explanations for f in report.failures)


class PlantedFluxProcessor(transformer_flux.FluxAttnProcessor):
    """FluxAttnProcessor rewritten with three planted knobs; with the defaults it is the real thing."""

    def __init__(self, qk_across_heads: bool = False, rope_unbind_dim: int = -1, scale_factor: float = 1.0):
        super().__init__()
        self.qk_across_heads, self.rope_unbind_dim, self.scale_factor = qk_across_heads, rope_unbind_dim, scale_factor

    def _norm(self, norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self.qk_across_heads:
            return norm(x)
        heads, head_dim = x.shape[-2:]
        flat = F.rms_norm(x.flatten(-2), (heads * head_dim,), norm.weight.repeat(heads), norm.eps)
        return flat.unflatten(-1, (heads, head_dim))

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, image_rotary_emb: Any = None) -> Any:
        def split(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (-1, attn.head_dim))
        q = self._norm(attn.norm_q, split(attn.to_q(hidden_states)))
        k = self._norm(attn.norm_k, split(attn.to_k(hidden_states)))
        v = split(attn.to_v(hidden_states))
        if encoder_hidden_states is not None:
            q = torch.cat([self._norm(attn.norm_added_q, split(attn.add_q_proj(encoder_hidden_states))), q], dim=1)
            k = torch.cat([self._norm(attn.norm_added_k, split(attn.add_k_proj(encoder_hidden_states))), k], dim=1)
            v = torch.cat([split(attn.add_v_proj(encoder_hidden_states)), v], dim=1)
        if image_rotary_emb is not None:
            q = transformer_flux.apply_rotary_emb(q, image_rotary_emb, sequence_dim=1,
                                                  use_real_unbind_dim=self.rope_unbind_dim)
            k = transformer_flux.apply_rotary_emb(k, image_rotary_emb, sequence_dim=1,
                                                  use_real_unbind_dim=self.rope_unbind_dim)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             scale=self.scale_factor / math.sqrt(attn.head_dim))
        out = out.transpose(1, 2).flatten(2, 3)
        if encoder_hidden_states is None:
            return out
        text, image = out.split_with_sizes([encoder_hidden_states.shape[1], hidden_states.shape[1]], dim=1)
        return attn.to_out[0](image), attn.to_add_out(text)


def flux_with(processor: PlantedFluxProcessor) -> Built:
    model, kwargs = tiny_flux(0)
    model.transformer_blocks[0].attn.set_processor(processor)
    return model, kwargs


def test_planted_flux_processor_without_a_bug_conforms() -> None:
    """The control for the three planted processors below: the rewrite itself is faithful."""
    for dtype in (torch.float32, torch.float64):
        report = run(flux_with(PlantedFluxProcessor()), dtype)
        assert report.ok, report


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_planted_rope_half_split_instead_of_interleaved(dtype: torch.dtype) -> None:
    """In float64 the RoPE application is a float32 island: the knob is judged at float32's tolerance."""
    finding = only_failure(run(flux_with(PlantedFluxProcessor(rope_unbind_dim=-2)), dtype),
                           "transformer_blocks.0.attn")
    assert finding.status == "inline" and finding.location == "inline code in FluxAttention.forward"
    assert {"rope_pairing": "half"} in finding.explanations


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_planted_qk_norm_across_heads_instead_of_per_head(dtype: torch.dtype) -> None:
    finding = only_failure(run(flux_with(PlantedFluxProcessor(qk_across_heads=True)), dtype),
                           "transformer_blocks.0.attn")
    assert finding.status == "inline" and {"qk_norm": "across-heads"} in finding.explanations


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_planted_attention_scale_off_by_1e3(dtype: torch.dtype) -> None:
    finding = only_failure(run(flux_with(PlantedFluxProcessor(scale_factor=1 + 1e-3)), dtype),
                           "transformer_blocks.0.attn")
    assert finding.status == "inline" and not finding.explanations


class NegatedMaskProcessor(AttnProcessor2_0):
    """AttnProcessor2_0 adding the additive mask with the wrong sign (+10000 on padded caption tokens)."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, temb: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states,
                                None if attention_mask is None else -attention_mask, temb)


def test_planted_wrong_mask_sign() -> None:
    model, kwargs = tiny_pixart(0)
    model.transformer_blocks[1].attn2.set_processor(NegatedMaskProcessor())
    finding = only_failure(run((model, kwargs), torch.float32), "transformer_blocks.1.attn2")
    assert finding.status == "inline" and {"mask_sign": -1} in finding.explanations


def test_planted_pixart_scale_shift_table_chunk_order() -> None:
    """PixArt's adaLN-single modulation is inline in BasicTransformerBlock.forward: chunked (scale, shift, gate) there."""
    model, kwargs = tiny_pixart(0)
    block = model.transformer_blocks[0]

    def forward(self: Any, hidden_states: torch.Tensor, attention_mask: Any = None, encoder_hidden_states: Any = None,
                encoder_attention_mask: Any = None, timestep: Any = None, cross_attention_kwargs: Any = None,
                class_labels: Any = None, added_cond_kwargs: Any = None) -> torch.Tensor:
        batch = hidden_states.shape[0]
        scale_msa, shift_msa, gate_msa, scale_mlp, shift_mlp, gate_mlp = (
            self.scale_shift_table[None] + timestep.reshape(batch, 6, -1)).chunk(6, dim=1)
        norm = self.norm1(hidden_states) * (1 + scale_msa) + shift_msa
        hidden_states = gate_msa * self.attn1(norm) + hidden_states
        hidden_states = self.attn2(hidden_states, encoder_hidden_states=encoder_hidden_states,
                                   attention_mask=encoder_attention_mask) + hidden_states
        norm = self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp
        return gate_mlp * self.ff(norm) + hidden_states

    patch(block, forward)
    finding = only_failure(run((model, kwargs), torch.float32), "transformer_blocks.0")
    assert finding.status == "inline" and finding.location == "inline code in BasicTransformerBlock.forward"
    assert {"order": ("scale_msa", "shift_msa", "gate_msa", "scale_mlp", "shift_mlp", "gate_mlp")} in \
        finding.explanations


def test_planted_missing_gate_in_the_dit_block() -> None:
    """A DiT block that forgets gate_mlp (x + ff(...)): inline code of the block, no knob explains it."""
    model, kwargs = tiny_dit(0)
    block = model.transformer_blocks[1]

    def forward(self: Any, hidden_states: torch.Tensor, attention_mask: Any = None, encoder_hidden_states: Any = None,
                encoder_attention_mask: Any = None, timestep: Any = None, cross_attention_kwargs: Any = None,
                class_labels: Any = None, added_cond_kwargs: Any = None) -> torch.Tensor:
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, timestep, class_labels,
                                                                    hidden_dtype=hidden_states.dtype)
        hidden_states = gate_msa.unsqueeze(1) * self.attn1(norm) + hidden_states
        norm = self.norm3(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return self.ff(norm) + hidden_states

    patch(block, forward)
    finding = only_failure(run((model, kwargs), torch.float64), "transformer_blocks.1")
    assert finding.status == "inline" and not finding.explanations


def test_planted_flux_single_block_concatenation_order() -> None:
    """Flux's single-stream block feeding proj_out [mlp, attn] instead of [attn, mlp] (shapes still fit)."""
    model, kwargs = tiny_flux(0)
    block = model.single_transformer_blocks[0]

    def forward(self: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: Any = None, joint_attention_kwargs: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        text_tokens = encoder_hidden_states.shape[1]
        residual = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        norm, gate = self.norm(residual, emb=temb)
        mlp = self.act_mlp(self.proj_mlp(norm))
        attn = self.attn(hidden_states=norm, image_rotary_emb=image_rotary_emb)
        out = residual + gate.unsqueeze(1) * self.proj_out(torch.cat([mlp, attn], dim=2))
        return out[:, :text_tokens], out[:, text_tokens:]

    patch(block, forward)
    finding = only_failure(run((model, kwargs), torch.float32), "single_transformer_blocks.0")
    assert finding.status == "inline" and finding.location == "inline code in FluxSingleTransformerBlock.forward"


# ----------------------------------------------------------------------------------------
# The original DiT layout (timm-style Attention and Mlp, recognised by structure)


def original_dit(attention: Any = None) -> Built:
    from ditcheck.models.dit import DiT
    from ditcheck.reference.dit import DiTConfig, random_dit_params

    config = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4, num_classes=10)
    model = DiT.from_params(config, random_dit_params(config, seed=0), attention=attention)
    generator = torch.Generator().manual_seed(1)
    return model, {"x": torch.randn(2, 4, 8, 8, generator=generator, dtype=torch.float64),
                   "t": torch.tensor([3.0, 700.0], dtype=torch.float64), "y": torch.tensor([1, 10])}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_original_dit_layout_conforms(dtype: torch.dtype) -> None:
    report = run(original_dit(), dtype)
    assert report.ok, report
    checked = {f.cls for f in report.checked}
    assert {"Attention", "Mlp", "Linear", "LayerNorm", "Conv2d", "Embedding", "SiLU"} <= checked


def test_planted_original_dit_attention_scale() -> None:
    """An attention function scaling by 1/D (Alman-Song) instead of 1/sqrt(D): inline in each Attention.forward."""
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, scale=1.0 / q.shape[-1])

    report = run(original_dit(attention), torch.float64)
    assert [f.name for f in report.failures] == ["blocks.0.attn", "blocks.1.attn"], report
    for finding in report.failures:
        assert finding.status == "inline" and finding.location == "inline code in Attention.forward"
        assert {"scale": "1/head_dim"} in finding.explanations


def test_planted_original_dit_timestep_shift() -> None:
    """The original layout computing diffusers' frequencies (divide by half - 1) while configured for DiT's (half)."""
    model, kwargs = original_dit()
    embedder = model.t_embedder
    assert embedder.downscale_freq_shift == 0

    def timestep_embedding(t: torch.Tensor) -> torch.Tensor:
        half = embedder.frequency_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=t.dtype) / (half - 1))
        args = t[:, None] * freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    embedder.timestep_embedding = timestep_embedding
    finding = only_failure(run((model, kwargs), torch.float64), "t_embedder")
    # the sinusoid is computed inline (its Linear and SiLU children conform)
    assert finding.status == "inline" and finding.location == "inline code in TimestepEmbedder.forward"
    assert {"downscale_freq_shift": 1.0} in finding.explanations


# ----------------------------------------------------------------------------------------
# Forks with their own class names: recognised by parameter shapes


class Dense(torch.nn.Module):
    """A fork's linear layer (not a torch.nn.Linear subclass; the DiT code reads .weight, so that name stays)."""

    def __init__(self, linear: torch.nn.Linear, error: float = 0.0):
        super().__init__()
        self.weight = torch.nn.Parameter(linear.weight.detach().clone())
        self.bias = torch.nn.Parameter(linear.bias.detach().clone())
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight.T + self.bias) * (1 + self.error)


def fork_of_original_dit(error_in: str | None = None) -> Built:
    model, kwargs = original_dit()
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, Dense(module, 1e-3 if name == error_in else 0.0))
    return model, kwargs


def test_fork_with_renamed_linear_layers_conforms_and_localises_a_1e3_error() -> None:
    report = run(fork_of_original_dit(), torch.float64)
    assert report.ok, report
    dense = [f for f in report.checked if f.cls == "Dense"]
    assert len(dense) >= 10 and all("by parameter shapes" in f.message for f in dense)
    planted = run(fork_of_original_dit("blocks.1.mlp.fc2"), torch.float64)
    finding = only_failure(planted, "blocks.1.mlp.fc2")
    assert finding.status == "mismatch" and finding.cls == "Dense"


class ScaleNorm(torch.nn.Module):
    """A fork's norm with an unknown class name: RMSNorm (weight ``g``) or LayerNorm (``g``, ``beta``), eps ``epsilon``."""

    def __init__(self, width: int, rms: bool, epsilon: float = 1e-5, bias: bool = False, planted_eps: float | None = None):
        super().__init__()
        self.g = torch.nn.Parameter(torch.randn(width, dtype=torch.float64))
        self.beta = torch.nn.Parameter(torch.randn(width, dtype=torch.float64)) if bias else None
        self.rms, self.epsilon = rms, epsilon
        self.used_eps = epsilon if planted_eps is None else planted_eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rms:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.used_eps) * self.g
        return F.layer_norm(x, x.shape[-1:], self.g, self.beta, self.used_eps)


@pytest.mark.parametrize(("rms", "bias"), [(True, False), (False, True), (False, False)])
def test_fork_norms_are_identified_by_evidence(rms: bool, bias: bool) -> None:
    x = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.01
    report = check_components(ScaleNorm(8, rms, bias=bias), (x,))
    assert report.ok, report
    assert f"kind='{'rms' if rms else 'layer'}'" in report.checked[0].message
    planted = check_components(ScaleNorm(8, rms, bias=bias, planted_eps=1e-6), (x,))
    finding = only_failure(planted, "ScaleNorm")
    assert {"eps": 1e-6} in finding.explanations


# ----------------------------------------------------------------------------------------
# Bad targets and bad input


def test_a_target_that_raises_is_a_failed_check_not_a_crash() -> None:
    model, kwargs = tiny_dit(0)
    kwargs["hidden_states"] = torch.randn(2, 3, 8, 8)  # wrong channel count: the model's conv raises
    report = run((model, kwargs), torch.float32)
    assert not report.ok and report.by_status("error")
    assert "raised" in report.by_status("error")[0].message


def test_a_nan_output_is_a_mismatch() -> None:
    model, kwargs = tiny_dit(0)
    proj = model.proj_out_2
    patch(proj, lambda self, x: F.linear(x, self.weight, self.bias) * float("nan"))
    finding = only_failure(run((model, kwargs), torch.float32), "proj_out_2")
    assert finding.error == math.inf


def test_not_a_module_is_a_typed_error() -> None:
    with pytest.raises(InvalidArgumentError, match="model"):
        check_components(lambda x: x, (torch.zeros(1),))  # type: ignore[arg-type]


def test_report_text_and_dict() -> None:
    model, kwargs = tiny_dit(0)
    patch(model.transformer_blocks[0].norm3,
          lambda self, x: F.layer_norm(x, self.normalized_shape, self.weight, self.bias, 1e-6))
    report = run((model, kwargs), torch.float64)
    text = str(report)
    assert "DISCREPANCY" in text and "transformer_blocks.0.norm3" in text and "eps=1e-06" in text
    data = report.to_dict()
    assert data["ok"] is False and any(f["status"] == "mismatch" for f in data["findings"])


# ----------------------------------------------------------------------------------------
# The zoo: Wan, Sana, CogVideoX, SD3.5 (dual attention), Flux with guidance (tests/targets/zoo_bugs.py)


def run_zoo(built: Built, dtype: torch.dtype) -> ComponentReport:
    """check_components; float64 with oneDNN off: its float64 depthwise convolution (Sana's GLUMBConv) takes
    seconds per call on this CPU, torch's native kernel milliseconds (the same mathematics)."""
    model, kwargs = built
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")  # printed by mkldnn.flags
        with torch.backends.mkldnn.flags(enabled=dtype != torch.float64):
            return check_components(model, (), kwargs, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(zoo_bugs.ZOO_MODELS))
def test_zoo_clean_model_conforms_over_five_seeds(name: str, dtype: torch.dtype) -> None:
    """0 false alarms over 5 seeds, nothing unsupported, every attention call checked. Module calls recognised /
    all calls (float32, seed 0): wan 39/39, sana 39/39, cogvideox 37/37, sd35 84/84, flux-guidance 70/70, pixart 52/52,
    hunyuan-video 95/99 (token refiner wrapper, condition embedder, model glue not yet), ltx-video 38/39,
    hunyuan-dit 124/127 (its embedders not yet), lumina2 69/73, aura-flow 59/62,
    allegro 34/35, mochi 49/53 (its RoPE tables and embedders not yet)."""
    for seed in range(5):
        report = run_zoo(zoo_bugs.ZOO_MODELS[name](seed), dtype)
        assert report.ok, f"{name} seed {seed}:\n{report}"
        assert not report.by_status("unsupported"), report
        attention = [f for f in report.findings
                     if f.cls in ("Attention", "FluxAttention", "WanAttention", "LTXAttention", "MochiAttention")]
        assert attention and all(f.status in ("conforms", "precision") for f in attention), report
        for finding in report.checked:
            assert finding.error <= finding.tolerance.value, finding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(zoo_bugs.ZOO_BUGS))
def test_zoo_planted_bug_is_the_first_failure_with_its_diagnosis(name: str, dtype: torch.dtype) -> None:
    bug = zoo_bugs.ZOO_BUGS[name]
    report = run_zoo(bug.build(0), dtype)
    assert report.failures, f"{name} not caught:\n{report}"
    first = report.failures[0]
    assert (first.name, first.status) == (bug.finding, bug.status), f"{name}:\n{report}"
    if bug.explanation is None:
        assert not first.explanations, first
    else:
        assert bug.explanation in first.explanations, first
    assert [f.name for f in report.failures] == [bug.finding], report  # nothing downstream blamed


def test_zoo_bug_corpus_spans_eight_kinds_and_four_architectures() -> None:
    bugs = zoo_bugs.ZOO_BUGS.values()
    assert len(zoo_bugs.ZOO_BUGS) >= 8 and len({b.architecture for b in bugs}) >= 4
    knobs = {next(iter(b.explanation)) for b in bugs if b.explanation}
    assert {"flip_sin_to_cos", "downscale_freq_shift", "order", "rope_pairing", "guidance_scale", "qk_norm",
            "mask"} <= knobs
    assert any(b.explanation is None for b in bugs)  # the subtle 1e-3 one


@pytest.mark.parametrize("name", list(zoo_bugs.CONTROLS))
def test_zoo_rewritten_processors_without_a_bug_conform(name: str) -> None:
    """The controls for the planted processors: the rewrites themselves are faithful."""
    for dtype in (torch.float32, torch.float64):
        report = run_zoo(zoo_bugs.CONTROLS[name](0), dtype)
        assert report.ok, report


def test_zoo_two_conventions_crossed_at_once_are_named_as_a_pair() -> None:
    """Wan's RoPE tables built with theta 256 and half-split channel order: no single knob explains it, the pair does."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    model, kwargs = zoo_bugs.tiny_wan(0)
    rope: WanRotaryPosEmbed = model.rope
    tables = [get_1d_rotary_pos_embed(d, rope.max_seq_len, 256.0, use_real=True, repeat_interleave_real=False,
                                      freqs_dtype=torch.float64) for d in (rope.t_dim, rope.h_dim, rope.w_dim)]
    rope.freqs_cos = torch.cat([c for c, _ in tables], dim=1)
    rope.freqs_sin = torch.cat([s for _, s in tables], dim=1)
    report = run_zoo((model, kwargs), torch.float32)
    assert [f.name for f in report.failures][:1] == ["rope"], report
    assert report.failures[0].explanations == [{"theta": 256.0, "pairing": "half"}], report.failures[0]
