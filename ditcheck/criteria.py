"""``ditcheck criteria``: the LD6 efficiency criterion per attention layer, from the command line.

The measurement itself (what R, the degree, the rank and the FLOP model are) is documented in
:mod:`ditcheck.fast_attention.criteria`; this module builds the model and its inputs and prints the table.

Models: without --model, ditcheck's DiT with random weights (--config). --model diffusers:CLASS (any diffusers
transformer class ``ditcheck validate dit`` builds) is built with its documented tiny configuration and every
input comes from the same builder as ``ditcheck validate dit`` (ditcheck.validate.zoo.build_inputs): nothing else
to give. Its rows are per attention call: every torch.nn.functional.scaled_dot_product_attention call is captured
with the q, k and scale that enter the softmax (joint attention, RoPE, QK-norm included), one row per call. An
instance of such a class, or a zero-argument factory of one (MODULE:ATTR), is measured the same way at its own
config. Weights: --weights random redraws every parameter N(0, 0.3^2) (ditcheck.validate.zoo.randomise_weights,
the draw ``validate dit`` uses; default for diffusers:CLASS); --weights model keeps the module's own (default for
an instance or factory, e.g. a pretrained model; for diffusers:CLASS: diffusers' own initialisation, adaLN-Zero and
zero gates included). A module in the original DiT layout (or DiTTransformer2DModel) is measured per layer with
hooks and called as module(x, t[, y]) with --input-shape, --time and --label (default from its config; a fork
of the original DiT with no config, such as SiT: from the layout ``validate dit`` recognises).

  ditcheck criteria --model diffusers:FluxTransformer2DModel
  ditcheck criteria --model diffusers:WanTransformer3DModel --weights model
  ditcheck criteria --model my_models.py:pretrained_flux --weights model --json flux.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ditcheck.fast_attention.criteria import analyse, analyse_calls, find_attention_layers, print_criteria
from ditcheck.loader import build, load
from ditcheck.models.dit import DiT
from ditcheck.reference.dit import DiTConfig, random_dit_params
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.validate import recognise, zoo

__all__ = ["HELP", "PRESETS", "DEFAULT_TIME", "preset_model", "load_user_model", "derived_inputs", "zoo_model",
           "Measurement", "measurement", "add_arguments", "run", "main"]

HELP = ("LD6 efficiency criterion per attention layer: entries B of Q, K (scale folded in) vs sqrt(ln L), logit "
        "range R vs ln L, degree, rank, predicted speed-up")

#: Embedded configurations (random weights, no downloads): DiT-S/2 and DiT-B/2 at 256 px (32 x 32 latents, 256 tokens).
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"input_size": 16, "patch_size": 2, "in_channels": 4, "hidden_size": 64, "depth": 2, "num_heads": 4,
              "num_classes": 10},
    "DiT-S/2": {"input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": 384, "depth": 12,
                "num_heads": 6, "num_classes": 1000},
    "DiT-B/2": {"input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": 768, "depth": 12,
                "num_heads": 12, "num_classes": 1000},
}


def preset_model(name: str, *, seed: int = 0, weight_scale: float = 1.0, input_size: int | None = None,
                 dtype: torch.dtype = torch.float32) -> nn.Module:
    """ditcheck.models.dit.DiT with a preset config and reference.dit.random_dit_params(config, seed, weight_scale)."""
    if name not in PRESETS:
        raise InvalidArgumentError("config", f"one of {tuple(PRESETS)}", repr(name))
    options = dict(PRESETS[name])
    if input_size is not None:
        options["input_size"] = input_size
    config = DiTConfig(**options)
    return DiT.from_params(config, random_dit_params(config, seed, weight_scale), dtype=dtype)


def load_user_model(spec: str) -> Any:
    """``MODULE:ATTR`` -> an nn.Module, or a tuple (module, args) or (module, args, kwargs) giving its inputs.

    Loaded by :mod:`ditcheck.loader` (MODULE a dotted name or a .py path); a zero-argument factory is called.
    Errors are :class:`ditcheck.loader.LoadError` naming the argument ``model``.
    """
    return build(load(spec, argument="model"), lambda o: isinstance(o, (nn.Module, tuple)),
                 "an nn.Module or a tuple (module, args[, kwargs])", argument="model")


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidArgumentError("input-shape", "comma-separated positive ints, e.g. 2,4,32,32", repr(text)) from None
    if not shape or min(shape) < 1:
        raise InvalidArgumentError("input-shape", "comma-separated positive ints, e.g. 2,4,32,32", repr(text))
    return shape


def _floating_dtype(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.float32, torch.device("cpu")


#: The middle of the 1000-step DDPM range the DiT family is trained on (facebookresearch/DiT, diffusers).
DEFAULT_TIME = 500.0


def _config_value(model: nn.Module, *names: str) -> Any:
    """The first of ``names`` set in the model's ``config`` (a diffusers FrozenDict or a dataclass), else None."""
    config = getattr(model, "config", None)
    for name in names:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None:
            return value
    return None


