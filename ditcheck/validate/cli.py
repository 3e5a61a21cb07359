"""Validate third-party code against ditcheck's reference.

  ditcheck validate attention MODULE:ATTR [--dtype D] [--layout bhld|blhd] [--self-attention] [--gqa]
                              [--mask none|boolean|additive|key-padding] [--examples N] [--seed S] ...
  ditcheck validate dit MODULE:ATTR|diffusers:CLASS [--convention dit|diffusers] [--dtype D] [--examples N]
                       [--inputs MODULE:ATTR] [--reference MODULE:ATTR] ...
  ditcheck validate scheduler MODULE:ATTR [--steps N,N] [--config KEY=VALUE ...] [--samples N] [--quick] [--json PATH]

MODULE is a dotted module name or a path to a .py file. For attention, ATTR is fn(q, k, v)
(optionally accepting scale=), an nn.Module called the same way, or a zero-argument factory of
one. For dit, ATTR is an nn.Module (original DiT layout or any diffusers transformer class: DiT, PixArt,
SD3, Flux, Wan, ...) or a zero-argument callable returning one; diffusers:CLASS (e.g.
diffusers:FluxTransformer2DModel) builds that class with a documented tiny configuration and random
weights, and ditcheck builds every input; any other torch model (an original PixArt or Flux code base, a
fork ditcheck does not recognise) is checked component by component given --inputs MODULE:ATTR, a function
of the example seed returning the forward call's arguments; with --reference MODULE:ATTR, any model is compared
submodule by submodule with the implementation it must match; for scheduler, a diffusers-style scheduler class,
instance or zero-argument factory. Exit code 0: conforms; 1: a discrepancy was found;
2: the target could not be loaded or called (the message says why).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import sys
from typing import Any

import torch

from ditcheck.properties.attention import VALIDATION_KINDS, VALIDATION_MASKS

from ditcheck.loader import LoadError, load, load_function, load_module
from ditcheck.reference.formats import FORMATS
from ditcheck.options import add_list_option, add_seed_option

from ._attention import DEFAULT_ATTENTION_EXAMPLES, LAYOUTS, attention
from ._target import DEFAULT_TIMEOUT, TargetError
from .batch import add_batch_arguments, run_batch
from .dit_stream import STREAM_PARAMETERS
from .models import CONVENTIONS, DEFAULT_DIT_EXAMPLES, dit
from .report import Report, emit
from .zoo import build_model

HELP = "validate third-party attention, DiT or scheduler code against the reference (exit 0 conforms, 1 discrepancy, 2 unusable)"

__all__ = ["HELP", "TARGETS", "add_arguments", "run", "AttentionTarget", "DiTTarget"]

DTYPES = tuple(FORMATS)  # the formats ditcheck.reference.formats knows


def _positive(kind: type) -> Any:
    """An argparse type: a positive int or float (bad values are usage errors, not an unusable target)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def _common(parser: argparse.ArgumentParser, examples: int) -> None:
    parser.add_argument("target", metavar="MODULE:ATTR", help="what to validate (MODULE: dotted name or .py path)")
    parser.add_argument("--examples", type=_positive(int), default=examples, metavar="N",
                        help=f"examples drawn by Hypothesis (default {examples})")
    add_seed_option(parser, "the examples")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH ('-': stdout)")
    parser.add_argument("--save-failures", metavar="DIR",
                        help="write each failing case to DIR as a .py snippet that re-runs it, plus a .npz of its "
                             "inputs and weights where the run keeps them")
    parser.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"one call of the target longer than this fails; for a diffusers transformer class and on "
                             f"the block-by-block path (--stream), one running this long without a submodule call "
                             f"finishing (default {DEFAULT_TIMEOUT:g})")


def _finish(report: Report, args: argparse.Namespace) -> int:
    emit(report, args.json)
    if args.save_failures and report.failures:
        report.save_failures(args.save_failures)
        print(f"  saved {len(report.failures)} failing case(s) to {args.save_failures}")
    elif args.save_failures and not report.ok:
        print(f"  nothing saved to {args.save_failures}: this run kept no failing case (block by block, or it could "
              "not run)")
    return report.exit_code


def _unusable(error: Exception) -> int:
    print(f"ditcheck validate: the target could not be used: {error}", file=sys.stderr)
    return 2


