"""``ditcheck.validate.attention``: a third-party attention function against the certified reference.

Inputs come from properties/attention.py's AttentionCase strategy (adversarial kinds: large
logits near the exp overflow edge, near-ties, one-hot rows, small integers; L = 1 and odd head
dims included), drawn by Hypothesis under a fixed seed and rounded through the target dtype
before the reference sees them; the first example of each kind has every axis longer than 1
(see _structural). Each check compares the worst example of one kind with the tolerance rule
of properties/validation.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ditcheck.properties.attention import ADVERSARIAL_KINDS, AttentionCase, attention_cases
from ditcheck.properties.validation import (FORWARD_FACTOR, GRADIENT_FACTOR, Tolerance, attention_rounding_bound,
                                            attention_vjp_magnitudes, attention_vjp_rounding_bound,
                                            derive_tolerance)
from ditcheck.bounds import format_of, torch_dtype_of
from ditcheck.properties.profiles import without_local_constants
from ditcheck.reference import attention as reference_attention
from ditcheck.reference import attention_vjp
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.precision import require_positive_int, require_real

from ._target import DEFAULT_TIMEOUT, TargetError, TargetTimeoutError, call_isolated
from .report import Check, Failure, Report

__all__ = ["attention", "attention_case_error", "fits_dtype", "draw_examples", "resolve_dtype", "resolve_device",
           "require_run_settings", "LAYOUTS", "DEFAULT_ATTENTION_EXAMPLES"]

LAYOUTS = ("bhld", "blhd")
DEFAULT_ATTENTION_EXAMPLES = 50


def resolve_dtype(dtype: Any, argument: str = "dtype") -> torch.dtype:
    """A torch floating dtype from a torch.dtype or its name (the formats of ditcheck.reference.formats)."""
    return torch_dtype_of(dtype, argument)


def resolve_device(device: str | torch.device, argument: str = "device") -> torch.device:
    """A torch device that exists on this machine (a tensor can be made on it)."""
    try:
        resolved = torch.device(device)
        torch.empty(0, device=resolved)
    except Exception as error:  # torch raises RuntimeError, or AssertionError for CUDA without CUDA
        raise InvalidArgumentError(argument, "an available torch device such as 'cpu' or 'cuda:0'",
                                   f"{device!r} ({error})") from error
    return resolved


def require_run_settings(examples: Any, seed: Any, timeout: Any) -> tuple[int, int, float]:
    """(examples, seed, timeout) of a validation run: a positive integer, an integer, a positive number of seconds."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidArgumentError("seed", "an integer", repr(seed))
    return (require_positive_int(examples, "examples"), int(seed),
            require_real(timeout, "timeout", low=0.0, low_inclusive=False))


