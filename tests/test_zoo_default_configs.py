"""ditcheck.validate.zoo on diffusers classes built as users build them: diffusers' DEFAULT configuration, only the
layer counts cut (issue 16), not ditcheck's tiny configurations.

The inputs are derived from the config a real model has (PixArt-alpha's size micro-conditions when sample_size is
128, Latte's video_length frames, Kandinsky 6 SR's 2C + 1 latent channels), and the component engine models what the
defaults switch on (PixArt's resolution / aspect-ratio embedding, PixArt without a caption projection, CogVideoX's
sin-cos positional table). Whole-class
validations at real widths take minutes on the shared 2-core machine: they are audit-marked; the fast tests build
the default class, run one forward on ditcheck's inputs, and check the newly modelled components at the real width
with planted bugs.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from ditcheck.validate import dit  # noqa: E402
from ditcheck.validate import zoo  # noqa: E402
from ditcheck.validate._zoo_default_configs import default_config  # noqa: E402
from ditcheck.validate.components import check_components  # noqa: E402

logging.getLogger("diffusers").setLevel(logging.ERROR)

#: class -> the kwargs it is built with: diffusers' defaults, the layer counts cut to 1 (the sweep tool's own rule,
#: python -m ditcheck.validate._zoo_default_configs, so the two cannot drift apart)
DEFAULT_CUT: dict[str, dict[str, Any]] = {name: default_config(name) for name in (
    "PixArtTransformer2DModel",  # sample_size 128: use_additional_conditions resolves to True
    "Kandinsky6SRTransformer3DModel",  # in_visual_dim 64: latents of 2 x 64 + 1 channels
    "LatteTransformer3DModel")}  # diffusers leaves channels, patch and caption width None: maxin-cn/Latte-1's


def _build(name: str, seed: int = 0) -> torch.nn.Module:
    """The class at its default config with diffusers' own initialisation (the shape tests need no random draw of
    tens of millions of weights)."""
    torch.manual_seed(seed)
    return getattr(diffusers, name)(**DEFAULT_CUT[name]).eval()


@pytest.fixture(scope="module")
def pixart() -> torch.nn.Module:
    return _build("PixArtTransformer2DModel")


@pytest.fixture(scope="module")
def adaln_call(pixart: torch.nn.Module) -> dict[str, Any]:
    """adaln_single's arguments in a PixArt forward on ditcheck's inputs."""
    _, kwargs = zoo.build_inputs(pixart, seed=2)
    return {"timestep": kwargs["timestep"], "added_cond_kwargs": kwargs["added_cond_kwargs"],
            "batch_size": zoo.BATCH, "hidden_dtype": torch.float32}


def _adaln_single(pixart: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A fresh AdaLayerNormSingle as the default PixArt builds it (its inner width 16 x 72, size conditions on), every
    weight drawn N(0, 0.3^2) as zoo.validate draws them."""
    from diffusers.models.normalization import AdaLayerNormSingle

    module = AdaLayerNormSingle(pixart.inner_dim, use_additional_conditions=pixart.use_additional_conditions)
    return zoo.randomise_weights(module, seed).eval()


