"""A failing DiT case as a .npz plus a Python snippet that re-runs it (``--save-failures``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ditcheck.loader import resolved_spec

from .report import Failure, Report

__all__ = ["reproducer", "rerun_reproducer"]


def reproducer(report: Report, inputs: Mapping[str, Any], result: np.ndarray, convention: str) -> Failure:
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
expected = dit_forward(params, data["x"], data["t"], y, config)[:, :data["output"].shape[1]]  # a SiT-style forward: first C

# the target as ditcheck loaded it (if it was passed as an object, build it here instead)
model = load_module({resolved_spec(report.target)!r})
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


def rerun_reproducer(report: Report, check_id: str, options: Mapping[str, Any]) -> Failure:
    """A failing run of the component or reference path as a snippet calling ``ditcheck.validate.dit`` again with the
    same target, options and seed (random weights and the inputs are drawn from the seed, so the run repeats; with
    ``weights="model"`` only if the target is given the same weights, which the snippet says).

    ``options``: the keyword arguments of the run; a target, ``inputs`` or ``reference`` given as a Python object
    rather than a ``MODULE:ATTR`` cannot be named in a script, and the snippet says to pass it there. No arrays.
    """
    names = {key: value for key, value in options.items() if value is not None}
    objects = [key for key in ("inputs", "reference") if key in names and not isinstance(names[key], str)]
    own_weights = ("\n# weights='model': the target's own weights (a --checkpoint, or its constructor's draw) are not "
                   "saved:\n# load the same ones into the target, or the run does not repeat\n"
                   if names.get("weights") == "model" else "")
    target = resolved_spec(report.target)
    lines = [f"    {key}={resolved_spec(value)!r}," for key, value in names.items() if key not in objects]
    lines += [f"    # {key}=...,  # given as a Python object: pass the same one here" for key in objects]
    arguments = "\n".join(lines)
    snippet = f'''"""Re-run ditcheck's failing run of {report.target} ({check_id}).

First divergence: {report.first_divergence}.
"""
from ditcheck.validate import dit
{own_weights}
report = dit(
    {target!r},  # as ditcheck loaded it; if it was passed as an object, pass the same one here
{arguments}
)
print(report)
'''
    return Failure(check_id, {}, snippet)
