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
import inspect
import math
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ditcheck.properties.strategies import fill
from ditcheck.properties.validation import FORWARD_FACTOR, derive_tolerance
from ditcheck.reference.dit import DiTConfig, random_dit_params
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.layers import pos_embed_2d

from ._attention import require_run_settings, resolve_device, resolve_dtype
from .call_inputs import INPUTS_HINT
from .differential import validate_against
from ._target import DEFAULT_TIMEOUT, TargetError, TargetTimeoutError, require_output
from .dit_conversion import diffusers_state_dict, params_from_diffusers
from .dit_diagnosis import diagnose as diagnose_mismatch, diagnosis_runs, knob_variants
from .dit_recognition import CONVENTIONS, Layout, convention_config, recognise
from .dit_localise import localise_components
from .dit_reproducer import reproducer
from .dit_precision import compile_note, eager, find_islands, measure_island
from .dit_stream import STREAM_PARAMETERS, StreamingComparison, randomise_weights
from .dit_structure import CONFIG_OVERRIDES
from .dit_run import Comparison, Run, capture, draw_dit_examples, max_abs, measure, tolerances as derive_tolerances
from .report import Check, Report
from . import zoo

__all__ = ["dit", "CONVENTIONS", "DEFAULT_DIT_EXAMPLES", "Layout", "recognise", "diffusers_state_dict",
           "params_from_diffusers", "convention_config", "knob_variants"]

DEFAULT_DIT_EXAMPLES = 3


