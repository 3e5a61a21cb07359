"""Recognising a DiT target: its layout, its architecture, and the hooks that name its activations.

Two layouts are recognised from the state dict: the original DiT (facebookresearch/DiT models.py,
which ditcheck.models.dit.DiT and most forks keep) and diffusers' DiTTransformer2DModel. The
architecture (sizes, depth, heads, classes, learn_sigma) is read off the target; the numerical
conventions are not: they are what is being checked (:func:`convention_config`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ditcheck.reference.dit import DIFFUSERS_DIT_KNOBS, DiTConfig, dit_param_shapes
from ditcheck.reference.errors import InvalidArgumentError

from ._target import TargetError
from .dit_conversion import diffusers_state_dict, params_from_diffusers

__all__ = ["CONVENTIONS", "Layout", "recognise", "convention_config", "dit_hooks"]

CONVENTIONS = ("dit", "diffusers")


def convention_config(config: DiTConfig, convention: str) -> DiTConfig:
    """The architecture of ``config`` with the numerical conventions of ``convention``."""
    if convention not in CONVENTIONS:
        raise InvalidArgumentError("convention", f"one of {CONVENTIONS}", repr(convention))
    defaults = DiTConfig(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
                         hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
                         num_classes=config.num_classes, mlp_ratio=config.mlp_ratio, learn_sigma=config.learn_sigma,
                         frequency_dim=config.frequency_dim)
    return defaults.replace(**DIFFUSERS_DIT_KNOBS) if convention == "diffusers" else defaults


@dataclass
class Layout:
    """A recognised target: its layout, the architecture, and hook names -> reference activation names."""

    name: str
    config: DiTConfig
    hooks: list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor] | None]] = field(default_factory=list)

    def load(self, model: nn.Module, params: Mapping[str, np.ndarray], dtype: torch.dtype,
             device: torch.device) -> None:
        """Copy reference ``params`` into ``model`` (exactly: every entry, nothing left at its old value)."""
        if self.name == "dit":
            state = {name: torch.as_tensor(value, dtype=dtype, device=device) for name, value in params.items()}
        else:
            state = {name: torch.as_tensor(value, dtype=dtype, device=device)
                     for name, value in diffusers_state_dict(params, self.config).items()}
        target_state = model.state_dict()
        missing = [name for name in state if name not in target_state and name != "pos_embed"]
        if missing:
            raise TargetError("model", f"a {self.name}-layout state dict", f"no entries {missing[:3]}")
        with torch.no_grad():
            for name, value in state.items():
                if name == "pos_embed" and self.name == "diffusers":
                    continue
                target_state[name].copy_(value)
            if self.name == "diffusers":  # a non-persistent buffer, outside the state dict
                model.pos_embed.pos_embed.copy_(torch.as_tensor(params["pos_embed"], dtype=dtype, device=device))

    def pos_embed_table(self, model: nn.Module) -> np.ndarray | None:
        """The target's own fixed position table [1, T, D], as float64 (None if it has none)."""
        table = model.pos_embed.pos_embed if self.name == "diffusers" else getattr(model, "pos_embed", None)
        return None if table is None else table.detach().to("cpu", torch.float64).numpy()

    def params(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The target's own weights as a reference parameter dict."""
        state = {name: value.detach().to("cpu", torch.float64).numpy() for name, value in model.state_dict().items()}
        if self.name == "dit":
            return {name: state[name] for name in dit_param_shapes(self.config)}
        params = params_from_diffusers(state, self.config)
        params["pos_embed"] = self.pos_embed_table(model)
        return params

    def call(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> Any:
        if self.name == "diffusers":
            return model(x, timestep=t, class_labels=y, return_dict=False)[0]
        return model(x, t, y) if y is not None else model(x, t)


def _infer_dit(model: nn.Module, state: Mapping[str, torch.Tensor]) -> DiTConfig:
    hidden, channels, patch, _ = state["x_embedder.proj.weight"].shape
    depth = len({name.split(".")[1] for name in state if name.startswith("blocks.") and name.endswith("qkv.weight")})
    own = getattr(model, "config", None)
    if isinstance(own, DiTConfig):
        input_size: int | tuple[int, int] = own.input_size
        heads = own.num_heads
    else:
        tokens = state["pos_embed"].shape[1]
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise TargetError("model", "a square token grid, or a .config DiTConfig giving input_size",
                              f"{tokens} tokens")
        input_size = side * patch
        attn = model.blocks[0].attn if hasattr(model, "blocks") else None
        heads = getattr(attn, "num_heads", None)
        if heads is None:
            raise TargetError("model", "blocks[0].attn.num_heads (the number of heads)", "no such attribute")
    table = state.get("y_embedder.embedding_table.weight")
    out = state["final_layer.linear.weight"].shape[0] // (patch * patch)
    if out not in (channels, 2 * channels):
        raise TargetError("model", f"final_layer.linear with p*p*C or p*p*2C outputs (C = {channels})",
                          f"{out * patch * patch}")
    return DiTConfig(input_size=input_size, patch_size=patch, in_channels=channels, hidden_size=hidden, depth=depth,
                     num_heads=int(heads), num_classes=0 if table is None else table.shape[0] - 1,
                     mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / hidden, learn_sigma=out == 2 * channels,
                     frequency_dim=state["t_embedder.mlp.0.weight"].shape[1])


def dit_hooks(config: DiTConfig) -> list[tuple[str, str, Any]]:
    names = ["x_embedder", "t_embedder"] + (["y_embedder"] if config.num_classes else [])
    for i in range(config.depth):
        names += [f"blocks.{i}.adaLN_modulation", f"blocks.{i}.norm1", f"blocks.{i}.attn", f"blocks.{i}.norm2",
                  f"blocks.{i}.mlp", f"blocks.{i}"]
    names += ["final_layer.adaLN_modulation", "final_layer.norm_final", "final_layer"]
    return [(name, name, None) for name in names]


def _infer_diffusers(model: nn.Module) -> DiTConfig:
    cfg = model.config
    hidden = cfg.num_attention_heads * cfg.attention_head_dim
    out = cfg.out_channels if cfg.out_channels is not None else cfg.in_channels
    if out not in (cfg.in_channels, 2 * cfg.in_channels):
        raise TargetError("model", "out_channels = in_channels or 2 in_channels (learn_sigma)", str(out))
    ff = model.transformer_blocks[0].ff.net[0].proj.weight.shape[0]
    return DiTConfig(input_size=cfg.sample_size, patch_size=cfg.patch_size, in_channels=cfg.in_channels,
                     hidden_size=hidden, depth=cfg.num_layers, num_heads=cfg.num_attention_heads,
                     num_classes=cfg.num_embeds_ada_norm, mlp_ratio=ff / hidden, learn_sigma=out == 2 * cfg.in_channels,
                     frequency_dim=model.transformer_blocks[0].norm1.emb.timestep_embedder.linear_1.weight.shape[1])


def _tokens(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).transpose(1, 2)


def _diffusers_hooks(config: DiTConfig) -> list[tuple[str, str, Any]]:
    hooks: list[tuple[str, str, Any]] = [("pos_embed.proj", "x_embedder", _tokens)]
    for i in range(config.depth):
        emb = f"transformer_blocks.{i}.norm1.emb"
        hooks += [(f"{emb}.timestep_embedder", "t_embedder", None), (f"{emb}.class_embedder", "y_embedder", None),
                  (emb, "c", None)]
        block = f"transformer_blocks.{i}"
        hooks += [(f"{block}.norm1.linear", f"blocks.{i}.adaLN_modulation", None),
                  (f"{block}.norm1.norm", f"blocks.{i}.norm1", None), (f"{block}.attn1", f"blocks.{i}.attn", None),
                  (f"{block}.norm3", f"blocks.{i}.norm2", None), (f"{block}.ff", f"blocks.{i}.mlp", None),
                  (block, f"blocks.{i}", None)]
    return hooks + [("proj_out_1", "final_layer.adaLN_modulation", None), ("norm_out", "final_layer.norm_final", None),
                    ("proj_out_2", "final_layer", None)]


def recognise(model: Any) -> Layout:
    """The layout of ``model``: the original DiT (by its state-dict keys) or diffusers' DiTTransformer2DModel."""
    if not isinstance(model, nn.Module):
        raise TargetError("model", "a torch.nn.Module", type(model).__name__)
    state = model.state_dict()
    if type(model).__name__ == "DiTTransformer2DModel" or "transformer_blocks.0.norm1.emb.timestep_embedder.linear_1"\
            ".weight" in state:
        cfg = getattr(model, "config", None)
        if cfg is None or getattr(cfg, "norm_type", "ada_norm_zero") != "ada_norm_zero":
            raise TargetError("model", "a DiTTransformer2DModel with norm_type='ada_norm_zero'", repr(cfg))
        config = _infer_diffusers(model)
        return Layout("diffusers", config, _diffusers_hooks(config))
    needed = ("x_embedder.proj.weight", "t_embedder.mlp.0.weight", "blocks.0.attn.qkv.weight",
              "final_layer.linear.weight", "pos_embed")
    if all(name in state for name in needed):
        config = _infer_dit(model, state)
        expected = dit_param_shapes(config)
        wrong = [name for name, shape in expected.items() if name not in state or tuple(state[name].shape) != shape]
        if wrong:
            raise TargetError("model", "the original DiT state dict (reference.dit.dit_param_shapes)",
                              f"missing or misshapen {wrong[:3]}")
        return Layout("dit", config, dit_hooks(config))
    raise TargetError("model", "a DiT in the original layout (x_embedder, t_embedder, blocks.i.attn.qkv, final_layer, "
                      "pos_embed in the state dict) or a diffusers DiTTransformer2DModel",
                      f"{type(model).__name__} with state-dict keys {list(state)[:4]}: neither is recognised")