def _output(model: torch.nn.Module, kwargs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out.sample


# --- inputs built from the default config ---------------------------------------------------------------------------


def test_pixart_default_inputs_carry_the_pipelines_size_conditions(pixart: torch.nn.Module) -> None:
    """sample_size 128 -> use_additional_conditions: resolution (h, w) in pixels and h / w, as PixArtAlphaPipeline
    makes them, from a non-square latent (so that (h, w) and (w, h) differ); the forward accepts them."""
    assert pixart.use_additional_conditions and pixart.config.use_additional_conditions is None
    _, kwargs = zoo.build_inputs(pixart, seed=1)
    latents, conditions = kwargs["hidden_states"], kwargs["added_cond_kwargs"]
    height, width = latents.shape[-2:]
    assert height != width
    assert conditions["resolution"].tolist() == [[8.0 * height, 8.0 * width]] * zoo.BATCH
    assert torch.allclose(conditions["aspect_ratio"], torch.full((zoo.BATCH, 1), height / width))
    assert conditions["resolution"].dtype == latents.dtype == torch.float32
    out = _output(pixart, kwargs)
    assert out.shape == (zoo.BATCH, 8, height, width) and torch.isfinite(out).all()


def test_tiny_pixart_without_size_conditions_gets_none() -> None:
    """The tiny config states use_additional_conditions=False: no added_cond_kwargs, square latents as before."""
    model = zoo.build_model("PixArtTransformer2DModel")
    _, kwargs = zoo.build_inputs(model)
    assert "added_cond_kwargs" not in kwargs and kwargs["hidden_states"].shape[-2] == kwargs["hidden_states"].shape[-1]


def test_kandinsky6_sr_default_latents_have_2c_plus_1_channels() -> None:
    """The super-resolution input is [noisy latents C | low-resolution condition C | anchor mask 1], C =
    in_visual_dim (64 by default; the tiny config's 4 gave the 9 channels once hard-coded)."""
    model = _build("Kandinsky6SRTransformer3DModel")
    _, kwargs = zoo.build_inputs(model)
    assert kwargs["hidden_states"].shape[-1] == 2 * 64 + 1
    out = _output(model, kwargs)
    assert out.shape == kwargs["hidden_states"].shape[:-1] + (model.config.out_visual_dim,)
    assert zoo.build_inputs(zoo.build_model("Kandinsky6SRTransformer3DModel"))[1]["hidden_states"].shape[-1] == 9


def test_latte_default_latents_have_video_length_frames() -> None:
    """Latte adds its whole temporal position table (video_length rows, 16 in Latte-1) to the frames."""
    model = _build("LatteTransformer3DModel")
    _, kwargs = zoo.build_inputs(model)
    assert kwargs["hidden_states"].shape[2] == model.config.video_length == 16
    out = _output(model, kwargs)
    assert out.shape[2] == 16 and out.shape[1] == 8 and torch.isfinite(out).all()


def test_cosmos_default_gets_the_pipelines_padding_mask() -> None:
    """concat_padding_mask (the default) -> padding_mask zeros(1, 1, height, width) in pixels, as the Cosmos pipelines
    pass it (its forward then resizes it with torchvision, an optional diffusers dependency; built on the meta device:
    the inputs need only the config)."""
    with torch.device("meta"):
        model = diffusers.CosmosTransformer3DModel(num_layers=1)
    assert model.config.concat_padding_mask
    _, kwargs = zoo.build_inputs(model)
    size = kwargs["hidden_states"].shape[-1]
    assert kwargs["padding_mask"].shape == (1, 1, 8 * size, 8 * size) and not kwargs["padding_mask"].any()
    tiny = zoo.build_inputs(zoo.build_model("CosmosTransformer3DModel"))[1]
    assert "padding_mask" not in tiny  # concat_padding_mask=False


def test_framepack_default_gets_the_required_image_embeds() -> None:
    """Framepack's forward requires image_embeds; at the default config (has_image_proj False) they are still given
    at image_proj_dim, so that a run reports the class's own behaviour instead of "no rule for image_embeds"."""
    with torch.device("meta"):
        model = diffusers.HunyuanVideoFramepackTransformer3DModel(num_layers=1, num_single_layers=1)
    assert not model.config.has_image_proj
    _, kwargs = zoo.build_inputs(model)
    assert kwargs["image_embeds"].shape[::2] == (zoo.BATCH, model.config.image_proj_dim)


# --- the newly modelled components at the real width, with planted bugs ---------------------------------------------


def _finding(report: Any, cls: str) -> Any:
    found = [f for f in report.findings if f.cls == cls]
    assert len(found) == 1, str(report)
    return found[0]


def test_size_conditioned_adaln_single_conforms_at_pixart_width(pixart: torch.nn.Module, adaln_call: Any) -> None:
    """AdaLayerNormSingle(1152, use_additional_conditions=True): the combined embedder (t + concat(resolution,
    aspect-ratio embeddings)) and the pass-through of added_cond_kwargs are recomputed and conform."""
    assert pixart.inner_dim == 1152
    report = check_components(_adaln_single(pixart, 1), (), adaln_call)
    assert report.ok, str(report)
    combined = _finding(report, "PixArtAlphaCombinedTimestepSizeEmbeddings")
    assert combined.status == "conforms" and combined.error is not None, str(report)
    assert _finding(report, "AdaLayerNormSingle").status == "conforms"
    assert len([f for f in report.findings if f.cls == "Timesteps"]) == 3  # t, then the two size sinusoids


def _planted(embedder: torch.nn.Module, bug: str) -> None:
    """diffusers' PixArtAlphaCombinedTimestepSizeEmbeddings.forward with one bug, bound to this instance."""
    def forward(timestep: torch.Tensor, resolution: torch.Tensor, aspect_ratio: torch.Tensor, batch_size: int,
                hidden_dtype: torch.dtype) -> torch.Tensor:
        t_emb = embedder.timestep_embedder(embedder.time_proj(timestep).to(dtype=hidden_dtype))
        if bug == "width, height":
            resolution = resolution.flip(-1)
        res = embedder.additional_condition_proj(resolution.flatten()).to(hidden_dtype)
        res = embedder.resolution_embedder(res).reshape(batch_size, -1)
        ar = embedder.additional_condition_proj(aspect_ratio.flatten()).to(hidden_dtype)
        ar = embedder.aspect_ratio_embedder(ar).reshape(batch_size, -1)
        if bug == "aspect ratio ignored":
            ar = torch.zeros_like(ar)
        return t_emb + torch.cat([res, ar], dim=1)
    embedder.forward = forward


@pytest.mark.parametrize(("seed", "planted", "explanation"), [
    (3, "width, height", {"resolution_order": "width, height"}),  # each (h, w) pair embedded as (w, h)
    (4, "aspect ratio ignored", None),  # no knob explains it: the error itself must be far above tolerance
], ids=["resolution-read-as-width-height", "aspect-ratio-ignored"])
def test_planted_size_condition_bugs_are_caught(pixart: torch.nn.Module, adaln_call: Any, seed: int, planted: str,
                                                explanation: dict[str, str] | None) -> None:
    """A fork's size conditioning: the sinusoid's input differs from resolution.flatten() (the image is not square)
    or the aspect ratio never reaches the sum; an inline fault of the combined embedder either way."""
    module = _adaln_single(pixart, seed)
    _planted(module.emb, planted)
    report = check_components(module, (), adaln_call)
    assert not report.ok
    first = report.failures[0]
    assert first.cls == "PixArtAlphaCombinedTimestepSizeEmbeddings" and first.status == "inline", str(report)
    if explanation is not None:
        assert explanation in first.explanations, str(report)
    else:
        assert first.error is not None and first.error > 10 * first.tolerance.value


def test_clean_planted_forward_conforms(pixart: torch.nn.Module, adaln_call: Any) -> None:
    """The planting harness itself (diffusers' code re-bound, no bug) conforms: the failures above are the bugs."""
    module = _adaln_single(pixart, 5)
    _planted(module.emb, "none")
    assert check_components(module, (), adaln_call).ok


def _tiny_size_conditioned_pixart(seed: int = 0) -> torch.nn.Module:
    """PixArt with the size conditions at a tiny width (inner dim 24, divisible by 3 as the size embeddings need) and
    no caption projection (diffusers' default): the model glue runs in a second."""
    torch.manual_seed(seed)
    model = diffusers.PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=12, in_channels=4,
                                               out_channels=8, num_layers=1, sample_size=8, patch_size=2,
                                               cross_attention_dim=24, use_additional_conditions=True)
    return zoo.randomise_weights(model, seed).eval()


