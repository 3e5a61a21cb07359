"""Recognising a DiT target: its layout, its architecture, and the hooks that name its activations.

Two layouts are recognised from the state dict: the original DiT (facebookresearch/DiT models.py,
which ditcheck.models.dit.DiT and most forks keep) and diffusers' DiTTransformer2DModel. The
architecture (sizes, depth, heads, classes, learn_sigma) is read off the target; the numerical
conventions are not: they are what is being checked (:func:`convention_config`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ditcheck.reference.dit import DIFFUSERS_DIT_KNOBS, DiTConfig
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.layers import pos_embed_2d

from ._target import TargetError
from .dit_conversion import diffusers_state_dict, params_from_diffusers
from .dit_structure import infer_structure, original_forward

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
    """A recognised target: its layout, the architecture, and hook names -> reference activation names.

    ``names`` (original-architecture layouts): reference parameter name -> the target's state-dict
    name, found by :func:`ditcheck.validate.dit_structure.infer_structure`. ``returned_channels``:
    the output channels the forward returns (C for a SiT-style forward keeping the first C of 2C).
    ``evidence``: how each part was recognised, for the report.
    """

    name: str
    config: DiTConfig
    hooks: list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor] | None]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    returned_channels: int | None = None
    evidence: list[str] = field(default_factory=list)
    #: the forward returns a tuple whose first element is the output (call returns that element)
    first_of_tuple: bool = False

    @property
    def output_channels(self) -> int:
        """The channels of the forward's output."""
        return self.config.out_channels if self.returned_channels is None else self.returned_channels

    def target_state(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Reference ``params`` under the target's state-dict names (pos_embed under "pos_embed" for diffusers)."""
        if self.name == "diffusers":
            return diffusers_state_dict(params, self.config)
        return {self.names[name]: value for name, value in params.items() if name in self.names}

    def load(self, model: nn.Module, params: Mapping[str, np.ndarray], dtype: torch.dtype,
             device: torch.device) -> None:
        """Copy reference ``params`` into ``model`` (exactly: every entry, nothing left at its old value)."""
        state = {name: torch.as_tensor(value, dtype=dtype, device=device)
                 for name, value in self.target_state(params).items()}
        target_state = dict(model.named_parameters()) | dict(model.named_buffers())
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
        if self.name == "diffusers":
            table = model.pos_embed.pos_embed
        else:
            name = self.names.get("pos_embed")
            table = None if name is None else (dict(model.named_parameters()) | dict(model.named_buffers()))[name]
        return None if table is None else table.detach().to("cpu", torch.float64).numpy()

    def params(self, model: nn.Module, prefix: str | None = None) -> dict[str, np.ndarray]:
        """The target's own weights as a reference parameter dict (only the entries under ``prefix`` if given).

        A position table the target does not store is the exact one (it computes it, or has none).
        """
        if self.name == "diffusers":
            state = {name: value.detach().to("cpu", torch.float64).numpy()
                     for name, value in model.state_dict().items()}
            params = params_from_diffusers(state, self.config)
            params["pos_embed"] = self.pos_embed_table(model)
        else:
            tensors = dict(model.named_parameters()) | dict(model.named_buffers())
            params = {ref: tensors[target].detach().to("cpu", torch.float64).numpy()
                      for ref, target in self.names.items() if prefix is None or ref.startswith(prefix)}
            if "pos_embed" not in self.names and (prefix is None or "pos_embed".startswith(prefix)):
                params["pos_embed"] = pos_embed_2d(self.config.hidden_size, self.config.grid,
                                                   self.config.pos_embed_max_period)[None]
        if prefix is not None:
            params = {name: value for name, value in params.items() if name.startswith(prefix)}
        return params

    def call(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> Any:
        if self.name == "diffusers":
            return model(x, timestep=t, class_labels=y, return_dict=False)[0]
        out = original_forward(model, x, t, y)
        return out[0] if self.first_of_tuple and isinstance(out, (tuple, list)) and out else out


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


def recognise(model: Any, *, heads: int | None = None, learn_sigma: bool | None = None,
              overrides: Mapping[str, Any] | None = None, timeout: float = 60.0) -> Layout:
    """The layout of ``model``: diffusers' DiTTransformer2DModel, or a DiT of the original architecture.

    The original architecture (facebookresearch/DiT and its forks, whatever their attribute and class
    names) is recognised by evidence (:func:`ditcheck.validate.dit_structure.infer_structure`, which
    runs one probing forward); heads / learn_sigma / overrides settle what the evidence leaves open.
    """
    if not isinstance(model, nn.Module):
        raise TargetError("model", "a torch.nn.Module", type(model).__name__)
    state = model.state_dict()
    if type(model).__name__ == "DiTTransformer2DModel" or "transformer_blocks.0.norm1.emb.timestep_embedder.linear_1"\
            ".weight" in state:
        cfg = getattr(model, "config", None)
        if cfg is None or getattr(cfg, "norm_type", "ada_norm_zero") != "ada_norm_zero":
            raise TargetError("model", "a DiTTransformer2DModel with norm_type='ada_norm_zero'", repr(cfg))
        config = _infer_diffusers(model)
        if heads is not None and heads != config.num_heads:
            raise TargetError("heads", f"{config.num_heads} (the model's config.num_attention_heads)", repr(heads))
        return Layout("diffusers", config, _diffusers_hooks(config))
    try:
        structure = infer_structure(model, heads=heads, learn_sigma=learn_sigma, overrides=overrides, timeout=timeout)
    except TargetError as error:
        if error.argument != "model":
            raise
        raise TargetError(error.argument, f"a DiT of the original architecture or a diffusers DiTTransformer2DModel: "
                          f"{error.expected}", error.got) from error
    return Layout("dit", structure.config, structure.hooks, structure.names, structure.returned_channels,
                  structure.evidence, structure.first_of_tuple)
