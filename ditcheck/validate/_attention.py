"""``ditcheck.validate.attention``: a third-party attention function against the certified reference.

Inputs come from properties/attention.py's AttentionCase strategy (adversarial kinds: large
logits near the exp overflow edge, near-ties, one-hot rows, small integers, and for float16 /
bfloat16 unscaled products beyond the format; L = 1 and odd head dims included), drawn by
Hypothesis under a fixed seed and rounded through the target dtype before the reference sees
them. Each kind's first example has every axis longer than 1 (see _structural), its second is
long (up to 4096 tokens), then come tile-boundary lengths (63, 64, 65, ...) and short draws; long
sequences are compared on sampled query rows. Options add grouped-query heads, masks (with
fully masked rows) and self-attention draws. Each check compares the worst example of one kind
with the tolerance rule of properties/validation.py, whose baseline is best-practice code
(baseline_name).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ditcheck.bounds import format_of, gamma, torch_dtype_of
from ditcheck.properties.attention import (HALF_PRECISION_KINDS, VALIDATION_KINDS, VALIDATION_MASKS, AttentionCase,
                                           head_dims, kv_head_counts, logit_ranges, long_lengths,
                                           tile_boundary_lengths, token_counts)
from ditcheck.properties.strategies import seeds
from ditcheck.properties.validation import (FORWARD_FACTOR, GRADIENT_FACTOR, Tolerance, attention_rounding_bound,
                                            attention_vjp_magnitudes, attention_vjp_rounding_bound,
                                            derive_tolerance, unit_roundoff)
from ditcheck.properties.profiles import without_local_constants
from ditcheck.reference import attention as reference_attention
from ditcheck.reference import attention_vjp
from ditcheck.loader import resolved_spec
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.precision import require_positive_int, require_real

from ._target import DEFAULT_TIMEOUT, TargetError, TargetTimeoutError, call_isolated, require_output
from .report import Check, Failure, Report

__all__ = ["attention", "attention_case_error", "fits_dtype", "draw_examples", "resolve_dtype", "resolve_device",
           "require_run_settings", "sampled_query_rows", "baseline_name", "LAYOUTS", "DEFAULT_ATTENTION_EXAMPLES",
           "GRADIENT_MAX_TOKENS", "DEFAULT_MAX_TOKENS"]

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


#: The longest sequence drawn by default (both Lq and Lk).
DEFAULT_MAX_TOKENS = 4096
#: Query and key lengths above which gradients are not checked: a CPU backward at 4096 tokens takes ~10 s
#: (forward outputs of the long examples are still checked).
GRADIENT_MAX_TOKENS = 1025
#: Query rows compared: all of them up to this length; beyond, sampled_query_rows.
ALL_ROWS_UP_TO = 128
#: Head dims of the overflow family: scale 1/sqrt(D) <= 0.18, so scaled logits stay far inside the format.
OVERFLOW_HEAD_DIMS = (32, 64, 128)
#: Head dims of the long and tile-boundary examples (the ones real kernels specialise on).
KERNEL_HEAD_DIMS = (8, 16, 32, 64)
_HALF = (torch.float16, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class _Mode:
    """What shapes the draws and the calls of one run."""

    dtype: torch.dtype
    layout: str = "bhld"
    scale: float | None = None
    pass_scale: bool = False
    self_attention: bool = False
    gqa: bool = False
    mask: str = "none"
    one_input: bool = False  # fn(x): q = k = v
    max_tokens: int = DEFAULT_MAX_TOKENS


@functools.lru_cache(maxsize=32)
def _built(case: AttentionCase) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """case.build(), cached: a 4096-token case costs a second to build and is used by the filter and the run
    (32 entries hold every case one family draws, one of them long: ~10 MB)."""
    return case.build()


def _scale_of(case: AttentionCase) -> float:
    return 1 / math.sqrt(case.head_dim) if case.scale is None else float(case.scale)


def _max_partial_sum(q: np.ndarray, k: np.ndarray) -> float:
    """max |q_i| . |k_j| (the largest partial sum of any q k^T order), via Cauchy-Schwarz when that settles it."""
    return float(np.max(np.abs(q) @ np.swapaxes(np.abs(k), -1, -2), initial=0.0))


def fits_dtype(case: AttentionCase, dtype: torch.dtype) -> bool:
    """The case's q, k, v are finite in ``dtype`` and no partial sum of q k^T can overflow it (any order):
    outside that domain a correct ``dtype`` implementation cannot be told from a broken one.

    The overflow kind inverts the first condition: its unscaled products exceed ``dtype`` by construction
    (1.1 to 2 times its largest value) and only the partial sums of scale-first code, |scale| |q||k|^T,
    must stay below half of it.
    """
    largest = format_of(dtype).max_finite
    q, k, v, _ = _built(case)
    if max(float(np.max(np.abs(a), initial=0.0)) for a in (q, k, v)) >= largest:
        return False
    k = np.repeat(k, case.heads // case.key_value_heads, axis=1)
    factor = abs(_scale_of(case)) if case.kind == "overflow" else 1.0
    norms = float(np.max(np.linalg.norm(q, axis=-1), initial=0.0)) * float(np.max(np.linalg.norm(k, axis=-1),
                                                                                  initial=0.0))
    if factor * norms <= largest / 2:  # Cauchy-Schwarz: |q_i| . |k_j| <= ||q_i|| ||k_j||
        return True
    return factor * _max_partial_sum(q, k) <= largest / 2


def sampled_query_rows(query_tokens: int, seed: int) -> np.ndarray:
    """The query rows compared with the reference (each row's exact output costs O(Lk D) on its own).

    All rows up to ALL_ROWS_UP_TO; beyond, the first two and last two, every power of two from 16 on
    with its neighbours (where tiles and chunks start and end) and 8 rows drawn from ``seed``.
    """
    if query_tokens <= ALL_ROWS_UP_TO:
        return np.arange(query_tokens)
    rows = {0, 1, query_tokens - 2, query_tokens - 1}
    power = 16
    while power < query_tokens:
        rows |= {power - 1, power, min(power + 1, query_tokens - 1)}
        power *= 2
    rows |= set(np.random.default_rng(seed ^ 0x5A3).integers(0, query_tokens, size=8).tolist())
    return np.array(sorted(rows))


def _structural(case: AttentionCase, mode: _Mode) -> AttentionCase:
    """The case with every axis of a different length > 1 where it can be (B = 2, H = 3, 2 <= Lq != Lk, D >= 2)
    and logits of range >= 1; under --gqa H = 4 with 2 kv heads, under --self-attention Lq = Lk, and with a
    mask some rows fully masked.

    Layout bugs (heads merged in the wrong order, batch and head axes exchanged, q and k lengths
    confused) leave the output unchanged when an axis has length 1 or two axes are read
    interchangeably, and a wrong scale when D = 1 or every logit is ~0 (softmax is then uniform
    whatever the scale); Hypothesis draws H = 1, L = 1 or logit range 0 often. A kv-head mapping
    that tiles instead of interleaving is invisible when Hkv is 1 or H. Each check's first example
    is this one, so none of them depends on luck to see such a bug.
    """
    query_tokens = max(case.query_tokens, 2)
    key_tokens = query_tokens if mode.self_attention else max(case.key_tokens, 2)
    if not mode.self_attention:
        key_tokens += key_tokens == query_tokens
    heads, kv_heads = (4, 2) if mode.gqa else (3, None)
    head_dim = max(case.head_dim, 2)
    logit_range = case.logit_range if case.kind == "overflow" else max(case.logit_range, 1.0)
    return dataclasses.replace(case, batch=2, heads=heads, kv_heads=kv_heads, query_tokens=query_tokens,
                               key_tokens=key_tokens, head_dim=head_dim, value_dim=head_dim, logit_range=logit_range,
                               empty_rows=mode.mask != "none")


@st.composite
def _cases(draw: st.DrawFn, kind: str, mode: _Mode, lengths: st.SearchStrategy[int],
           dims: st.SearchStrategy[int], batches: st.SearchStrategy[int],
           heads: st.SearchStrategy[int]) -> AttentionCase:
    """One validation case of ``kind`` under ``mode`` (Dv = D: what fused kernels and MultiheadAttention require)."""
    head_dim = draw(st.sampled_from(OVERFLOW_HEAD_DIMS) if kind == "overflow" else dims)
    query_tokens = draw(lengths)
    key_tokens = query_tokens if mode.self_attention else draw(st.one_of(st.just(query_tokens), lengths))
    head_count = draw(heads)
    kv_heads = draw(kv_head_counts(head_count)) if mode.gqa else None
    if mode.scale is not None or not mode.pass_scale:
        scale = mode.scale
    elif kind == "overflow":  # a scale near 1 would overflow the scaled logits too
        scale = draw(st.sampled_from([None, 1.0 / head_dim]))
    else:
        scale = draw(st.sampled_from([None, None, 1.0, 1.0 / head_dim, 0.125]))
    if kind == "overflow":
        s = 1 / math.sqrt(head_dim) if scale is None else scale
        logit_range = abs(s) * draw(st.floats(1.1, 2.0)) * format_of(mode.dtype).max_finite
    else:
        logit_range = draw(logit_ranges(kind))  # type: ignore[arg-type]
    return AttentionCase(batch=draw(batches), heads=head_count, query_tokens=query_tokens, key_tokens=key_tokens,
                         head_dim=head_dim, value_dim=head_dim, seed=draw(seeds()), kind=kind,  # type: ignore[arg-type]
                         logit_range=logit_range, scale=scale, mask=mode.mask,  # type: ignore[arg-type]
                         kv_heads=kv_heads, empty_rows=mode.mask != "none" and draw(st.booleans()),
                         shared_input=mode.one_input)


def _kind_examples(kind: str, index: int, per_kind: int, mode: _Mode, seed: int) -> list[AttentionCase]:
    """The examples of one family: the structural one, one long (Lq, Lk in 1025..4096), at least one at tile
    boundaries (up to 1025 tokens) and short free draws; all inside the dtype's domain (fits_dtype)."""
    heads = st.sampled_from((1, 2, 3, 4, 6, 8)) if mode.gqa else st.integers(1, 2)
    fits = functools.partial(_fits, dtype=mode.dtype)
    base = seed * 1000003 + index
    tiles = max(1, (per_kind - 2) // 4)
    short = _cases(kind, mode, token_counts(12), head_dims(16), st.integers(1, 2), heads)
    structural = draw_examples(short.map(functools.partial(_structural, mode=mode)).filter(fits), 1, base)
    long = draw_examples(_cases(kind, mode, long_lengths(mode.max_tokens), st.sampled_from(KERNEL_HEAD_DIMS),
                                st.just(1), st.just(2) if mode.gqa else st.just(1)).map(_visible_scale).filter(fits),
                         1, base + 700001)
    tiled = draw_examples(_cases(kind, mode, tile_boundary_lengths(min(GRADIENT_MAX_TOKENS, mode.max_tokens)),
                                 st.sampled_from(KERNEL_HEAD_DIMS), st.integers(1, 2), heads).map(_visible_scale)
                          .filter(fits), tiles, base + 900007)
    free = per_kind - 2 - tiles
    drawn = draw_examples(short.filter(fits), free, base + 500009) if free > 0 else []
    return structural + long + tiled + drawn


def _visible_scale(case: AttentionCase) -> AttentionCase:
    """Logits of range >= 1 (a long path with a wrong scale is invisible when softmax is uniform)."""
    if case.kind == "overflow":
        return case
    return dataclasses.replace(case, logit_range=max(case.logit_range, 1.0))


def _fits(case: AttentionCase, dtype: torch.dtype) -> bool:
    return fits_dtype(case, dtype)


def _accepts_keyword(fn: Callable[..., Any], keyword: str) -> bool:
    """fn takes ``keyword=`` (by name or through **kwargs)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins such as torch's SDPA: read the documented signature
        first_line = (getattr(fn, "__doc__", None) or "").strip().split("\n\n")[0]
        return f"{keyword}=" in first_line.replace(" ", "")
    return any(p.name == keyword or p.kind == p.VAR_KEYWORD for p in parameters)


def _takes_one_input(fn: Callable[..., Any]) -> bool:
    """fn's signature has exactly one required positional parameter (a self-attention target built from one x)."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    return len(required) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in parameters)


def _name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"


def _exact(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None, dtype: torch.dtype,
           mask: np.ndarray | None = None) -> np.ndarray:
    """The exact attention output to compare with: the certified ball's midpoint for float64 targets
    (the float64 reference is not accurate enough to judge float64 code), else the float64 reference.
    A fully masked row is zeros (the reference's fully_masked="zero" policy)."""
    if dtype == torch.float64:
        return reference_attention(q, k, v, scale=scale, mask=mask, fully_masked="zero", precision="arb:113").mid
    return reference_attention(q, k, v, scale=scale, mask=mask, fully_masked="zero")


def _exact_vjp(q: np.ndarray, k: np.ndarray, v: np.ndarray, grad_out: np.ndarray, scale: float | None,
               dtype: torch.dtype, mask: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    if dtype == torch.float64:
        return tuple(g.mid for g in attention_vjp(q, k, v, grad_out, scale=scale, mask=mask, fully_masked="zero",
                                                  precision="arb:113"))
    return tuple(attention_vjp(q, k, v, grad_out, scale=scale, mask=mask, fully_masked="zero"))


def baseline_name(dtype: torch.dtype) -> str:
    """How the tolerance-setting baseline computes in ``dtype`` (printed in every report)."""
    if dtype in _HALF:
        return ("best practice: scale folded into q, products, softmax and sums in float32, output rounded to "
                f"{str(dtype).removeprefix('torch.')} (SDPA's math backend)")
    name = str(dtype).removeprefix("torch.")
    return f"best practice: scale folded into q, softmax with max-subtraction, all in {name}"


def _baseline(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, group: int,
              keep: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """Best-practice same-dtype attention, the baseline of the tolerance rule (see baseline_name): the scale
    folded into q before the product (no unscaled q k^T to overflow), float32 arithmetic for half dtypes.
    k, v have ``group`` times fewer heads than q (kv head h // group serves query head h); fully masked rows
    are zeros."""
    work = torch.float32 if q.dtype in _HALF else q.dtype
    if group > 1:
        k, v = (t.repeat_interleave(group, dim=1) for t in (k, v))
    logits = (q.to(work) * scale) @ k.to(work).transpose(-1, -2)
    if bias is not None:
        logits = logits + bias.to(work)
    if keep is not None:
        logits = logits.masked_fill(~keep, -math.inf).masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)
    weights = torch.softmax(logits, dim=-1)
    if keep is not None:
        weights = weights * keep
    return (weights @ v.to(work)).to(q.dtype)


def _forward_bound(q: np.ndarray, k: np.ndarray, v: np.ndarray, dtype: torch.dtype, scale: float | None,
                   mask: np.ndarray | None) -> float:
    """The a-priori candidate: the all-``dtype`` rounding bound; for half dtypes, where that is vacuous (gamma_n
    >= 1 from ~1000 keys in float16), the bound of float32 accumulation (SDPA math, flash kernels)."""
    bound = attention_rounding_bound(q, k, v, dtype, scale, mask)
    if dtype in _HALF and not np.all(np.isfinite(bound)):
        bound = np.where(np.isfinite(bound), bound,
                         attention_rounding_bound(q, k, v, dtype, scale, mask, accumulation=torch.float32))
    return float(np.max(bound, initial=0.0))


def _gradient_bounds(q: np.ndarray, k: np.ndarray, v: np.ndarray, grad_out: np.ndarray, dtype: torch.dtype,
                     scale: float | None, mask: np.ndarray | None) -> tuple[float, ...]:
    bounds = attention_vjp_rounding_bound(q, k, v, grad_out, dtype, scale, mask)
    if dtype in _HALF and not all(np.isfinite(bounds)):
        mixed = attention_vjp_rounding_bound(q, k, v, grad_out, dtype, scale, mask, accumulation=torch.float32)
        bounds = tuple(b if np.isfinite(b) else m for b, m in zip(bounds, mixed))
    return tuple(bounds)


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


@dataclasses.dataclass
class _Calls:
    """Which calls returned, by Lq == Lk or not: the evidence for suggesting --self-attention."""

    cross: int = 0
    cross_returned: int = 0
    equal: int = 0
    equal_returned: int = 0

    def add(self, case: AttentionCase, returned: bool) -> None:
        if case.query_tokens == case.key_tokens:
            self.equal += 1
            self.equal_returned += returned
        else:
            self.cross += 1
            self.cross_returned += returned

    @property
    def looks_like_self_attention(self) -> bool:
        return self.cross > 0 and self.cross_returned == 0 and self.equal_returned > 0


def attention(fn: Callable[..., Any], *, dtype: torch.dtype | str = torch.float32, scale: float | None = None,
              layout: str = "bhld", examples: int = DEFAULT_ATTENTION_EXAMPLES, seed: int = 0,
              device: str | torch.device = "cpu", kinds: Sequence[str] = VALIDATION_KINDS,
              gradients: bool | None = None, timeout: float = DEFAULT_TIMEOUT, target: str | None = None,
              self_attention: bool = False, gqa: bool = False, mask: str = "none",
              max_tokens: int = DEFAULT_MAX_TOKENS) -> Report:
    """Validate ``fn(q, k, v)`` (optionally ``fn(q, k, v, scale=s)``) against the reference attention.

    dtype: the dtype of q, k, v and of the output. scale: the logit scale fn uses (None: 1/sqrt(D),
    and explicit scales are drawn too when fn accepts ``scale=``). layout: "bhld" ([B, H, L, D],
    SDPA) or "blhd" ([B, L, H, D], flash-attn). examples: drawn per run (split over ``kinds``, rounded
    up, at least 3 per kind: the first has B = 2, H = 3, 2 <= Lq != Lk, D >= 2; the second is long,
    Lq and Lk in 1025..4096; then at least one at tile-boundary lengths such as 63, 64, 65, ..., 1025).
    Query rows of sequences longer than 128 are compared on a sample (sampled_query_rows). kinds: the
    input families (``overflow`` only for float16 / bfloat16: unscaled |q . k| beyond the format,
    scaled logits finite). gradients: check dQ, dK, dV (None: when the output requires grad; sequences
    up to 1025 tokens). timeout: seconds per call; after a time-out a kind makes no further call.
    ``target`` names fn in the report and in reproducers (e.g. the CLI's MODULE:ATTR).

    self_attention: draw only Lq == Lk (q, k, v independent; a target taking one argument is called
    as fn(x) with q = k = v = x). gqa: k and v have Hkv heads, Hkv in {H, 1, divisors of H}; query
    head h reads kv head h // (H / Hkv) (SDPA's enable_gqa, transformers' repeat_kv). mask: "none",
    "boolean" or "additive" (passed as ``attn_mask=`` [B, 1, Lq, Lk] or [Lq, Lk]; boolean True = may
    attend, additive -inf = may not, as SDPA), "key-padding" (``key_padding_mask=`` [B, Lk], True =
    padded, as torch.nn.MultiheadAttention); fully masked rows are drawn and must come out as zeros.
    max_tokens: the longest Lq and Lk drawn (at least 2; below 4096 the long example is the longest
    tile-boundary lengths up to it). Returns a :class:`Report` with one check per (forward | grad) x kind.
    """
    dtype = resolve_dtype(dtype)
    if layout not in LAYOUTS:
        raise InvalidArgumentError("layout", f"one of {LAYOUTS}", repr(layout))
    examples, seed, timeout = require_run_settings(examples, seed, timeout)
    unknown = [kind for kind in kinds if kind not in VALIDATION_KINDS]
    if isinstance(kinds, str) or unknown or not kinds:
        raise InvalidArgumentError("kinds", f"a non-empty subset of {VALIDATION_KINDS}", repr(kinds))
    if scale is not None:
        scale = require_real(scale, "scale")
    if gradients not in (None, True, False):
        raise InvalidArgumentError("gradients", "None, True or False", repr(gradients))
    for flag, value in (("self_attention", self_attention), ("gqa", gqa)):
        if not isinstance(value, bool):
            raise InvalidArgumentError(flag, "True or False", repr(value))
    max_tokens = require_positive_int(max_tokens, "max_tokens")
    if max_tokens < 2:
        raise InvalidArgumentError("max_tokens", "an integer >= 2", repr(max_tokens))
    if mask not in VALIDATION_MASKS:
        raise InvalidArgumentError("mask", f"one of {VALIDATION_MASKS}", repr(mask))
    if not callable(fn):
        raise InvalidArgumentError("fn", "a callable fn(q, k, v)", type(fn).__name__)
    keyword = {"boolean": "attn_mask", "additive": "attn_mask", "key-padding": "key_padding_mask"}.get(mask)
    if keyword is not None and not _accepts_keyword(fn, keyword):
        raise InvalidArgumentError("mask", f"a target that accepts {keyword}= (for --mask {mask})",
                                   f"{_name(fn)} without a {keyword} parameter")
    device = resolve_device(device)
    name = target or _name(fn)
    one_input = self_attention and _takes_one_input(fn)
    if one_input and gqa:
        raise InvalidArgumentError("gqa", "False for a target taking one input x (q = k = v)", "True")
    mode = _Mode(dtype=dtype, layout=layout, scale=scale, pass_scale=_accepts_keyword(fn, "scale"),
                 self_attention=self_attention, gqa=gqa, mask=mask, one_input=one_input, max_tokens=max_tokens)
    report = Report(target=name, kind="attention", settings={
        "dtype": str(dtype).removeprefix("torch."), "layout": layout, "examples": examples, "seed": seed,
        "scale": "1/sqrt(D)" if scale is None else scale, "device": str(device), "self_attention": self_attention,
        "gqa": gqa, "mask": mask, "max_tokens": max_tokens, "baseline": baseline_name(dtype)})
    dropped = [kind for kind in kinds if kind in HALF_PRECISION_KINDS and dtype not in _HALF]
    kinds = [kind for kind in kinds if kind not in dropped]
    if dropped:
        report.notes.append(f"{', '.join(dropped)} family: drawn for float16 and bfloat16 only")
    if not kinds:
        raise InvalidArgumentError("kinds", f"a family that applies to {dtype}", repr(tuple(dropped)))

    forward = {kind: _Outcome() for kind in kinds}
    backward = {kind: _Outcome() for kind in kinds}
    check_gradients = gradients
    calls = _Calls()
    ratios: set[tuple[int, int]] = set()
    per_kind = max(3, math.ceil(examples / len(kinds)))
    for index, kind in enumerate(kinds):
        for case in _kind_examples(kind, index, per_kind, mode, seed):
            if forward[kind].timed_out or backward[kind].timed_out:
                break  # a hung call may still be running: do not pile up more (the other kinds still run)
            ok, grads_seen = _run_example(fn, case, mode, device, check_gradients, timeout, forward[kind],
                                          backward[kind])
            calls.add(case, ok)
            ratios.add((case.heads, case.key_value_heads))
            if check_gradients is None and grads_seen is not None:
                check_gradients = grads_seen
    if calls.cross_returned + calls.equal_returned == 0:  # every call raised or timed out (exit code 2)
        report.loaded = False
        report.notes.append(f"the target never returned ({calls.cross + calls.equal} calls): "
                            f"{forward[kinds[0]].message}")
    if calls.looks_like_self_attention:
        report.notes.append(f"every call with Lq != Lk raised ({calls.cross} calls) while calls with Lq == Lk "
                            f"returned ({calls.equal_returned} of {calls.equal}): the target looks like "
                            "self-attention; re-run with --self-attention (self_attention=True) to draw Lq == Lk only")
    elif not report.loaded and _takes_one_input(fn) and not self_attention:
        report.notes.append("the target takes one input: if it is self-attention fn(x), re-run with --self-attention")
    report.notes.append(
        f"lengths: per family one structural example, one long (Lq, Lk up to {max_tokens}), tile boundaries "
        f"(1, 2, 63, 64, 65, ..., up to {min(max_tokens, GRADIENT_MAX_TOKENS)}) and short draws; query rows of "
        "sequences over "
        f"{ALL_ROWS_UP_TO} compared on a sample (first, last, powers of two +-1, 8 random); gradients up to "
        f"{GRADIENT_MAX_TOKENS} tokens")
    if gqa:
        drawn = ", ".join(f"{h}:{kv}" for h, kv in sorted(ratios))
        report.notes.append(f"GQA head ratios drawn (H:Hkv): {drawn}; query head h reads kv head h // (H / Hkv)")
    if mask != "none":
        report.notes.append("fully masked rows (nothing to attend to) are drawn and must be zeros, output and "
                            "gradients: the reference's fully_masked='zero' policy (torch SDPA's)")
    for part, outcomes in (("forward", forward), ("grad", backward)):
        if part == "grad" and not check_gradients:
            report.notes.append("gradients not checked: " + (
                "gradients=False" if gradients is False else "the output does not require grad"))
            continue
        for kind, outcome in outcomes.items():
            report.checks.append(_to_check(f"{part}[{kind}]", outcome))
            if not report.checks[-1].ok and outcome.arrays is not None:
                report.failures.append(_failure(report.checks[-1], outcome, name, dtype, layout, mode.pass_scale,
                                                part))
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
    pass_scale = _accepts_keyword(fn, "scale")
    if not pass_scale:  # fn applies its default 1/sqrt(D): judge it by that
        case = dataclasses.replace(case, scale=None)
    mode = _Mode(dtype=dtype, layout=layout, pass_scale=pass_scale, gqa=case.kv_heads is not None)
    _run_example(fn, case, mode, torch.device("cpu"), False, DEFAULT_TIMEOUT, outcome, _Outcome())
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


def _target_mask(case: AttentionCase, mask: np.ndarray | None, dtype: torch.dtype,
                 device: torch.device) -> tuple[dict[str, torch.Tensor], np.ndarray | None]:
    """(the mask keyword argument of the call, the same mask for the reference, additive biases rounded to dtype)."""
    if mask is None:
        return {}, None
    if case.mask == "key-padding":  # [B, 1, 1, Lk] keep -> [B, Lk] True = padded (nn.MultiheadAttention)
        return {"key_padding_mask": torch.tensor(~mask[:, 0, 0, :], device=device)}, mask
    if mask.dtype == bool:
        return {"attn_mask": torch.tensor(mask, device=device)}, mask
    additive = torch.tensor(mask, dtype=dtype, device=device)
    return {"attn_mask": additive}, additive.double().cpu().numpy()


def _rows_of(mask: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    if mask is None or mask.shape[-2] == 1:
        return mask
    return mask[..., rows, :]


def _torch_keep_and_bias(mask: np.ndarray | None, device: torch.device,
                         dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if mask is None:
        return None, None
    if mask.dtype == bool:
        return torch.tensor(mask, device=device), None
    keep = np.isfinite(mask)
    return torch.tensor(keep, device=device), torch.tensor(np.where(keep, mask, 0.0), dtype=dtype, device=device)


def _group_sum(grad: np.ndarray, group: int) -> np.ndarray:
    """Gradient w.r.t. expanded kv heads [B, H, L, D] -> w.r.t. the Hkv = H / group heads (each serves ``group``)."""
    if group == 1:
        return grad
    b, h, length, dim = grad.shape
    return grad.reshape(b, h // group, group, length, dim).sum(axis=2)


def _run_example(fn: Callable[..., Any], case: AttentionCase, mode: _Mode, device: torch.device,
                 check_gradients: bool | None, timeout: float, forward: _Outcome,
                 backward: _Outcome) -> tuple[bool, bool | None]:
    """One example: (the call returned, its output requires grad; None when there is no usable output or
    gradients were not asked of it)."""
    dtype, layout = mode.dtype, mode.layout
    q64, k64, v64, mask64 = _built(case)
    if case.shared_input:
        tensors = [torch.tensor(q64, dtype=dtype, device=device)]
        q = k = v = tensors[0].double().cpu().numpy()
    else:
        tensors = [torch.tensor(a, dtype=dtype, device=device) for a in (q64, k64, v64)]
        q, k, v = (t.double().cpu().numpy() for t in tensors)  # rounded through the target dtype
    mask_kwargs, mask = _target_mask(case, mask64, dtype, device)
    group = case.heads // case.key_value_heads
    k_all, v_all = case.expanded_kv(k, v)
    rows = sampled_query_rows(case.query_tokens, case.seed)
    q_rows, mask_rows = q[..., rows, :], _rows_of(mask, rows)
    scale_used = _scale_of(case)
    rng = np.random.default_rng(case.seed ^ 0x6AD)
    grad_rows = torch.tensor(rng.standard_normal(q_rows.shape[:-1] + (v.shape[-1],)), dtype=dtype).double().numpy()
    grad_full = np.zeros(q.shape[:-1] + (v.shape[-1],))
    grad_full[..., rows, :] = grad_rows  # zero cotangent off the sampled rows: dK, dV exact from those rows alone
    arrays = {"q": q, "k": k, "v": v, "grad_out": grad_full, "rows": rows,
              "scale": np.float64(np.nan if case.scale is None else case.scale)}
    if mask is not None:
        arrays["mask"] = mask
    forward.examples += 1
    want_grad = check_gradients is not False and max(case.query_tokens, case.key_tokens) <= GRADIENT_MAX_TOKENS
    inputs = [_to_layout(t, layout).requires_grad_(want_grad) for t in tensors]
    kwargs: dict[str, Any] = {"scale": case.scale} if mode.pass_scale and case.scale is not None else {}
    kwargs.update(mask_kwargs)
    expected_shape = tuple(_to_layout(torch.empty(q.shape[:-1] + (v.shape[-1],)), layout).shape)
    try:
        value = call_isolated(fn, *inputs, timeout=timeout, **kwargs)
    except TargetError as error:
        _fail(forward, case, error.describe(), arrays)
        forward.timed_out = isinstance(error, TargetTimeoutError)
        return False, None
    try:
        out = require_output(value, expected_shape, dtype)
    except TargetError as error:
        _fail(forward, case, error.describe(), arrays)
        return True, None
    finite = bool(torch.isfinite(out.detach()).all())  # every row, sampled or not
    result = _to_layout(out.detach(), layout)[..., rows, :].double().cpu().numpy()
    exact = _exact(q_rows, k_all, v_all, case.scale, dtype, mask_rows)
    keep_t, bias_t = _torch_keep_and_bias(mask_rows, device, dtype)
    with torch.no_grad():
        baseline_out = _baseline(tensors[0][..., rows, :], tensors[-2 if len(tensors) == 3 else 0],
                                 tensors[-1], scale_used, group, keep_t, bias_t)
    naive = baseline_out.double().cpu().numpy()
    observed = float(np.max(np.abs(result - exact), initial=0.0)) if finite else math.inf
    naive_error = float(np.max(np.abs(naive - exact), initial=0.0))
    tolerance = derive_tolerance(naive_error if np.isfinite(naive_error) else None,
                                 _forward_bound(q_rows, k_all, v_all, dtype, case.scale, mask_rows),
                                 float(np.max(np.abs(exact), initial=0.0)), dtype, FORWARD_FACTOR)
    message = ("non-finite output (NaN or Inf)" if not np.isfinite(observed)
               else f"forward error {observed:.3g} exceeds {tolerance.value:.3g}")
    _record(forward, observed, tolerance, case, message, arrays)
    differentiable = bool(out.requires_grad)
    if not want_grad or not differentiable:
        return True, differentiable if want_grad else None
    backward.examples += 1
    grad_out = torch.tensor(grad_full, dtype=dtype, device=device)
    try:
        grads = call_isolated(torch.autograd.grad, out, inputs, _to_layout(grad_out, layout), timeout=timeout,
                              allow_unused=True)
    except TargetError as error:
        _fail(backward, case, f"backward {error.describe()}", arrays)
        backward.timed_out = isinstance(error, TargetTimeoutError)
        return True, True
    exact_dq, exact_dk, exact_dv = _exact_vjp(q_rows, k_all, v_all, grad_rows, case.scale, dtype, mask_rows)
    exact_dk, exact_dv = _group_sum(exact_dk, group), _group_sum(exact_dv, group)
    magnitudes = list(attention_vjp_magnitudes(q_rows, k_all, v_all, grad_rows, case.scale, mask_rows))
    bounds = list(_gradient_bounds(q_rows, k_all, v_all, grad_rows, dtype, case.scale, mask_rows))
    if group > 1:  # each kv head's gradient sums `group` query heads' contributions
        u = unit_roundoff(dtype)
        for i in (1, 2):
            bounds[i] = group * (bounds[i] * (1 + gamma(group, u)) + gamma(group, u) * magnitudes[i])
            magnitudes[i] *= group
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    with torch.enable_grad():
        q_leaf = leaves[0][..., rows, :]
        baseline_out = _baseline(q_leaf, leaves[-2 if len(leaves) == 3 else 0], leaves[-1], scale_used, group,
                                 keep_t, bias_t)
        baseline_grads = torch.autograd.grad(baseline_out, leaves, torch.tensor(grad_rows, dtype=dtype,
                                                                              device=device))
    if case.shared_input:  # one input x = q = k = v: its gradient is the sum of the three
        exact_dx = exact_dk + exact_dv
        exact_dx[..., rows, :] += exact_dq
        labelled = [("dX", grads[0], exact_dx, baseline_grads[0], None, sum(magnitudes), sum(bounds))]
    else:
        labelled = [("dQ", grads[0], exact_dq, baseline_grads[0], rows, magnitudes[0], bounds[0]),
                    ("dK", grads[1], exact_dk, baseline_grads[1], None, magnitudes[1], bounds[1]),
                    ("dV", grads[2], exact_dv, baseline_grads[2], None, magnitudes[2], bounds[2])]
    worst: tuple[float, float, Tolerance, str] | None = None
    for label, got, exact_grad, naive_grad, grad_rows_compared, magnitude, bound in labelled:
        if got is None:
            _fail(backward, case, f"{label} is None (the output does not depend on it)", arrays)
            return True, True
        got_np = _to_layout(got, layout).double().cpu().numpy()
        naive_np = naive_grad.double().cpu().numpy()
        if grad_rows_compared is not None:
            got_np, naive_np = got_np[..., grad_rows_compared, :], naive_np[..., grad_rows_compared, :]
        err = float(np.max(np.abs(got_np - exact_grad), initial=0.0)) if np.all(np.isfinite(got_np)) else math.inf
        naive_err = float(np.max(np.abs(naive_np - exact_grad), initial=0.0))
        tol = derive_tolerance(naive_err if np.isfinite(naive_err) else None, bound,
                               max(magnitude, float(np.max(np.abs(exact_grad), initial=0.0))), dtype,
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
    case = outcome.case
    group = 1 if case is None else case.heads // case.key_value_heads
    shared = case is not None and case.shared_input
    mask_kind = "none" if case is None else case.mask
    mask_arg = {"none": "", "key-padding": ", key_padding_mask=torch.tensor(~data['mask'][:, 0, 0, :])",
                "boolean": ", attn_mask=torch.tensor(data['mask'])"}.get(
        mask_kind, ", attn_mask=torch.tensor(data['mask'], dtype=dtype)")
    reference_mask = "" if mask_kind == "none" else ', mask=data["mask"], fully_masked="zero"'
    inputs = "x" if shared else "q, k, v"
    snippet = f'''"""Re-run ditcheck's failing case {check.id} of {name} ({check.message or "outside tolerance"})."""
import numpy as np
import torch

from ditcheck.reference import attention, attention_vjp
from ditcheck.validate import load_function

data = np.load("{{NPZ}}")
fn = load_function({resolved_spec(name)!r})
dtype = torch.{str(dtype).removeprefix("torch.")}
group = {group}  # query head h reads kv head h // group
{"x = torch.tensor(data['q'], dtype=dtype)" + to_layout + ".requires_grad_()" if shared else
 "q, k, v = (torch.tensor(data[n], dtype=dtype)" + to_layout + ".requires_grad_() for n in 'qkv')"}
out = fn({inputs}{call_scale}{mask_arg})
k_all, v_all = (np.repeat(data[n], group, axis=1) for n in "kv")
exact = attention(data["q"], k_all, v_all, scale={scale!r}{reference_mask})
error = np.abs(out{from_layout}.detach().double().numpy() - exact).max()
print("forward error", error, "(tolerance {tol} for {check.id})")
'''
    if part == "grad":
        snippet += f'''grad_out = torch.tensor(data["grad_out"], dtype=dtype){to_layout}
grads = torch.autograd.grad(out, ({inputs},), grad_out)
dq, dk, dv = attention_vjp(data["q"], k_all, v_all, data["grad_out"], scale={scale!r}{reference_mask})
dk, dv = (g.reshape(g.shape[0], -1, group, *g.shape[2:]).sum(axis=2) for g in (dk, dv))
wanted = {"(dq + dk + dv,)" if shared else "(dq, dk, dv)"}
for label, got, want in zip({'("dX",)' if shared else '("dQ", "dK", "dV")'}, grads, wanted):
    print(label, "error", np.abs(got{from_layout}.double().numpy() - want).max())
'''
    return Failure(check.id, outcome.arrays, snippet)