def derived_inputs(model: nn.Module, batch: int) -> tuple[tuple[int, ...] | None, float, int | None]:
    """(input shape, time, label) a DiT-like ``model`` can be called with, read from its ``config``.

    The shape is (batch, in_channels, sample_size, sample_size) (diffusers) or ``input_size`` (ditcheck's DiT),
    None when the config does not say; the time is half of ``num_train_timesteps`` when the config has it,
    else :data:`DEFAULT_TIME`; the label is 0 for a class-conditional model (``num_embeds_ada_norm`` in
    diffusers, ``num_classes`` in DiT), None otherwise.
    """
    channels = _config_value(model, "in_channels")
    side = _config_value(model, "sample_size", "input_size")
    shape = None
    if isinstance(channels, int) and side is not None:
        sides = (side, side) if isinstance(side, int) else tuple(side)
        if len(sides) == 2 and all(isinstance(n, int) and n > 0 for n in sides):
            shape = (batch, channels, *sides)
    steps = _config_value(model, "num_train_timesteps")
    time = float(steps) / 2 if isinstance(steps, (int, float)) and steps > 0 else DEFAULT_TIME
    classes = _config_value(model, "num_embeds_ada_norm", "num_classes")
    label = 0 if isinstance(classes, int) and classes > 0 else None
    return shape, time, label


def recognised_config(model: nn.Module) -> DiTConfig | None:
    """The DiTConfig ``ditcheck validate dit`` reads off a DiT of the original architecture (facebookresearch/DiT
    and forks such as SiT, whatever their attribute names; one probing forward), or None for any other model."""
    try:
        return recognise(model).config
    except InvalidArgumentError:  # TargetError included: not that layout
        return None


@dataclasses.dataclass
class Measurement:
    """What ``ditcheck criteria`` runs: the module, the call to make, how rows are found, and a description.

    ``per_call``: one row per scaled_dot_product_attention call (:func:`~ditcheck.fast_attention.criteria.analyse_calls`),
    else one per attention layer found by layout (:func:`~ditcheck.fast_attention.criteria.analyse`).
    """

    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    description: str
    per_call: bool
    #: what to tell a user whose forward rejected the inputs
    input_hint: str = "set them with --input-shape, --time and --label"


def _diffusers_class_name(spec: str) -> str | None:
    """CLASS of a ``diffusers:CLASS`` spec (the module ``diffusers`` itself), else None."""
    module_name, _, attribute = spec.rpartition(":")
    return attribute if module_name == "diffusers" else None


def zoo_model(name: str, *, weights: str = "random", seed: int = 0) -> nn.Module:
    """The diffusers class ``name`` at its tiny configuration (ditcheck.validate.zoo.TINY_CONFIGS), float32, eval.

    ``weights="random"``: zoo.build_model's draw (every parameter N(0, 0.3^2), seeded); "model": diffusers' own
    initialisation (torch's generator seeded with ``seed`` for the call, the global state restored). A class outside
    the zoo is an InvalidArgumentError naming ``model`` (with the reason it is out of scope, where there is one).
    """

    if weights == "random" or name not in zoo.TINY_CONFIGS:
        return zoo.build_model(name, torch.float32, seed=seed)  # outside the zoo: its typed error
    cls = zoo.diffusers_transformer_classes()[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**zoo.TINY_CONFIGS[name]).eval()


def _weights(model: nn.Module, weights: str, seed: int) -> nn.Module:
    """``model`` itself ("model"), or a copy with every parameter redrawn ("random"; the caller's model unchanged)."""
    if weights == "model":
        return model

    return zoo.randomise_weights(copy.deepcopy(model), seed)


