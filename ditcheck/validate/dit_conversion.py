"""Converting parameters between the original DiT layout (the reference's names) and diffusers' DiTTransformer2DModel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ditcheck.reference.dit import DiTConfig
from ditcheck.reference.errors import InvalidArgumentError

__all__ = ["diffusers_names", "diffusers_state_dict", "params_from_diffusers"]


def diffusers_names(config: DiTConfig, embedder_blocks: range) -> list[tuple[str, str]]:
    """(reference name, diffusers name) of every tensor the two layouts share one to one (qkv aside).

    diffusers' AdaLayerNormZero owns a timestep/label embedder per block: ``embedder_blocks`` says
    whose copies to pair with the reference's single embedder.
    """
    names = [("x_embedder.proj.weight", "pos_embed.proj.weight"), ("x_embedder.proj.bias", "pos_embed.proj.bias")]
    for i in embedder_blocks:
        emb = f"transformer_blocks.{i}.norm1.emb"
        for kind in ("weight", "bias"):
            names += [(f"t_embedder.mlp.0.{kind}", f"{emb}.timestep_embedder.linear_1.{kind}"),
                      (f"t_embedder.mlp.2.{kind}", f"{emb}.timestep_embedder.linear_2.{kind}")]
        if config.num_classes:
            names.append(("y_embedder.embedding_table.weight", f"{emb}.class_embedder.embedding_table.weight"))
    for i in range(config.depth):
        block, ref = f"transformer_blocks.{i}", f"blocks.{i}"
        for kind in ("weight", "bias"):
            names += [(f"{ref}.adaLN_modulation.1.{kind}", f"{block}.norm1.linear.{kind}"),
                      (f"{ref}.attn.proj.{kind}", f"{block}.attn1.to_out.0.{kind}"),
                      (f"{ref}.mlp.fc1.{kind}", f"{block}.ff.net.0.proj.{kind}"),
                      (f"{ref}.mlp.fc2.{kind}", f"{block}.ff.net.2.{kind}")]
    for kind in ("weight", "bias"):
        names += [(f"final_layer.adaLN_modulation.1.{kind}", f"proj_out_1.{kind}"),
                  (f"final_layer.linear.{kind}", f"proj_out_2.{kind}")]
    return names


def diffusers_state_dict(params: Mapping[str, np.ndarray], config: DiTConfig) -> dict[str, np.ndarray]:
    """Reference (original DiT) parameters as a DiTTransformer2DModel state dict (pos_embed kept under its own name).

    qkv splits into to_q/to_k/to_v; every block gets its own copy of the timestep and label
    embedders (diffusers' AdaLayerNormZero owns one per block; the final layer uses block 0's).
    """
    d = config.hidden_size
    state: dict[str, np.ndarray] = {"pos_embed": params["pos_embed"]}
    state.update({diff: params[ref] for ref, diff in diffusers_names(config, range(config.depth))})
    for i in range(config.depth):
        for kind in ("weight", "bias"):
            qkv = params[f"blocks.{i}.attn.qkv.{kind}"]
            for j, name in enumerate(("to_q", "to_k", "to_v")):
                state[f"transformer_blocks.{i}.attn1.{name}.{kind}"] = qkv[j * d:(j + 1) * d]
    return state


def params_from_diffusers(state: Mapping[str, Any], config: DiTConfig) -> dict[str, np.ndarray]:
    """A DiTTransformer2DModel state dict as reference (original DiT) parameters, pos_embed excluded.

    The reference has one timestep/label embedder; diffusers has one per block. They must agree
    exactly (as after converting an original checkpoint): otherwise the model is not a DiT in the
    reference's sense and this raises, naming the first block whose copy differs.
    """
    state = {name: np.asarray(value.detach().cpu().double() if isinstance(value, torch.Tensor) else value,
                              dtype=np.float64) for name, value in state.items()}
    params = {ref: state[diff] for ref, diff in diffusers_names(config, range(1))}
    emb0 = "transformer_blocks.0.norm1.emb"
    for i in range(1, config.depth):
        emb = f"transformer_blocks.{i}.norm1.emb"
        for name in [n for n in state if n.startswith(emb0 + ".")]:
            other = emb + name.removeprefix(emb0)
            if not np.array_equal(state[other], state[name]):
                raise InvalidArgumentError("state", "every block's timestep/label embedder equal to block 0's (the "
                                           "reference DiT has one)", f"{other} differs")
    for i in range(config.depth):
        for kind in ("weight", "bias"):
            params[f"blocks.{i}.attn.qkv.{kind}"] = np.concatenate(
                [state[f"transformer_blocks.{i}.attn1.{name}.{kind}"] for name in ("to_q", "to_k", "to_v")])
    return params