def test_pixart_model_glue_with_size_conditions_and_no_caption_projection_conforms() -> None:
    model = _tiny_size_conditioned_pixart()
    _, kwargs = zoo.build_inputs(model, seed=6, name="PixArtTransformer2DModel")
    report = check_components(model, (), kwargs)
    assert report.ok, str(report)
    assert _finding(report, "PixArtTransformer2DModel").status == "conforms", str(report)


def test_pixart_model_passing_swapped_resolution_is_caught() -> None:
    """The model forward handing adaln_single (w, h) pairs: the model glue's pass-through check fails (inline)."""
    model = _tiny_size_conditioned_pixart(seed=7)
    original = model.forward

    def forward(hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                timestep: torch.Tensor | None = None, added_cond_kwargs: dict[str, torch.Tensor] | None = None,
                cross_attention_kwargs: dict[str, Any] | None = None, attention_mask: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None, return_dict: bool = True) -> Any:
        swapped = {**added_cond_kwargs, "resolution": added_cond_kwargs["resolution"].flip(-1)}
        return original(hidden_states, encoder_hidden_states, timestep, swapped, cross_attention_kwargs,
                        attention_mask, encoder_attention_mask, return_dict)
    model.forward = forward
    _, kwargs = zoo.build_inputs(model, seed=8, name="PixArtTransformer2DModel")
    report = check_components(model, (), kwargs)
    assert not report.ok
    first = report.failures[0]
    assert first.cls == "PixArtTransformer2DModel" and first.status == "inline", str(report)


