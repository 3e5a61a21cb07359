"""Localising a failing ``validate dit`` below the activations it compares: the component engine on one example.

The whole-model comparison (dit_run, dit_stream) stays on top: it compares every hooked activation of
the target with the reference DiT under the convention checked, and its first divergence says *where*
the target leaves that convention. When it fails, this module runs the component engine
(:func:`ditcheck.validate.components.check_components`) once on the worst example (its weights and
inputs) to say *what* is wrong there, from each submodule's own recorded inputs and parameters:

* a failing leaf is reported as that leaf (``blocks.0.attn.qkv (Linear)``);
* a composite failing while its children conform as ``inline code in <Class>.forward``
  (a head merge, the attention call, a chunk order inside a recognised block);
* every recognised component conforming means the code does what its own modules' settings say:
  the mismatch is a convention difference (the diagnosis names it) or lies in code the engine does
  not model (the classes it did not recognise are listed).

In a float64 run the target runs under dit_precision.Float32AsFloat64, as in the comparison (the
islands are measured apart there), so a model that raises in float64 as written is still localised.
Only the failing path pays for it (one forward with a hook on every submodule); the block-by-block
path does not run it (it would hold every block's output of the whole model) and says so.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._target import TargetError
from .components import check_components
from .dit_precision import call_target
from .dit_recognition import Layout
from .report import Check, Report

__all__ = ["localise_components"]

#: the component statuses that are localised faults (``follows`` points at one of them)
FAULTS = ("mismatch", "inline", "error")


def _call_arguments(layout: Layout, x: torch.Tensor, t: torch.Tensor,
                    y: torch.Tensor | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """layout.call's arguments as (args, kwargs), for check_components (which calls the model itself)."""
    if layout.name == "diffusers":
        return (x,), {"timestep": t, "class_labels": y, "return_dict": False}
    return ((x, t, y) if y is not None else (x, t)), {}


def localise_components(model: nn.Module, layout: Layout, tensors: tuple[torch.Tensor, torch.Tensor,
                        torch.Tensor | None], report: Report, timeout: float) -> None:
    """Run the component engine on ``model`` (weights already loaded) with ``tensors``; add what it localises to ``report``.

    Each localised fault becomes a failing check ``component <name>`` whose message names the class,
    the location and any convention knob of that component that explains it; a note sums up what was
    recomputed. A target that raises or hangs here is a note, never an exception.
    """
    x, t, y = tensors
    args, kwargs = _call_arguments(layout, x, t, y)
    try:
        components = call_target(lambda: check_components(model, args, kwargs), timeout, x.dtype == torch.float64)
    except TargetError as error:
        report.notes.append(f"components: the localisation run failed: {error.describe()}")
        return
    checked = components.checked
    unrecognised = sorted({f.cls for f in components.findings if f.status == "not-checked"})
    faults = [f for f in components.findings if f.status in FAULTS]
    for finding in faults:
        knobs = ""
        if finding.explanations:
            knobs = "; explained by " + " or ".join(", ".join(f"{k}={v!r}" for k, v in e.items())
                                                    for e in finding.explanations)
        where = f" at {finding.location}" if finding.location and finding.location != finding.name else ""
        report.checks.append(Check(f"component {finding.name}", False, finding.error, finding.tolerance,
                                   f"{finding.cls}{where}{knobs}" + (f" - {finding.message}" if finding.message
                                                                     else ""), 1))
    summary = f"components: {len(checked)} calls recomputed from their own recorded inputs on the worst example"
    if faults:
        first = faults[0]
        summary += (f"; {len(faults)} localised fault(s), the first {first.name} ({first.cls})"
                    + (f" at {first.location}" if first.location and first.location != first.name else ""))
    else:
        summary += ("; every recognised component conforms to its own settings: the mismatch is a convention "
                    "difference (see the diagnosis) or in code the engine does not model")
    if unrecognised:
        summary += f" (not recognised: {', '.join(unrecognised)})"
    report.notes.append(summary)