class AttentionTarget:
    """``ditcheck validate attention``: fn(q, k, v) against the certified attention reference."""

    HELP = "an attention function fn(q, k, v) -> softmax(scale q k^T) v"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _common(parser, DEFAULT_ATTENTION_EXAMPLES)
        parser.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of q, k, v (default float32)")
        parser.add_argument("--layout", choices=LAYOUTS, default="bhld",
                            help="bhld: [B, H, L, D] (SDPA); blhd: [B, L, H, D] (flash-attn) (default bhld)")
        parser.add_argument("--scale", type=float, default=None,
                            help="the logit scale fn applies (default 1/sqrt(D); passed as scale= if fn accepts it)")
        add_list_option(parser, "--kinds", choices=VALIDATION_KINDS, default=list(VALIDATION_KINDS),
                        metavar="KIND,KIND", help="input families to draw (default: all; overflow: float16 and "
                                                  "bfloat16 only)")
        parser.add_argument("--self-attention", action="store_true",
                            help="draw Lq == Lk only (for self-attention code such as timm's Attention; a target "
                                 "taking one argument is called as fn(x) with q = k = v = x)")
        parser.add_argument("--gqa", action="store_true",
                            help="k and v may have fewer heads than q: draw Hkv in {H, 1, divisors of H}; query head "
                                 "h reads kv head h // (H / Hkv) (SDPA enable_gqa, transformers repeat_kv)")
        parser.add_argument("--max-tokens", type=_positive(int), default=4096, metavar="N",
                            help="longest Lq and Lk drawn (default 4096: every family draws one long example; "
                                 "lower it for slow targets)")
        parser.add_argument("--mask", choices=VALIDATION_MASKS, default="none",
                            help="pass a mask: boolean / additive as attn_mask= (SDPA conventions: True attends, "
                                 "-inf excludes), key-padding as key_padding_mask= [B, Lk] (True = padded, as "
                                 "nn.MultiheadAttention); fully masked rows must give zeros (default none)")
        parser.add_argument("--no-grad", action="store_true", help="do not check dQ, dK, dV")
        parser.add_argument("--device", default="cpu", help="torch device (default cpu)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        try:
            fn = load_function(args.target)
            report = attention(fn, dtype=args.dtype, scale=args.scale, layout=args.layout, examples=args.examples,
                               seed=args.seed, device=args.device, kinds=tuple(args.kinds),
                               gradients=False if args.no_grad else None, timeout=args.timeout, target=args.target,
                               self_attention=args.self_attention, gqa=args.gqa, mask=args.mask,
                               max_tokens=args.max_tokens)
        except (LoadError, ValueError) as error:  # TargetError is a LoadError
            return _unusable(error)
        return _finish(report, args)


class DiTTarget:
    """``ditcheck validate dit``: a whole DiT, activation by activation, with a convention diagnosis.

    The original layout and diffusers' DiTTransformer2DModel are compared with the whole-model reference; every
    other diffusers transformer class (PixArt, SD3, Flux, Wan, CogVideoX, HunyuanVideo, ...; an instance, a
    subclass or a factory of one, or diffusers:CLASS, built with a documented tiny configuration) component by
    component, with inputs built from its config and forward signature (ditcheck.validate.zoo). Any other torch
    model is checked component by component from the inputs --inputs gives; with --reference, any model is compared
    with the implementation it must match, submodule by submodule. --heads, --learn-sigma and --set apply to the
    original layout and DiTTransformer2DModel only.
    """

    HELP = ("a DiT nn.Module (original layout or a diffusers transformer class), a factory of one, or "
            "diffusers:CLASS (built tiny); any other torch model with --inputs")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _common(parser, DEFAULT_DIT_EXAMPLES)
        parser.add_argument("--convention", choices=CONVENTIONS, default=None,
                            help="numerical conventions to check against: dit (facebookresearch/DiT) or diffusers "
                                 "(for DiTTransformer2DModel: timestep downscale_freq_shift=1, MLP-branch LayerNorm "
                                 "eps 1e-5; for the other diffusers classes, checked component by component, the "
                                 "conventions each module states) (default: dit for the original layout and "
                                 "DiTTransformer2DModel, diffusers for the other diffusers classes)")
        parser.add_argument("--dtype", choices=DTYPES, default=None,
                            help="run the target in this dtype (default: its own)")
        parser.add_argument("--device", default=None, help="run the target on this device (default: its own)")
        parser.add_argument("--checkpoint", metavar="PATH",
                            help="load this state dict (torch.load weights_only=True) and validate with those weights "
                                 "instead of random ones")
        parser.add_argument("--checkpoint-key", metavar="KEY",
                            help="the entry of the checkpoint dict holding the state dict (e.g. ema)")
        parser.add_argument("--no-diagnosis", action="store_true", help="skip the convention-knob diagnosis")
        parser.add_argument("--weights", choices=("random", "model"), default=None,
                            help="random: ditcheck draws every weight, zero-initialised adaLN included (default); "
                                 "model: keep the target's own weights (implied by --checkpoint)")
        parser.add_argument("--heads", type=_positive(int), default=None, metavar="N",
                            help="the head count, where recognition reports it ambiguous")
        parser.add_argument("--learn-sigma", action=argparse.BooleanOptionalAction, default=None,
                            help="whether the final layer predicts 2C channels (checked against its shape)")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                            help="a DiTConfig field: architecture the target does not state (input_size=32) or a "
                                 "convention knob to check against (ln_eps_mlp=1e-5); repeatable")
        parser.add_argument("--strict-precision", action="store_true",
                            help="float32 islands of a float64 run fail the run (default: reported apart, exit 0)")
        parser.add_argument("--inputs", metavar="MODULE:ATTR", default=None,
                            help="the forward call's inputs, for any other torch model (an original PixArt, Flux or "
                                 "Latte code base, a fork ditcheck does not recognise): a function of the example seed "
                                 "returning a dict of keyword arguments, a tuple of positional ones or both; the model "
                                 "is then checked component by component, each recognised submodule against its own "
                                 "settings (for a diffusers class: instead of the inputs ditcheck builds)")
        parser.add_argument("--reference", metavar="MODULE:ATTR", default=None,
                            help="the implementation the target must match (upstream's model beside a fork, "
                                 "diffusers:CLASS beside a subclass): the target's weights are loaded into it by "
                                 "name, both run on the same inputs (--inputs, built by ditcheck for a diffusers "
                                 "class) and every submodule named alike is compared, the tolerance derived from the "
                                 "reference run in the target's dtype; the first divergence names the forward it "
                                 "arises in")
        parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                            help="validate block by block, in memory bounded by one block (original layout only; "
                                 "no diagnosis or localisation) (default: when the target has more than "
                                 f"{STREAM_PARAMETERS // 1_000_000}M parameters)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        try:
            overrides = {}
            for item in args.overrides:
                key, sep, text = item.partition("=")
                if not sep or not key:
                    raise TargetError("--set", "KEY=VALUE", repr(item))
                try:
                    overrides[key.strip()] = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    overrides[key.strip()] = text  # a bare word: a string knob such as gelu_approximate=none
            loaded = load(args.target)
            if inspect.isclass(loaded) and loaded.__module__.startswith("diffusers."):
                model = build_model(loaded.__name__)  # its documented tiny configuration, not the full size
            else:
                model = load_module(loaded)
            weights = args.weights or "random"
            if args.checkpoint:
                state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
                if args.checkpoint_key:
                    if args.checkpoint_key not in state:
                        raise TargetError("--checkpoint-key", f"a key of the checkpoint ({list(state)[:5]})",
                                          repr(args.checkpoint_key))
                    state = state[args.checkpoint_key]
                model.load_state_dict(state, strict=True)
                weights = "model"
            report = dit(model, convention=args.convention, examples=args.examples, seed=args.seed, dtype=args.dtype,
                         device=args.device, weights=weights, diagnose=not args.no_diagnosis, timeout=args.timeout,
                         target=args.target, heads=args.heads, learn_sigma=args.learn_sigma, overrides=overrides,
                         strict_precision=args.strict_precision, stream=args.stream, inputs=args.inputs,
                         reference=args.reference)
        except (LoadError, ValueError, RuntimeError, OSError) as error:  # TargetError is a LoadError
            return _unusable(error)
        return _finish(report, args)


#: ``ditcheck validate NAME`` -> "module" or "module:object" with HELP, add_arguments(parser), run(args) -> int.
TARGETS: dict[str, str] = {
    "attention": "ditcheck.validate.cli:AttentionTarget",
    "dit": "ditcheck.validate.cli:DiTTarget",
    "scheduler": "ditcheck.validate._scheduler",
}


def _target_command(name: str) -> Any:
    module_name, _, attribute = TARGETS[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_batch_arguments(parser)  # ditcheck validate --all [--targets FILE] [--workers N] [--scheduler ADDRESS]
    # not required: --all runs without one (run_batch says which is missing when neither is given)
    sub = parser.add_subparsers(dest="validate_target", required=False, metavar="{" + ",".join(TARGETS) + "}")
    for name in TARGETS:
        command = _target_command(name)
        description = inspect.cleandoc(command.__doc__ or "")
        command.add_arguments(sub.add_parser(name, help=command.HELP, description=description,
                                             formatter_class=argparse.RawDescriptionHelpFormatter))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "validate_target", None) is None:
        return run_batch(args)
    return int(_target_command(args.validate_target).run(args))
