"""``validate dit TARGET --reference REF``: a model against the implementation it must match, submodule by submodule.

The component engine checks what it recognises and lists the rest; a fork that rewrote a block's inline code
(a hand-written modulate, a fused attention, a reordered residual) needs a reference for that code. The trusted
implementation is that reference: upstream's model file beside the fork, diffusers' class beside a subclass.

Per example (:func:`compare`): the target's weights (random draws, or its own with ``weights="model"``) are
loaded into the reference by name (``load_state_dict(strict=True)``: the two must name their parameters alike);
the same inputs (the user's :mod:`~ditcheck.validate.call_inputs` function, or those ditcheck builds for a
diffusers class) go to three runs with a forward hook on every submodule both models name alike:

* the target in its dtype, as written (in float64, its float32 requests mapped to float64, as the other paths do);
* the *exact* reference: the reference in float64 with its float32 requests mapped to float64;
* the *naive* reference: the reference in the target's dtype, as written (float32 for a float64 target).

Each submodule's output (first call of it; every floating tensor of a tuple, dict or dataclass) is compared with the exact reference's
under the rule of :func:`ditcheck.properties.validation.derive_tolerance`: max(2 x the naive reference's error,
4 ulps of max |exact|). For a float64 target the naive reference runs in float32 and its error is scaled by
u(float64) / u(float32) = 2^-29 (first order in u: a rounding error grows linearly with the unit roundoff), so a
float64 target is held to what float64 arithmetic does with the same code. The first submodule to finish outside
tolerance (forward hooks fire as a call returns, so children come before their parents) is the first divergence:
the fault is inside it. Memory: every compared submodule's output is held for one example (validate a small
configuration of a large model).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ditcheck.properties.validation import Tolerance, derive_tolerance, unit_roundoff
from ditcheck.reference.errors import InvalidArgumentError

from ._attention import require_run_settings, resolve_device, resolve_dtype
from ._target import DEFAULT_TIMEOUT, TargetError, TargetTimeoutError
from .call_inputs import CallArguments, draw_inputs, inputs_function, inputs_label
from .components import _float_tensors
from .dit_reproducer import rerun_reproducer
from . import zoo
from .dit_run import first_outputs, max_abs
from .report import Check, Report

__all__ = ["validate_against"]

#: failing submodules reported one check each (in execution order); the rest are counted in the summary check
MAX_FAILING_CHECKS = 5


@dataclass
class SubmoduleComparison:
    """One submodule compared over the examples: its class, the worst error, its tolerance, or why it failed."""

    name: str
    cls: str
    error: float = 0.0
    tolerance: Tolerance | None = None
    message: str = ""  # why it failed outright (a shape, a non-finite reference)
    note: str = ""  # how the tolerance was derived when the rule's naive candidate was unusable

    @property
    def ok(self) -> bool:
        return not self.message and self.tolerance is not None and self.error <= self.tolerance.value

    @property
    def ratio(self) -> float:
        if self.message or self.tolerance is None:
            return math.inf
        return self.tolerance.ratio(self.error)


def shared_submodules(model: nn.Module, reference: nn.Module) -> tuple[list[str], list[str], list[str]]:
    """(names both models have, names only the target has, names only the reference has): submodule names, the
    root excluded (its output is compared on its own)."""
    ours = [name for name, _ in model.named_modules() if name]
    theirs = {name for name, _ in reference.named_modules() if name}
    shared = [name for name in ours if name in theirs]
    return shared, [name for name in ours if name not in theirs], sorted(theirs - set(ours))


def load_reference_weights(reference: nn.Module, model: nn.Module) -> None:
    """The target's parameters and buffers copied into ``reference`` by name (cast to its dtype); a missing,
    unexpected or differently shaped entry raises InvalidArgumentError naming ``reference``."""
    try:
        reference.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise InvalidArgumentError("reference", "a model naming its parameters as the target does "
                                   "(load_state_dict(strict=True) of the target's weights)",
                                   detail[:400] + ("..." if len(detail) > 400 else "")) from None


def naive_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the naive reference runs in: the target's, float32 for a float64 target (see naive_scale)."""
    return torch.float32 if dtype == torch.float64 else dtype


def naive_scale(dtype: torch.dtype) -> float:
    """u(dtype) / u(naive_dtype(dtype)): 1, or 2^-29 for float64 (the naive error, first order in u, rescaled)."""
    return unit_roundoff(dtype) / unit_roundoff(naive_dtype(dtype))