def measurement(args: argparse.Namespace) -> Measurement:
    """The module, its inputs and the analysis ``ditcheck criteria`` makes for the command line ``args``."""

    weights = args.weights
    if weights not in (None, "random", "model"):
        raise InvalidArgumentError("weights", "'random' or 'model'", repr(weights))
    generator = torch.Generator().manual_seed(args.seed)
    if args.model is None:
        if weights == "model":
            raise InvalidArgumentError("weights", "'random' for the embedded configs (they have no weights of their "
                                       "own) or --model", repr(weights))
        time = DEFAULT_TIME if args.time is None else args.time
        model = preset_model(args.config, seed=args.seed, weight_scale=args.weight_scale, input_size=args.input_size)
        config = model.config
        x = torch.randn(args.batch, config.in_channels, *config.latent_size, generator=generator)
        t = torch.full((args.batch,), time)
        y = torch.randint(0, config.num_classes, (args.batch,), generator=generator) if config.num_classes else None
        description = (f"{args.config} (ditcheck.models.dit.DiT, random weights: seed {args.seed}, scale "
                       f"{args.weight_scale:g}), {config.num_tokens} tokens, batch {args.batch}, t = {time:g}")
        return Measurement(model, (x, t, y), {}, description, per_call=False)
    name = _diffusers_class_name(args.model)
    loaded: Any
    if name is None:
        loaded = load(args.model, argument="model")
        if inspect.isclass(loaded) and loaded.__module__.startswith("diffusers."):
            name = loaded.__name__  # a diffusers class by any path: its tiny config, not the full-size default
    if name is not None:
        weights = weights or "random"
        loaded = zoo_model(name, weights=weights, seed=args.seed)
        weights_text = ("random weights N(0, 0.3^2)" if weights == "random" else "diffusers' own initialisation") + \
            f", seed {args.seed}"
        label = f"diffusers:{name} (tiny config, {weights_text})"
    else:
        loaded = build(loaded, lambda o: isinstance(o, (nn.Module, tuple)),
                       "an nn.Module or a tuple (module, args[, kwargs])", argument="model")
        weights = weights or "model"
        label = args.model + ("" if weights == "model" else f" (random weights N(0, 0.3^2), seed {args.seed})")
    if isinstance(loaded, tuple):
        if not 2 <= len(loaded) <= 3 or not isinstance(loaded[0], nn.Module):
            raise InvalidArgumentError("model", "a callable returning a module or (module, args[, kwargs])",
                                       f"a tuple of {len(loaded)}")
        module = _weights(loaded[0], weights, args.seed)
        per_call = zoo.diffusers_class_name(module) in zoo.ENTRIES or not find_attention_layers(module)
        return Measurement(module, tuple(loaded[1]), dict(loaded[2]) if len(loaded) == 3 else {}, label, per_call,
                           "the (module, args, kwargs) your factory returned")
    if name is None:  # a class name's model has its weights from zoo_model already (the same seeded draw)
        loaded = _weights(loaded, weights, args.seed)
    if zoo.diffusers_class_name(loaded) in zoo.ENTRIES:
        loaded.eval()
        _, kwargs = zoo.build_inputs(loaded, args.seed)  # typed error naming a forward parameter it cannot build
        kwargs = {key: zoo.to_device(value, _floating_dtype(loaded)[1]) for key, value in kwargs.items()}
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in kwargs.items()
                           if isinstance(v, torch.Tensor) and k in ("hidden_states", "encoder_hidden_states"))
        return Measurement(loaded, (), kwargs, f"{label}, inputs built by ditcheck ({shapes}, batch {zoo.BATCH})",
                           per_call=True, input_hint="inputs built by ditcheck.validate.zoo.build_inputs from its "
                                                     "config; report the class if it rejects them")
    return _dit_layout_measurement(loaded, label, args, generator)


