"""Whole-model references for diffusers transformer classes: the target's output and every block's output, end to end.

The component engine (:mod:`ditcheck.validate.components`) recomputes each call of the target from that call's
*observed* inputs, so an error that arises between hooked calls, or one that is small in every call but
accumulates, is never seen by it. Here the whole forward is recomputed from the model's weights and inputs alone
by a reference model (:data:`WHOLE_MODEL_REFERENCES`: ``ditcheck.reference.pixart``, ``.sd3``, ``.flux``,
``.wan``), and every block's output and the model's output are compared with the target's
(docs/conventions.md#tolerances):

* the target runs once with forward hooks on the blocks the reference records (dit_run.first_outputs: a
  float64 run under Float32AsFloat64 measures the mathematics; the float32 islands are the component engine's to
  report);
* "exact" is the reference in a format wider than the target's (float64 for float32 targets, x87 long double for
  float64 ones), the naive same-dtype baseline the same reference with every operation rounded to the target's
  format, the worst over NumPy's three summation orders and torch's own kernels (components.naive_precisions);
* each compared tensor conforms when max |target - exact| <= max(2 x max |naive - exact|, 4 ulps of max |exact|)
  (ditcheck.properties.validation.derive_tolerance, no a-priori bound for a whole model); one check per block
  ("whole model: transformer_blocks.0", the worst of its tensors: SD3's and Flux's blocks return (text, image))
  and one for the output, the first failing one in execution order being the first divergence.

:func:`compare_whole_model` makes the checks of one example; :func:`add_whole_model_checks` folds them into a
report over examples (the worst error/tolerance per check); :func:`add_whole_model_example` does both, as
``zoo.validate`` calls it per example for the registered classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ditcheck.properties.validation import derive_tolerance
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.flux import flux_forward
from ditcheck.reference.pixart import pixart_forward
from ditcheck.reference.sd3 import sd3_forward
from ditcheck.reference.wan import wan_forward

from ._target import DEFAULT_TIMEOUT, TargetError
from .components import _to_numpy, _worst, exact_precision, naive_precisions
from .dit_run import first_outputs, max_abs
from .report import Check, Report

__all__ = ["model_output", "CHECK_PREFIX", "REFERENCE_CHECK", "WHOLE_MODEL_REFERENCES", "add_whole_model_checks",
           "add_whole_model_example", "compare_whole_model", "reference_inputs"]

#: diffusers class name -> its whole-model reference forward(xp, params, config, inputs, record), one interface for
#: all: PixArt (reference.pixart), SD3 (reference.sd3), Flux (reference.flux), Wan (reference.wan).
WHOLE_MODEL_REFERENCES: dict[str, Callable[..., Any]] = {
    "PixArtTransformer2DModel": pixart_forward,
    "SD3Transformer2DModel": sd3_forward,
    "FluxTransformer2DModel": flux_forward,
    "WanTransformer3DModel": wan_forward,
}
#: every check this module makes is named "<CHECK_PREFIX>: <block or output>"
CHECK_PREFIX = "whole model"
#: the failed check of a reference (or of the comparison) that crashed: no finding on the target, no divergence
REFERENCE_CHECK = f"{CHECK_PREFIX}: reference"


def reference_inputs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The forward's keyword arguments as a reference takes them (components._to_numpy: floating tensors as float64
    NumPy (exact), bool masks as bool, integer ids as int64, lists, tuples and dicts such as PixArt's added_cond_kwargs
    entry by entry), ``return_dict`` dropped."""
    return {name: _to_numpy(value) for name, value in kwargs.items() if name != "return_dict"}


def _tensors(value: Any) -> list[Any]:
    """A block's output as a list of tensors (None kept: SD3's last block returns (None, image))."""
    return list(value) if isinstance(value, (tuple, list)) else [value]