def _compared_value(value: Any) -> np.ndarray | None:
    """What is compared of a call's arguments or output: its one floating tensor (shape kept), every one of several
    (tuples, lists, dicts, dataclasses such as diffusers' outputs) flattened and concatenated, None without any; float64
    NumPy *copies* taken at once (code after the hook may change the tensors in place)."""
    arrays = [tensor.detach().to("cpu", torch.float64, copy=True).numpy() for tensor in _float_tensors(value)]
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate([array.reshape(-1) for array in arrays]) if arrays else None


@dataclass
class _Recording:
    """One run: the model's output, and each named submodule's inputs and output at its first call (every floating
    tensor of each, :func:`_compared_value`)."""

    output: np.ndarray | None
    outputs: dict[str, np.ndarray | None]
    inputs: dict[str, np.ndarray | None]
    output_type: str = ""  # the output's type name (a dict where the reference returns a tensor is noted)


def _run(model: nn.Module, arguments: CallArguments, names: list[str], timeout: float, float64: bool) -> _Recording:
    """Run ``model`` once (dit_run.first_outputs: in isolation, hooks removed after) recording each named submodule's
    floating inputs and output at its first call, and the model's output."""
    args, kwargs = arguments
    modules = dict(model.named_modules())
    inputs: dict[str, np.ndarray | None] = {}

    def record(name: str, call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> None:
        if name not in inputs:
            inputs[name] = _compared_value((call_args, call_kwargs))

    handles = [modules[name].register_forward_pre_hook(
        lambda module, call_args, call_kwargs, name=name: record(name, call_args, call_kwargs), with_kwargs=True)
        for name in names]
    try:
        output, kept = first_outputs(model, names, lambda name, out: _compared_value(out),
                                     lambda: model(*args, **kwargs), timeout, float64)
    finally:
        for handle in handles:
            handle.remove()
    return _Recording(_compared_value(output), kept, inputs, type(output).__name__)


def _compare_one(found: SubmoduleComparison, actual: np.ndarray | None, exact: np.ndarray | None,
                 naive: np.ndarray | None, dtype: torch.dtype) -> None:
    """Fold one example's outputs of one submodule into ``found`` (the worst ratio over the examples is kept)."""
    if actual is None or exact is None or naive is None:
        return  # not a tensor (or not called) in one of the runs: nothing to compare
    if actual.shape != exact.shape:
        found.message = found.message or f"shape {actual.shape}, the reference's {exact.shape}"
        return
    if not np.all(np.isfinite(exact)):
        found.message = found.message or "the reference's float64 output is not finite: nothing to hold it to"
        return
    with np.errstate(invalid="ignore", over="ignore"):
        error = max_abs(actual - exact)
        naive_error = max_abs(naive - exact) * naive_scale(dtype)
    if not math.isfinite(naive_error):  # the reference overflowed in the target's dtype: no naive candidate
        naive_error = None
        found.note = "the reference in the target's dtype is not finite here: held to the ulp floor"
    tolerance = derive_tolerance(naive_error, None, max_abs(exact), dtype)
    candidate = SubmoduleComparison(found.name, found.cls, error, tolerance)
    if found.tolerance is None or candidate.ratio > found.ratio:
        found.error, found.tolerance = error, tolerance


def _seeded_run(model: nn.Module, arguments: CallArguments, names: list[str], timeout: float, float64: bool,
                seed: int) -> _Recording:
    """:func:`_run` on a fresh copy of the arguments (a forward may change its inputs in place), torch's global RNG
    seeded with ``seed`` and restored afterwards (sampling inside a forward draws alike in every run)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _run(model, copy.deepcopy(arguments), names, timeout, float64)


def compare(report: Report, model: nn.Module, reference: nn.Module, inputs: Callable[[int], CallArguments],
            randomise: Callable[[nn.Module, int], Any] | None, examples: int, seed: int, timeout: float) -> None:
    """Fill ``report`` with the differential comparison of ``model`` (weights drawn by ``randomise(model, seed)`` per
    example, or kept when None) against ``reference`` over ``examples`` examples of ``inputs(seed)``.

    ``model`` runs in its own dtype and device on the inputs rounded to its dtype; ``reference`` is copied to float64
    (exact) and to the naive dtype and runs on the same rounded inputs. Every run gets its own copy of the inputs and
    the same RNG seed. A run that raises is a failed check; a time-out stops the run (the hung call may still be
    running); weights that do not load by name, a reference that fails or whose forward is not deterministic stop it
    with a failed check.
    """
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = first.dtype if first is not None else torch.float32
    device = first.device if first is not None else torch.device("cpu")
    names, only_target, only_reference = shared_submodules(model, reference)
    classes = {name: type(module).__name__ for name, module in model.named_modules()}
    found = {name: SubmoduleComparison(name, classes[name]) for name in names}
    found_inputs = {name: SubmoduleComparison(name, classes[name]) for name in names}
    output = SubmoduleComparison("output", type(model).__name__)
    order: list[str] = []  # the target's finish order, submodules first called in later examples appended
    skipped: dict[str, str] = {}  # name -> which side called it (same inputs: both must call the same submodules)
    call_errors: list[str] = []
    determinism_checked = False
    exact_model = copy.deepcopy(reference).to(device=device, dtype=torch.float64).eval()
    naive_model = copy.deepcopy(reference).to(device=device, dtype=naive_dtype(dtype)).eval()
    for index in range(examples):
        example_seed = seed * 7919 + index
        if randomise is not None:
            randomise(model, example_seed)
        if randomise is not None or index == 0:  # the model's own weights change for no example: loaded once
            try:
                load_reference_weights(exact_model, model)
                load_reference_weights(naive_model, model)
            except InvalidArgumentError as error:
                report.loaded = False
                report.checks.append(Check("weights", False, message=str(error)))
                return
        try:
            arguments = draw_inputs(inputs, example_seed, timeout)
        except InvalidArgumentError as error:  # it raised, hung or returned something unusable
            report.loaded = False
            report.checks.append(Check("inputs", False, message=str(error)))
            return
        # the inputs as the target sees them (rounded to its dtype); the references get those, in their dtypes
        rounded = zoo.to_device(arguments, device, dtype, every_float=True)
        try:
            actual = _seeded_run(model, rounded, names, timeout, dtype == torch.float64, example_seed)
        except TargetError as error:
            call_errors.append(f"example {index}: {error.describe()}")
            if isinstance(error, TargetTimeoutError):
                break  # a hung call may still be running on this model: make no more
            continue
        try:
            exact = _seeded_run(exact_model, zoo.to_device(rounded, device, torch.float64, every_float=True), names,
                                timeout, True, example_seed)
            naive_inputs = zoo.to_device(rounded, device, naive_dtype(dtype), every_float=True)
            naive = _seeded_run(naive_model, naive_inputs, names, timeout, False, example_seed)
            if not determinism_checked:  # once: does the forward draw random numbers? (no tolerance can be derived)
                determinism_checked = True
                again = _seeded_run(naive_model, naive_inputs, names, timeout, False, example_seed + 1)
                if not _same(naive.output, again.output):
                    report.loaded = False
                    report.checks.append(Check("determinism", False, message="the reference's forward gives different "
                                               "outputs for the same inputs and weights (it samples random numbers "
                                               "in eval mode): no tolerance can be derived"))
                    return
        except TargetError as error:
            report.loaded = False
            report.checks.append(Check("reference", False, message=f"the reference failed: {error.describe()}"))
            return
        order.extend(name for name in actual.outputs if name not in order)
        for name in names:
            if (name in actual.outputs) != (name in exact.outputs):
                skipped.setdefault(name, "the target" if name in actual.outputs else "the reference")
        for name in names:
            _compare_one(found[name], actual.outputs.get(name), exact.outputs.get(name), naive.outputs.get(name), dtype)
            _compare_one(found_inputs[name], actual.inputs.get(name), exact.inputs.get(name), naive.inputs.get(name),
                         dtype)
        _compare_output(output, actual, exact, naive, dtype, index)
    if len(call_errors) == examples or not order and call_errors:
        report.loaded = False
        report.checks.append(_failed_calls(call_errors, examples))
        return
    _fill(report, model, [found[name] for name in order], found_inputs, output, skipped, call_errors, examples)
    uncompared = _uncompared(only_target, only_reference)
    if uncompared:
        report.notes.append(uncompared)


def _failed_calls(call_errors: list[str], examples: int) -> Check:
    return Check("call", False, message=f"{len(call_errors)} of {examples} calls failed; first: {call_errors[0]}",
                 examples=examples)


def _same(first: np.ndarray | None, second: np.ndarray | None) -> bool:
    if first is None or second is None:
        return first is second
    return first.shape == second.shape and bool(np.array_equal(first, second, equal_nan=True))


def _compare_output(output: SubmoduleComparison, actual: _Recording, exact: _Recording, naive: _Recording,
                    dtype: torch.dtype, index: int) -> None:
    """Fold one example's model outputs into ``output``: no floating tensor on either side or a non-finite one is a
    failure with its reason; a different output type (a dict where the reference returns a tensor) is noted."""
    if actual.output is None or exact.output is None:
        side = "the target's" if actual.output is None else "the reference's"
        output.message = output.message or f"example {index}: {side} output holds no floating tensor"
        return
    if not np.all(np.isfinite(actual.output)):
        output.message = output.message or f"example {index}: {int((~np.isfinite(actual.output)).sum())} non-finite"
    if actual.output_type != exact.output_type:
        output.note = output.note or f"the target returns a {actual.output_type}, the reference a {exact.output_type}"
    _compare_one(output, actual.output, exact.output, naive.output, dtype)


def _fill(report: Report, model: nn.Module, compared: list[SubmoduleComparison],
          found_inputs: Mapping[str, SubmoduleComparison], output: SubmoduleComparison, skipped: Mapping[str, str],
          call_errors: list[str], examples: int) -> None:
    """The checks, notes and first divergence of a comparison (see :func:`compare`)."""
    compared = [c for c in compared if c.tolerance is not None or c.message]
    failing = [c for c in compared if not c.ok]
    worst = max(compared, key=lambda c: c.ratio, default=None)
    if worst is None:
        report.notes.append("no submodule was compared (no names in common, or none called by both): the output only")
    else:
        report.checks.append(Check(f"submodules ({len(compared)} compared by name)", not failing, worst.error,
                                   worst.tolerance, (f"{len(failing)} outside tolerance; " if failing else "")
                                   + f"worst at {worst.name} ({worst.cls})", examples, worst.name))
    for comparison in failing[:MAX_FAILING_CHECKS]:
        report.checks.append(Check(f"{comparison.name} ({comparison.cls})", False, comparison.error,
                                   comparison.tolerance, comparison.message or comparison.note, examples,
                                   comparison.name))
    floored = [c.name for c in [*compared, output] if c.note and c.tolerance is not None and c.tolerance.naive is None]
    if floored:
        report.notes.append(f"{len(floored)} comparison(s) held to the ulp floor (the reference overflowed in the "
                            f"target's dtype): {', '.join(floored[:5])}")
    if output.note and output.name not in floored:
        report.notes.append(f"output: {output.note}")
    report.checks.append(Check("output", output.ok, output.error, output.tolerance, output.message, examples))
    if call_errors:
        report.checks.append(_failed_calls(call_errors, examples))
    differs = bool(failing or call_errors or not output.ok)
    first_skipped = next(iter(skipped.items()), None)
    if first_skipped is not None:
        message = (f"{len(skipped)} submodule(s) called by one side only, first {first_skipped[0]} (called by "
                   f"{first_skipped[1]} only)")
        if differs:
            report.checks.append(Check("calls", False, message=message, examples=examples))
        else:  # a functional or fused rewrite of a module call, with the same numbers everywhere compared
            report.notes.append(message + "; every comparison conforms")
    if failing:
        report.first_divergence = _fault(failing[0], found_inputs, type(model).__name__)
    elif differs and first_skipped is not None:
        report.first_divergence = (f"{first_skipped[0]}: called by {first_skipped[1]} only (the forwards call "
                                   "different submodules)")
    elif not output.ok:
        report.first_divergence = ("the output" + (f" ({output.message})" if output.message else "")
                                   + ": every submodule compared conforms, so the difference is in the model's own "
                                   "forward or in submodules named differently")
    elif call_errors:
        report.first_divergence = "the call (the target raised)"


def _fault(first: SubmoduleComparison, inputs: Mapping[str, SubmoduleComparison], model_class: str) -> str:
    """Where the first failing submodule's difference arises: in its own forward when its inputs match the
    reference's, else in the inline code of the innermost enclosing submodule whose inputs still match (the model's
    own forward at the top)."""
    own = inputs.get(first.name)
    if own is None or (own.tolerance is None and not own.message) or own.ok:
        return (f"{first.name} ({first.cls}): its inputs are within tolerance of the reference's, its output is not: "
                "the fault is in its own forward")
    child = first.name
    while "." in child:
        parent = child.rsplit(".", 1)[0]
        enclosing = inputs.get(parent)
        if enclosing is not None and enclosing.tolerance is not None and enclosing.ok:
            return (f"inline code of {parent} ({enclosing.cls}) before it calls {child}: {parent}'s inputs are within "
                    f"tolerance of the reference's, {first.name}'s are not (first outside tolerance: {first.name})")
        child = parent
    return (f"inline code of the model's own forward ({model_class}) before it calls {child}: the inputs of "
            f"{first.name} differ from the reference's (first outside tolerance: {first.name})")


def _uncompared(only_target: list[str], only_reference: list[str]) -> str:
    parts = []
    for label, names in (("only in the target", only_target), ("only in the reference", only_reference)):
        if names:
            parts.append(f"{len(names)} {label} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    return ("not compared (no submodule of that name on the other side): " + "; ".join(parts)) if parts else ""



def validate_against(model: Any, reference: Any, *, inputs: Any = None, examples: int = 3, seed: int = 0,
                     dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
                     weights: str = "random", timeout: float | None = DEFAULT_TIMEOUT,
                     target: str | None = None) -> Report:
    """Validate ``model`` against ``reference`` (each an nn.Module, a factory of one, a ``MODULE:ATTR`` or
    "diffusers:ClassName"), submodule by submodule (the module docstring).

    ``inputs``: a :mod:`~ditcheck.validate.call_inputs` function of the example seed (or ``MODULE:ATTR``); None for a
    diffusers class, whose inputs ditcheck builds. ``weights``: "random" (drawn afresh per example) or "model" (the
    target's own); either way the reference gets the target's. ``dtype`` / ``device``: where the target runs (a copy;
    the caller's model is never changed). Bad arguments raise InvalidArgumentError naming them.
    """
    examples, seed, timeout = require_run_settings(examples, seed, DEFAULT_TIMEOUT if timeout is None else timeout)
    if weights not in ("random", "model"):
        raise InvalidArgumentError("weights", "'random' or 'model'", repr(weights))
    requested = None if dtype is None else resolve_dtype(dtype)
    module, label = zoo.resolve_target(model, requested, target)
    try:
        trusted, reference_label = zoo.resolve_target(reference, requested, argument="reference")
    except InvalidArgumentError as error:  # building "diffusers:CLASS" names the class's argument, "model"
        if error.argument != "model":
            raise
        raise InvalidArgumentError("reference", error.expected, error.got) from error
    if inputs is not None:
        example_inputs = inputs_function(inputs)
        label_of_inputs = inputs_label(inputs)
    elif zoo.dispatches_here(module):
        def example_inputs(example_seed: int) -> CallArguments:
            return zoo.build_inputs(module, example_seed)
        label_of_inputs = "built by ditcheck from the diffusers config"
    else:
        raise InvalidArgumentError("inputs", "a function of the example seed returning the forward call's arguments "
                                   "(ditcheck builds inputs only for diffusers classes)", "None")
    own = next((p for p in module.parameters() if p.is_floating_point()), None)
    if own is None:
        raise InvalidArgumentError("model", "an nn.Module with floating parameters", type(module).__name__)
    run_dtype = own.dtype if requested is None else requested
    run_device = own.device if device is None else resolve_device(device)
    module = copy.deepcopy(module).to(device=run_device, dtype=run_dtype).eval()  # the caller's model is not changed
    report = Report(target=label, kind="dit", settings={
        "path": "differential", "reference": reference_label, "inputs": label_of_inputs,
        "dtype": str(run_dtype).removeprefix("torch."), "device": str(run_device), "examples": examples, "seed": seed,
        "weights": weights})
    compare(report, module, trusted, example_inputs, zoo.randomise_weights if weights == "random" else None,
            examples, seed, timeout)
    if report.loaded and not report.ok:
        report.failures.append(rerun_reproducer(report, "reference", {
            "reference": reference, "inputs": inputs, "examples": examples, "seed": seed,
            "dtype": report.settings["dtype"], "device": report.settings["device"], "weights": weights,
            "timeout": timeout}))
    return report