def _dit_layout_measurement(loaded: nn.Module, label: str, args: argparse.Namespace,
                            generator: torch.Generator) -> Measurement:
    """A DiT-like module (original layout, DiTTransformer2DModel) called as module(x, t[, y]) from its config."""
    shape, time, label_value = derived_inputs(loaded, args.batch)
    derived_from = "its config"
    if args.input_shape is not None:
        shape = _parse_shape(args.input_shape)
    elif shape is None and (recognised := recognised_config(loaded)) is not None:
        shape, label_value = (args.batch, recognised.in_channels, *recognised.latent_size), \
            0 if recognised.num_classes else None
        derived_from = "the recognised DiT layout"
    if shape is None:
        raise InvalidArgumentError("input-shape", "--input-shape N,C,H,W: the model has no config with in_channels "
                                   "and sample_size, and is not a DiT of the original architecture, to derive the "
                                   "input from", "no --input-shape")
    time = time if args.time is None else args.time
    label_value = label_value if args.label is None else args.label
    dtype, device = _floating_dtype(loaded)
    x = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    t = torch.full((shape[0],), time, device=device, dtype=dtype)
    call: tuple[Any, ...] = (x, t)
    if label_value is not None:
        call += (torch.full((shape[0],), label_value, dtype=torch.int64, device=device),)
    description = (f"{label} called as module(x, t{'' if label_value is None else ', y'}), x ~ N(0, 1) of shape "
                   f"{shape}, t = {time:g}{'' if label_value is None else f', y = {label_value}'}"
                   f"{'' if args.input_shape is not None else f' (from {derived_from})'}")
    return Measurement(loaded, call, {}, description, per_call=not find_attention_layers(loaded))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", choices=tuple(PRESETS), default="small",
                        help="embedded DiT with random weights (default small; ignored with --model)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="latent side for the preset (default: the preset's; tokens = (side/patch)^2)")
    parser.add_argument("--weight-scale", type=float, default=1.0,
                        help="scale of the random weights (reference.dit.random_dit_params; default 1)")
    parser.add_argument("--eps", type=float, default=1e-4,
                        help="relative error of the polynomial approximation of exp (default 1e-4)")
    parser.add_argument("--kind", choices=("chebyshev", "taylor"), default="chebyshev",
                        help="polynomial family whose certified minimal degree is reported (default chebyshev)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the random weights and inputs (default 0)")
    parser.add_argument("--batch", type=int, default=2, metavar="N",
                        help="batch size of the random inputs (default 2; --input-shape overrides it)")
    parser.add_argument("--time", type=float, default=None, metavar="T",
                        help="diffusion timestep fed to a DiT-layout model (default: half the model config's "
                             f"num_train_timesteps, else {DEFAULT_TIME:g})")
    parser.add_argument("--model", default=None, metavar="MODULE:ATTR",
                        help="analyse this module instead: diffusers:CLASS (any diffusers transformer class "
                             "`ditcheck validate dit` builds: tiny config, inputs built by ditcheck, one row per "
                             "attention call), or ATTR an nn.Module or a zero-arg callable returning one (or "
                             "(module, args[, kwargs])); MODULE a dotted name or a .py path")
    parser.add_argument("--weights", choices=("random", "model"), default=None,
                        help="random: redraw every parameter N(0, 0.3^2) as `validate dit` does (default for "
                             "diffusers:CLASS); model: the module's own weights (default for an instance or factory; "
                             "for diffusers:CLASS, diffusers' own initialisation)")
    parser.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                        help="with --model in the DiT layout: shape of the random input x (comma-separated); the module is called as "
                             "module(x, t) (default: (batch, in_channels, sample_size, sample_size) from the model's "
                             "config, or read off the recognised layout of a DiT fork with no config, as validate dit "
                             "reads it)")
    parser.add_argument("--label", type=int, default=None, metavar="Y",
                        help="with --model in the DiT layout: also pass class labels y = Y, as module(x, t, y) (default 0 for a "
                             "class-conditional config: num_embeds_ada_norm or num_classes; else no label)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the per-layer results as JSON")


def _json_value(value: Any) -> Any:
    """NaN (max|OV| where a call has no single output projection) as null: JSON has no NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


def run(args: argparse.Namespace) -> int:
    target = measurement(args)
    unmeasured: tuple[str, ...] = ()
    try:
        if target.per_call:
            calls = analyse_calls(target.model, *target.args, eps=args.eps, kind=args.kind, **target.kwargs)
            layers, unmeasured = list(calls.rows), calls.unmeasured
        else:
            layers = analyse(target.model, *target.args, eps=args.eps, kind=args.kind, **target.kwargs)
    except InvalidArgumentError:
        raise
    except Exception as error:  # the forward rejected the inputs: say where they came from
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InvalidArgumentError("model", f"a module callable on the inputs given ({target.input_hint})",
                                   f"{target.description} raised {type(error).__name__}: {first_line}") from error
    print_criteria(layers, f"ditcheck criteria: {target.description}")
    if unmeasured:
        print("attention modules that ran without a scaled_dot_product_attention call (linear or flex attention, a "
              "hand-written softmax; not measured): " + ", ".join(unmeasured))
    if args.json:
        rows = [{key: _json_value(value) for key, value in dataclasses.asdict(c).items()} for c in layers]
        Path(args.json).write_text(json.dumps({"model": target.description, "eps": args.eps, "layers": rows,
                                               "unmeasured": list(unmeasured)}, indent=2))
    below = sum(bool(c.below_threshold) for c in layers)  # None (a single key) counts as not below
    logit_below = sum(bool(c.logit_below) for c in layers)
    unit = "attention calls" if target.per_call else "attention layers"
    print(f"{below} of {len(layers)} {unit} have B below sqrt(ln L); {logit_below} have R below ln L.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditcheck.criteria", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