def model_output(output: Any) -> Any:
    """The sample a diffusers forward returns: the first entry of a tuple (return_dict=False), ``.sample`` of an
    output object."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    return getattr(output, "sample", output)


def _error(actual: Any, exact: Any) -> float:
    """max |actual - exact| (in exact's format, so a long double reference keeps its digits: components._differences
    subtracts in float64 and would not); inf when the shapes differ, one side is missing, or the target's values are
    not finite."""
    if actual is None or exact is None:
        return 0.0 if actual is None and exact is None else math.inf
    actual, exact = np.asarray(actual), np.asarray(exact)
    if actual.shape != exact.shape:
        return math.inf
    if not actual.size:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        difference = np.abs(actual.astype(exact.dtype) - exact).astype(np.float64)
    return math.inf if not np.all(np.isfinite(difference)) else float(np.max(difference))


def _run_target(module: nn.Module, kwargs: Mapping[str, Any], names: Sequence[str], float64: bool,
                timeout: float) -> tuple[Any, dict[str, list[np.ndarray | None]]]:
    """(the output, each named block's first output as float64 arrays) of one hooked call of the target
    (dit_run.first_outputs; a block the target does not have is not recorded, and its check fails)."""
    output, seen = first_outputs(module, names, lambda _name, value: [_to_numpy(t) for t in _tensors(value)],
                                 lambda: module(**kwargs), timeout, float64, heartbeat=True)
    output = model_output(output)
    return _to_numpy(output) if isinstance(output, torch.Tensor) else output, seen


def compare_whole_model(module: nn.Module, kwargs: Mapping[str, Any], dtype: torch.dtype | str, *,
                        name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[Check]:
    """The whole-model checks of one example: ``module(**kwargs)`` (weights and inputs as given, run in ``dtype``)
    against its class's reference, one Check per block output ("whole model: transformer_blocks.i") and one for
    the output ("whole model: output"), in execution order; the first failing one's message says it is the first
    divergence. A target that raises (or hangs) gives one failed check "whole model: call".

    ``name``: the diffusers class (default: ``type(module).__name__``); it must be in WHOLE_MODEL_REFERENCES. The
    reference raises InvalidArgumentError (naming config, params or inputs) for a configuration it does not model.
    """
    cls = name or type(module).__name__
    if cls not in WHOLE_MODEL_REFERENCES:
        raise InvalidArgumentError("name", f"a class with a whole-model reference ({', '.join(WHOLE_MODEL_REFERENCES)})",
                                   repr(cls))
    forward = WHOLE_MODEL_REFERENCES[cls]
    fmt = str(dtype).removeprefix("torch.")
    if fmt not in ("float32", "float64"):
        raise InvalidArgumentError("dtype", "float32 or float64 (the formats the tolerance rule models)", fmt)
    params = {key: value.detach().cpu().double().numpy() for key, value in module.state_dict().items()
              if value.is_floating_point()}
    config = dict(getattr(module, "config", {}) or {})
    inputs = reference_inputs(kwargs)
    exact_record: dict[str, Any] = {}
    exact_output = forward(exact_precision(fmt), params, config, inputs, exact_record)
    names = list(exact_record)
    try:
        output, seen = _run_target(module, kwargs, names, fmt == "float64", timeout)
    except TargetError as error:
        return [Check(f"{CHECK_PREFIX}: call", False, message=f"the target raised: {error.describe()}", examples=1)]
    naive_errors: dict[str, list[float]] = {key: [0.0] * len(_tensors(exact_record[key])) for key in names}
    naive_errors["output"] = [0.0]
    for xp in naive_precisions(fmt):
        record: dict[str, Any] = {}
        naive_output = forward(xp, params, config, inputs, record)
        for key in names:
            pairs = zip(_tensors(record[key]), _tensors(exact_record[key]))
            naive_errors[key] = [max(old, _error(n, e)) for old, (n, e) in zip(naive_errors[key], pairs)]
        naive_errors["output"] = [max(naive_errors["output"][0], _error(naive_output, exact_output))]
    compared = [(key, seen.get(key, [None] * len(_tensors(exact_record[key]))), _tensors(exact_record[key]))
                for key in names] + [("output", [output], [exact_output])]
    checks: list[Check] = []
    first: str | None = None
    for key, actual, exact in compared:
        if len(actual) != len(exact):
            actual = list(actual) + [None] * (len(exact) - len(actual))
        indices = [index for index, (a, e) in enumerate(zip(actual, exact)) if a is not None or e is not None]
        errors = [_error(actual[index], exact[index]) for index in indices]
        tolerances = [derive_tolerance(naive_errors[key][index], None,
                                       0.0 if exact[index] is None else max_abs(np.asarray(exact[index])), fmt)
                      for index in indices]
        error, tolerance = _worst(errors, tolerances)
        check = Check(f"{CHECK_PREFIX}: {key}", True, error, tolerance, "", 1, key)
        check.ok = check.ratio <= 1
        if not check.ok:
            index = next(i for i, t in zip(indices, tolerances) if t is tolerance)
            check.message = f"error/tolerance {check.ratio:.3g}"
            check.message += f" (output {index} of {len(exact)})" if len(exact) > 1 else ""
            if first is None:
                first = key
                check.message += "; the first divergence from the whole-model reference"
        checks.append(check)
    return checks


def add_whole_model_checks(report: Report, checks: Sequence[Check]) -> None:
    """Fold one example's whole-model checks into ``report``: per check id the worst error/tolerance over the examples
    (a check fails when it failed in any example); ``settings["reference"] = "whole model"``; the first failing check
    in execution order is the first divergence when nothing else named one (the component engine's leaf is more
    precise and keeps its place; REFERENCE_CHECK, a crash of the reference, is none)."""
    report.settings["reference"] = "whole model"
    existing = {check.id: check for check in report.checks}
    for check in checks:
        known = existing.get(check.id)
        if known is None:
            report.checks.append(check)
            existing[check.id] = check
            continue
        worse = (check.ratio or (0.0 if check.ok else math.inf)) > (known.ratio or (0.0 if known.ok else math.inf))
        if worse:
            known.observed, known.tolerance, known.worst_case = check.observed, check.tolerance, check.worst_case
            known.message = check.message or known.message
        known.ok = known.ok and check.ok
        known.examples += check.examples
    failing = next((c for c in report.checks if c.id.startswith(f"{CHECK_PREFIX}:") and not c.ok
                    and c.id != REFERENCE_CHECK), None)
    ours = report.first_divergence is None or report.first_divergence.endswith("(whole-model reference)")
    if failing is not None and ours:
        report.first_divergence = f"{failing.id.removeprefix(f'{CHECK_PREFIX}: ')} (whole-model reference)"


def add_whole_model_example(report: Report, module: nn.Module, kwargs: Mapping[str, Any], dtype: torch.dtype | str, *,
                            name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """compare_whole_model for one example, folded into ``report`` (add_whole_model_checks). A configuration the
    reference does not model (InvalidArgumentError, naming it) is a note, never a failure or a crash, as in the
    component engine; any other exception (a bug of the reference or of the comparison) is the failed check
    REFERENCE_CHECK naming the reference, so that the target is never reported conforming unchecked."""
    try:
        checks = compare_whole_model(module, kwargs, dtype, name=name, timeout=timeout)
    except InvalidArgumentError as error:
        note = f"whole-model reference not applied: {type(error).__name__}: {error}"
        if note not in report.notes:
            report.notes.append(note)
        return
    except Exception as error:  # noqa: BLE001 - a crashed reference fails the report, it does not abort it
        forward = WHOLE_MODEL_REFERENCES[name or type(module).__name__]
        forward = getattr(forward, "func", forward)  # a functools.partial
        where = f"{getattr(forward, '__module__', '')}.{getattr(forward, '__qualname__', repr(forward))}"
        checks = [Check(REFERENCE_CHECK, False, message=f"the whole-model reference {where} crashed: "
                        f"{type(error).__name__}: {error}; the target was not compared with it", examples=1)]
    add_whole_model_checks(report, checks)
