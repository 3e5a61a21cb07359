"""Float32 islands of a float64 run: mapping a target's float32 requests to float64, and running it as written.

Real DiT code computes some parts in float32 whatever the model dtype (the original DiT's timestep
frequencies: ``torch.arange(..., dtype=torch.float32)`` and ``t.float()``; diffusers' timestep
sinusoid, RMSNorm variances, RoPE tables, FP32LayerNorm; see the team notes on the DiT zoo). In a
float64 validation those islands would drown real findings, and the original DiT even raises (a
float32 embedding meets float64 weights). ditcheck therefore runs a float64 target twice:

* :class:`Float32AsFloat64` (the mathematics): every *explicit* float32 request becomes a float64
  one: ``Tensor.float()``, a ``torch.float32`` passed positionally (``.to(torch.float32)``,
  ``.type(torch.float32)``) and ``dtype=torch.float32`` keyword arguments of any torch function
  (``torch.arange``, ``torch.zeros``, ``.to(dtype=...)``...). Tensors created in torch's default
  dtype without naming it are not touched: ditcheck cannot tell them from deliberate choices. The
  whole-model comparison runs under this mode, so it measures the mathematics to float64 accuracy.
* :class:`PromoteMixedFloats` (as written): float32 requests are honoured; where a float32 tensor
  then meets a float64 one in a torch function that would refuse mixed dtypes (``F.linear``), the
  float32 operand is promoted to float64, as NumPy would. The island's own error is measured this way.

Both record which submodule asked for float32 (the innermost module running at the time), so each
island is reported with its location. Modes are thread-local: enter them in the thread that runs
the target.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle
from torch.utils._pytree import tree_flatten, tree_map

from ditcheck.fast_attention.criteria import module_stack

from ._target import Heartbeat, TargetError, call_isolated

__all__ = ["Float32AsFloat64", "PromoteMixedFloats", "requests_float32", "Island", "find_islands",
           "measure_island", "call_target", "eager", "compiled_modules", "compile_note"]


def requests_float32(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the call func(*args, **kwargs) explicitly asks for float32."""
    return (func is torch.Tensor.float or kwargs.get("dtype") is torch.float32
            or any(arg is torch.float32 for arg in args))