def draw_examples(strategy: st.SearchStrategy[Any], count: int, seed: int) -> list[Any]:
    """``count`` examples of ``strategy`` drawn by Hypothesis, reproducibly from ``seed`` (no shrinking).

    The same seed gives the same examples whatever else the process has imported. Hypothesis
    tries the simplest example (all zeros: t = 0, L = 1, logits 0, ...) first whatever the seed;
    it is skipped, so every example depends on the seed and none is degenerate by construction.
    """
    drawn: list[Any] = []

    @hypothesis_seed(seed)
    @settings(max_examples=count + 1, database=None, derandomize=False, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        drawn.append(example)

    with without_local_constants():
        collect()
    return drawn[1:count + 1] if len(drawn) > count else drawn[:count]  # a tiny strategy may run out


def fits_dtype(case: AttentionCase, dtype: torch.dtype) -> bool:
    """The case's q, k, v are finite in ``dtype`` and no partial sum of q k^T can overflow it (any order):
    outside that domain a correct ``dtype`` implementation cannot be told from a broken one."""
    largest = format_of(dtype).max_finite
    q, k, v, _ = case.build()
    if max(float(np.max(np.abs(a), initial=0.0)) for a in (q, k, v)) >= largest:
        return False
    return float(np.max(np.abs(q) @ np.swapaxes(np.abs(k), -1, -2), initial=0.0)) <= largest / 2


def _structural(case: AttentionCase) -> AttentionCase:
    """The case with every axis of a different length > 1 where it can be (B = 2, H = 3, 2 <= Lq != Lk, D >= 2)
    and logits of range >= 1.

    Layout bugs (heads merged in the wrong order, batch and head axes exchanged, q and k lengths
    confused) leave the output unchanged when an axis has length 1 or two axes are read
    interchangeably, and a wrong scale when D = 1 or every logit is ~0 (softmax is then uniform
    whatever the scale); Hypothesis draws H = 1, L = 1 or logit range 0 often. Each check's first
    example is this one, so none of them depends on luck to see such a bug.
    """
    query_tokens = max(case.query_tokens, 2)
    key_tokens = max(case.key_tokens, 2)
    key_tokens += key_tokens == query_tokens
    head_dim = max(case.head_dim, 2)
    return dataclasses.replace(case, batch=2, heads=3, query_tokens=query_tokens, key_tokens=key_tokens,
                               head_dim=head_dim, value_dim=head_dim, logit_range=max(case.logit_range, 1.0))


def _accepts_scale(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins such as torch's SDPA: read the documented signature
        first_line = (getattr(fn, "__doc__", None) or "").strip().split("\n\n")[0]
        return "scale=" in first_line.replace(" ", "")
    return any(p.name == "scale" or p.kind == p.VAR_KEYWORD for p in parameters)


def _name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"


def _exact(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None, dtype: torch.dtype) -> np.ndarray:
    """The exact attention output to compare with: the certified ball's midpoint for float64 targets
    (the float64 reference is not accurate enough to judge float64 code), else the float64 reference."""
    if dtype == torch.float64:
        return reference_attention(q, k, v, scale=scale, precision="arb:113").mid
    return reference_attention(q, k, v, scale=scale)


def _exact_vjp(q: np.ndarray, k: np.ndarray, v: np.ndarray, grad_out: np.ndarray, scale: float | None,
               dtype: torch.dtype) -> tuple[np.ndarray, ...]:
    if dtype == torch.float64:
        return tuple(g.mid for g in attention_vjp(q, k, v, grad_out, scale=scale, precision="arb:113"))
    return tuple(attention_vjp(q, k, v, grad_out, scale=scale))


def _naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The plain same-dtype implementation the tolerance rule measures against (softmax subtracts the max)."""
    return torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1) @ v


@dataclasses.dataclass
class _Outcome:
    """The worst example of one check so far."""

    ratio: float = -1.0
    observed: float | None = None
    tolerance: Tolerance | None = None
    message: str = ""
    case: AttentionCase | None = None
    arrays: dict[str, np.ndarray] | None = None
    failed_calls: int = 0
    examples: int = 0
    timed_out: bool = False


def attention(fn: Callable[..., Any], *, dtype: torch.dtype | str = torch.float32, scale: float | None = None,
              layout: str = "bhld", examples: int = DEFAULT_ATTENTION_EXAMPLES, seed: int = 0,
              device: str | torch.device = "cpu", kinds: Sequence[str] = ADVERSARIAL_KINDS,
              gradients: bool | None = None, timeout: float = DEFAULT_TIMEOUT, target: str | None = None) -> Report:
    """Validate ``fn(q, k, v)`` (optionally ``fn(q, k, v, scale=s)``) against the reference attention.

    dtype: the dtype of q, k, v and of the output. scale: the logit scale fn uses (None: 1/sqrt(D),
    and explicit scales are drawn too when fn accepts ``scale=``). layout: "bhld" ([B, H, L, D],
    SDPA) or "blhd" ([B, L, H, D], flash-attn). examples: drawn per run (split over ``kinds``, rounded
    up; the first of each kind has B = 2, H = 3, 2 <= Lq != Lk, D >= 2). gradients: check dQ, dK,
    dV (None: when the output requires grad). timeout: seconds per call; after a time-out a kind
    makes no further call. ``target`` names fn in the report and in reproducers (e.g. the CLI's
    MODULE:ATTR). Returns a :class:`Report` with one check per (forward | grad) x kind.
    """
    dtype = resolve_dtype(dtype)
    if layout not in LAYOUTS:
        raise InvalidArgumentError("layout", f"one of {LAYOUTS}", repr(layout))
    examples, seed, timeout = require_run_settings(examples, seed, timeout)
    unknown = [kind for kind in kinds if kind not in ADVERSARIAL_KINDS]
    if isinstance(kinds, str) or unknown or not kinds:
        raise InvalidArgumentError("kinds", f"a non-empty subset of {ADVERSARIAL_KINDS}", repr(kinds))
    if scale is not None:
        scale = require_real(scale, "scale")
    if gradients not in (None, True, False):
        raise InvalidArgumentError("gradients", "None, True or False", repr(gradients))
    if not callable(fn):
        raise InvalidArgumentError("fn", "a callable fn(q, k, v)", type(fn).__name__)
    device = resolve_device(device)
    name = target or _name(fn)
    pass_scale = _accepts_scale(fn)
    report = Report(target=name, kind="attention", settings={
        "dtype": str(dtype).removeprefix("torch."), "layout": layout, "examples": examples, "seed": seed,
        "scale": "1/sqrt(D)" if scale is None else scale, "device": str(device)})

    forward = {kind: _Outcome() for kind in kinds}
    backward = {kind: _Outcome() for kind in kinds}
    check_gradients = gradients
    calls = returned = 0
    per_kind = max(1, math.ceil(examples / len(kinds)))
    for index, kind in enumerate(kinds):
        # Dv = D: what fused kernels and MultiheadAttention require; masks are out of the fn(q, k, v) interface
        strategy = attention_cases(max_tokens=12, max_dim=16, masks=("none",), kinds=(kind,)).map(
            lambda c: dataclasses.replace(c, value_dim=c.head_dim))
        if not pass_scale or scale is not None:
            strategy = strategy.map(lambda c: dataclasses.replace(c, scale=scale))
        structural = draw_examples(strategy.map(_structural).filter(lambda c: fits_dtype(c, dtype)), 1,
                                   seed * 1000003 + index)
        drawn = draw_examples(strategy.filter(lambda c: fits_dtype(c, dtype)), per_kind - 1,
                              seed * 1000003 + index + 500009) if per_kind > 1 else []
        for case in structural + drawn:
            if forward[kind].timed_out or backward[kind].timed_out:
                break  # a hung call may still be running: do not pile up more (the other kinds still run)
            calls += 1
            ok, grads_seen = _run_example(fn, case, dtype, layout, device, pass_scale, check_gradients,
                                          timeout, forward[kind], backward[kind])
            returned += ok
            if check_gradients is None and grads_seen is not None:
                check_gradients = grads_seen
    if returned == 0:  # every call raised or timed out (a wrong output is a discrepancy: exit code 1)
        report.loaded = False
        report.notes.append(f"the target never returned ({calls} calls): {forward[kinds[0]].message}")
    for part, outcomes in (("forward", forward), ("grad", backward)):
        if part == "grad" and not check_gradients:
            report.notes.append("gradients not checked: " + (
                "gradients=False" if gradients is False else "the output does not require grad"))
            continue
        for kind, outcome in outcomes.items():
            report.checks.append(_to_check(f"{part}[{kind}]", outcome))
            if not report.checks[-1].ok and outcome.arrays is not None:
                report.failures.append(_failure(report.checks[-1], outcome, name, dtype, layout, pass_scale, part))
    return report


def attention_case_error(fn: Callable[..., Any], case: AttentionCase, *, dtype: torch.dtype | str = torch.float32,
                         layout: str = "bhld") -> tuple[float, Tolerance]:
    """(forward error of ``fn`` on one case, its tolerance), for properties over Hypothesis-drawn cases.

    The case's mask must be "none"; its scale is passed as ``scale=`` when fn accepts it (else dropped).
    A target that raises or returns an unusable output gives an infinite error.
    """
    dtype = resolve_dtype(dtype)
    if not fits_dtype(case, dtype):
        raise InvalidArgumentError("case", f"inputs representable in {dtype} (see fits_dtype)", repr(case))
    outcome = _Outcome()
    pass_scale = _accepts_scale(fn)
    if not pass_scale:  # fn applies its default 1/sqrt(D): judge it by that
        case = dataclasses.replace(case, scale=None)
    _run_example(fn, case, dtype, layout, torch.device("cpu"), pass_scale, False, DEFAULT_TIMEOUT, outcome,
                 _Outcome())
    if outcome.failed_calls or outcome.tolerance is None or outcome.observed is None:
        return math.inf, derive_tolerance(None, None, 0.0, dtype)
    return outcome.observed, outcome.tolerance


def _to_check(check_id: str, outcome: _Outcome) -> Check:
    if outcome.failed_calls:
        return Check(check_id, False, outcome.observed, outcome.tolerance,
                     f"{outcome.failed_calls} of {outcome.examples} calls failed; first: {outcome.message}",
                     outcome.examples, None if outcome.case is None else repr(outcome.case))
    if outcome.examples == 0:  # never pass a check that checked nothing
        return Check(check_id, False, message="no example was checked" + (
            " (the output does not require grad)" if check_id.startswith("grad") else ""))
    ok = outcome.ratio <= 1.0
    return Check(check_id, ok, outcome.observed, outcome.tolerance, "" if ok else outcome.message,
                 outcome.examples, None if outcome.case is None else repr(outcome.case))


def _to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t if layout == "bhld" else t.transpose(1, 2).contiguous()


def _fail(outcome: _Outcome, case: AttentionCase, message: str, arrays: dict[str, np.ndarray]) -> None:
    outcome.failed_calls += 1
    if outcome.failed_calls == 1:
        outcome.message, outcome.case, outcome.arrays = message, case, arrays
        outcome.ratio = math.inf


def _record(outcome: _Outcome, observed: float, tolerance: Tolerance, case: AttentionCase, message: str,
            arrays: dict[str, np.ndarray]) -> None:
    ratio = observed / tolerance.value if np.isfinite(observed) else math.inf
    if outcome.failed_calls == 0 and ratio > outcome.ratio:
        outcome.ratio, outcome.observed, outcome.tolerance = ratio, observed, tolerance
        outcome.case, outcome.message, outcome.arrays = case, message, arrays


def _as_output(value: Any, expected_shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The target's return value, or TargetError saying what is wrong with it."""
    if not isinstance(value, torch.Tensor):
        raise TargetError("output", "a torch.Tensor", type(value).__name__)
    if tuple(value.shape) != expected_shape:
        raise TargetError("output", f"shape {expected_shape}", str(tuple(value.shape)))
    if value.dtype != dtype:
        raise TargetError("output", f"dtype {dtype} (the input dtype)", str(value.dtype))
    return value


def _run_example(fn: Callable[..., Any], case: AttentionCase, dtype: torch.dtype, layout: str, device: torch.device,
                 pass_scale: bool, check_gradients: bool | None, timeout: float, forward: _Outcome,
                 backward: _Outcome) -> tuple[bool, bool | None]:
    """One example: (the call returned, its output requires grad; None when there is no usable output)."""
    q64, k64, v64, _ = case.build()
    tensors = [torch.tensor(a, dtype=dtype, device=device) for a in (q64, k64, v64)]
    q, k, v = (t.double().cpu().numpy() for t in tensors)  # rounded through the target dtype
    scale_used = 1 / math.sqrt(case.head_dim) if case.scale is None else case.scale
    rng = np.random.default_rng(case.seed ^ 0x6AD)
    grad_out = torch.tensor(rng.standard_normal(q.shape[:-1] + (v.shape[-1],)), dtype=dtype, device=device)
    arrays = {"q": q, "k": k, "v": v, "grad_out": grad_out.double().cpu().numpy(),
              "scale": np.float64(np.nan if case.scale is None else case.scale)}
    forward.examples += 1
    want_grad = check_gradients is not False
    inputs = [_to_layout(t, layout).requires_grad_(want_grad) for t in tensors]
    kwargs = {"scale": case.scale} if pass_scale and case.scale is not None else {}
    expected_shape = tuple(_to_layout(torch.empty(q.shape[:-1] + (v.shape[-1],)), layout).shape)
    try:
        value = call_isolated(fn, *inputs, timeout=timeout, **kwargs)
    except TargetError as error:
        _fail(forward, case, error.describe(), arrays)
        forward.timed_out = isinstance(error, TargetTimeoutError)
        return False, None
    try:
        out = _as_output(value, expected_shape, dtype)
    except TargetError as error:
        _fail(forward, case, error.describe(), arrays)
        return True, None
    result = _to_layout(out.detach(), layout).double().cpu().numpy()
    exact = _exact(q, k, v, case.scale, dtype)
    with torch.no_grad():
        naive = _naive(*tensors, scale_used).double().cpu().numpy()
    observed = float(np.max(np.abs(result - exact), initial=0.0)) if np.all(np.isfinite(result)) else math.inf
    tolerance = derive_tolerance(float(np.max(np.abs(naive - exact), initial=0.0)),
                                 float(np.max(attention_rounding_bound(q, k, v, dtype, case.scale), initial=0.0)),
                                 float(np.max(np.abs(exact), initial=0.0)), dtype, FORWARD_FACTOR)
    message = ("non-finite output (NaN or Inf)" if not np.isfinite(observed)
               else f"forward error {observed:.3g} exceeds {tolerance.value:.3g}")
    _record(forward, observed, tolerance, case, message, arrays)
    differentiable = bool(out.requires_grad)
    if not want_grad or not differentiable:
        return True, differentiable
    backward.examples += 1
    try:
        grads = call_isolated(torch.autograd.grad, out, inputs, _to_layout(grad_out, layout), timeout=timeout,
                              allow_unused=True)
    except TargetError as error:
        _fail(backward, case, f"backward {error.describe()}", arrays)
        backward.timed_out = isinstance(error, TargetTimeoutError)
        return True, True
    exact_grads = _exact_vjp(q, k, v, arrays["grad_out"], case.scale, dtype)
    naive_inputs = [t.clone().requires_grad_(True) for t in tensors]
    naive_grads = torch.autograd.grad(_naive(*naive_inputs, scale_used), naive_inputs, grad_out)
    magnitudes = attention_vjp_magnitudes(q, k, v, arrays["grad_out"], case.scale)
    bounds = attention_vjp_rounding_bound(q, k, v, arrays["grad_out"], dtype, case.scale)
    worst: tuple[float, float, Tolerance, str] | None = None
    for label, got, exact_grad, naive_grad, magnitude, bound in zip(
            ("dQ", "dK", "dV"), grads, exact_grads, naive_grads, magnitudes, bounds):
        if got is None:
            _fail(backward, case, f"{label} is None (the output does not depend on it)", arrays)
            return True, True
        got_np = _to_layout(got, layout).double().cpu().numpy()
        err = float(np.max(np.abs(got_np - exact_grad), initial=0.0)) if np.all(np.isfinite(got_np)) else math.inf
        tol = derive_tolerance(float(np.max(np.abs(naive_grad.double().cpu().numpy() - exact_grad), initial=0.0)),
                               bound, max(magnitude, float(np.max(np.abs(exact_grad), initial=0.0))), dtype,
                               GRADIENT_FACTOR, apriori_label="first-order")
        ratio = err / tol.value if np.isfinite(err) else math.inf
        if worst is None or ratio > worst[0]:
            worst = (ratio, err, tol, label)
    assert worst is not None
    _, err, tol, label = worst
    message = (f"{label} non-finite" if not np.isfinite(err) else f"{label} error {err:.3g} exceeds {tol.value:.3g}")
    _record(backward, err, tol, case, message, arrays)
    return True, True


def _failure(check: Check, outcome: _Outcome, name: str, dtype: torch.dtype, layout: str, pass_scale: bool,
             part: str) -> Failure:
    assert outcome.arrays is not None
    scale = outcome.case.scale if outcome.case is not None else None
    call_scale = f", scale={scale!r}" if pass_scale and scale is not None else ""
    to_layout = "" if layout == "bhld" else ".transpose(1, 2).contiguous()"
    from_layout = "" if layout == "bhld" else ".transpose(1, 2)"
    tol = "n/a" if check.tolerance is None else f"{check.tolerance.value:.6g}"
    snippet = f'''"""Re-run ditcheck's failing case {check.id} of {name} ({check.message or "outside tolerance"})."""
import numpy as np
import torch

from ditcheck.reference import attention, attention_vjp
from ditcheck.validate import load_function

data = np.load("{{NPZ}}")
fn = load_function({name!r})
dtype = torch.{str(dtype).removeprefix("torch.")}
q, k, v = (torch.tensor(data[n], dtype=dtype){to_layout}.requires_grad_() for n in "qkv")
out = fn(q, k, v{call_scale})
exact = attention(data["q"], data["k"], data["v"], scale={scale!r})
error = np.abs(out{from_layout}.detach().double().numpy() - exact).max()
print("forward error", error, "(tolerance {tol} for {check.id})")
'''
    if part == "grad":
        snippet += f'''grad_out = torch.tensor(data["grad_out"], dtype=q.dtype){to_layout}
grads = torch.autograd.grad(out, (q, k, v), grad_out)
exact_grads = attention_vjp(data["q"], data["k"], data["v"], data["grad_out"], scale={scale!r})
for label, got, want in zip(("dQ", "dK", "dV"), grads, exact_grads):
    print(label, "error", np.abs(got{from_layout}.double().numpy() - want).max())
'''
    return Failure(check.id, outcome.arrays, snippet)
