"""Recognising a DiT of the original architecture by evidence, not by attribute names.

Forks of facebookresearch/DiT rename attributes (``attn.heads``, ``attn.n_heads``, a head count
kept only at the top level), rename every class, or return only the first C output channels
(SiT). :func:`infer_structure` therefore finds the parts by what they are and what they compute:

* by parameter shapes: the patch embedder is the module with a 4-D weight [D, C, p, p]; a block is
  the outermost module holding exactly one linear map D -> 6D (its adaLN modulation), with a fused
  qkv D -> 3D and a projection D -> D inside its attention, an MLP D -> H -> D; the final layer holds
  D -> 2D (its modulation) and D -> p*p*C_out; the position table is the one tensor [1, T, D];
* by a probing forward pass with hooks on every module: the timestep embedder is the outermost
  submodule called with the timestep tensor, the label embedder the one called with the labels,
  the patch embedder's wrapper the one called with the latents; norms are the shape-preserving
  modules the block calls before its attention and before its MLP;
* the head count by computation: every divisor h of D is tried against block 0's recorded attention
  (its input and output from the probe); the one that reproduces the output is the head count. An
  attribute that says otherwise, or no divisor reproducing it and no attribute to fall back on, is
  an ambiguity reported with the options (``heads=`` / ``--heads`` settles it), never a silent guess;
* learn_sigma from the final linear map (p*p*2C outputs) and the channels the forward returns from
  the probe's output (all 2C, or only the first C as SiT does).

A "linear map" is any module with a 2-D ``weight`` (nn.Linear or a fork's own class), so class
names never matter; a bias-free one is refused (the reference's maps all have biases).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ditcheck.reference.dit import DiTConfig
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.formats import FLOAT64

from ._target import TargetError
from .dit_precision import call_target

__all__ = ["Structure", "infer_structure", "head_count_errors", "original_forward", "CONFIG_OVERRIDES"]

#: DiTConfig fields a user may set (``--set KEY=VALUE``) where the target does not say them.
CONFIG_OVERRIDES = ("input_size", "num_classes", "frequency_dim", "mlp_ratio")

#: The best head count must reproduce block 0's attention this many times better than the runner-up.
HEAD_SEPARATION = 1000.0


@dataclass
class Structure:
    """What :func:`infer_structure` found: the architecture, reference name -> target name, hooks, evidence."""

    config: DiTConfig
    #: reference parameter name -> target state-dict name (pos_embed included when the target stores a table)
    names: dict[str, str]
    #: (target module name, reference activation name, transform of the hooked output or None)
    hooks: list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor] | None]]
    #: output channels the forward returns (config.out_channels, or C for a SiT-style forward)
    returned_channels: int
    evidence: list[str] = field(default_factory=list)
    #: the forward returns a tuple whose first element is the output (REPA's SiT returns (x, zs))
    first_of_tuple: bool = False


def _tokens(value: torch.Tensor) -> torch.Tensor:
    return value.flatten(2).transpose(1, 2)


def _linear_maps(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Every module with its own 2-D ``weight`` parameter: name -> (out, in)."""
    maps = {}
    for name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if isinstance(weight, torch.Tensor) and weight.ndim == 2:
            maps[name] = (int(weight.shape[0]), int(weight.shape[1]))
    return maps


def _inside(name: str, ancestor: str) -> bool:
    return ancestor == "" or name == ancestor or name.startswith(ancestor + ".")


def _common_ancestor(*names: str) -> str:
    parts = [name.split(".") for name in names]
    common = []
    for pieces in zip(*parts):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    return ".".join(common)


@dataclass
class _Call:
    order: int
    first: Any
    output: Any


def original_forward(model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> Any:
    """The original architecture's call, model(x, t, y), or model(x, t) for a model without labels: its raw output."""
    return model(x, t, y) if y is not None else model(x, t)


def _probe(model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
           timeout: float) -> tuple[dict[str, _Call], Any]:
    """Run model(x, t[, y]) once with a hook on every module: name -> its first call (order, first input, output)."""
    calls: dict[str, _Call] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
                 name: str = name) -> None:
            if name in calls:
                return
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            value = output[0] if isinstance(output, (tuple, list)) and output else output
            calls[name] = _Call(len(calls), tensors[0] if tensors else None,
                                value.detach() if isinstance(value, torch.Tensor) else None)
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    output = call_target(lambda: original_forward(model, x, t, y), timeout, x.dtype == torch.float64, handles)
    return calls, output