@eager()  # torch.compile ignored for the whole validation; process-wide, so entered here, in the caller's thread
def dit(model: Any, *, convention: str | None = None, examples: int = DEFAULT_DIT_EXAMPLES, seed: int = 0,
        dtype: torch.dtype | str | None = None, device: str | torch.device | None = None, weights: str = "random",
        diagnose: bool = True, timeout: float = DEFAULT_TIMEOUT, target: str | None = None,
        heads: int | None = None, learn_sigma: bool | None = None,
        overrides: Mapping[str, Any] | None = None, strict_precision: bool = False,
        stream: bool | None = None, inputs: Any = None, reference: Any = None) -> Report:
    """Validate a DiT (original architecture, any fork of it, or diffusers' DiTTransformer2DModel) against the reference.

    convention: "dit" (facebookresearch/DiT) or "diffusers" (DIFFUSERS_DIT_KNOBS). examples: random
    (weights, latents, timesteps, labels) draws, Hypothesis-seeded by ``seed``. dtype / device:
    where the target runs (default: its own; a copy is converted when they differ). weights:
    "random" (ditcheck draws every weight, adaLN-Zero included) or "model" (the target's own, e.g.
    a loaded checkpoint). heads / learn_sigma: answers where recognition finds the evidence
    ambiguous (it says so). overrides: DiTConfig fields, either architecture the target does not
    state (dit_structure.CONFIG_OVERRIDES, e.g. input_size) or convention knobs to check against
    instead of the convention's (e.g. {"ln_eps_mlp": 1e-5}). In float64, float32 requests inside the
    target are mapped to float64 for the comparison and each such float32 island is measured as
    written and reported in ``report.precision`` (dit_precision); strict_precision makes them fail.
    stream: validate block by block in bounded memory (dit_stream; default: when the target has more
    than dit_stream.STREAM_PARAMETERS parameters; original layout only). Returns a :class:`Report`: one check
    per compared activation plus pos_embed and the output, the first diverging submodule, and a
    diagnosis of the mismatch.

    The other transformer classes of diffusers (PixArt, SD3, Flux, Wan, ...) go to :mod:`ditcheck.validate.zoo`
    (component by component, convention "diffusers", the default for them): ``model`` may then also be the class,
    its name as "diffusers:ClassName" (built with a documented tiny configuration) or a zero-argument factory.

    inputs: the forward call's arguments for any other torch model (an original PixArt or Flux code base, a
    research fork; :mod:`ditcheck.validate.call_inputs`: a function of the example seed, or ``MODULE:ATTR`` naming
    one): the model is then checked component by component (:func:`ditcheck.validate.zoo.validate`), each
    recognised submodule against its own settings; for a diffusers class they replace the inputs ditcheck builds.

    reference: the implementation ``model`` must match (an nn.Module, a factory of one, ``MODULE:ATTR`` or
    "diffusers:ClassName"): every submodule both name alike is compared with the reference's, same weights and
    inputs, the tolerance derived from the reference run in the target's dtype (:mod:`ditcheck.validate.differential`).
    """
    if reference is not None:
        unused = {"convention": convention, "heads": heads, "learn_sigma": learn_sigma, "overrides": overrides or None,
                  "stream": stream, "strict_precision": strict_precision or None}
        for argument, value in unused.items():
            if value is not None:
                raise InvalidArgumentError(argument, "None with a reference (the reference is the convention)",
                                           repr(value))
        return validate_against(model, reference, inputs=inputs, examples=examples, seed=seed, dtype=dtype,
                                device=device, weights=weights, timeout=timeout, target=target)
    given = model
    if isinstance(model, str) or inspect.isclass(model) or (callable(model) and not isinstance(model, nn.Module)):
        model, target = zoo.resolve_target(model, dtype, target)
    if zoo.dispatches_here(model) or inputs is not None:
        unused = {"heads": heads, "learn_sigma": learn_sigma, "overrides": overrides or None, "stream": stream}
        for argument, value in unused.items():
            if value is not None:
                raise InvalidArgumentError(argument, f"None for {type(model).__name__} (the component path reads "
                                           "architecture and conventions off the modules)", repr(value))
        return zoo.validate(model, convention=convention, examples=examples, seed=seed, dtype=dtype,
                            device=device, weights=weights, diagnose=diagnose, timeout=timeout, target=target,
                            strict_precision=strict_precision, inputs=inputs,
                            copy_model=model is given)  # built here: no caller holds it
    convention = convention or "dit"
    examples, seed, timeout = require_run_settings(examples, seed, timeout)
    if weights not in ("random", "model"):
        raise InvalidArgumentError("weights", "'random' or 'model'", repr(weights))
    if convention not in CONVENTIONS:
        raise InvalidArgumentError("convention", f"one of {CONVENTIONS}", repr(convention))
    if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1):
        raise InvalidArgumentError("heads", "a positive int", repr(heads))
    if learn_sigma is not None and not isinstance(learn_sigma, bool):
        raise InvalidArgumentError("learn_sigma", "a bool or None", repr(learn_sigma))
    overrides = dict(overrides or {})
    knobs = {field.name for field in dataclasses.fields(DiTConfig)}
    unknown = sorted(set(overrides) - knobs)
    if unknown:
        raise InvalidArgumentError("overrides", f"DiTConfig fields ({sorted(knobs)})", repr(unknown))
    architecture = {key: value for key, value in overrides.items() if key in CONFIG_OVERRIDES}
    conventions = {key: value for key, value in overrides.items() if key not in CONFIG_OVERRIDES}
    name = target or f"{type(model).__module__}:{type(model).__qualname__}"
    if not isinstance(model, nn.Module) or next(iter(model.parameters()), None) is None:
        report = Report(target=name, kind="dit", settings={"convention": convention}, loaded=False)
        report.notes.append(str(TargetError("model", "a torch.nn.Module with parameters", type(model).__name__)))
        return report
    own = next(iter(model.parameters()))
    dtype = own.dtype if dtype is None else resolve_dtype(dtype)
    device = own.device if device is None else resolve_device(device)
    if (dtype, device) != (own.dtype, own.device):
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()  # label dropout and dropout off
    try:
        try:
            layout = recognise(model, heads=heads, learn_sigma=learn_sigma, overrides=architecture, timeout=timeout)
        except TargetError as error:
            report = Report(target=name, kind="dit", settings={"convention": convention}, loaded=False)
            report.notes.append(str(error))
            report.notes.append(INPUTS_HINT)
            return report
        config = convention_config(layout.config, convention)
        config = config.replace(**{**{key: value for key, value in architecture.items()}, **conventions})
        report = Report(target=name, kind="dit", settings={
            "layout": layout.name, "convention": convention, "dtype": str(dtype).removeprefix("torch."),
            "device": str(device), "examples": examples, "seed": seed, "weights": weights,
            "architecture": (f"input {config.input_size}, patch {config.patch_size}, C {config.in_channels}, "
                             f"hidden {config.hidden_size}, depth {config.depth}, heads {config.num_heads}, "
                             f"classes {config.num_classes}, learn_sigma {config.learn_sigma}"
                             + (f", returns the first {layout.output_channels} channels"
                                if layout.output_channels != config.out_channels else ""))})
        if conventions:
            report.settings["overrides"] = conventions
        report.notes.extend(f"recognised {line}" for line in layout.evidence)
        note = compile_note(model)
        if note:
            report.notes.append(note)
        _validate(model, layout, config, report, examples, seed, dtype, device, weights, diagnose, timeout,
                  strict_precision, stream)
    finally:
        model.train(was_training)
    return report


def _precision_finding(report: Report, finding: Check, strict: bool) -> None:
    """A float32 island: a finding of its own; with --strict-precision also a failing check."""
    report.precision.append(finding)
    if strict:
        report.checks.append(Check(finding.id, False, finding.observed, finding.tolerance,
                                   finding.message + " (--strict-precision)", finding.examples))