class _Recording(TorchFunctionMode):
    """A mode that notes the innermost running submodule of every float32 request (``stack``: kept by
    ditcheck.fast_attention.criteria.module_stack, (name, module) pairs, innermost last)."""

    def __init__(self, stack: list[tuple[str, nn.Module]] | None = None) -> None:
        super().__init__()
        self.stack = stack if stack is not None else []
        #: names of the innermost modules that requested float32, in first-request order
        self.requests: dict[str, int] = {}

    def note(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if requests_float32(func, args, kwargs):
            where = self.stack[-1][0] if self.stack else ""
            self.requests[where] = self.requests.get(where, 0) + 1


class Float32AsFloat64(_Recording):
    """Inside this mode every explicit float32 request is a float64 one (see the module docstring)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        self.note(func, args, kwargs)
        if func is torch.Tensor.float:
            func = torch.Tensor.double
        if kwargs.get("dtype") is torch.float32:
            kwargs["dtype"] = torch.float64
        args = tuple(torch.float64 if arg is torch.float32 else arg for arg in args)
        return func(*args, **kwargs)


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """A context (and decorator, ``@eager()``) where torch.compile directives are ignored
    (``torch.compiler.set_stance("force_eager")``): every run of a DiT target is eager. A compiled forward
    (LightningDiT compiles its blocks) calls ditcheck's hooks either way, but dynamo guards on them: each change of
    the hooks re-traces the forward with ditcheck's hook code inside, until its recompile limit (tests/targets/
    dit_forks.compiled_blocks, a clean and a buggy validation: 47 s and about 300 frames compiled; eager: 2.5 s and
    none). torch before 2.6 has no stances: there, nothing changes and compiled modules run as compiled
    (compile_note says which).

    The stance is process-wide, not per thread: enter it once, in the caller's thread, around a whole validation
    (models.dit is decorated with it), never in the threads that run the target (an abandoned, timed-out call would
    leave it on, and overlapping calls restore each other's)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    with contextlib.nullcontext() if set_stance is None else set_stance("force_eager"):
        yield


def compiled_modules(model: nn.Module) -> list[str]:
    """Names of ``model``'s modules whose forward is wrapped by torch.compile (see compile_note)."""
    return [name or "(the model)" for name, module in model.named_modules()
            if hasattr(getattr(module, "forward", None), "_torchdynamo_orig_callable")
            or type(module).__name__ == "OptimizedModule"]


def compile_note(model: nn.Module) -> str | None:
    """The report's note on ``model``'s torch.compile'd modules (compiled_modules; None when there are none): run
    eagerly (eager) where torch has stances, else run as compiled."""
    compiled = compiled_modules(model)
    if not compiled:
        return None
    names = f"{', '.join(compiled[:4])}{' ...' if len(compiled) > 4 else ''}"
    if getattr(torch.compiler, "set_stance", None) is None:
        return (f"torch.compile: {names} compiled; run as compiled (this torch has no torch.compiler.set_stance "
                "to run them eagerly)")
    return (f"torch.compile ignored: {names} run eagerly (force_eager): the code as written is checked, without "
            "dynamo re-tracing it around ditcheck's hooks")


def call_target(call: Callable[[], Any], timeout: float, float64: bool,
                handles: Iterable[RemovableHandle] = (), heartbeat: Heartbeat | None = None,
                mode: TorchFunctionMode | None = None) -> Any:
    """call() in isolation (_target.call_isolated: an exception or a hang is a TargetError) without autograd, under
    Float32AsFloat64 when ``float64`` (a float64 run measures the mathematics, islands apart) or under the torch
    function ``mode`` given instead (float64=True is ``mode=Float32AsFloat64()``); the forward-hook ``handles`` that
    record the call are removed afterwards, whatever happened. ``heartbeat``: the time-out counts from its last beat
    (see call_isolated).

    Grad mode and torch function modes are per thread: they are set here, in the thread that runs the target.
    """
    if mode is None and float64:
        mode = Float32AsFloat64()

    def run() -> Any:
        with torch.no_grad(), (mode if mode is not None else contextlib.nullcontext()):
            return call()
    try:
        return call_isolated(run, timeout=timeout, heartbeat=heartbeat)
    finally:
        for handle in handles:
            handle.remove()


class PromoteMixedFloats(_Recording):
    """Inside this mode float32 requests are honoured and a float32 tensor meeting a float64 one is promoted."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        self.note(func, args, kwargs)
        leaves, _ = tree_flatten((args, kwargs))
        dtypes = {leaf.dtype for leaf in leaves if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()}
        if torch.float64 in dtypes and torch.float32 in dtypes and not _is_conversion(func):
            def promote(value: Any) -> Any:
                if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
                    return value.double()
                return value
            args, kwargs = tree_map(promote, (args, kwargs))
        return func(*args, **kwargs)


def _is_conversion(func: Any) -> bool:
    """In-place copies and conversions keep their own dtype rules (copy_ into a float32 buffer stays float32)."""
    name = getattr(func, "__name__", "")
    return name.endswith("_") or name in {"to", "type", "type_as", "__set__", "__get__"}


@dataclass
class Island:
    """One submodule that asked for float32 in a float64 run, and what that costs.

    error: max |as written - float32 mapped to float64| of the module's output on the inputs it saw;
    naive: the same for the whole module run in float32 (its parameters and floating inputs rounded),
    the same-dtype baseline its tolerance derives from; magnitude: max |output|. raised: the message
    when even the promoted as-written call raises (the error is then unknown).
    """

    module: str
    kind: str
    requests: int
    error: float = math.inf
    naive: float = math.inf
    magnitude: float = 0.0
    raised: str | None = None


def _max_abs_difference(a: Any, b: Any) -> float:
    a_leaves, _ = tree_flatten(a)
    b_leaves, _ = tree_flatten(b)
    worst = 0.0
    for x, y in zip(a_leaves, b_leaves):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.is_floating_point():
            if x.shape != y.shape:
                return math.inf
            worst = max(worst, float((x.double() - y.double()).abs().max()) if x.numel() else 0.0)
    return worst


def _magnitude(a: Any) -> float:
    leaves, _ = tree_flatten(a)
    return max((float(x.double().abs().max()) for x in leaves if isinstance(x, torch.Tensor) and x.is_floating_point()
                and x.numel()), default=0.0)


def find_islands(model: nn.Module, call: Callable[[], Any], timeout: float) -> dict[str, int]:
    """Run ``call`` (a forward of ``model``) under Float32AsFloat64: innermost module name -> float32 requests."""
    with module_stack(model) as stack:
        mode = Float32AsFloat64(stack)
        call_target(call, timeout, True, mode=mode)
        return mode.requests


def measure_island(model: nn.Module, name: str, requests: int, call: Callable[[], Any], timeout: float) -> Island:
    """Record the inputs ``name`` sees in a mapped forward (``call``), then re-run it as written and in float32."""
    module = model.get_submodule(name) if name else model
    island = Island(name or "(the model's own forward)", type(module).__name__, requests)
    seen: dict[str, Any] = {}

    def record(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if "args" not in seen:
            seen["args"], seen["kwargs"] = tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v,
                                                    (args, kwargs))
    call_target(call, timeout, True, [module.register_forward_pre_hook(record, with_kwargs=True)])
    if "args" not in seen:
        island.raised = "not called again"
        return island
    args, kwargs = seen["args"], seen["kwargs"]

    def run(target: nn.Module, inputs: tuple[Any, Any], float64: bool = False,
            mode: TorchFunctionMode | None = None) -> Any:
        return call_target(lambda: target(*inputs[0], **inputs[1]), timeout, float64, mode=mode)

    exact = run(module, (args, kwargs), float64=True)
    island.magnitude = _magnitude(exact)
    try:
        island.error = _max_abs_difference(run(module, (args, kwargs), mode=PromoteMixedFloats()), exact)
    except TargetError as error:
        island.raised = error.describe()
    single = copy.deepcopy(module).float()
    rounded = tree_map(lambda v: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v,
                       (args, kwargs))
    try:
        island.naive = _max_abs_difference(run(single, rounded), exact)
    except TargetError:
        island.naive = math.inf
    return island