def _outermost_called_with(calls: Mapping[str, _Call], value: torch.Tensor) -> str | None:
    """The outermost non-root module whose first tensor input is ``value`` (the same tensor, or equal to it)."""
    found = [name for name, call in calls.items() if name and isinstance(call.first, torch.Tensor)
             and (call.first is value or (call.first.shape == value.shape and call.first.dtype == value.dtype
                                          and bool(torch.equal(call.first, value))))]
    found = [name for name in found if not any(other != name and _inside(name, other) for other in found)]
    return min(found, key=lambda name: calls[name].order) if found else None


def head_count_errors(x: np.ndarray, out: np.ndarray, qkv_weight: np.ndarray, qkv_bias: np.ndarray,
                      proj_weight: np.ndarray, proj_bias: np.ndarray, query_rows: int = 16) -> dict[int, float]:
    """Relative max error of DiT attention with h heads against the recorded output ``out``, for every divisor h of D.

    x, out: [L, D] (one sample); the qkv split, 1/sqrt(D/h) scale and head merge are the original DiT's.
    Only the first ``query_rows`` outputs are recomputed (each against every key, so each row is exact
    for the right head count): the cost is sum over divisors h of h x rows x L, not h x L^2 (DiT-XL/2's
    1152 has 24 divisors summing to 3315: 20 s with all 256 rows).
    """
    tokens, d = x.shape
    qkv = x @ qkv_weight.T + qkv_bias
    q, k, v = qkv[:query_rows, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
    rows = q.shape[0]
    out = out[:rows]
    scale = max(float(np.max(np.abs(out))), FLOAT64.smallest_normal)
    errors = {}
    for heads in (h for h in range(1, d + 1) if d % h == 0):
        dim = d // heads
        qh = q.reshape(rows, heads, dim).transpose(1, 0, 2)
        kh, vh = (a.reshape(tokens, heads, dim).transpose(1, 0, 2) for a in (k, v))
        logits = qh @ kh.transpose(0, 2, 1) / math.sqrt(dim)
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        merged = (weights @ vh).transpose(1, 0, 2).reshape(rows, d)
        errors[heads] = float(np.max(np.abs(merged @ proj_weight.T + proj_bias - out))) / scale
    return errors


def _head_attributes(modules: list[nn.Module], hidden: int) -> dict[str, int]:
    """Integer attributes whose name speaks of a head count (num_heads, heads, n_heads, ...), dividing ``hidden``."""
    found: dict[str, int] = {}
    for module in modules:
        sources = [vars(module)]
        config = getattr(module, "config", None)
        if config is not None:
            sources.append(vars(config) if hasattr(config, "__dict__") else {})
            if isinstance(config, Mapping):
                sources.append(dict(config))
        for source in sources:
            for key, value in source.items():
                lowered = key.lower()
                if "head" in lowered and not any(word in lowered for word in ("dim", "size", "channel")) \
                        and isinstance(value, int) and not isinstance(value, bool) and value > 0 \
                        and hidden % value == 0:
                    found[f"{type(module).__name__}.{key}"] = value
    return found


def _single(kind: str, options: list[str], what: str) -> str:
    if len(options) != 1:
        raise TargetError("model", f"one {kind} ({what})", f"{len(options)}: {options[:6]}")
    return options[0]


def infer_structure(model: nn.Module, *, heads: int | None = None, learn_sigma: bool | None = None,
                    overrides: Mapping[str, Any] | None = None, timeout: float = 60.0) -> Structure:
    """The original-DiT architecture of ``model`` found by shapes and a probing forward (see the module docstring).

    heads / learn_sigma: explicit answers where the evidence is ambiguous (checked against the shapes);
    overrides: DiTConfig fields the target does not state (:data:`CONFIG_OVERRIDES`, e.g. input_size
    when it stores no position table). Raises TargetError naming what is missing or ambiguous.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(CONFIG_OVERRIDES))
    if unknown:
        raise InvalidArgumentError("overrides", f"keys among {CONFIG_OVERRIDES}", repr(unknown))
    evidence: list[str] = []
    maps = _linear_maps(model)
    state = dict(model.named_parameters()) | dict(model.named_buffers())

    convs = [name for name, module in model.named_modules()
             if isinstance(module._parameters.get("weight"), torch.Tensor) and module._parameters["weight"].ndim == 4
             and module._parameters["weight"].shape[2] == module._parameters["weight"].shape[3]]
    patch_conv = _single("patch embedder", convs, "a module with a 4-D weight [D, C, p, p]")
    hidden, channels, patch, _ = (int(s) for s in model.get_submodule(patch_conv).weight.shape)
    evidence.append(f"patch embedder: {patch_conv} ({type(model.get_submodule(patch_conv)).__name__}, "
                    f"{channels} -> {hidden} channels, patch {patch})")

    tables = [name for name, value in state.items() if value.ndim == 3 and value.shape[0] == 1
              and value.shape[2] == hidden]
    table = _single("position table", tables, f"a tensor [1, T, {hidden}]") if tables or "input_size" not in overrides \
        else None
    if "input_size" in overrides:
        input_size = overrides["input_size"]
    else:
        own = getattr(model, "config", None)
        tokens = int(state[table].shape[1]) if table else 0
        side = math.isqrt(tokens)
        if isinstance(own, DiTConfig):
            input_size = own.input_size
        elif side * side == tokens:
            input_size = side * patch
        else:
            raise TargetError("model", "a square token grid, or input_size given (--set input_size=H or HxW)",
                              f"{tokens} tokens in {table}")

    # the probing forward
    device, dtype = model.get_submodule(patch_conv).weight.device, model.get_submodule(patch_conv).weight.dtype
    probe_config = DiTConfig(input_size=input_size, patch_size=patch, in_channels=channels, hidden_size=hidden,
                             depth=1, num_heads=1, num_classes=0)
    height, width = probe_config.latent_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, height, width, generator=generator).to(device=device, dtype=dtype)
    t = torch.tensor([3.0, 500.0]).to(device=device, dtype=dtype)
    embeddings = [name for name, (rows, cols) in maps.items() if cols == hidden
                  and isinstance(model.get_submodule(name), nn.Embedding)]
    label_rows = maps[embeddings[0]][0] if len(embeddings) == 1 else None
    num_classes = overrides.get("num_classes", label_rows - 1 if label_rows else 0)
    y = torch.tensor([0, num_classes], device=device) if num_classes else None
    calls, output = _probe(model, x, t, y, timeout)

    x_module = _outermost_called_with(calls, x)
    t_module = _outermost_called_with(calls, t)
    if x_module is None or t_module is None:
        raise TargetError("model", "submodules called with the latents and with the timesteps (a patch embedder "
                          "and a timestep embedder)", f"latents -> {x_module}, timesteps -> {t_module}")
    t_maps = sorted((name for name in maps if _inside(name, t_module)), key=lambda n: calls.get(n, _Call(1 << 30,
                                                                                                      None, None)).order)
    if len(t_maps) != 2 or maps[t_maps[0]][0] != hidden or maps[t_maps[1]] != (hidden, hidden):
        raise TargetError("model", f"a timestep embedder {t_module} with two linear maps F -> {hidden} -> {hidden}",
                          f"{[(n, maps[n]) for n in t_maps]}")
    frequency_dim = maps[t_maps[0]][1]
    evidence.append(f"timestep embedder: {t_module} (called with t; {frequency_dim} -> {hidden} -> {hidden})")
    y_module = table_name = None
    if num_classes:
        y_module = _outermost_called_with(calls, y)
        inside = [name for name in embeddings if y_module is not None and _inside(name, y_module)]
        if y_module is None or len(inside) != 1:
            raise TargetError("model", "a label embedder called with the labels, holding one table [classes + 1, D]",
                              f"labels -> {y_module}")
        table_name = inside[0]
        evidence.append(f"label embedder: {y_module} (called with y; table {table_name}, {num_classes} classes + null)")

    # blocks: the outermost module holding exactly one D -> 6D map
    adaln = sorted((name for name, shape in maps.items() if shape == (6 * hidden, hidden)),
                   key=lambda n: calls[n].order if n in calls else 1 << 30)
    if not adaln:
        four = [name for name, shape in maps.items() if shape == (4 * hidden, hidden) and not any(  # not an MLP's fc1
            other_shape == (hidden, 4 * hidden) and other.rpartition(".")[0] == name.rpartition(".")[0]
            for other, other_shape in maps.items())]
        raise TargetError("model", f"blocks with an adaLN modulation (a linear map {hidden} -> {6 * hidden})",
                          f"none; {four[0]} maps {hidden} -> {4 * hidden}: 4 chunks, an adaLN without shifts "
                          "(LightningDiT's wo_shift)? not supported" if four else "none")
    blocks = []
    for name in adaln:
        parts = name.split(".")
        block = name
        for i in range(len(parts) - 1, 0, -1):
            candidate = ".".join(parts[:i])
            if sum(_inside(other, candidate) for other in adaln) == 1:
                block = candidate
            else:
                break
        blocks.append(block)
    names: dict[str, str] = {}
    hooks: list[tuple[str, str, Any]] = [(x_module, "x_embedder", _tokens if calls[x_module].output is not None
                                          and calls[x_module].output.ndim == 4 else None),
                                         (t_module, "t_embedder", None)]
    if y_module is not None:
        hooks.append((y_module, "y_embedder", None))
    mlp_hidden = None
    attention_io = None
    for i, (block, modulation) in enumerate(zip(blocks, adaln)):
        ref = f"blocks.{i}"
        inner = {name: shape for name, shape in maps.items() if _inside(name, block)}
        qkv = [name for name, shape in inner.items() if shape == (3 * hidden, hidden)]
        qkv_name = _single(f"fused qkv map in {block}", qkv, f"a linear map {hidden} -> {3 * hidden}")
        attention = qkv_name.rpartition(".")[0]
        proj = [name for name, shape in inner.items() if shape == (hidden, hidden) and _inside(name, attention)]
        proj_name = _single(f"attention output projection beside {qkv_name}", proj, f"{hidden} -> {hidden}")
        ups = [name for name, shape in inner.items() if shape[1] == hidden and shape[0] not in
               (hidden, 3 * hidden, 6 * hidden)]
        fc1 = _single(f"MLP input map in {block}", ups, f"{hidden} -> H")
        mlp_width = inner[fc1][0]
        gated = [n for n, s in inner.items() if s == (hidden, mlp_width // 2)] if mlp_width % 2 == 0 else []
        if gated and not any(s == (hidden, mlp_width) for s in inner.values()):  # SwiGLU: w12 D -> 2H, w3 H -> D
            raise TargetError("model", f"the original's MLP (fc1 {hidden} -> H, GELU, fc2 H -> {hidden}) in {block}",
                              f"a gated MLP (SwiGLU-style): {fc1} maps {hidden} -> {mlp_width} = 2 x "
                              f"{mlp_width // 2} and {gated[0]} maps {mlp_width // 2} -> {hidden}; not supported")
        fc2 = _single(f"MLP output map in {block}", [n for n, s in inner.items() if s == (hidden, mlp_width)],
                      f"{mlp_width} -> {hidden}")
        mlp = _common_ancestor(fc1, fc2)
        if mlp_hidden is None:
            mlp_hidden = mlp_width
        for ref_part, target in ((".attn.qkv", qkv_name), (".attn.proj", proj_name), (".mlp.fc1", fc1),
                                 (".mlp.fc2", fc2), (".adaLN_modulation.1", modulation)):
            for kind in ("weight", "bias"):
                names[f"{ref}{ref_part}.{kind}"] = f"{target}.{kind}"
        # norms: shape-preserving modules without linear maps the block calls before its attention / its MLP
        attn_order = calls[attention].order if attention in calls else None
        mlp_order = calls[mlp].order if mlp in calls else None
        norms = sorted((name for name, call in calls.items() if _inside(name, block) and name != block
                        and not any(_inside(m, name) for m in inner) and not _inside(name, attention)
                        and not _inside(name, mlp) and call.output is not None and call.first is not None
                        and tuple(call.output.shape) == tuple(call.first.shape) and call.output.ndim == 3
                        and call.output.shape[-1] == hidden), key=lambda n: calls[n].order)
        norm1 = next((n for n in norms if attn_order is not None and calls[n].order < attn_order), None)
        norm2 = next((n for n in norms if attn_order is not None and mlp_order is not None
                      and attn_order < calls[n].order < mlp_order), None)
        hooks.append((modulation, f"{ref}.adaLN_modulation", None))
        if norm1:
            hooks.append((norm1, f"{ref}.norm1", None))
        hooks.append((attention, f"{ref}.attn", None))
        if norm2:
            hooks.append((norm2, f"{ref}.norm2", None))
        hooks += [(mlp, f"{ref}.mlp", None), (block, ref, None)]
        if i == 0:
            attention_io = (calls.get(attention), qkv_name, proj_name, attention)
            evidence.append(f"blocks: {len(blocks)} x {type(model.get_submodule(block)).__name__} ({blocks[0]}, ...): "
                            f"adaLN {modulation}, attention {attention} (qkv {qkv_name}, proj {proj_name}), "
                            f"MLP {mlp} ({fc1}, {fc2}), norms {norm1}, {norm2}")

    # final layer: D -> 2D modulation and D -> p*p*C_out outside the blocks
    embedders = [m for m in (x_module, t_module, y_module) if m is not None]
    outside = {name: shape for name, shape in maps.items()
               if not any(_inside(name, b) for b in blocks + embedders) and name not in embeddings}
    final_mod = _single("final modulation", [n for n, s in outside.items() if s == (2 * hidden, hidden)],
                        f"a linear map {hidden} -> {2 * hidden} outside the blocks")
    final_lin = _single("final linear map", [n for n, s in outside.items() if s[1] == hidden
                                             and s[0] % (patch * patch) == 0 and s[0] // (patch * patch)
                                             in (channels, 2 * channels)],
                        f"a linear map {hidden} -> p*p*C or p*p*2C outside the blocks")
    out_channels = outside[final_lin][0] // (patch * patch)
    if learn_sigma is not None and learn_sigma != (out_channels == 2 * channels):
        raise TargetError("learn_sigma", f"{out_channels == 2 * channels} ({final_lin} has {outside[final_lin][0]} "
                          f"outputs = p*p*{out_channels}, C = {channels})", str(learn_sigma))
    final = _common_ancestor(final_mod, final_lin)
    final_module = final if final and final in calls else final_lin
    final_norms = sorted((name for name, call in calls.items() if _inside(name, final) and final
                          and name not in (final, final_mod, final_lin) and not any(_inside(m, name) for m in maps)
                          and call.output is not None and call.first is not None and call.output.ndim == 3
                          and tuple(call.output.shape) == tuple(call.first.shape)), key=lambda n: calls[n].order)
    hooks.append((final_mod, "final_layer.adaLN_modulation", None))
    if final_norms:
        hooks.append((final_norms[0], "final_layer.norm_final", None))
    hooks.append((final_module, "final_layer", None))
    for ref_part, target in (("final_layer.adaLN_modulation.1", final_mod), ("final_layer.linear", final_lin),
                             ("x_embedder.proj", patch_conv), ("t_embedder.mlp.0", t_maps[0]),
                             ("t_embedder.mlp.2", t_maps[1])):
        for kind in ("weight", "bias"):
            names[f"{ref_part}.{kind}"] = f"{target}.{kind}"
    if table_name:
        names["y_embedder.embedding_table.weight"] = f"{table_name}.weight"
    if table:
        names["pos_embed"] = table
    missing_bias = sorted(name for name in names.values() if name not in state)
    if missing_bias:
        raise TargetError("model", "biases on every linear map (the reference's have them)", f"no {missing_bias[:3]}")
    unmapped = sorted(name for name, _ in model.named_parameters() if name not in set(names.values()))
    if unmapped:
        evidence.append(f"parameters outside the reference DiT (kept at the target's values): {unmapped[:6]}")

    # returned channels: all of C_out, or only the first C (SiT)
    candidate = output[0] if isinstance(output, (tuple, list)) and output else output
    first_of_tuple = False
    if isinstance(candidate, torch.Tensor) and candidate.ndim == 4 and tuple(candidate.shape[2:]) == (height, width) \
            and candidate.shape[1] in (channels, out_channels):
        first_of_tuple = candidate is not output
        if first_of_tuple:
            evidence.append(f"output: the forward returns a {type(output).__name__} of {len(output)}; its first "
                            "element is the prediction compared (the rest, e.g. REPA's projected features, is not "
                            "checked)")
        returned = int(candidate.shape[1])
    else:  # not a DiT output: the validation reports it as a failed check (the target did return)
        returned = out_channels
        evidence.append(f"the probing forward returned {tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}, "
                        f"not [N, {out_channels} or {channels}, {height}, {width}]")
    evidence.append(f"final layer: {final_module} ({final_mod}, {final_lin}: p*p*{out_channels} outputs, "
                    f"learn_sigma {out_channels == 2 * channels}); forward returns "
                    f"{'all ' + str(returned) if returned == out_channels else f'the first {returned} of {out_channels}'}"
                    " channels")

    # heads: the divisor of D that reproduces block 0's recorded attention
    attributes = _head_attributes([model.get_submodule(attention_io[3]), model.get_submodule(blocks[0]), model],
                                  hidden)
    own = getattr(model, "config", None)
    if isinstance(own, DiTConfig):
        attributes["config.num_heads"] = own.num_heads
    call = attention_io[0]
    errors: dict[int, float] = {}
    if call is not None and isinstance(call.first, torch.Tensor) and call.output is not None:
        weights = {name: model.get_submodule(name) for name in (attention_io[1], attention_io[2])}
        arrays = [value.detach().to("cpu", torch.float64).numpy() for value in (
            call.first[0], call.output[0], weights[attention_io[1]].weight, weights[attention_io[1]].bias,
            weights[attention_io[2]].weight, weights[attention_io[2]].bias)]
        errors = head_count_errors(*arrays)
    ranked = sorted(errors, key=errors.get)
    reproduced = ranked[0] if len(ranked) > 1 and errors[ranked[0]] * HEAD_SEPARATION < errors[ranked[1]] else None
    said = sorted(set(attributes.values()))
    options = ", ".join(f"{h} (error {errors[h]:.2g})" for h in ranked[:4])
    if heads is not None:
        if hidden % heads:
            raise InvalidArgumentError("heads", f"a divisor of the hidden size {hidden}", repr(heads))
        head_count = heads
        evidence.append(f"heads: {heads} (given; the probe's best: {options})")
    elif reproduced is not None and said and reproduced not in said:
        raise TargetError("heads", f"one head count: the attributes say {attributes}, the recorded attention is "
                          f"reproduced by {reproduced} heads ({options}); pass heads= / --heads N", "two answers")
    elif reproduced is not None:
        head_count = reproduced
        evidence.append(f"heads: {reproduced} (reproduces block 0's recorded attention; runner-up errors: {options})"
                        + (f"; attributes agree: {attributes}" if said else ""))
    elif len(said) == 1:
        head_count = said[0]
        evidence.append(f"heads: {head_count} from {attributes} (no head count reproduces block 0's attention: "
                        f"{options}; the attention is what gets checked)")
    else:
        raise TargetError("heads", "a head count: no attribute states it and no divisor of the hidden size reproduces "
                          f"block 0's attention (best: {options}); attributes: {attributes or 'none'}; pass heads= / "
                          "--heads N", "ambiguous")

    config = DiTConfig(input_size=input_size, patch_size=patch, in_channels=channels, hidden_size=hidden,
                       depth=len(blocks), num_heads=head_count, num_classes=num_classes,
                       mlp_ratio=overrides.get("mlp_ratio", (mlp_hidden or 4 * hidden) / hidden),
                       learn_sigma=out_channels == 2 * channels,
                       frequency_dim=overrides.get("frequency_dim", frequency_dim))
    return Structure(config, names, hooks, returned, evidence, first_of_tuple)