def _report_islands(model: nn.Module, layout: Layout, tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
                    report: Report, timeout: float, strict: bool) -> None:
    """Find the submodules that request float32 in this float64 run and measure each as written (dit_precision)."""
    x, t, y = tensors

    def forward() -> Any:
        return layout.call(model, x, t, y)
    try:
        islands = find_islands(model, forward, timeout)
    except TargetError as error:
        report.notes.append(f"precision: the float32-island search failed: {error.describe()}")
        return
    for name, requests in islands.items():
        try:
            island = measure_island(model, name, requests, forward, timeout)
        except TargetError as error:
            report.notes.append(f"precision: {name or 'the forward'} requests float32; measuring it failed: "
                                f"{error.describe()}")
            continue
        tol = derive_tolerance(island.naive if math.isfinite(island.naive) else None, None, island.magnitude,
                               torch.float32, FORWARD_FACTOR)
        within = island.raised is None and island.error <= tol.value
        if island.raised is not None:
            message = (f"computes in float32 ({island.kind}, {requests} float32 request(s)); as written it raises "
                       f"in float64 even with mixed dtypes promoted: {island.raised}")
        else:
            message = (f"computes in float32 ({island.kind}, {requests} float32 request(s); error {island.error:.2g}, "
                       + (f"within float32's bound {tol.value:.2g})" if within else
                          f"ABOVE float32's bound {tol.value:.2g}: more than a float32 rounding)"))
        _precision_finding(report, Check(f"precision: {island.module}", within, island.error, tol, message, 1),
                           strict)


def _report_comparisons(report: Report, ordered: list[Comparison], config: DiTConfig, dtype: torch.dtype, count: int,
                        failures: list[str]) -> None:
    """Checks from the worst errors (execution order), the first divergence, and the calls that failed."""
    tolerances = derive_tolerances(ordered, dtype)
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
                      f"{c.reference_name}: error {c.observed:.3g} exceeds {tol.value:.3g}", count)
        if (c.reference_name in shown and not block_copy) or first:
            report.checks.append(check)
        elif not ok:
            hidden_failures.append(check)
    if hidden_failures and all(check.ok for check in report.checks):
        report.checks.extend(hidden_failures)
    if failures:
        report.checks.append(Check("call", False, message=f"{len(failures)} of {count + len(failures)} calls "
                                   f"failed; first: {failures[0]}", examples=count + len(failures)))


