"""``ditcheck criteria``: the LD6 efficiency criterion (docs/claims.md#ld6; Hu et al. 2024 after Alman & Song 2023) per attention layer.

LD6 says inference takes L^(1+o(1)) time when the max entries of W_K A, W_Q A and W_OV A are
o(sqrt(log L)), and that at Theta(sqrt(log L)) no truly subquadratic algorithm exists (SETH).
What is measured here, per attention layer, while the model runs on a batch (forward hooks):

* R = max over batch, heads, queries i and keys j of |scale q_i . k_j| (also per head), with q and
  k exactly as the layer computes them (bias included, after any q/k norm) and ``scale`` the one
  the layer uses (for diffusers' AttnProcessor2_0 that is SDPA's 1/sqrt(d): it ignores attn.scale);
* max |q|, max |k| (the entries of W_Q x, W_K x) and max |W_O v|: the output projection's weight
  (no bias) applied to the value vectors v the layer computed, one token at a time, before the
  softmax mixes them (W_OV x of the paper, with W_V x = v as computed, bias included);
* the LD6 threshold on the right scale. The bounded-entry results (Alman & Song 2023, AAttC) bound the
  *entries* B of the Q, K that enter exp(Q K^T / d); their logits are then at most B^2 in magnitude. So
  with the model's own scale folded into q and k, B = sqrt(d scale) max(max |q|, max |k|) (Alman-Song
  convention: logits = Q K^T / d) is set against sqrt(ln L) (``bounds.ld6_threshold``, L = number of
  keys), and R (logits, which B^2 bounds) against ln L. Also reported: the same entries folded without
  the 1/d, sqrt(scale) max(max |q|, max |k|) (convention logits = Q K^T; R <= d times its square);
* the polynomial degree g = ``bounds.minimal_degree(R, eps)`` that approximates exp to relative
  error eps on [-R, R] (AS3; certified), the feature rank r = ``bounds.feature_rank(d, g)`` =
  C(d + g, g) (AS4), and the FLOP model of ``ditcheck.fast_attention.attention.predicted_cost`` (the one the
  ``auto`` backend decides with), per head and sample (Lq queries, Lk keys, head dim d = value dim):
  exact Lq Lk (4 d + EXP_FLOPS) (Q K^T and A V, 2 flops per multiply-add, and one exp per logit
  counted as EXP_FLOPS = 10 flops);
  polynomial (Lq + Lk) r (features of Q and K) + 2 Lk r (d + 1) (K'^T [V, 1]) + 2 Lq r (d + 1)
  (Q' (K'^T [V, 1]); the extra column is the softmax normalisation), summed over heads.
  Predicted speed-up = exact / polynomial (a FLOP ratio, not a measured time).

Attention layers are found by layout: modules with a ``qkv`` Linear and a ``proj`` Linear
(facebookresearch/DiT, timm, ditcheck.models.dit) or with ``to_q``/``to_k``/``to_v`` Linears and
``to_out[0]`` (diffusers Attention). :func:`analyse_calls` needs no layout: it captures every
``scaled_dot_product_attention`` call (q, k and scale as they enter the softmax, after any joint concatenation,
RoPE or QK-norm) and gives one row per call; ``ditcheck criteria`` uses it for every diffusers transformer class
``ditcheck validate dit`` builds. Without --model the command runs ditcheck.models.dit.DiT with
random weights (reference.dit.random_dit_params; nothing is downloaded). The certified degree
costs from 0.1 s to tens of seconds per layer (more for larger R); when no degree up to the
certified maximum reaches eps, the table shows "-" and says why.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ditcheck import bounds
from ditcheck.fast_attention.attention import EXP_FLOPS, predicted_cost
from ditcheck.reference.errors import InvalidArgumentError

__all__ = [
    "LayerCriteria",
    "AttentionLayer",
    "find_attention_layers",
    "attention_scale",
    "DegreeFunction",
    "certified_degree",
    "analyse",
    "PADDING_BIAS",
    "sdpa_scale",
    "CallAnalysis",
    "analyse_calls",
    "module_stack",
    "flops",
    "criteria_table",
    "print_criteria",
]

#: ``degree_fn(R, eps) -> g``: the polynomial degree needed for relative error eps of exp on [-R, R].
DegreeFunction = Callable[[float, float], int]



@dataclass(frozen=True)
class LayerCriteria:
    """What LD6 needs to know about one attention layer on one batch (see the module docstring for definitions).

    degree, rank, flops_poly and speedup are None when no certified degree exists for (R, eps)
    (bounds.minimal_degree refused, e.g. R beyond the largest certified degree); degree_note says why.
    Conventions: ``radius`` R is in logits at the layer's ``scale``; ``entry_bound`` B is the max entry of
    sqrt(head_dim scale) q and k (Alman-Song: logits = Q K^T / d, so R <= B^2) and is compared with
    ``threshold`` = sqrt(ln L) (``below_threshold``); R is compared with ``logit_threshold`` = ln L
    (``logit_below``); ``entry_bound_folded`` is sqrt(scale) max entry (logits = Q K^T, R <= d B_folded^2).
    The thresholds and verdicts are None for a single key (ln 1 = 0: LD6 says nothing).
    """

    name: str
    layout: str
    heads: int
    head_dim: int
    query_length: int
    key_length: int
    scale: float
    scale_source: str
    radius_per_head: tuple[float, ...]
    radius: float
    max_query: float
    max_key: float
    max_value_output: float
    threshold: float | None
    below_threshold: bool | None
    eps: float
    degree: int | None
    rank: int | None
    flops_exact: float
    flops_poly: float | None
    speedup: float | None
    degree_note: str = ""
    entry_bound: float = math.nan
    entry_bound_folded: float = math.nan
    logit_threshold: float | None = None
    logit_below: bool | None = None
    #: per call (analyse_calls): the mask SDPA got ("none", "bool", "additive", "+causal") and the calling class
    mask: str = ""
    module: str = ""


@dataclass
class AttentionLayer:
    """One discovered attention module: where its q, k, v and output projection live."""

    name: str
    module: nn.Module
    layout: str  # "qkv" (DiT/timm) or "to_qkv" (diffusers)

    @property
    def heads(self) -> int:
        return int(self.module.num_heads if self.layout == "qkv" else self.module.heads)

    @property
    def output_projection(self) -> nn.Linear:
        return self.module.proj if self.layout == "qkv" else self.module.to_out[0]


def _is_linear(module: Any) -> bool:
    return isinstance(module, nn.Linear)


def find_attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """Attention modules of ``model`` in definition order: ``qkv`` + ``proj`` Linears, or ``to_q``/``to_k``/``to_v`` + ``to_out``."""
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError("model", "a torch.nn.Module", type(model).__name__)
    found = []
    for name, module in model.named_modules():
        if _is_linear(getattr(module, "qkv", None)) and _is_linear(getattr(module, "proj", None)) \
                and hasattr(module, "num_heads"):
            found.append(AttentionLayer(name, module, "qkv"))
        elif all(_is_linear(getattr(module, part, None)) for part in ("to_q", "to_k", "to_v")) \
                and hasattr(module, "heads") and hasattr(module, "to_out"):
            found.append(AttentionLayer(name, module, "to_qkv"))
    return found


def attention_scale(layer: AttentionLayer, head_dim: int) -> tuple[float, str]:
    """(the logit scale the layer actually uses, where it comes from)."""
    module = layer.module
    if layer.layout == "to_qkv" and type(getattr(module, "processor", None)).__name__ == "AttnProcessor2_0":
        return 1.0 / math.sqrt(head_dim), "SDPA default 1/sqrt(d) (AttnProcessor2_0 ignores attn.scale)"
    scale = getattr(module, "scale", None)
    if scale is None:
        return 1.0 / math.sqrt(head_dim), "default 1/sqrt(d) (module has no scale)"
    return float(scale), "module.scale"


def flops(query_length: int, key_length: int, head_dim: int, heads: int, rank: int | None,
          value_dim: int | None = None) -> tuple[float, float | None]:
    """(exact, polynomial) FLOPs of one layer for one sample: ``attention.predicted_cost`` times heads (poly None without a rank).

    ``value_dim`` defaults to ``head_dim``.
    """
    value_dim = head_dim if value_dim is None else value_dim
    exact = float(predicted_cost("exact", query_length, key_length, head_dim, value_dim))
    if rank is None:
        return heads * exact, None
    return heads * exact, heads * float(predicted_cost("poly", query_length, key_length, head_dim, value_dim, rank))


class _Recorder:
    """Forward hooks on one layer's q/k/v Linears and the layer itself; running maxima over every call."""

    def __init__(self, layer: AttentionLayer):
        self.layer = layer
        self.parts: dict[str, Tensor] = {}
        self.radius: Tensor | None = None
        self.max_query = self.max_key = self.max_value_output = 0.0
        self.lengths = (0, 0)
        self.head_dim = 0
        self.scale, self.scale_source = 1.0, ""
        self.handles: list[Any] = []
        module = layer.module
        if layer.layout == "qkv":
            self.handles.append(module.qkv.register_forward_hook(self._keep("qkv")))
        else:
            for part in ("to_q", "to_k", "to_v"):
                self.handles.append(getattr(module, part).register_forward_hook(self._keep(part)))
        self.handles.append(module.register_forward_hook(self._measure))

    def _keep(self, part: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            self.parts[part] = output.detach()
        return hook

    def _heads(self) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v as [N, H, L, d] float64, exactly as the layer feeds them to its attention."""
        module, heads = self.layer.module, self.layer.heads
        if self.layer.layout == "qkv":
            qkv = self.parts["qkv"]
            n, length, width = qkv.shape
            split = qkv.reshape(n, length, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4)
            named = dict(zip(getattr(module, "qkv_order", "qkv"), split.unbind(0)))
            q, k, v = named["q"], named["k"], named["v"]
            norms = (getattr(module, "q_norm", None), getattr(module, "k_norm", None))
        else:
            def split_heads(x: Tensor) -> Tensor:
                return x.reshape(x.shape[0], x.shape[1], heads, x.shape[2] // heads).transpose(1, 2)
            q, k, v = (split_heads(self.parts[part]) for part in ("to_q", "to_k", "to_v"))
            norms = (getattr(module, "norm_q", None), getattr(module, "norm_k", None))
        if norms[0] is not None:
            q = norms[0](q)
        if norms[1] is not None:
            k = norms[1](k)
        return q.double(), k.double(), v.double()

    def _measure(self, _module: nn.Module, _inputs: Any, _output: Any) -> None:
        if not self.parts:
            return
        q, k, v = self._heads()
        self.parts.clear()
        n, heads, query_length, head_dim = q.shape
        self.lengths, self.head_dim = (query_length, k.shape[2]), head_dim
        self.scale, self.scale_source = attention_scale(self.layer, head_dim)
        radius = torch.stack([(self.scale * q[:, h] @ k[:, h].transpose(-1, -2)).abs().amax() for h in range(heads)])
        self.radius = radius if self.radius is None else torch.maximum(self.radius, radius)
        self.max_query = max(self.max_query, float(q.abs().max()))
        self.max_key = max(self.max_key, float(k.abs().max()))
        values = v.transpose(1, 2).reshape(n, k.shape[2], heads * v.shape[-1])
        weight = self.layer.output_projection.weight.detach().double()
        self.max_value_output = max(self.max_value_output, float((values @ weight.T).abs().max()))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def result(self, eps: float, degree_fn: DegreeFunction) -> LayerCriteria:
        if self.radius is None:
            raise InvalidArgumentError("model", f"a forward pass that calls attention layer {self.layer.name!r}",
                                       "a run in which it was never called")
        query_length, key_length = self.lengths
        stats = _CallStats(self.layer.name, "", self.layer.heads, self.head_dim, self.head_dim, query_length,
                           key_length, self.scale, self.scale_source, tuple(float(r) for r in self.radius),
                           self.max_query, self.max_key, self.max_value_output, "")
        return _criteria(stats, eps, degree_fn, layout=self.layer.layout)


def certified_degree(kind: str = "chebyshev") -> DegreeFunction:
    """bounds.minimal_degree(R, eps, kind=kind) (AS3, certified): the default degree function of :func:`analyse`."""
    return lambda radius, eps: bounds.minimal_degree(radius, eps, kind=kind)


def analyse(model: nn.Module, *args: Any, eps: float = 1e-4, kind: str = "chebyshev",
            degree_fn: DegreeFunction | None = None, **kwargs: Any) -> list[LayerCriteria]:
    """Run ``model(*args, **kwargs)`` without gradients and return the LD6 criteria of every attention layer it calls.

    If the model calls a layer several times (e.g. inside a sampler), R and the maxima are over all calls.
    ``degree_fn(R, eps)`` gives the polynomial degree; default certified_degree(kind), i.e.
    bounds.minimal_degree, which certifies in ball arithmetic (about 0.1 s to 20 s per layer, growing with R).
    """
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 < eps < 1):
        raise InvalidArgumentError("eps", "a relative error in (0, 1)", repr(eps))
    degree_fn = certified_degree(kind) if degree_fn is None else degree_fn
    layers = find_attention_layers(model)
    if not layers:
        raise InvalidArgumentError("model", "a module with attention layers (qkv + proj Linears, or diffusers "
                                   "to_q/to_k/to_v + to_out)", type(model).__name__)
    recorders = [_Recorder(layer) for layer in layers]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for recorder in recorders:
            recorder.remove()
    return [recorder.result(eps, degree_fn) for recorder in recorders]


# ----------------------------------------------------------------------------------------
# Every softmax-attention call, captured where q and k enter the attention core


#: An additive mask entry at or below this is padding, not part of the logit: diffusers' pipelines pad with
#: (1 - mask) x -10000, and exp(-1e4) is 0 in every float format (float64 underflows below e^-745), so such a pair
#: takes no part in the softmax while its logit stays below 1e4 - 745 in magnitude.
PADDING_BIAS = -1e4

_SDPA_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def sdpa_scale(scale: float | None, head_dim: int) -> tuple[float, str]:
    """(the logit scale of one scaled_dot_product_attention call, where it comes from): its ``scale`` argument, else
    SDPA's default 1/sqrt(d) with d the query's head dim."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim), "SDPA default 1/sqrt(d) (no scale passed)"
    return float(scale), "SDPA scale argument"


def _heads_layout(x: Tensor) -> Tensor:
    """SDPA's (N, ..., L, E) as [N', H, L, E] float64: the dims before the last three flattened, H = 1 for 3-D."""
    x = x.detach().double()
    return x.unsqueeze(-3).reshape(-1, 1, *x.shape[-2:]) if x.ndim == 3 else x.reshape(-1, *x.shape[-3:])


def _kept_pairs(call: dict[str, Any], shape: tuple[int, ...]) -> Tensor | None:
    """bool ``shape`` = [N', H, Lq, Lk] of the (query, key) pairs whose logit enters the softmax (None: every pair).

    SDPA broadcasts the mask against (N, ..., Lq, Lk), the query's leading dims: broadcast there, then flattened
    as :func:`_heads_layout` flattens the query.
    """
    query, mask = call["query"], call.get("attn_mask")
    full = (*query.shape[:-2], shape[-2], shape[-1])
    keep = None
    if mask is not None:
        mask = mask.detach()
        keep = (mask if mask.dtype == torch.bool else mask > PADDING_BIAS).broadcast_to(full).reshape(shape)
    if call.get("is_causal"):  # SDPA's is_causal: query i sees keys j <= i (top-left aligned)
        lower = torch.ones(shape[-2:], dtype=torch.bool, device=query.device).tril()
        keep = lower.broadcast_to(shape) if keep is None else keep & lower
    return keep


def _mask_kind(mask: Tensor | None, causal: bool) -> str:
    kinds = [] if mask is None else ["bool" if mask.dtype == torch.bool else "additive"]
    return "+".join(kinds + (["causal"] if causal else [])) or "none"


def _output_projection(module: nn.Module | None, width: int) -> nn.Linear | None:
    """The module's single output projection taking ``width`` = heads x value dim, else None.

    None for joint attention (a ``to_add_out`` too: which tokens each projection takes is the processor's split)
    and for attention whose output is projected outside it (Flux single-stream: pre_only).
    """
    if module is None or hasattr(module, "to_add_out") and getattr(module, "to_add_out") is not None:
        return None
    for name in ("to_out", "proj", "out_proj"):
        candidate = getattr(module, name, None)
        if isinstance(candidate, (nn.ModuleList, nn.Sequential)) and len(candidate):
            candidate = candidate[0]
        if isinstance(candidate, nn.Linear) and candidate.in_features == width:
            return candidate
    return None


@dataclass
class _CallStats:
    """What one SDPA call contributes to its row; computed at the call (the tensors are not kept)."""

    name: str
    module: str
    heads: int
    head_dim: int
    value_dim: int
    query_length: int
    key_length: int
    scale: float
    scale_source: str
    radius_per_head: tuple[float, ...]
    max_query: float
    max_key: float
    max_value_output: float
    mask: str


def _call_stats(name: str, module: nn.Module | None, call: dict[str, Any]) -> _CallStats:
    q, k, v = (_heads_layout(call[part]) for part in ("query", "key", "value"))
    heads, head_dim = q.shape[1], q.shape[-1]
    if k.shape[1] != heads:  # grouped-query attention (enable_gqa): query head h reads key/value head h // group
        k, v = (x.repeat_interleave(heads // x.shape[1], dim=1) for x in (k, v))
    scale, source = sdpa_scale(call.get("scale"), head_dim)
    shape = (q.shape[0], heads, q.shape[2], k.shape[2])
    keep = _kept_pairs(call, shape)
    radius = []
    for h in range(heads):
        logits = (scale * q[:, h] @ k[:, h].transpose(-1, -2)).abs()
        if keep is not None:
            logits = logits.masked_fill(~keep[:, h], 0.0)
        radius.append(float(logits.amax()) if logits.numel() else 0.0)
    projection = _output_projection(module, heads * v.shape[-1])
    value_output = math.nan
    if projection is not None:
        tokens = v.transpose(1, 2).reshape(v.shape[0], v.shape[2], heads * v.shape[-1])
        value_output = float((tokens @ projection.weight.detach().double().T).abs().max())
    return _CallStats(name, "" if module is None else type(module).__name__, heads, head_dim, v.shape[-1],
                      shape[2], shape[3], scale, source, tuple(radius), float(q.abs().max()), float(k.abs().max()),
                      value_output, _mask_kind(call.get("attn_mask"), bool(call.get("is_causal"))))


@contextmanager
def module_stack(model: nn.Module, stack: list[tuple[str, nn.Module]] | None = None,
                 entered: Callable[[str, nn.Module], Any] | None = None) -> Iterator[list[tuple[str, nn.Module]]]:
    """Keep ``stack`` (a new list by default; yielded) equal to the (name, module) of the submodules of ``model``
    currently running, outermost first, the model itself named "": a forward pre-hook on every submodule pushes
    (and calls ``entered(name, module)``), a forward hook run even when the forward raises (``always_call``) pops.

    The innermost module making a call is ``stack[-1]`` (:func:`analyse_calls`' row names; the float32-island
    search of ``ditcheck validate``, ``ditcheck.validate.dit_precision``). Hooks belong to the modules, not to a
    thread: one forward of ``model`` at a time. On exit the hooks are removed and ``stack`` is cleared.
    """
    stack = [] if stack is None else stack
    handles = []
    for name, module in model.named_modules():
        def enter(module: nn.Module, _args: Any, name: str = name) -> None:
            stack.append((name, module))
            if entered is not None:
                entered(name, module)

        def leave(_module: nn.Module, _args: Any, _output: Any) -> None:
            if stack:
                stack.pop()
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()
        stack.clear()


class _AttentionCallRecorder(TorchFunctionMode):
    """Sees every torch.nn.functional.scaled_dot_product_attention call and the module stack it is made from
    (``stack`` and ``ran`` are kept by :func:`module_stack`, see :func:`analyse_calls`)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, nn.Module]] = []
        self.calls: list[_CallStats] = []
        #: every submodule that ran, by name, in first-run order
        self.ran: dict[str, nn.Module] = {}
        self.measured: set[str] = set()

    def _record(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        call = dict(zip(_SDPA_PARAMETERS, args))
        call.update(kwargs)
        name, module = self.stack[-1] if self.stack else ("", None)
        self.measured.update(n for n, _ in self.stack)
        self.calls.append(_call_stats(name, module, call))

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            self._record(args, kwargs)
        elif func is torch.nn.functional.multi_head_attention_forward:
            # the mode is off while a function it intercepted runs, so the SDPA call inside (nn.MultiheadAttention,
            # HunyuanDiT's pooler) would go unseen: F's module-level name is what that body looks up, so it is
            # pointed at a recording wrapper for this one call
            original = torch.nn.functional.scaled_dot_product_attention

            def recording(*inner_args: Any, **inner_kwargs: Any) -> Any:
                self._record(inner_args, inner_kwargs)
                return original(*inner_args, **inner_kwargs)

            torch.nn.functional.scaled_dot_product_attention = recording
            try:
                return func(*args, **kwargs)
            finally:
                torch.nn.functional.scaled_dot_product_attention = original
        return func(*args, **kwargs)


@dataclass(frozen=True)
class CallAnalysis:
    """:func:`analyse_calls`' answer: one row per attention call, and the attention modules it could not measure."""

    rows: tuple[LayerCriteria, ...]
    #: "name (Class)" of modules whose class name says attention that ran without calling SDPA (linear attention,
    #: flex attention, a hand-written softmax): not measured
    unmeasured: tuple[str, ...]


def _is_attention_module(module: nn.Module) -> bool:
    return "Attention" in type(module).__name__ or "Attn" in type(module).__name__


def _criteria(stats: _CallStats, eps: float, degree_fn: DegreeFunction, layout: str = "sdpa") -> LayerCriteria:
    """The LD6 row of one layer or call (the definitions of the module docstring)."""
    radius = max(stats.radius_per_head)
    threshold = float(bounds.ld6_threshold(stats.key_length)) if stats.key_length >= 2 else None
    logit_threshold = None if threshold is None else threshold * threshold
    folded = math.sqrt(stats.scale) * max(stats.max_query, stats.max_key)  # logits = Q' K'^T
    entry_bound = math.sqrt(stats.head_dim) * folded  # Alman-Song: logits = Q K^T / d
    degree, rank, note = None, None, ""
    try:
        degree = int(degree_fn(radius, eps))
    except InvalidArgumentError as error:  # no certified degree for this (R, eps): report it, do not guess
        note = str(error)
    if degree is not None:
        rank = int(bounds.feature_rank(stats.head_dim, degree))
    exact, poly = flops(stats.query_length, stats.key_length, stats.head_dim, stats.heads, rank, stats.value_dim)
    return LayerCriteria(stats.name, layout, stats.heads, stats.head_dim, stats.query_length, stats.key_length,
                         stats.scale, stats.scale_source, stats.radius_per_head, radius, stats.max_query,
                         stats.max_key, stats.max_value_output, threshold,
                         None if threshold is None else entry_bound < threshold, eps, degree, rank, exact, poly,
                         None if poly is None else exact / poly, note, entry_bound, folded, logit_threshold,
                         None if logit_threshold is None else radius < logit_threshold, stats.mask, stats.module)


def analyse_calls(model: nn.Module, *args: Any, eps: float = 1e-4, kind: str = "chebyshev",
                  degree_fn: DegreeFunction | None = None, **kwargs: Any) -> CallAnalysis:
    """Run ``model(*args, **kwargs)`` once without gradients; one LD6 row per softmax-attention call it makes.

    Every call of ``torch.nn.functional.scaled_dot_product_attention`` is captured (a TorchFunctionMode) with the
    query, key and scale that actually enter the softmax, whatever the processor did before (joint text-image
    concatenation, RoPE, QK-norm, a scale of its own): no per-architecture code; the call made inside
    ``F.multi_head_attention_forward`` (nn.MultiheadAttention) too. Row names are the innermost module
    making the call (``#i`` when it calls several times, e.g. once per sample). The quantities are those of
    :func:`analyse` (module docstring), with these call-level conventions: ``scale`` is SDPA's ``scale`` argument,
    else its default 1/sqrt(d); grouped-query keys are read per query head; R is over the (query, key) pairs that
    enter the softmax: those a boolean mask keeps, those an additive mask does not pad out (an entry
    <= :data:`PADDING_BIAS`; a finite bias above it is added to the logit, not part of Q K^T, and not in R), those
    ``is_causal`` keeps; B is over all entries of Q and K; max|OV| uses the calling module's single output
    projection and is NaN where there is none (joint attention with a ``to_add_out``, Flux's single-stream blocks).
    """
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 < eps < 1):
        raise InvalidArgumentError("eps", "a relative error in (0, 1)", repr(eps))
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError("model", "a torch.nn.Module", type(model).__name__)
    degree_fn = certified_degree(kind) if degree_fn is None else degree_fn
    recorder = _AttentionCallRecorder()
    with module_stack(model, recorder.stack, recorder.ran.setdefault), torch.no_grad(), recorder:
        model(*args, **kwargs)
    unmeasured = tuple(f"{name} ({type(module).__name__}{_processor(module)})" for name, module in recorder.ran.items()
                       if _is_attention_module(module) and name not in recorder.measured)
    if not recorder.calls:
        raise InvalidArgumentError("model", "a forward that calls torch.nn.functional.scaled_dot_product_attention",
                                   f"{type(model).__name__}: no such call" +
                                   (f" (attention modules run without it: {', '.join(unmeasured)})" if unmeasured
                                    else ""))
    counts: dict[str, int] = {}
    for stats in recorder.calls:
        counts[stats.name] = counts.get(stats.name, 0) + 1
    seen: dict[str, int] = {}
    rows = []
    for stats in recorder.calls:
        name = stats.name or type(model).__name__
        if counts[stats.name] > 1:
            seen[stats.name] = seen.get(stats.name, 0) + 1
            name = f"{name}#{seen[stats.name]}"
        rows.append(_criteria(dataclasses.replace(stats, name=name), eps, degree_fn))
    return CallAnalysis(tuple(rows), unmeasured)


def _processor(module: nn.Module) -> str:
    processor = getattr(module, "processor", None)
    return "" if processor is None else f", {type(processor).__name__}"


# ----------------------------------------------------------------------------------------
# Output


def _si(value: float) -> str:
    """1.2e9 -> '1.2G': FLOP counts at a glance (plain e-notation from 1e18 on)."""
    if abs(value) >= 1e18:
        return f"{value:.3g}"
    for factor, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def criteria_table(layers: Sequence[LayerCriteria], title: str = "LD6 efficiency criterion") -> Any:
    """A rich Table with one row per attention layer (column legend: print_criteria)."""
    table = Table(title=title)
    columns = ("layer", "L", "H x d", "scale", "B", "sqrt(ln L)", "B below", "R", "ln L", "R below", "max|Q|",
               "max|K|", "max|OV|", "g", "r", "exact FLOP", "poly FLOP", "speed-up")
    masks = any(c.mask for c in layers)
    if masks:
        columns = (*columns, "mask")
    for column in columns:
        table.add_column(column, justify="left" if column == "layer" else "right", no_wrap=True)
    for c in layers:
        length = str(c.key_length) if c.query_length == c.key_length else f"{c.query_length}x{c.key_length}"
        verdict = {True: "yes", False: "no", None: "-"}
        table.add_row(c.name, length, f"{c.heads} x {c.head_dim}", f"{c.scale:.4g}", f"{c.entry_bound:.3g}",
                      "-" if c.threshold is None else f"{c.threshold:.3g}", verdict[c.below_threshold],
                      f"{c.radius:.3g}", "-" if c.logit_threshold is None else f"{c.logit_threshold:.3g}",
                      verdict[c.logit_below], f"{c.max_query:.3g}",
                      f"{c.max_key:.3g}", "-" if math.isnan(c.max_value_output) else f"{c.max_value_output:.3g}",
                      "-" if c.degree is None else str(c.degree),
                      "-" if c.rank is None else _si(c.rank), _si(c.flops_exact),
                      "-" if c.flops_poly is None else _si(c.flops_poly),
                      "-" if c.speedup is None else f"{c.speedup:.3g}x", *((c.mask,) if masks else ()))
    return table


def print_criteria(layers: Sequence[LayerCriteria], title: str = "LD6 efficiency criterion") -> None:
    """The table and a legend of its columns."""
    Console(width=max(Console().width, 200)).print(criteria_table(layers, title))
    eps = layers[0].eps if layers else float("nan")
    print("B = sqrt(d scale) max(max|Q|, max|K|): the entries of Q, K with the layer's scale folded in, in Alman-Song's\n"
          "convention logits = Q K^T / d (so |logit| <= B^2); LD6's threshold on B is sqrt(ln L), L = number of keys.\n"
          "R = max |scale q_i . k_j| over batch, heads, i, j (logits at the layer's scale), set against ln L.\n"
          "max|Q|, max|K|: entries of W_Q x, W_K x as the layer computes them; max|OV|: output-projection weight\n"
          "(no bias) applied to the layer's value vectors token by token (W_OV x, before softmax mixing).\n"
          f"g: minimal degree for relative error {eps:g} of exp on [-R, R] (AS3, certified); r = C(d + g, g) (AS4).\n"
          f"FLOP per sample: exact Lq Lk (4 d + {EXP_FLOPS:g}) per head (one exp counted as {EXP_FLOPS:g} flops); "
          "poly (Lq + Lk) r + 2 (Lq + Lk) r (d + 1) per head;\n"
          "speed-up = exact / poly, a predicted FLOP ratio, not a measured time.")
    if any(c.layout == "sdpa" for c in layers):
        print("One row per scaled_dot_product_attention call (name#i: the i-th call of that module), with the q, k and\n"
              "scale that enter it; R over the pairs the mask keeps (mask column); max|OV| '-': joint attention or an\n"
              "output projection outside the attention module.")
    for c in layers:
        if c.degree is None:
            print(f"{c.name}: no certified degree for R = {c.radius:.3g}, eps = {c.eps:g} ({c.degree_note})")


# ----------------------------------------------------------------------------------------
# Models to analyse: presets with random weights, or the user's module
