"""The whole DiT (Peebles & Xie 2023; facebookresearch/DiT models.py), readable top to bottom, in every precision.

Parameters are a flat dict keyed by the original DiT state-dict names, so a torch
``DiT.state_dict()`` (converted to float64 NumPy) can be passed as is, and every
intermediate activation is named after the torch submodule whose forward hook sees it.
Every convention that forks vary is a field of :class:`DiTConfig` (docs/conventions.md#dit-layout);
the defaults reproduce the original DiT, and :data:`DIFFUSERS_DIT_KNOBS` turns a config
into diffusers' DiTTransformer2DModel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .attention import multi_head_attention
from .errors import DTypeError, InvalidArgumentError, ShapeError
from .latent import ld2_score
from .layers import (GELU_APPROXIMATIONS, layer_norm, linear, mlp, modulate, patchify, pos_embed_2d,
                     require_grid, silu, timestep_embedding, unpatchify)
from .precision import Precision, reference_function, require_choice, require_positive_int, require_real
from .schedules import Schedule, get_schedule

__all__ = [
    "check_params",
    "DiTConfig",
    "ADALN_CHUNK_ORDER",
    "FINAL_ADALN_CHUNK_ORDER",
    "DIFFUSERS_DIT_KNOBS",
    "dit_param_shapes",
    "random_dit_params",
    "zero_adaln",
    "timestep_embedder",
    "dit_block",
    "final_layer",
    "dit_forward",
    "dit_intermediates",
    "dit_block_intermediates",
    "final_layer_intermediates",
    "dit_latent_score",
]

ADALN_CHUNK_ORDER = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
FINAL_ADALN_CHUNK_ORDER = ("shift", "scale")

#: The two knobs that make the original DiT compute what diffusers' DiTTransformer2DModel computes
#: (docs/conventions.md#diffusers: Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1); MLP-branch norm_eps 1e-5).
DIFFUSERS_DIT_KNOBS: dict[str, Any] = {"downscale_freq_shift": 1.0, "ln_eps_mlp": 1e-5}


@dataclass(frozen=True)
class DiTConfig:
    """Architecture and convention knobs of a DiT; the knob defaults are facebookresearch/DiT's.

    input_size: latent H = W, or (H, W) for non-square latents. num_classes = 0 means an
    unconditional model (no y_embedder); otherwise the label table has num_classes + 1 rows,
    the last one the null class of classifier-free guidance.
    """

    input_size: int | tuple[int, int]
    patch_size: int
    in_channels: int
    hidden_size: int
    depth: int
    num_heads: int
    num_classes: int
    mlp_ratio: float = 4.0
    learn_sigma: bool = True
    ln_eps_attn: float = 1e-6
    ln_eps_mlp: float = 1e-6
    ln_eps_final: float = 1e-6
    gelu_approximate: str = "tanh"
    frequency_dim: int = 256
    max_period: float = 10000.0
    flip_sin_to_cos: bool = True
    downscale_freq_shift: float = 0.0
    time_scale: float = 1.0
    pos_embed_max_period: float = 10000.0
    attention_scale: float | None = None
    qkv_order: str = "qkv"
    adaln_chunk_order: tuple[str, ...] = ADALN_CHUNK_ORDER
    final_adaln_chunk_order: tuple[str, ...] = FINAL_ADALN_CHUNK_ORDER

    def __post_init__(self) -> None:
        height, width = require_grid(self.input_size, "input_size")
        for name in ("patch_size", "in_channels", "hidden_size", "depth", "num_heads", "frequency_dim"):
            require_positive_int(getattr(self, name), name)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)) \
                or self.num_classes < 0:
            raise InvalidArgumentError("num_classes", "a non-negative integer (0: unconditional)",
                                       repr(self.num_classes))
        if height % self.patch_size or width % self.patch_size:
            raise InvalidArgumentError("input_size", f"sides divisible by patch_size={self.patch_size}",
                                       repr(self.input_size))
        if self.hidden_size % self.num_heads:
            raise InvalidArgumentError("num_heads", f"a divisor of hidden_size={self.hidden_size}",
                                       repr(self.num_heads))
        if self.hidden_size % 4:
            raise InvalidArgumentError("hidden_size", "a multiple of 4 (the 2-D sin-cos position embedding)",
                                       repr(self.hidden_size))
        require_real(self.mlp_ratio, "mlp_ratio", low=0.0, low_inclusive=False)
        if int(self.hidden_size * self.mlp_ratio) < 1:
            raise InvalidArgumentError("mlp_ratio", "a ratio giving at least one MLP hidden unit",
                                       repr(self.mlp_ratio))
        for name in ("ln_eps_attn", "ln_eps_mlp", "ln_eps_final"):
            require_real(getattr(self, name), name, low=0.0, low_inclusive=False)
        for name in ("learn_sigma", "flip_sin_to_cos"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InvalidArgumentError(name, "a bool", repr(getattr(self, name)))
        require_choice(self.gelu_approximate, GELU_APPROXIMATIONS, "gelu_approximate")
        require_real(self.max_period, "max_period", low=0.0, low_inclusive=False)
        require_real(self.pos_embed_max_period, "pos_embed_max_period", low=0.0, low_inclusive=False)
        shift = require_real(self.downscale_freq_shift, "downscale_freq_shift")
        if not self.frequency_dim // 2 - shift > 0:
            raise InvalidArgumentError("downscale_freq_shift", f"less than frequency_dim // 2 = "
                                       f"{self.frequency_dim // 2}", repr(self.downscale_freq_shift))
        require_real(self.time_scale, "time_scale")
        if self.attention_scale is not None:
            require_real(self.attention_scale, "attention_scale")
        if not isinstance(self.qkv_order, str) or sorted(self.qkv_order) != ["k", "q", "v"]:
            raise InvalidArgumentError("qkv_order", "a permutation of 'qkv'", repr(self.qkv_order))
        for name, names in (("adaln_chunk_order", ADALN_CHUNK_ORDER),
                            ("final_adaln_chunk_order", FINAL_ADALN_CHUNK_ORDER)):
            order = getattr(self, name)
            if not isinstance(order, (tuple, list)) or sorted(order) != sorted(names):
                raise InvalidArgumentError(name, f"a permutation of {names}", repr(order))
            object.__setattr__(self, name, tuple(order))

    @property
    def latent_size(self) -> tuple[int, int]:
        """(H, W) of the latent image."""
        return require_grid(self.input_size, "input_size")

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) = (H/p, W/p), the token grid."""
        height, width = self.latent_size
        return height // self.patch_size, width // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def out_channels(self) -> int:
        """2C with learn_sigma (noise prediction first, then variance values), else C."""
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def replace(self, **changes: Any) -> DiTConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------------------
# Parameters