def _validate(model: nn.Module, layout: Layout, config: DiTConfig, report: Report, examples: int, seed: int,
              dtype: torch.dtype, device: torch.device, weights: str, diagnose: bool, timeout: float,
              strict_precision: bool = False, stream: bool | None = None) -> None:
    table = layout.pos_embed_table(model)
    exact_table = pos_embed_2d(config.hidden_size, config.grid, config.pos_embed_max_period)[None]
    if table is not None and table.shape == exact_table.shape:
        # the naive candidate: the float64 table rounded once to dtype
        rounded = torch.as_tensor(exact_table, dtype=dtype).double().numpy()
        tol = derive_tolerance(max_abs(rounded - exact_table), None, max_abs(exact_table), dtype)
        err = max_abs(table - exact_table)
        single = torch.as_tensor(exact_table, dtype=torch.float32).double().numpy()
        single_tol = derive_tolerance(max_abs(single - exact_table), None, max_abs(exact_table), torch.float32)
        if dtype == torch.float64 and tol.value < err <= single_tol.value:
            # the table as the original fills it (float64 NumPy through .float()): the reference table rounded once
            _precision_finding(report, Check("precision: pos_embed", True, err, single_tol,
                                             f"stored rounded to float32 (error {err:.2g}, within float32's bound "
                                             f"{single_tol.value:.2g})", 1), strict_precision)
        else:
            report.checks.append(Check("pos_embed", err <= tol.value, err, tol,
                                       "" if err <= tol.value else "the fixed 2-D sin-cos position table differs", 1))
            if err > tol.value:  # the table is added before any block runs: the first place the target diverges
                report.first_divergence = "pos_embed"
    if weights == "model":
        broken = [name for name, value in model.state_dict().items()
                  if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if broken:
            report.checks.append(Check("weights", False, message=f"the target's own weights are not finite: {broken[:4]}"))
            report.first_divergence = broken[0]
            return
    parameters = sum(p.numel() for p in model.parameters())
    if stream if stream is not None else (layout.name == "dit" and parameters > STREAM_PARAMETERS):
        if layout.name != "dit":
            raise InvalidArgumentError("stream", "False for a diffusers DiTTransformer2DModel (block-by-block "
                                       "validation reads the original layout)", "True")
        report.settings["path"] = f"block by block ({parameters:,} parameters)"
        _validate_streaming(model, layout, config, report, examples, seed, dtype, device, weights, timeout,
                            strict_precision)
        return
    own_params = layout.params(model) if weights == "model" else None
    runs: list[Run] = []
    failures: list[str] = []
    returned = 0  # calls that returned (whatever they returned)
    for example in draw_dit_examples(config, examples, seed):
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
            out, seen = capture(model, layout.hooks, lambda: layout.call(model, x, t, y), timeout,
                                float64=dtype == torch.float64)
            returned += 1
            require_output(out, (len(example.times), layout.output_channels, *config.latent_size), dtype)
        except TargetError as error:
            failures.append(error.describe())
            if isinstance(error, TargetTimeoutError):
                break  # a hung call may still be running: do not pile up more
            continue
        runs.append(Run(inputs, (x, t, y), seen, out.double().cpu().numpy()))
    if runs and dtype == torch.float64:
        _report_islands(model, layout, runs[0].tensors, report, timeout, strict_precision)
    if not runs:  # exit code 2 only when no call returned: a wrong output is a discrepancy
        report.loaded = returned > 0
        report.checks.append(Check("output", False, message=f"every call failed; first: {failures[0]}"))
        return
    ordered = measure(config, runs, dtype, device, timeout)
    _report_comparisons(report, ordered, config, dtype, len(runs), failures)
    if not report.ok:
        worst = max(runs, key=lambda run: run.output_error)  # set by measure
        report.failures.append(reproducer(report, worst.inputs, worst.result, report.settings["convention"]))
        if weights == "random":
            layout.load(model, worst.inputs["params"], dtype, device)
        localise_components(model, layout, worst.tensors, report, timeout)
        _note_foreign_parameters(model, layout, report)
        if diagnose:
            diagnose_mismatch(report, config, diagnosis_runs(model, layout, config, worst, dtype, device, weights, timeout),
                      dtype, device, timeout)


def _note_foreign_parameters(model: nn.Module, layout: Layout, report: Report) -> None:
    """Name the parameters inside the first divergence that the reference DiT has no counterpart for (a qk-norm,
    an RMSNorm or affine norm: code beyond the original's conventions, which no knob of the diagnosis sets)."""
    first = report.first_divergence
    if layout.name != "dit" or not first or first not in dict(model.named_modules()):
        return
    mapped = set(layout.names.values())
    foreign = [name for name, _ in model.named_parameters() if name not in mapped and name.startswith(f"{first}.")]
    if foreign:
        report.notes.append(f"{first} ({type(model.get_submodule(first)).__name__}) computes with parameters the "
                            f"original DiT has no counterpart for: {foreign[:4]}{' ...' if len(foreign) > 4 else ''} "
                            "(e.g. a qk-norm, an RMSNorm or affine norm): code beyond the original's conventions")


def _validate_streaming(model: nn.Module, layout: Layout, config: DiTConfig, report: Report, examples: int,
                        seed: int, dtype: torch.dtype, device: torch.device, weights: str, timeout: float,
                        strict_precision: bool) -> None:
    """The block-by-block path (dit_stream): the same checks, in memory bounded by one block."""
    stream = StreamingComparison(layout, config, model, dtype, device)
    failures: list[str] = []
    returned = count = 0
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
    for example in draw_dit_examples(config, examples, seed):
        x = torch.as_tensor(fill((len(example.times), config.in_channels, *config.latent_size), example.input_seed),
                            dtype=dtype, device=device)
        t = torch.as_tensor(example.times, dtype=dtype, device=device)
        y = None if example.labels is None else torch.as_tensor(example.labels, dtype=torch.int64, device=device)
        try:
            if weights == "random":
                randomise_weights(model, layout, config, example.param_seed)
            out = stream.run(x, t, y, timeout)
            returned += 1
            require_output(out, (len(example.times), layout.output_channels, *config.latent_size), dtype)
        except TargetError as error:
            failures.append(error.describe())
            if isinstance(error, TargetTimeoutError):
                break
            continue
        stream.compare_output(out.double().cpu().numpy())
        count += 1
        first = first or (x, t, y)
    if first is not None and dtype == torch.float64:
        _report_islands(model, layout, first, report, timeout, strict_precision)
    if not count:
        report.loaded = returned > 0
        report.checks.append(Check("output", False, message=f"every call failed; first: {failures[0]}"))
        return
    _report_comparisons(report, stream.ordered(), config, dtype, count, failures)
    if not report.ok:
        report.notes.append("block by block: no convention diagnosis, no component localisation and no .npz "
                            "reproducer (they need every activation or every weight at once); validate a smaller "
                            "configuration of the same code for them")
