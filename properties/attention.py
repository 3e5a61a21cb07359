"""Attention: strategies for inputs (with adversarial families) and the reference's own properties.

Every property function takes the implementation under check as an argument (the
reference by default), so a test can plant a bug and show the property catches it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import mpmath
import numpy as np
from hypothesis import strategies as st

from ditcheck.reference import attention, attention_vjp, attention_weight_gradient, attention_weight_loss
from ditcheck.reference import formats
from ditcheck.reference.precision import Mp
from ditcheck.reference.rounding import attention_error_bound

from .certified import require_contains, require_within, second_opinion_digits
from .strategies import seeds
from .violation import require

__all__ = [
    "AttentionCase",
    "WeightGradientCase",
    "ADVERSARIAL_KINDS",
    "MASK_KINDS",
    "BOOLEAN_MASK_KINDS",
    "VALIDATION_KINDS",
    "HALF_PRECISION_KINDS",
    "VALIDATION_MASKS",
    "TILE_BOUNDARY_LENGTHS",
    "LONG_LENGTHS",
    "head_dims",
    "token_counts",
    "tile_boundary_lengths",
    "long_lengths",
    "kv_head_counts",
    "attention_cases",
    "weight_gradient_cases",
    "check_ball_contains_mp",
    "check_float64_within_rounding_bound",
    "check_rows_are_convex_combinations",
    "check_vjp_matches_finite_differences",
    "check_weight_gradient_matches_finite_differences",
]

Kind = Literal["normal", "large_logits", "near_ties", "one_hot", "integers", "overflow"]
ADVERSARIAL_KINDS: tuple[Kind, ...] = ("normal", "large_logits", "near_ties", "one_hot", "integers")
#: Families drawn only for half-precision targets (``overflow``: |q . k| beyond the format, scaled logits finite).
HALF_PRECISION_KINDS: tuple[Kind, ...] = ("overflow",)
#: The families ``ditcheck validate attention`` draws (``overflow`` only for float16 / bfloat16).
VALIDATION_KINDS: tuple[Kind, ...] = ADVERSARIAL_KINDS + HALF_PRECISION_KINDS
MaskKind = Literal["none", "causal", "padding", "random", "additive", "boolean", "key-padding"]
MASK_KINDS: tuple[MaskKind, ...] = ("none", "causal", "padding", "random", "additive")
BOOLEAN_MASK_KINDS: tuple[MaskKind, ...] = ("none", "causal", "padding", "random")
#: Masks ``ditcheck validate attention --mask`` passes: SDPA-style boolean or additive ``attn_mask=`` per batch
#: element ([B, 1, Lq, Lk]), or a [B, Lk] ``key_padding_mask=`` (AttentionCase.mask "boolean", "additive",
#: "key-padding").
VALIDATION_MASKS: tuple[str, ...] = ("none", "boolean", "additive", "key-padding")
#: Lengths where tiled and chunked kernels change behaviour: 1, 2 and each power of two from 64 to 2048 with its
#: neighbours (63, 64, 65, 127, 128, 129, ...), then 4095 and 4096 (the longest drawn).
TILE_BOUNDARY_LENGTHS: tuple[int, ...] = (1, 2) + tuple(n + d for n in (64, 128, 256, 512, 1024, 2048)
                                                        for d in (-1, 0, 1)) + (4095, 4096)
#: The long lengths every validation family draws at least once (both Lq and Lk).
LONG_LENGTHS: tuple[int, ...] = tuple(n for n in TILE_BOUNDARY_LENGTHS if n > 1024)


@dataclass(frozen=True)
class AttentionCase:
    """A reproducible attention input: shapes, value family, logit range, scale and mask kind."""

    batch: int
    heads: int
    query_tokens: int
    key_tokens: int
    head_dim: int
    value_dim: int
    seed: int
    kind: Kind = "normal"
    logit_range: float = 4.0
    scale: float | None = None
    mask: MaskKind = "none"
    #: key/value heads (grouped-query attention: query head h reads kv head h // (heads / kv_heads)); None: heads
    kv_heads: int | None = None
    #: some query rows have nothing to attend to (mask kinds "boolean", "additive": the first and last query rows;
    #: "key-padding": every key of the last batch element is padded)
    empty_rows: bool = False
    #: q = k = v (a self-attention target built from one x); query_tokens must equal key_tokens
    shared_input: bool = False

    @property
    def key_value_heads(self) -> int:
        return self.heads if self.kv_heads is None else self.kv_heads

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(q, k, v, mask) as float64 arrays in [B, H, L, D] layout (k, v with ``key_value_heads`` heads).

        The mask has shape [Lq, Lk] for the kinds causal, padding, random, additive, [B, 1, Lq, Lk] for
        "boolean" (True: may attend) and [B, 1, 1, Lk] for "key-padding" (True: may attend).
        """
        rng = np.random.default_rng(self.seed)
        lead = (self.batch, self.heads)
        kv_lead = (self.batch, self.key_value_heads)
        q = rng.standard_normal(lead + (self.query_tokens, self.head_dim))
        k = rng.standard_normal(kv_lead + (self.key_tokens, self.head_dim))
        v = rng.standard_normal(kv_lead + (self.key_tokens, self.value_dim))
        if self.kind == "overflow":
            # one shared direction: |q . k| ~ |q| |k| (no cancellation), so the unscaled products can be pushed
            # past a format's largest value while |q| |k|^T, the partial sums of scale-first code, stay near them
            common = rng.standard_normal(self.head_dim)
            signs = rng.choice([-1.0, 1.0], size=kv_lead + (self.key_tokens, 1))
            q = common + 0.3 * q
            k = signs * (common + 0.3 * k)
        if self.kind == "near_ties":
            k = k[..., :1, :] + 1e-7 * k
        elif self.kind == "one_hot":
            winner = rng.integers(self.key_tokens)
            winning_key = np.repeat(k[..., winner:winner + 1, :], self.heads // self.key_value_heads, axis=1)
            q = np.broadcast_to(winning_key, q.shape) + 0.01 * q
        elif self.kind == "integers":
            q, k, v = (np.round(2 * a) for a in (q, k, v))
        q, k = self._scale_to_logit_range(q, k)
        if self.shared_input:
            if self.query_tokens != self.key_tokens or self.key_value_heads != self.heads or \
                    self.value_dim != self.head_dim:
                raise ValueError("argument 'case': shared_input needs query_tokens == key_tokens, kv_heads == heads "
                                 "and value_dim == head_dim")
            k = v = q
        return q, k, v, self._mask(rng)

    def expanded_kv(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """k, v with one head per query head: kv head h // (heads / kv_heads) serves query head h (SDPA's
        enable_gqa, transformers' repeat_kv)."""
        group = self.heads // self.key_value_heads
        return np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)

    def _scale_to_logit_range(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rescale q and k so that max |scale q.k| equals logit_range (exact power-of-two steps aside)."""
        scale = 1 / np.sqrt(self.head_dim) if self.scale is None else self.scale
        expanded = np.repeat(k, self.heads // self.key_value_heads, axis=1)
        current = float(np.max(np.abs(scale * q @ np.swapaxes(expanded, -1, -2)), initial=0.0))
        if current == 0.0:
            return q, k
        factor = np.sqrt(self.logit_range / current)
        return q * factor, k * factor

    def _mask(self, rng: np.random.Generator) -> np.ndarray | None:
        shape = (self.query_tokens, self.key_tokens)
        if self.mask == "none":
            return None
        if self.mask in ("boolean", "key-padding"):
            return self._batched_mask(rng)
        if self.mask == "causal":
            keep = np.tril(np.ones(shape, dtype=bool), k=self.key_tokens - self.query_tokens)
        elif self.mask == "padding":
            keep = np.broadcast_to(np.arange(self.key_tokens) < max(1, self.key_tokens - 1), shape)
        else:
            keep = rng.random(shape) < 0.6
        keep = keep.copy()
        keep[:, 0] |= ~keep.any(axis=1)  # every row attends somewhere (fully masked rows are tested apart)
        if self.empty_rows:
            keep[[0, -1], :] = False
        if self.mask == "additive":
            return np.where(keep, rng.uniform(-2, 2, shape), -np.inf)
        return keep

    def _batched_mask(self, rng: np.random.Generator) -> np.ndarray:
        """"boolean": per batch element a causal, padding or random pattern; "key-padding": a valid prefix of
        the keys per batch element. Rows keep a key unless ``empty_rows`` blanks them."""
        lq, lk = self.query_tokens, self.key_tokens
        if self.mask == "key-padding":
            valid = rng.integers(1, lk + 1, size=self.batch)
            if self.empty_rows:
                valid[-1] = 0
            return (np.arange(lk) < valid[:, None])[:, None, None, :]
        keep = np.empty((self.batch, 1, lq, lk), dtype=bool)
        for b in range(self.batch):
            pattern = rng.integers(3)
            if pattern == 0:
                keep[b, 0] = np.tril(np.ones((lq, lk), dtype=bool), k=lk - lq)
            elif pattern == 1:
                keep[b, 0] = np.arange(lk) < rng.integers(1, lk + 1)
            else:
                keep[b, 0] = rng.random((lq, lk)) < 0.6
            keep[b, 0, :, 0] |= ~keep[b, 0].any(axis=1)
        if self.empty_rows:
            keep[0, :, 0, :] = False
            keep[-1, :, -1, :] = False
        return keep

    def keep_mask(self) -> np.ndarray | None:
        mask = self.build()[3]
        if mask is None or mask.dtype == bool:
            return mask
        return np.isfinite(mask)

    def reproducer(self) -> str:
        return f"from ditcheck.properties.attention import AttentionCase\nq, k, v, mask = {self!r}.build()"


def head_dims(max_dim: int = 16) -> st.SearchStrategy[int]:
    """Head sizes 1..max_dim, odd ones included (odd D is a classic kernel bug)."""
    return st.integers(1, max_dim)


def token_counts(max_tokens: int = 12) -> st.SearchStrategy[int]:
    """Sequence lengths with L = 1 drawn often (single-token attention must return v)."""
    return st.one_of(st.just(1), st.integers(1, max_tokens))


def tile_boundary_lengths(max_tokens: int = 1025) -> st.SearchStrategy[int]:
    """Lengths at tile boundaries and one either side of them (TILE_BOUNDARY_LENGTHS up to ``max_tokens``)."""
    return st.sampled_from([n for n in TILE_BOUNDARY_LENGTHS if n <= max_tokens])


def long_lengths(max_tokens: int = 4096) -> st.SearchStrategy[int]:
    """Long sequences (1025 to 4096 tokens, at tile boundaries): where "long sequence" code paths switch on.
    With ``max_tokens`` below 4096: the six longest TILE_BOUNDARY_LENGTHS up to it."""
    return st.sampled_from([n for n in TILE_BOUNDARY_LENGTHS if n <= max_tokens][-len(LONG_LENGTHS):])


def kv_head_counts(heads: int) -> st.SearchStrategy[int]:
    """Key/value head counts for ``heads`` query heads: heads (MHA), 1 (MQA) and every divisor in between (GQA)."""
    divisors = [n for n in range(1, heads + 1) if heads % n == 0]
    return st.sampled_from(divisors)


def logit_ranges(kind: Kind) -> st.SearchStrategy[float]:
    """max |scale q.k|: modest for most kinds, 50 to 700 (the float64 exp edge) for large_logits."""
    if kind == "large_logits":
        return st.floats(50.0, 700.0)
    return st.floats(0.0, 8.0)


@st.composite
def attention_cases(draw: st.DrawFn, max_tokens: int = 12, max_dim: int = 16,
                    masks: tuple[MaskKind, ...] = MASK_KINDS, kinds: tuple[Kind, ...] = ADVERSARIAL_KINDS) -> AttentionCase:
    """AttentionCases over shapes (L = 1, odd D, Lq != Lk), kinds, scales and mask kinds."""
    kind = draw(st.sampled_from(kinds))
    head_dim = draw(head_dims(max_dim))
    query_tokens = draw(token_counts(max_tokens))
    return AttentionCase(
        batch=draw(st.integers(1, 2)), heads=draw(st.integers(1, 2)), query_tokens=query_tokens,
        key_tokens=draw(st.one_of(st.just(query_tokens), token_counts(max_tokens))),
        head_dim=head_dim, value_dim=draw(st.one_of(st.just(head_dim), head_dims(max_dim))),
        seed=draw(seeds()), kind=kind, logit_range=draw(logit_ranges(kind)),
        scale=draw(st.sampled_from([None, None, 1.0, 1.0 / head_dim, 0.125])),
        mask=draw(st.sampled_from(masks)))


AttentionFunction = Callable[..., Any]


def check_ball_contains_mp(case: AttentionCase, attention_fn: AttentionFunction = attention,
                           bits: int = 100) -> None:
    """arb attention at ``bits`` contains mpmath attention computed at twice the precision."""
    q, k, v, mask = case.build()
    balls = attention_fn(q, k, v, scale=case.scale, mask=mask, precision=f"arb:{bits}")
    digits = second_opinion_digits(bits)
    with mpmath.workdps(digits):
        exact = attention(q, k, v, scale=case.scale, mask=mask, precision=f"mp:{digits}")
    require_contains(balls, exact, "REF-arb", "attention", case=case)


def check_float64_within_rounding_bound(case: AttentionCase, attention_fn: AttentionFunction = attention,
                                        bound_fn: Callable[..., np.ndarray] = attention_error_bound) -> None:
    """The float64 reference lies within its a-priori rounding bound of the certified ball (boolean masks)."""
    q, k, v, mask = case.build()
    if mask is not None and mask.dtype != bool:
        raise ValueError("argument 'case': expected a boolean or no mask (the bound does not cover additive masks)")
    balls = attention(q, k, v, scale=case.scale, mask=mask, precision="arb:113")
    require_within(balls, attention_fn(q, k, v, scale=case.scale, mask=mask),
                   bound_fn(q, k, v, scale=case.scale, mask=mask), "REF-rounding", "float64 attention", case=case)


def check_rows_are_convex_combinations(case: AttentionCase, attention_fn: AttentionFunction = attention) -> None:
    """Weights are >= 0, sum to 1 (masked ones are 0), and outputs lie in [min_j v_j, max_j v_j]."""
    q, k, v, mask = case.build()
    out, weights = attention_fn(q, k, v, scale=case.scale, mask=mask, return_weights=True)
    keep = case.keep_mask()
    row_sums = weights.sum(axis=-1)
    tolerance = 4 * case.key_tokens * formats.FLOAT64.machine_epsilon
    require(np.all(weights >= 0), "REF-convex", "negative attention weight", case=case)
    require(np.all(np.abs(row_sums - 1) <= tolerance), "REF-convex", "weight rows do not sum to 1",
            worst=float(np.max(np.abs(row_sums - 1))), case=case)
    if keep is not None:
        require(np.all(weights[..., ~keep] == 0), "REF-convex", "a masked position has weight", case=case)
    slack = tolerance * np.max(np.abs(v), axis=-2, keepdims=True)
    require(np.all(out >= v.min(axis=-2, keepdims=True) - slack) and
            np.all(out <= v.max(axis=-2, keepdims=True) + slack),
            "REF-convex", "output outside the convex hull of the values", case=case)


def _mp_directional_derivative(fn: Callable[[float], Any], step: str, digits: int) -> mpmath.mpf:
    """Central difference (f(h) - f(-h)) / 2h at ``digits`` digits: truncation O(h^2), rounding O(10^-digits / h)."""
    with mpmath.workdps(digits):
        h = mpmath.mpf(step)
        return (fn(h) - fn(-h)) / (2 * h)


_to_mp = np.frompyfunc(mpmath.mpf, 1, 1)


def _perturbed(arrays: tuple[np.ndarray, ...], directions: tuple[np.ndarray, ...], h: mpmath.mpf) -> list[np.ndarray]:
    """Object arrays a + h d in mpmath (exact inputs plus an mp step)."""
    return [_to_mp(a) + h * _to_mp(d) for a, d in zip(arrays, directions)]


def check_vjp_matches_finite_differences(case: AttentionCase, vjp_fn: AttentionFunction = attention_vjp) -> None:
    """<dq, dQ> + <dk, dK> + <dv, dV> equals the mp central difference of <dO, attention> (40+ digits)."""
    q, k, v, mask = case.build()
    rng = np.random.default_rng(case.seed ^ 0x5EED)
    grad_out = rng.standard_normal(q.shape[:-1] + (v.shape[-1],))
    directions = tuple(rng.standard_normal(a.shape) for a in (q, k, v))
    grads = vjp_fn(q, k, v, grad_out, scale=case.scale, mask=mask)
    predicted = sum(float(np.sum(g * d)) for g, d in zip(grads, directions))
    digits = 50

    def projected_output(h: mpmath.mpf) -> mpmath.mpf:
        qh, kh, vh = _perturbed((q, k, v), directions, h)
        out = _attention_mp_objects(qh, kh, vh, case.scale, mask)
        return mpmath.fsum(np.ravel(out * grad_out))

    actual = float(_mp_directional_derivative(projected_output, "1e-15", digits))
    magnitude = sum(float(np.sum(np.abs(g * d))) for g, d in zip(grads, directions))
    # float64 VJP rounding: a handful of dot products of length <= L, D; 1e-12 relative to the
    # sum of absolute contributions is ~100x above what the float64 path can err here.
    require(abs(predicted - actual) <= 1e-12 * max(magnitude, 1e-300) + 1e-300, "REF-vjp",
            "attention VJP disagrees with finite differences", predicted=predicted, actual=actual, case=case)


def _attention_mp_objects(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None,
                          mask: np.ndarray | None) -> np.ndarray:
    """Reference attention on mp object arrays already holding perturbed (non-float64) values."""
    return attention.generic(Mp(mpmath.mp.dps), q, k, v, scale=scale, mask=mask)


@dataclass(frozen=True)
class WeightGradientCase:
    """A reproducible LD7 problem: A1, A2, A3 in R^{d x L}, W, W_OV in R^{d x d}, Y in R^{L x d}."""

    tokens: int
    dim: int
    seed: int
    scale: float = 1.0
    magnitude: float = 1.0

    def build(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        d, n = self.dim, self.tokens
        return {"a1": rng.standard_normal((d, n)) * self.magnitude,
                "a2": rng.standard_normal((d, n)) * self.magnitude,
                "a3": rng.standard_normal((d, n)), "w": rng.standard_normal((d, d)) / d,
                "w_ov": rng.standard_normal((d, d)) / d, "y": rng.standard_normal((n, d))}

    def arrays(self) -> dict[str, np.ndarray]:
        """The problem's arrays: build()'s; a subclass changes the problem here (LowRankGradientCase rescales W)."""
        return self.build()


def weight_gradient_cases(max_tokens: int = 8, max_dim: int = 6) -> st.SearchStrategy[WeightGradientCase]:
    """LD7 problems with scale 1 (Hu et al.), 1/d (Alman-Song) or 1/sqrt(d) (DiT)."""
    return st.builds(WeightGradientCase, st.integers(1, max_tokens), st.integers(1, max_dim), seeds(),
                     st.sampled_from([1.0, 0.5, 0.125]), st.sampled_from([0.5, 1.0, 2.0]))


def check_weight_gradient_matches_finite_differences(
        case: WeightGradientCase, gradient_fn: Callable[..., Any] = attention_weight_gradient) -> None:
    """LD7: <dW, closed-form gradient> equals the mp central difference of L0 along dW.

    On case.arrays(), the problem the case names (a LowRankGradientCase's W rescaled, not build()'s).
    """
    arrays = case.arrays()
    direction = np.random.default_rng(case.seed ^ 0xD1).standard_normal(arrays["w"].shape)
    gradient = gradient_fn(**arrays, scale=case.scale)
    predicted = float(np.sum(gradient * direction))

    def loss(h: mpmath.mpf) -> mpmath.mpf:
        mp_arrays = {name: _to_mp(a) for name, a in arrays.items()}
        mp_arrays["w"] = mp_arrays["w"] + h * _to_mp(direction)
        return attention_weight_loss.generic(Mp(mpmath.mp.dps), **mp_arrays, scale=case.scale)

    actual = float(_mp_directional_derivative(loss, "1e-15", 50))
    magnitude = float(np.sum(np.abs(gradient * direction)))
    require(abs(predicted - actual) <= 1e-11 * max(magnitude, 1e-300) + 1e-300, "LD7",
            "closed-form attention-weight gradient disagrees with finite differences",
            predicted=predicted, actual=actual, case=case)