def dit_param_shapes(config: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Every DiT state-dict entry and its shape, in the order of DiT.state_dict()."""
    d, p, c = config.hidden_size, config.patch_size, config.in_channels
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, config.num_tokens, d),
        "x_embedder.proj.weight": (d, c, p, p),
        "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, config.frequency_dim),
        "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d),
        "t_embedder.mlp.2.bias": (d,),
    }
    if config.num_classes:
        shapes["y_embedder.embedding_table.weight"] = (config.num_classes + 1, d)
    for i in range(config.depth):
        block = f"blocks.{i}"
        shapes.update({
            f"{block}.attn.qkv.weight": (3 * d, d), f"{block}.attn.qkv.bias": (3 * d,),
            f"{block}.attn.proj.weight": (d, d), f"{block}.attn.proj.bias": (d,),
            f"{block}.mlp.fc1.weight": (config.mlp_hidden, d), f"{block}.mlp.fc1.bias": (config.mlp_hidden,),
            f"{block}.mlp.fc2.weight": (d, config.mlp_hidden), f"{block}.mlp.fc2.bias": (d,),
            f"{block}.adaLN_modulation.1.weight": (6 * d, d), f"{block}.adaLN_modulation.1.bias": (6 * d,),
        })
    out_features = p * p * config.out_channels
    shapes.update({
        "final_layer.linear.weight": (out_features, d), "final_layer.linear.bias": (out_features,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
    })
    return shapes


def _check_config(config: Any) -> DiTConfig:
    if not isinstance(config, DiTConfig):
        raise InvalidArgumentError("config", "a DiTConfig", type(config).__name__)
    return config


def random_dit_params(config: DiTConfig, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Random float64 DiT parameters with every weight non-zero, adaLN included (zero adaLN makes checks vacuous).

    Weights and biases are N(0, (scale/sqrt(fan_in))^2), label embeddings N(0, scale^2), so every
    pre-activation stays O(scale); pos_embed is DiT's fixed 2-D sin-cos table.
    """
    config = _check_config(config)
    scale = require_real(scale, "scale", low=0.0, low_inclusive=False)
    rng = np.random.default_rng(seed)
    shapes = dit_param_shapes(config)
    params: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name == "pos_embed":
            embedding = pos_embed_2d(config.hidden_size, config.grid, config.pos_embed_max_period)
            params[name] = embedding[None].astype(np.float64)
        elif name.endswith("embedding_table.weight"):
            params[name] = scale * rng.standard_normal(shape)
        else:
            weight_name = name.removesuffix("bias") + "weight" if name.endswith(".bias") else name
            weight_shape = shapes[weight_name]
            fan_in = math.prod(weight_shape[1:])
            params[name] = scale / math.sqrt(fan_in) * rng.standard_normal(shape)
    return params


def zero_adaln(params: Mapping[str, np.ndarray], config: DiTConfig) -> dict[str, np.ndarray]:
    """DiT.initialize_weights' adaLN-Zero: every adaLN_modulation and final_layer.linear set to 0 (so DiT(x) = 0)."""
    config = _check_config(config)
    zeroed = dict(params)
    for name in dit_param_shapes(config):
        if ".adaLN_modulation." in name or name.startswith("final_layer.linear."):
            zeroed[name] = np.zeros_like(np.asarray(params[name], dtype=np.float64))
    return zeroed


def _check_entries(params: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Every expected state-dict entry is present with its shape."""
    missing = [name for name in expected if name not in params]
    if missing:
        raise InvalidArgumentError("params", f"every DiT state-dict entry needed (missing {missing[:3]})",
                                   f"{len(params)} entries")
    for name, shape in expected.items():
        if np.shape(params[name]) != shape:
            raise ShapeError(f"params[{name!r}]", f"shape {shape}", str(np.shape(params[name])))


def check_params(params: Mapping[str, Any], config: DiTConfig) -> None:
    """Exactly the state dict of this config: nothing missing, nothing extra, every shape right."""
    shapes = dit_param_shapes(config)
    _check_entries(params, shapes)
    unexpected = [name for name in params if name not in shapes]
    if unexpected:
        raise InvalidArgumentError("params", "only DiT state-dict entries for this config",
                                   f"unexpected {unexpected[:3]}")


def _entries_under(config: DiTConfig, prefix: str, renamed: str | None = None) -> dict[str, tuple[int, ...]]:
    """The state-dict entries of one submodule (``prefix``), optionally renamed to another prefix."""
    return {(renamed or prefix) + name.removeprefix(prefix): shape
            for name, shape in dit_param_shapes(config).items() if name.startswith(prefix)}


def _check_tokens(x: Any, c: Any, hidden: int) -> None:
    if np.ndim(x) != 3 or np.shape(x)[-1] != hidden:
        raise ShapeError("x", f"shape [N, T, {hidden}] (tokens)", str(np.shape(x)))
    if np.shape(c) != (np.shape(x)[0], hidden):
        raise ShapeError("c", f"shape ({np.shape(x)[0]}, {hidden}), one conditioning row per sample",
                         str(np.shape(c)))


def _check_labels(y: Any, config: DiTConfig, batch: int) -> np.ndarray | None:
    """Class labels as an int array [N] in 0..num_classes (num_classes = the null class), or None."""
    if y is None:
        return None
    if not config.num_classes:
        raise InvalidArgumentError("y", "None: config.num_classes is 0 (unconditional model)", "labels")
    labels = np.asarray(y)
    if labels.dtype.kind not in "iu":
        raise DTypeError("y", "integer class labels (torch Embedding indices)", str(labels.dtype))
    if labels.shape != (batch,):
        raise ShapeError("y", f"shape ({batch},), one label per sample", str(labels.shape))
    if labels.size and (labels.min() < 0 or labels.max() > config.num_classes):
        raise InvalidArgumentError("y", f"labels in 0..{config.num_classes} ({config.num_classes} = null class)",
                                   f"values from {labels.min()} to {labels.max()}")
    return labels.astype(np.int64)


def _check_inputs(x: Any, t: Any, config: DiTConfig) -> int:
    expected = (config.in_channels, *config.latent_size)
    if np.ndim(x) != 4 or np.shape(x)[1:] != expected:
        raise ShapeError("x", f"shape [N, {expected[0]}, {expected[1]}, {expected[2]}] (latents)", str(np.shape(x)))
    batch = np.shape(x)[0]
    if np.shape(t) != (batch,):
        raise ShapeError("t", f"shape ({batch},), one timestep per sample", str(np.shape(t)))
    return batch


# ----------------------------------------------------------------------------------------
# The model


Record = dict[str, Any] | None


def _keep(record: Record, name: str, value: Any) -> Any:
    if record is not None:
        record[name] = value
    return value


def _adaln_chunks(xp: Precision, c: Any, params: Mapping[str, Any], prefix: str, order: tuple[str, ...],
                  record: Record) -> dict[str, Any]:
    """adaLN_modulation = Sequential(SiLU, Linear) at ``prefix``, chunked along features in ``order``."""
    modulation = linear.generic(xp, silu.generic(xp, c), params[f"{prefix}.adaLN_modulation.1.weight"],
                                params[f"{prefix}.adaLN_modulation.1.bias"])
    _keep(record, f"{prefix}.adaLN_modulation", modulation)
    width = np.shape(modulation)[-1] // len(order)
    return {name: modulation[:, i * width:(i + 1) * width] for i, name in enumerate(order)}


def _timestep_embedder(xp: Precision, t: Any, params: Mapping[str, Any], config: DiTConfig) -> Any:
    frequencies = timestep_embedding.generic(
        xp, t, config.frequency_dim, max_period=config.max_period, flip_sin_to_cos=config.flip_sin_to_cos,
        downscale_freq_shift=config.downscale_freq_shift, time_scale=config.time_scale)
    hidden = linear.generic(xp, frequencies, params["t_embedder.mlp.0.weight"], params["t_embedder.mlp.0.bias"])
    return linear.generic(xp, silu.generic(xp, hidden), params["t_embedder.mlp.2.weight"],
                          params["t_embedder.mlp.2.bias"])


def _dit_block(xp: Precision, x: Any, c: Any, params: Mapping[str, Any], prefix: str, config: DiTConfig,
               record: Record) -> Any:
    m = _adaln_chunks(xp, c, params, prefix, config.adaln_chunk_order, record)
    normed = _keep(record, f"{prefix}.norm1", layer_norm.generic(xp, x, None, None, config.ln_eps_attn))
    attended = multi_head_attention.generic(
        xp, modulate.generic(xp, normed, m["shift_msa"], m["scale_msa"]),
        params[f"{prefix}.attn.qkv.weight"], params[f"{prefix}.attn.qkv.bias"],
        params[f"{prefix}.attn.proj.weight"], params[f"{prefix}.attn.proj.bias"],
        config.num_heads, scale=config.attention_scale, qkv_order=config.qkv_order)
    x = x + m["gate_msa"][:, None, :] * _keep(record, f"{prefix}.attn", attended)
    normed = _keep(record, f"{prefix}.norm2", layer_norm.generic(xp, x, None, None, config.ln_eps_mlp))
    transformed = mlp.generic(xp, modulate.generic(xp, normed, m["shift_mlp"], m["scale_mlp"]),
                              params[f"{prefix}.mlp.fc1.weight"], params[f"{prefix}.mlp.fc1.bias"],
                              params[f"{prefix}.mlp.fc2.weight"], params[f"{prefix}.mlp.fc2.bias"],
                              config.gelu_approximate)
    x = x + m["gate_mlp"][:, None, :] * _keep(record, f"{prefix}.mlp", transformed)
    return _keep(record, prefix, x)


def _final_layer(xp: Precision, x: Any, c: Any, params: Mapping[str, Any], config: DiTConfig, record: Record) -> Any:
    m = _adaln_chunks(xp, c, params, "final_layer", config.final_adaln_chunk_order, record)
    normed = _keep(record, "final_layer.norm_final", layer_norm.generic(xp, x, None, None, config.ln_eps_final))
    out = linear.generic(xp, modulate.generic(xp, normed, m["shift"], m["scale"]),
                         params["final_layer.linear.weight"], params["final_layer.linear.bias"])
    return _keep(record, "final_layer", out)


def _dit(xp: Precision, params: Mapping[str, Any], x: Any, t: Any, y: Any, config: DiTConfig,
         record: Record) -> Any:
    """DiT.forward: embed patches + pos_embed; c = t_emb (+ y_emb); blocks; final layer; unpatchify."""
    config = _check_config(config)
    check_params(params, config)
    labels = _check_labels(y, config, _check_inputs(x, t, config))
    tokens = patchify.generic(xp, x, params["x_embedder.proj.weight"], params["x_embedder.proj.bias"],
                              config.patch_size)
    tokens = _keep(record, "x_embedder", tokens) + params["pos_embed"]
    c = _keep(record, "t_embedder", _timestep_embedder(xp, t, params, config))
    if labels is not None:
        c = c + _keep(record, "y_embedder", params["y_embedder.embedding_table.weight"][labels])
    _keep(record, "c", c)
    for i in range(config.depth):
        tokens = _dit_block(xp, tokens, c, params, f"blocks.{i}", config, record)
    out = _final_layer(xp, tokens, c, params, config, record)
    return _keep(record, "unpatchify", unpatchify.generic(xp, out, config.patch_size, config.out_channels,
                                                          config.grid))


@reference_function(arrays=("t",), params=("params",))
def timestep_embedder(xp: Precision, t: Any, params: Mapping[str, Any], config: DiTConfig) -> Any:
    """DiT TimestepEmbedder: mlp.2(SiLU(mlp.0(timestep_embedding(t, frequency_dim)))), t [N] -> [N, D]."""
    config = _check_config(config)
    if np.ndim(t) != 1:
        raise ShapeError("t", "a 1-D array of N timesteps", str(np.shape(t)))
    _check_entries(params, _entries_under(config, "t_embedder."))
    return _timestep_embedder(xp, t, params, config)


@reference_function(arrays=("x", "c"), params=("params",))
def dit_block(xp: Precision, x: Any, c: Any, params: Mapping[str, Any], prefix: str, config: DiTConfig) -> Any:
    """DiTBlock, adaLN-Zero (Peebles & Xie 2023, sec. 3.2): x += gate_msa attn(mod(norm1 x)); x += gate_mlp mlp(mod(norm2 x)).

    x [N, T, D] tokens, c [N, D] conditioning; parameters read from params[f"{prefix}.<name>"].
    """
    config = _check_config(config)
    _check_tokens(x, c, config.hidden_size)
    _check_entries(params, _entries_under(config.replace(depth=1), "blocks.0.", renamed=prefix + "."))
    return _dit_block(xp, x, c, params, prefix, config, None)


@reference_function(arrays=("x", "c"), params=("params",))
def final_layer(xp: Precision, x: Any, c: Any, params: Mapping[str, Any], config: DiTConfig) -> Any:
    """DiT FinalLayer: linear(modulate(norm_final(x), shift, scale)), (shift, scale) = adaLN_modulation(c).chunk(2)."""
    config = _check_config(config)
    _check_tokens(x, c, config.hidden_size)
    _check_entries(params, _entries_under(config, "final_layer."))
    return _final_layer(xp, x, c, params, config, None)


@reference_function(arrays=("x", "c"), params=("params",))
def dit_block_intermediates(xp: Precision, x: Any, c: Any, params: Mapping[str, Any], prefix: str,
                            config: DiTConfig) -> dict[str, Any]:
    """One block's activations keyed as in :func:`dit_intermediates` (prefix.adaLN_modulation, .norm1, .attn,
    .norm2, .mlp and prefix itself, the block output): what a block-by-block validation compares, one block at a time."""
    config = _check_config(config)
    _check_tokens(x, c, config.hidden_size)
    _check_entries(params, _entries_under(config.replace(depth=1), "blocks.0.", renamed=prefix + "."))
    record: dict[str, Any] = {}
    _dit_block(xp, x, c, params, prefix, config, record)
    return record


@reference_function(arrays=("x", "c"), params=("params",))
def final_layer_intermediates(xp: Precision, x: Any, c: Any, params: Mapping[str, Any],
                              config: DiTConfig) -> dict[str, Any]:
    """The final layer's activations keyed as in :func:`dit_intermediates` (final_layer.adaLN_modulation,
    final_layer.norm_final, final_layer) plus unpatchify, the model output."""
    config = _check_config(config)
    _check_tokens(x, c, config.hidden_size)
    _check_entries(params, _entries_under(config, "final_layer."))
    record: dict[str, Any] = {}
    out = _final_layer(xp, x, c, params, config, record)
    record["unpatchify"] = unpatchify.generic(xp, out, config.patch_size, config.out_channels, config.grid)
    return record


@reference_function(arrays=("x", "t"), params=("params",))
def dit_forward(xp: Precision, params: Mapping[str, Any], x: Any, t: Any, y: Any, config: DiTConfig) -> Any:
    """DiT.forward (Peebles & Xie 2023, fig. 3): latents x [N, C, H, W], timesteps t [N], labels y [N] or None -> [N, C_out, H, W].

    y = num_classes is the null class; y = None (or num_classes = 0) adds no label embedding.
    """
    return _dit(xp, params, x, t, y, config, None)


@reference_function(arrays=("x", "t"), params=("params",))
def dit_intermediates(xp: Precision, params: Mapping[str, Any], x: Any, t: Any, y: Any,
                      config: DiTConfig) -> dict[str, Any]:
    """DiT.forward's activations keyed by torch submodule name, in execution order (what forward hooks see).

    Keys: x_embedder (before pos_embed), t_embedder, y_embedder (with labels), c (= t + y embeddings),
    blocks.i.{adaLN_modulation, norm1, attn, norm2, mlp}, blocks.i, final_layer.{adaLN_modulation,
    norm_final}, final_layer, unpatchify (the model output).
    """
    record: dict[str, Any] = {}
    _dit(xp, params, x, t, y, config, record)
    return record


@reference_function(arrays=("x", "t", "basis"), params=("params",))
def dit_latent_score(xp: Precision, params: Mapping[str, Any], config: DiTConfig, x: Any, t: Any, basis: Any,
                     y: Any = None, schedule: str | Schedule = "ou-half", output: str = "q") -> Any:
    """LD2 with a DiT (Hu et al. 2024, eq. 3.2): s(x, t) = B f(B^T x, t)/sigma_t^2 - x/sigma_t^2.

    x [N, D] ambient, basis B [D, C*H*W] orthonormal; the DiT runs on B^T x reshaped to latents
    [N, C, H, W] at timestep t (scaled by config.time_scale); its first C output channels are n(h, t).
    ``output`` says what those channels are: "q" takes f = n, the paper's form (the network learns
    q = sigma_t^2 grad log p^h_t + h); "eps" reads them as a noise prediction, f = h - sigma_t n,
    which makes s the score estimate -eps/sigma_t on the subspace (docs/conventions.md#parameterisations).
    """
    config = _check_config(config)
    check_params(params, config)
    channels, (height, width) = config.in_channels, config.latent_size
    latent_dim = channels * height * width
    if np.ndim(basis) != 2 or np.shape(basis)[1] != latent_dim:
        raise ShapeError("basis", f"shape [D, {latent_dim}] (d0 = in_channels * H * W of the DiT latent)",
                         str(np.shape(basis)))
    if np.ndim(x) != 2:
        raise ShapeError("x", f"shape [N, {np.shape(basis)[0]}]", str(np.shape(x)))
    labels = _check_labels(y, config, np.shape(x)[0])
    if output not in ("q", "eps"):
        raise InvalidArgumentError("output", "'q' (the network is f) or 'eps' (f = h - sigma_t * network)",
                                   repr(output))
    sched = get_schedule(schedule)

    def noise_prediction(xp: Precision, latents: Any, times: Any) -> Any:
        batch = np.shape(latents)[0]
        images = np.reshape(latents, (batch, channels, height, width))
        out = _dit(xp, params, images, np.broadcast_to(times, (batch,)), labels, config, None)
        network = np.reshape(out[:, :channels], (batch, latent_dim))
        if output == "q":
            return network
        noise_scale = xp.sqrt(sched.sigma2(xp, times))
        return latents - (noise_scale[:, None] if np.ndim(noise_scale) == 1 else noise_scale) * network

    return ld2_score.generic(xp, x, t, basis, noise_prediction, schedule)
