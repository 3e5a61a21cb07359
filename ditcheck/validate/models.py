"""``ditcheck.validate.dit``: a third-party DiT against the reference, activation by activation, with a diagnosis.

Two layouts are recognised from the state dict: the original DiT (facebookresearch/DiT models.py,
which ditcheck.models.dit.DiT and most forks keep) and diffusers' DiTTransformer2DModel. The
architecture (sizes, depth, heads, classes, learn_sigma) is read off the target; the numerical
conventions are not: they are what is being checked, and come from ``convention`` ("dit": the
DiTConfig defaults; "diffusers": plus reference.dit.DIFFUSERS_DIT_KNOBS).

ditcheck draws random weights (adaLN-Zero weights included: zero at a real init, they would make
the check vacuous), loads them into the target, runs it with forward hooks, and compares every
hooked activation with reference.dit_intermediates (float64) under the tolerance rule of
properties/validation.py, the naive candidate being ditcheck.models.dit.DiT in the target's dtype.
When the target fails, the reference is re-run with convention knobs changed, one at a time and
in pairs, and the settings under which every activation falls within tolerance are reported.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

from ditcheck.models.dit import DiT as NaiveDiT
from ditcheck.properties.strategies import fill, seeds
from ditcheck.properties.validation import FORWARD_FACTOR, Tolerance, derive_tolerance
from ditcheck.reference.dit import (ADALN_CHUNK_ORDER, DIFFUSERS_DIT_KNOBS, DiTConfig, dit_forward,
                                    dit_intermediates, dit_param_shapes, random_dit_params)
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.layers import pos_embed_2d

from ._attention import draw_examples, require_run_settings, resolve_device, resolve_dtype
from ._target import DEFAULT_TIMEOUT, TargetError, TargetTimeoutError, call_isolated
from .report import Check, Failure, Report

__all__ = ["dit", "CONVENTIONS", "DEFAULT_DIT_EXAMPLES", "Layout", "recognise", "diffusers_state_dict",
           "params_from_diffusers", "convention_config", "knob_variants"]

CONVENTIONS = ("dit", "diffusers")
DEFAULT_DIT_EXAMPLES = 3


def convention_config(config: DiTConfig, convention: str) -> DiTConfig:
    """The architecture of ``config`` with the numerical conventions of ``convention``."""
    if convention not in CONVENTIONS:
        raise InvalidArgumentError("convention", f"one of {CONVENTIONS}", repr(convention))
    defaults = DiTConfig(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
                         hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
                         num_classes=config.num_classes, mlp_ratio=config.mlp_ratio, learn_sigma=config.learn_sigma,
                         frequency_dim=config.frequency_dim)
    return defaults.replace(**DIFFUSERS_DIT_KNOBS) if convention == "diffusers" else defaults


# ----------------------------------------------------------------------------------------
# Layouts: how to recognise a target, load reference parameters into it, and name its activations


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


def _dit_hooks(config: DiTConfig) -> list[tuple[str, str, Any]]:
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
        return Layout("dit", config, _dit_hooks(config))
    raise TargetError("model", "a DiT in the original layout (x_embedder, t_embedder, blocks.i.attn.qkv, final_layer, "
                      "pos_embed in the state dict) or a diffusers DiTTransformer2DModel",
                      f"{type(model).__name__} with state-dict keys {list(state)[:4]}: neither is recognised")


def _diffusers_names(config: DiTConfig, embedder_blocks: range) -> list[tuple[str, str]]:
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
    state.update({diff: params[ref] for ref, diff in _diffusers_names(config, range(config.depth))})
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
    params = {ref: state[diff] for ref, diff in _diffusers_names(config, range(1))}
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


# ----------------------------------------------------------------------------------------
# Running a model with hooks


def _capture(model: nn.Module, hooks: list[tuple[str, str, Any]], call: Callable[[], Any],
             timeout: float) -> tuple[Any, list[tuple[str, str, np.ndarray]]]:
    """(output, [(target name, reference name, activation)] in execution order; first call of each module only)."""
    modules = dict(model.named_modules())
    seen: list[tuple[str, str, np.ndarray]] = []
    done: set[str] = set()
    handles = []
    for target_name, reference_name, transform in hooks:
        module = modules.get(target_name)
        if module is None:
            continue

        def hook(_module: nn.Module, _inputs: Any, output: Any, target_name: str = target_name,
                 reference_name: str = reference_name, transform: Any = transform) -> None:
            if target_name in done:
                return
            done.add(target_name)
            value = output[0] if isinstance(output, tuple) else output
            if isinstance(value, torch.Tensor):
                value = transform(value) if transform is not None else value
                seen.append((target_name, reference_name, value.detach().to("cpu", torch.float64).numpy()))

        handles.append(module.register_forward_hook(hook))
    def run() -> Any:
        with torch.no_grad():  # grad mode is per thread: set it in the thread that runs the target
            return call()

    try:
        output = call_isolated(run, timeout=timeout)
    finally:
        for handle in handles:
            handle.remove()
    return output, seen


@dataclass(frozen=True)
class _Example:
    param_seed: int
    input_seed: int
    times: tuple[float, ...]
    labels: tuple[int, ...] | None


def _examples(config: DiTConfig, count: int, seed: int, batch: int = 2) -> list[_Example]:
    labels = (st.lists(st.integers(0, config.num_classes), min_size=batch, max_size=batch).map(tuple)
              if config.num_classes else st.just(None))
    times = st.lists(st.floats(0.0, 999.0, allow_nan=False), min_size=batch, max_size=batch).map(tuple)
    return draw_examples(st.builds(_Example, seeds(), seeds(), times, labels), count, seed)


@dataclass
class _Comparison:
    """Worst error of one activation over the examples, for the target and for the naive implementation."""

    target_name: str
    reference_name: str
    order: int
    observed: float = 0.0
    naive: float = 0.0
    magnitude: float = 0.0


def _max_abs(a: np.ndarray) -> float:
    return float(np.max(np.abs(a), initial=0.0)) if np.all(np.isfinite(a)) else math.inf


# ----------------------------------------------------------------------------------------
# Diagnosis knobs


def knob_variants(config: DiTConfig) -> list[tuple[str, Any]]:
    """Single changes of the convention knobs real DiT code varies (docs/conventions.md#dit-layout), away from ``config``.

    learn_sigma and mlp_ratio are not among them: they change parameter shapes and are read off the target.
    """
    head_dim = config.hidden_size // config.num_heads
    candidates: list[tuple[str, Any]] = [
        ("flip_sin_to_cos", not config.flip_sin_to_cos),
        ("downscale_freq_shift", 1.0 if config.downscale_freq_shift == 0 else 0.0),
        ("gelu_approximate", "none" if config.gelu_approximate == "tanh" else "tanh"),
        ("final_adaln_chunk_order", tuple(reversed(config.final_adaln_chunk_order))),
    ]
    candidates += [("max_period", v) for v in (1000.0, 10000.0) if v != config.max_period]
    candidates += [("time_scale", v) for v in (1000.0, 0.001, 1.0) if v != config.time_scale]
    for name in ("ln_eps_attn", "ln_eps_mlp", "ln_eps_final"):
        candidates += [(name, v) for v in (1e-6, 1e-5) if v != getattr(config, name)]
    candidates += [("attention_scale", v) for v in (None, 1.0 / head_dim, 1.0) if v != config.attention_scale]
    candidates += [("qkv_order", "".join(p)) for p in permutations("qkv") if "".join(p) != config.qkv_order]
    base = ADALN_CHUNK_ORDER
    swapped = ("scale_msa", "shift_msa", "gate_msa", "scale_mlp", "shift_mlp", "gate_mlp")
    groups = base[3:] + base[:3]
    gate_first = ("gate_msa", "shift_msa", "scale_msa", "gate_mlp", "shift_mlp", "scale_mlp")
    by_role = ("shift_msa", "shift_mlp", "scale_msa", "scale_mlp", "gate_msa", "gate_mlp")
    candidates += [("adaln_chunk_order", order) for order in (base, swapped, groups, gate_first, by_role)
                   if order != config.adaln_chunk_order]
    return candidates


# ----------------------------------------------------------------------------------------
# The validation


def dit(model: Any, *, convention: str = "dit", examples: int = DEFAULT_DIT_EXAMPLES, seed: int = 0,
        dtype: torch.dtype | str | None = None, device: str | torch.device | None = None, weights: str = "random",
        diagnose: bool = True, timeout: float = DEFAULT_TIMEOUT, target: str | None = None) -> Report:
    """Validate a DiT (original layout or diffusers' DiTTransformer2DModel) against the reference.

    convention: "dit" (facebookresearch/DiT) or "diffusers" (DIFFUSERS_DIT_KNOBS). examples: random
    (weights, latents, timesteps, labels) draws, Hypothesis-seeded by ``seed``. dtype / device:
    where the target runs (default: its own; a copy is converted when they differ). weights:
    "random" (ditcheck draws every weight, adaLN-Zero included) or "model" (the target's own, e.g.
    a loaded checkpoint). Returns a :class:`Report`: one check per compared activation plus
    pos_embed and the output, the first diverging submodule, and a diagnosis of the mismatch.
    """
    examples, seed, timeout = require_run_settings(examples, seed, timeout)
    if weights not in ("random", "model"):
        raise InvalidArgumentError("weights", "'random' or 'model'", repr(weights))
    if convention not in CONVENTIONS:
        raise InvalidArgumentError("convention", f"one of {CONVENTIONS}", repr(convention))
    name = target or f"{type(model).__module__}:{type(model).__qualname__}"
    try:
        layout = recognise(model)
    except TargetError as error:
        report = Report(target=name, kind="dit", settings={"convention": convention}, loaded=False)
        report.notes.append(str(error))
        return report
    own = next(iter(model.parameters()))
    dtype = own.dtype if dtype is None else resolve_dtype(dtype)
    device = own.device if device is None else resolve_device(device)
    if (dtype, device) != (own.dtype, own.device):
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    config = convention_config(layout.config, convention)
    report = Report(target=name, kind="dit", settings={
        "layout": layout.name, "convention": convention, "dtype": str(dtype).removeprefix("torch."),
        "device": str(device), "examples": examples, "seed": seed, "weights": weights,
        "architecture": (f"input {config.input_size}, patch {config.patch_size}, C {config.in_channels}, "
                         f"hidden {config.hidden_size}, depth {config.depth}, heads {config.num_heads}, "
                         f"classes {config.num_classes}, learn_sigma {config.learn_sigma}")})
    was_training = model.training
    model.eval()  # label dropout and dropout off
    try:
        _validate(model, layout, config, report, examples, seed, dtype, device, weights, diagnose, timeout)
    finally:
        model.train(was_training)
    return report


@dataclass
class _Run:
    """One example as the target ran it: reference inputs (rounded through dtype), tensors, activations, output."""

    inputs: dict[str, Any]
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
    seen: list[tuple[str, str, np.ndarray]]
    result: np.ndarray


def _measure(config: DiTConfig, runs: list[_Run], dtype: torch.dtype, device: torch.device, timeout: float,
             naive_errors: Mapping[str, float] | None = None) -> list[_Comparison]:
    """Worst errors per activation (execution order, output last) of the target and of the naive model, for ``config``.

    The naive candidate of the tolerance rule is ditcheck.models.dit.DiT with the same config, weights
    and inputs in the target dtype: a plain implementation of exactly the convention checked.
    ``naive_errors`` (by target activation name) reuses errors measured before instead of re-running it.
    """
    comparisons: dict[str, _Comparison] = {}
    output = _Comparison("output", "unpatchify", 10**6)
    for run in runs:
        x, t, y = run.tensors
        naive: dict[str, np.ndarray] = {}
        if naive_errors is None:
            naive_model = NaiveDiT.from_params(config, run.inputs["params"], dtype=dtype, device=device)
            naive_out, naive_seen = _capture(naive_model, _dit_hooks(config), lambda: naive_model(x, t, y), timeout)
            naive = {ref: value for _, ref, value in naive_seen}
            naive["unpatchify"] = naive_out.double().cpu().numpy()
            with torch.no_grad():  # c = t_emb + y_emb is no module of the original layout: add in the target dtype
                c = naive_model.t_embedder(t) + (naive_model.y_embedder(y) if y is not None else 0)
            naive["c"] = c.double().cpu().numpy()
        reference = dit_intermediates(**{**run.inputs, "config": config})
        pairs = [(target_name, reference_name, value) for target_name, reference_name, value in run.seen]
        for order, (target_name, reference_name, value) in enumerate(pairs + [("output", "unpatchify", run.result)]):
            expected = reference[reference_name]
            entry = output if target_name == "output" else comparisons.setdefault(
                target_name, _Comparison(target_name, reference_name, order))
            entry.observed = max(entry.observed, _max_abs(value - expected) if value.shape == expected.shape
                                 else math.inf)
            entry.naive = max(entry.naive, _max_abs(naive[reference_name] - expected) if naive_errors is None
                              else naive_errors[target_name])
            entry.magnitude = max(entry.magnitude, _max_abs(expected))
    return sorted(comparisons.values(), key=lambda c: c.order) + [output]


def _tolerances(ordered: list[_Comparison], dtype: torch.dtype) -> dict[str, Tolerance]:
    return {c.target_name: derive_tolerance(c.naive, None, c.magnitude, dtype, FORWARD_FACTOR) for c in ordered}


def _score(ordered: list[_Comparison], dtype: torch.dtype) -> tuple[float, int]:
    """(worst error/tolerance, index of the first activation outside tolerance; len(ordered) if none)."""
    tolerances = _tolerances(ordered, dtype)
    ratios = [c.observed / tolerances[c.target_name].value for c in ordered]
    first = next((i for i, r in enumerate(ratios) if r > 1), len(ordered))
    return max(ratios), first


def _validate(model: nn.Module, layout: Layout, config: DiTConfig, report: Report, examples: int, seed: int,
              dtype: torch.dtype, device: torch.device, weights: str, diagnose: bool, timeout: float) -> None:
    table = layout.pos_embed_table(model)
    exact_table = pos_embed_2d(config.hidden_size, config.grid, config.pos_embed_max_period)[None]
    if table is not None and table.shape == exact_table.shape:
        # the naive candidate: the float64 table rounded once to dtype
        rounded = torch.as_tensor(exact_table, dtype=dtype).double().numpy()
        tol = derive_tolerance(_max_abs(rounded - exact_table), None, _max_abs(exact_table), dtype)
        err = _max_abs(table - exact_table)
        report.checks.append(Check("pos_embed", err <= tol.value, err, tol,
                                   "" if err <= tol.value else "the fixed 2-D sin-cos position table differs", 1))
    own_params = layout.params(model) if weights == "model" else None
    runs: list[_Run] = []
    failures: list[str] = []
    returned = 0  # calls that returned (whatever they returned)
    for example in _examples(config, examples, seed):
        params = own_params if own_params is not None else random_dit_params(config, example.param_seed)
        params = {k: torch.as_tensor(v, dtype=dtype).double().numpy() for k, v in params.items()}  # round through dtype
        x = torch.as_tensor(fill((len(example.times), config.in_channels, *config.latent_size), example.input_seed),
                            dtype=dtype, device=device)
        t = torch.as_tensor(example.times, dtype=dtype, device=device)
        y = None if example.labels is None else torch.as_tensor(example.labels, dtype=torch.int64, device=device)
        inputs = {"params": params, "x": x.double().cpu().numpy(), "t": t.double().cpu().numpy(),
                  "y": None if y is None else np.asarray(example.labels), "config": config}
        try:
            if weights == "random":
                layout.load(model, params, dtype, device)
            out, seen = _capture(model, layout.hooks, lambda: layout.call(model, x, t, y), timeout)
            returned += 1
            if not isinstance(out, torch.Tensor):
                raise TargetError("output", "a tensor", type(out).__name__)
            expected_shape = (len(example.times), config.out_channels, *config.latent_size)
            if tuple(out.shape) != expected_shape:
                raise TargetError("output", f"shape {expected_shape}", str(tuple(out.shape)))
            if out.dtype != dtype:
                raise TargetError("output", f"dtype {dtype}", str(out.dtype))
        except TargetError as error:
            failures.append(error.describe())
            if isinstance(error, TargetTimeoutError):
                break  # a hung call may still be running: do not pile up more
            continue
        runs.append(_Run(inputs, (x, t, y), seen, out.double().cpu().numpy()))
    if not runs:  # exit code 2 only when no call returned: a wrong output is a discrepancy
        report.loaded = returned > 0
        report.checks.append(Check("output", False, message=f"every call failed; first: {failures[0]}"))
        return
    ordered = _measure(config, runs, dtype, device, timeout)
    tolerances = _tolerances(ordered, dtype)
    # Checks shown for the embedders, every block and the output; a failing sub-activation (norm, attn,
    # mlp, adaLN, another block's embedder copy) is the first divergence or becomes a check of its own
    # when every shown check passes, so none is ever hidden.
    shown = {"x_embedder", "t_embedder", "y_embedder", "final_layer", "unpatchify"} | \
        {f"blocks.{i}" for i in range(config.depth)}
    hidden_failures = []
    for c in ordered:
        tol = tolerances[c.target_name]
        ok = c.observed <= tol.value
        first = not ok and report.first_divergence is None
        if first:
            report.first_divergence = c.target_name + (f" (reference {c.reference_name})"
                                                       if c.target_name != c.reference_name else "")
        block_copy = c.target_name.startswith("transformer_blocks.") and \
            not c.target_name.startswith("transformer_blocks.0.") and c.reference_name in {"t_embedder", "y_embedder"}
        check_id = c.target_name if c.target_name == c.reference_name else f"{c.target_name} ~ {c.reference_name}"
        check = Check(check_id, ok, c.observed, tol, "" if ok else
                      f"{c.reference_name}: error {c.observed:.3g} exceeds {tol.value:.3g}", len(runs))
        if (c.reference_name in shown and not block_copy) or first:
            report.checks.append(check)
        elif not ok:
            hidden_failures.append(check)
    if hidden_failures and all(check.ok for check in report.checks):
        report.checks.extend(hidden_failures)
    if failures:
        report.checks.append(Check("call", False, message=f"{len(failures)} of {len(runs) + len(failures)} calls "
                                   f"failed; first: {failures[0]}", examples=len(runs) + len(failures)))
    if not report.ok:
        worst = max(runs, key=lambda run: _max_abs(run.result - dit_forward(**run.inputs)))
        report.failures.append(_failure(report, worst.inputs, worst.result, report.settings["convention"]))
        if diagnose:
            _diagnose(report, config, _diagnosis_runs(model, layout, config, worst, dtype, device, weights, timeout),
                      dtype, device, timeout)


#: Timesteps of the diagnosis runs: small, so float32 time features err by ~1e-7, not ~1e-5 as at t ~ 1000
#: (the shift and max_period knobs still change them by percents); a convention difference that is
#: small next to float32 timestep rounding (a LayerNorm eps) then stands out.
DIAGNOSIS_TIMES = (0.75, 3.5)
#: A knob setting whose screened error/tolerance is within this factor of passing is re-checked exactly.
_SCREEN = 4.0
#: ... and so is one that removes all but this fraction of the worst screened ratio: what remains may be
#: rounding that the base convention's naive errors do not show (time_scale 1000 scales the timestep rounding).
_EXPLAINED = 1e-3


def _diagnosis_runs(model: nn.Module, layout: Layout, config: DiTConfig, run: _Run, dtype: torch.dtype,
                    device: torch.device, weights: str, timeout: float) -> list[_Run]:
    """The first run's weights and latents again, at DIAGNOSIS_TIMES (falls back to the run itself if that fails)."""
    x, _, y = run.tensors
    batch = x.shape[0]
    times = torch.as_tensor([DIAGNOSIS_TIMES[i % len(DIAGNOSIS_TIMES)] for i in range(batch)], dtype=dtype,
                            device=device)
    try:
        if weights == "random":
            layout.load(model, run.inputs["params"], dtype, device)
        out, seen = _capture(model, layout.hooks, lambda: layout.call(model, x, times, y), timeout)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(run.result.shape):
            return [run]
    except TargetError:
        return [run]
    inputs = {**run.inputs, "t": times.double().cpu().numpy()}
    return [_Run(inputs, (x, times, y), seen, out.double().cpu().numpy())]


def _diagnose(report: Report, config: DiTConfig, runs: list[_Run], dtype: torch.dtype, device: torch.device,
              timeout: float) -> None:
    """Re-run the reference (and the naive model) with each convention knob changed, then with pairs.

    The runs are one example at DIAGNOSIS_TIMES. A knob helps on its own when it moves the first
    divergence later or halves the worst ratio; each helpful knob is paired with every other, and a
    pair is reported when it passes and halves the ratio of its helpful knob alone (so a lone knob
    that passes is refined too: a second convention difference can hide below the tolerance of the
    first). When that explains nothing, every pair is tried (knobs that help only together).
    Entries are sorted best first.
    """
    base = _measure(config, runs, dtype, device, timeout)
    # Screening reuses the naive model's errors of the base convention (a knob changes the function more
    # than its rounding noise); a setting that passes the screen within SCREEN x is confirmed with the
    # naive model re-run under that setting, which is what the tolerance rule asks for.
    naive_errors = {c.target_name: c.naive for c in base}

    def screen(variant: DiTConfig) -> tuple[float, int]:
        return _score(_measure(variant, runs, dtype, device, timeout, naive_errors), dtype)

    def confirmed(variant: DiTConfig) -> float | None:
        worst, _ = _score(_measure(variant, runs, dtype, device, timeout), dtype)
        return worst if worst <= 1 else None

    base_worst, base_first = _score(base, dtype)

    def promising(screened: float) -> bool:
        return screened <= _SCREEN or screened <= _EXPLAINED * base_worst

    helpful: list[tuple[tuple[str, Any], float]] = []
    for knob, value in knob_variants(config):
        try:
            variant = config.replace(**{knob: value})
        except InvalidArgumentError:
            continue
        worst, first = screen(variant)
        passed = confirmed(variant) if promising(worst) else None
        if passed is not None:
            report.diagnosis.append({"knobs": {knob: value}, "ratio": passed})
            helpful.append(((knob, value), passed))
        elif first > base_first or worst < 0.5 * base_worst:
            helpful.append(((knob, value), worst))
    tried: set[frozenset[tuple[str, str]]] = set()

    def try_pairs(firsts: list[tuple[tuple[str, Any], float]]) -> None:
        for (knob, value), alone in firsts:
            for other, other_value in knob_variants(config):
                key = frozenset({(knob, repr(value)), (other, repr(other_value))})
                if other == knob or key in tried:
                    continue
                tried.add(key)
                try:
                    variant = config.replace(**{knob: value, other: other_value})
                except InvalidArgumentError:
                    continue
                worst, _ = screen(variant)
                passed = confirmed(variant) if promising(worst) and worst < 0.5 * alone * _SCREEN else None
                if passed is not None and passed < 0.5 * alone:
                    report.diagnosis.append({"knobs": {knob: value, other: other_value}, "ratio": passed})

    try_pairs(helpful)
    if not report.diagnosis:  # two knobs that only help together (e.g. time scale and frequency shift): all pairs
        try_pairs([(variant, base_worst) for variant in knob_variants(config)])
    report.diagnosis.sort(key=lambda e: (e["ratio"], len(e["knobs"])))
    if not report.diagnosis:
        partly = ", ".join(f"{k}={v!r} (worst ratio {w:.3g})" for (k, v), w in helpful[:5])
        report.notes.append("diagnosis: no single convention knob or pair of knobs explains the mismatch"
                            + (f"; partly helpful: {partly}" if partly else ""))


def _failure(report: Report, inputs: Mapping[str, Any], result: np.ndarray, convention: str) -> Failure:
    arrays = {f"param:{k}": v for k, v in inputs["params"].items()}
    arrays.update({"x": inputs["x"], "t": inputs["t"], "output": result})
    if inputs["y"] is not None:
        arrays["y"] = np.asarray(inputs["y"])
    config = inputs["config"]
    dtype, device = report.settings["dtype"], report.settings["device"]
    snippet = f'''"""Re-run ditcheck's failing DiT case of {report.target} ({convention} convention).

First divergence: {report.first_divergence}.
"""
import numpy as np
import torch

from ditcheck.reference.dit import DiTConfig, dit_forward
from ditcheck.validate import load_module, recognise

data = np.load("{{NPZ}}")
params = {{k.removeprefix("param:"): data[k] for k in data.files if k.startswith("param:")}}
config = {config!r}
y = data["y"] if "y" in data.files else None
expected = dit_forward(params, data["x"], data["t"], y, config)

# the target as ditcheck loaded it (if it was passed as an object, build it here instead)
model = load_module({report.target!r})
dtype, device = torch.{dtype}, torch.device({device!r})
if next(model.parameters()).dtype != dtype:
    model = model.to(dtype=dtype)
model = model.to(device=device).eval()
layout = recognise(model)
layout.load(model, params, dtype, device)  # the failing case's weights (the target's own ones for --checkpoint)
with torch.no_grad():
    out = layout.call(model, torch.tensor(data["x"], dtype=dtype, device=device),
                      torch.tensor(data["t"], dtype=dtype, device=device),
                      None if y is None else torch.tensor(y, device=device))
print("max |target - reference|", np.abs(out.double().cpu().numpy() - expected).max())
print("(ditcheck saw", np.abs(data["output"] - expected).max(), ")")
'''
    return Failure("dit-output", arrays, snippet)