@pytest.fixture(scope="module")
def cogvideox() -> torch.nn.Module:
    """CogVideoX at diffusers' default config (CogVideoX-2b: a sin-cos positional table, no RoPE), 1 layer."""
    torch.manual_seed(0)
    return diffusers.CogVideoXTransformer3DModel(num_layers=1).eval()


def _patch_embed_call(model: torch.nn.Module, seed: int) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    """The model's patch_embed with random weights, and its arguments (text states, latents) on ditcheck's inputs."""
    module = zoo.randomise_weights(model.patch_embed, seed)
    _, kwargs = zoo.build_inputs(model, seed=seed)
    return module, (kwargs["encoder_hidden_states"], kwargs["hidden_states"])


def test_cogvideox_default_patch_embed_with_positional_table_conforms(cogvideox: torch.nn.Module) -> None:
    """use_positional_embeddings (the default): [text, image] tokens + the joint 3-D sin-cos table are recomputed
    (recognised, configuration not modelled before)."""
    assert cogvideox.patch_embed.use_positional_embeddings and cogvideox.patch_embed.spatial_interpolation_scale != 1
    module, args = _patch_embed_call(cogvideox, 9)
    report = check_components(module, args)
    assert report.ok, str(report)
    finding = _finding(report, "CogVideoXPatchEmbed")
    assert finding.status == "conforms" and finding.error is not None, str(report)


def test_cogvideox_table_without_spatial_interpolation_scale_is_caught(cogvideox: torch.nn.Module,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork building the table at integer grid positions (spatial_interpolation_scale 1.875 ignored): caught as the
    patch embedding's inline code, not explained by dropping the table."""
    from diffusers.models import embeddings

    module, args = _patch_embed_call(cogvideox, 10)
    real = embeddings.get_3d_sincos_pos_embed

    def unscaled(embed_dim: int, spatial_size: Any, temporal_size: int, spatial_interpolation_scale: float = 1.0,
                 *rest: Any, **options: Any) -> torch.Tensor:
        return real(embed_dim, spatial_size, temporal_size, 1.0, *rest, **options)
    monkeypatch.setattr(embeddings, "get_3d_sincos_pos_embed", unscaled)
    report = check_components(module, args)
    assert not report.ok
    first = report.failures[0]
    assert first.cls == "CogVideoXPatchEmbed" and first.status == "inline", str(report)
    assert first.error > 100 * first.tolerance.value and not first.explanations, str(report)


# --- whole classes at the default config (minutes at real widths on the shared machine) ----------------------------


def _whole_class_params() -> list[Any]:
    """The issue's own example (PixArt default, float32: 8 s measured on the loaded 2-core machine) runs by default;
    the rest are audits (PixArt float64 19 s, Latte and Kandinsky 6 SR minutes)."""
    return [pytest.param(name, dtype, id=f"{name}-{dtype}",
                         marks=[] if (name, dtype) == ("PixArtTransformer2DModel", "float32") else [pytest.mark.audit])
            for name in sorted(DEFAULT_CUT) for dtype in ("float32", "float64")]


@pytest.mark.parametrize(("name", "dtype"), _whole_class_params())
def test_default_config_class_conforms(name: str, dtype: str) -> None:
    # built by validate from the factory: its own random weights drawn in place, no deep copy of a real-width model
    report = dit(lambda: getattr(diffusers, name)(**DEFAULT_CUT[name]), examples=1, dtype=dtype, timeout=1200)
    assert report.ok and report.exit_code == 0, str(report)
    assert not any("configuration not modelled" in note and name in note for note in report.notes), str(report)
