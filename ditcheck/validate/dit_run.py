"""Running a DiT target with forward hooks on drawn examples, and measuring its activations against the reference.

Each activation is compared with reference.dit_intermediates (float64) under the tolerance rule of
properties/validation.py, the naive candidate being ditcheck.models.dit.DiT in the target's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

from ditcheck.models.dit import DiT as NaiveDiT
from ditcheck.properties.strategies import seeds
from ditcheck.properties.validation import FORWARD_FACTOR, Tolerance, derive_tolerance
from ditcheck.reference.dit import DiTConfig, dit_intermediates

from ._attention import draw_examples
from ._target import Heartbeat
from .dit_precision import call_target
from .dit_recognition import dit_hooks

__all__ = ["first_outputs", "hooked_activation", "capture", "Example", "draw_dit_examples", "Comparison", "max_abs", "Run", "measure",
           "tolerances", "score"]


def first_outputs(model: nn.Module, names: Iterable[str], keep: Callable[[str, Any], Any], call: Callable[[], Any],
                  timeout: float, float64: bool = False, heartbeat: bool = False) -> tuple[Any, dict[str, Any]]:
    """(call()'s output, {name: keep(name, output)} for the first call of each named submodule of ``model``, in
    execution order): forward hooks around one dit_precision.call_target run (in isolation, without autograd, under
    Float32AsFloat64 when ``float64``; the hooks are removed afterwards, whatever happened).

    ``keep`` runs inside the hook, on the output as the submodule returned it (before later code can change it in
    place); a name ``model`` does not have is skipped (nothing recorded). ``heartbeat``: the time-out counts from
    the last submodule call to finish (a full-size model is slow, not hung) instead of from the start.
    """
    modules = dict(model.named_modules())
    kept: dict[str, Any] = {}
    handles = []
    for name in names:
        module = modules.get(name)
        if module is None:
            continue

        def hook(_module: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
            if name not in kept:
                kept[name] = keep(name, output)

        handles.append(module.register_forward_hook(hook))
    progress = Heartbeat() if heartbeat else None
    if progress is not None:
        handles += [submodule.register_forward_hook(progress.beat) for submodule in model.modules()]
    return call_target(call, timeout, float64, handles, progress), kept


def hooked_activation(output: Any, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> np.ndarray | None:
    """A hooked submodule's output as compared with the reference: the first entry of a tuple output, ``transform``
    applied (a layout's hook transform, None: none), as a float64 NumPy array on the CPU; None when it is no tensor."""
    value = output[0] if isinstance(output, tuple) else output
    if not isinstance(value, torch.Tensor):
        return None
    value = transform(value) if transform is not None else value
    return value.detach().to("cpu", torch.float64, copy=True).numpy()  # a copy: later in-place code must not change it


def capture(model: nn.Module, hooks: list[tuple[str, str, Any]], call: Callable[[], Any],
             timeout: float, float64: bool = False) -> tuple[Any, list[tuple[str, str, np.ndarray]]]:
    """(output, [(target name, reference name, activation)] in execution order; first call of each module only,
    :func:`first_outputs`; the first entry of a tuple output, skipped when it is no tensor).

    float64: run under dit_precision.Float32AsFloat64 (a float64 run measures the mathematics, islands apart).
    """
    references: dict[str, tuple[str, Any]] = {}
    for target_name, reference_name, transform in hooks:
        references.setdefault(target_name, (reference_name, transform))

    def keep(target_name: str, output: Any) -> np.ndarray | None:
        return hooked_activation(output, references[target_name][1])

    output, kept = first_outputs(model, references, keep, call, timeout, float64)
    return output, [(name, references[name][0], value) for name, value in kept.items() if value is not None]


@dataclass(frozen=True)
class Example:
    """One drawn batch: weight and latent seeds, a timestep and a label per sample."""

    param_seed: int
    input_seed: int
    times: tuple[float, ...]
    labels: tuple[int, ...] | None


#: The range of DiT timesteps (DDPM's 1000 steps) and where in it a batch always has one sample.
LAST_TIMESTEP = 999.0
SMALL_TIMESTEP = 1.0


def _batch_times() -> st.SearchStrategy[tuple[float, ...]]:
    """t = 0, one small t in (0, 1], one mid-range t, t = 999, in a drawn order (every sample of a batch differs)."""
    parts = st.tuples(st.just(0.0), st.floats(SMALL_TIMESTEP / 1024, SMALL_TIMESTEP),
                      st.floats(2.0, LAST_TIMESTEP - 1.0), st.just(LAST_TIMESTEP))
    return parts.flatmap(lambda values: st.permutations(list(values))).map(tuple)


def _batch_labels(classes: int, size: int) -> st.SearchStrategy[tuple[int, ...]]:
    """The null class (index ``classes``, classifier-free guidance) and ordinary labels, in a drawn order."""
    ordinary = st.lists(st.integers(0, classes - 1), min_size=size - 1, max_size=size - 1)
    return ordinary.flatmap(lambda labels: st.permutations([classes, *labels])).map(tuple)


def draw_dit_examples(config: DiTConfig, count: int, seed: int) -> list[Example]:
    """``count`` batches of four samples: t at 0, small, mid-range and the end of the range, one null label."""
    labels = _batch_labels(config.num_classes, 4) if config.num_classes else st.just(None)
    return draw_examples(st.builds(Example, seeds(), seeds(), _batch_times(), labels), count, seed)


@dataclass
class Comparison:
    """Worst error of one activation over the examples, for the target and for the naive implementation."""

    target_name: str
    reference_name: str
    order: int
    observed: float = 0.0
    naive: float = 0.0
    magnitude: float = 0.0


def max_abs(a: np.ndarray) -> float:
    return float(np.max(np.abs(a), initial=0.0)) if np.all(np.isfinite(a)) else math.inf


@dataclass
class Run:
    """One example as the target ran it: reference inputs (rounded through dtype), tensors, activations, output;
    output_error: max |output - reference output|, set by the last :func:`measure` of it (for its config)."""

    inputs: dict[str, Any]
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
    seen: list[tuple[str, str, np.ndarray]]
    result: np.ndarray
    output_error: float = math.nan


def measure(config: DiTConfig, runs: list[Run], dtype: torch.dtype, device: torch.device, timeout: float,
             naive_errors: Mapping[str, float] | None = None) -> list[Comparison]:
    """Worst errors per activation (execution order, output last) of the target and of the naive model, for ``config``.

    The naive candidate of the tolerance rule is ditcheck.models.dit.DiT with the same config, weights
    and inputs in the target dtype: a plain implementation of exactly the convention checked.
    ``naive_errors`` (by target activation name) reuses errors measured before instead of re-running it. Each
    run's Run.output_error is set on the way.
    """
    comparisons: dict[str, Comparison] = {}
    output = Comparison("output", "unpatchify", 10**6)
    for run in runs:
        x, t, y = run.tensors
        naive: dict[str, np.ndarray] = {}
        if naive_errors is None:
            naive_model = NaiveDiT.from_params(config, run.inputs["params"], dtype=dtype, device=device)
            naive_out, naive_seen = capture(naive_model, dit_hooks(config), lambda: naive_model(x, t, y), timeout)
            naive = {ref: value for _, ref, value in naive_seen}
            naive["unpatchify"] = naive_out.double().cpu().numpy()
            with torch.no_grad():  # c = t_emb + y_emb is no module of the original layout: add in the target dtype
                c = naive_model.t_embedder(t) + (naive_model.y_embedder(y) if y is not None else 0)
            naive["c"] = c.double().cpu().numpy()
        reference = dit_intermediates(**{**run.inputs, "config": config})
        pairs = [(target_name, reference_name, value) for target_name, reference_name, value in run.seen]
        for order, (target_name, reference_name, value) in enumerate(pairs + [("output", "unpatchify", run.result)]):
            expected = reference[reference_name]
            if target_name == "output":  # a SiT-style forward returns only the first C channels (checked before)
                expected = expected[:, :value.shape[1]]
            entry = output if target_name == "output" else comparisons.setdefault(
                target_name, Comparison(target_name, reference_name, order))
            error = max_abs(value - expected) if value.shape == expected.shape else math.inf
            entry.observed = max(entry.observed, error)
            if target_name == "output":
                run.output_error = error
            entry.naive = max(entry.naive, max_abs(naive[reference_name][:, :expected.shape[1]] - expected)
                              if naive_errors is None
                              else naive_errors[target_name])
            entry.magnitude = max(entry.magnitude, max_abs(expected))
    return sorted(comparisons.values(), key=lambda c: c.order) + [output]


def tolerances(ordered: list[Comparison], dtype: torch.dtype) -> dict[str, Tolerance]:
    """The derived tolerance of every compared activation, by target name."""
    return {c.target_name: derive_tolerance(c.naive, None, c.magnitude, dtype, FORWARD_FACTOR) for c in ordered}


def score(ordered: list[Comparison], dtype: torch.dtype) -> tuple[float, int]:
    """(worst error/tolerance, index of the first activation outside tolerance; len(ordered) if none)."""
    bounds = tolerances(ordered, dtype)
    ratios = [c.observed / bounds[c.target_name].value for c in ordered]
    first = next((i for i, r in enumerate(ratios) if r > 1), len(ordered))
    return max(ratios), first
