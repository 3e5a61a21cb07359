"""Reference softmax / attention / VJP / LD7: properties, planted bugs, bad input."""

from __future__ import annotations

import flint
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ditcheck.properties.attention import (BOOLEAN_MASK_KINDS, AttentionCase, WeightGradientCase, attention_cases, check_ball_contains_mp,
                                           check_float64_within_rounding_bound, check_rows_are_convex_combinations,
                                           check_vjp_matches_finite_differences,
                                           check_weight_gradient_matches_finite_differences, weight_gradient_cases)
from ditcheck.properties.gradient import LowRankGradientCase
from ditcheck.properties.violation import PropertyViolation
from ditcheck.reference import (DTypeError, FullyMaskedRowError, InvalidArgumentError, NonFiniteError, ShapeError,
                                attention, attention_vjp, attention_weight_gradient, softmax)
from ditcheck.reference.attention import default_scale
from ditcheck.reference.precision import BallArray, Float64
from ditcheck.reference.rounding import attention_error_bound

from helpers import at_most, expect_caught

small_cases = attention_cases(max_tokens=6, max_dim=5)


@given(attention_cases(max_tokens=8, max_dim=8))
@at_most(25)
def test_arb_ball_contains_mp_at_twice_the_precision(case: AttentionCase) -> None:
    check_ball_contains_mp(case)


@given(attention_cases(masks=BOOLEAN_MASK_KINDS))
def test_float64_attention_within_its_rounding_bound(case: AttentionCase) -> None:
    check_float64_within_rounding_bound(case)


@given(attention_cases(max_tokens=16, max_dim=16))
def test_attention_rows_are_convex_combinations(case: AttentionCase) -> None:
    check_rows_are_convex_combinations(case)


@given(small_cases)
@at_most(20)
def test_vjp_matches_finite_differences(case: AttentionCase) -> None:
    check_vjp_matches_finite_differences(case)


@given(weight_gradient_cases())
@at_most(20)
def test_ld7_closed_form_matches_finite_differences(case) -> None:
    check_weight_gradient_matches_finite_differences(case)


# ---- agreement with torch autograd in float64 -------------------------------------------------

def _torch_attention(q, k, v, scale, mask):
    torch_mask = None if mask is None else torch.from_numpy(np.asarray(mask))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=torch_mask, scale=scale)


@given(attention_cases(max_tokens=10, max_dim=8))
def test_vjp_agrees_with_torch_autograd_float64(case: AttentionCase) -> None:
    q, k, v, mask = case.build()
    grad_out = np.random.default_rng(case.seed).standard_normal(q.shape[:-1] + (v.shape[-1],))
    tensors = [torch.from_numpy(a).requires_grad_() for a in (q, k, v)]
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        out = _torch_attention(*tensors, case.scale, mask)
    out.backward(torch.from_numpy(grad_out))
    ours = attention_vjp(q, k, v, grad_out, scale=case.scale, mask=mask)
    for name, mine, theirs in zip("qkv", ours, tensors):
        scale_of = max(1.0, float(np.max(np.abs(mine))))
        # float64 on both sides; logits up to 700 amplify rounding by up to 2 * 700 * u per weight
        tolerance = 1e-13 * max(1.0, case.logit_range) * case.key_tokens * scale_of
        assert np.max(np.abs(mine - theirs.grad.numpy()), initial=0.0) <= tolerance, name


@given(weight_gradient_cases())
def test_ld7_closed_form_equals_autograd(case) -> None:
    arrays = case.build()
    t = {name: torch.from_numpy(a) for name, a in arrays.items()}
    w = t["w"].clone().requires_grad_()
    f = torch.softmax(case.scale * t["a1"].T @ w @ t["a2"], dim=-1)
    loss = 0.5 * ((f @ (t["a3"].T @ t["w_ov"].T) - t["y"]) ** 2).sum()
    loss.backward()
    ours = attention_weight_gradient(**arrays, scale=case.scale)
    assert np.allclose(ours, w.grad.numpy(), rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(ours).max())))


# ---- planted bugs: each property must catch one ----------------------------------------------

def test_planted_zero_radius_balls_are_caught() -> None:
    def radius_dropped(q, k, v, *, precision, **kwargs):
        return BallArray(np.frompyfunc(flint.arb, 1, 1)(attention(q, k, v, **kwargs)))

    expect_caught(lambda case: check_ball_contains_mp(case, attention_fn=radius_dropped),
                  attention_cases(max_tokens=4, max_dim=4), claim="REF-arb")


def test_planted_float32_scale_is_caught_by_the_rounding_bound() -> None:
    def float32_scale(q, k, v, *, scale=None, **kwargs):
        exact = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
        return attention(q, k, v, scale=float(np.float32(exact)), **kwargs)

    expect_caught(lambda case: check_float64_within_rounding_bound(case, attention_fn=float32_scale),
                  attention_cases(masks=BOOLEAN_MASK_KINDS), claim="REF-rounding")


def test_planted_softmax_over_queries_is_caught() -> None:
    def wrong_axis(q, k, v, *, scale=None, mask=None, return_weights=False):
        logits = q @ np.swapaxes(k, -1, -2) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
        keep = None if mask is None else (mask if mask.dtype == bool else np.isfinite(mask))
        weights = softmax(logits, axis=-2, mask=keep, fully_masked="zero")
        return weights @ v, weights

    expect_caught(lambda case: check_rows_are_convex_combinations(case, attention_fn=wrong_axis),
                  attention_cases(), claim="REF-convex")


def test_planted_vjp_without_rowsum_term_is_caught() -> None:
    def no_rowsum(q, k, v, grad_out, *, scale=None, mask=None):
        s = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
        _, weights = attention(q, k, v, scale=scale, mask=mask, return_weights=True)
        grad_logits = weights * (grad_out @ np.swapaxes(v, -1, -2))
        return (s * grad_logits @ k, s * np.swapaxes(grad_logits, -1, -2) @ q,
                np.swapaxes(weights, -1, -2) @ grad_out)

    expect_caught(lambda case: check_vjp_matches_finite_differences(case, vjp_fn=no_rowsum),
                  small_cases, claim="REF-vjp", max_examples=20)


def test_planted_ld7_without_diagonal_term_is_caught() -> None:
    def no_diagonal(a1, a2, a3, w, w_ov, y, scale=1.0):
        f = softmax(scale * a1.T @ w @ a2)
        h = a3.T @ w_ov.T
        p = f * ((f @ h - y) @ h.T)
        return scale * a1 @ p @ a2.T

    expect_caught(lambda case: check_weight_gradient_matches_finite_differences(case, gradient_fn=no_diagonal),
                  weight_gradient_cases(), claim="LD7", max_examples=20)


# ---- documented behaviour and bad input -------------------------------------------------------

def test_ld7_finite_difference_check_runs_on_the_problem_the_case_names() -> None:
    """A LowRankGradientCase's problem is W rescaled (arrays()), not build()'s W: the gradient function is given the
    rescaled W (and the finite differences agree with it); a WeightGradientCase is checked on build()'s arrays."""
    received: list[np.ndarray] = []

    def recording(**arrays: np.ndarray) -> np.ndarray:
        received.append(arrays["w"])
        return attention_weight_gradient(**arrays)

    low_rank = LowRankGradientCase(tokens=4, dim=2, seed=3, radius=0.5, degree=4)
    assert not np.array_equal(low_rank.arrays()["w"], low_rank.build()["w"])
    check_weight_gradient_matches_finite_differences(low_rank, gradient_fn=recording)
    assert len(received) == 1 and np.array_equal(received[0], low_rank.arrays()["w"])
    plain = WeightGradientCase(tokens=4, dim=2, seed=3)
    check_weight_gradient_matches_finite_differences(plain, gradient_fn=recording)
    assert len(received) == 2 and np.array_equal(received[1], plain.build()["w"])


def test_single_token_returns_the_value_row() -> None:
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((1, 1, 3, 5)), rng.standard_normal((1, 1, 1, 5)), rng.standard_normal((1, 1, 1, 7))
    assert np.array_equal(attention(q, k, v), np.broadcast_to(v, (1, 1, 3, 7)))
    assert attention(q, k, v, precision="arb").contains(np.broadcast_to(v, (1, 1, 3, 7))).all()


def test_default_scale_is_exact_inverse_square_root() -> None:
    from ditcheck.reference.precision import Arb

    xp = Arb(200)
    with xp.context():
        ball = default_scale(xp, 8)
        assert (ball * ball * 8).contains(flint.arb(1))
    assert default_scale(Float64(), 8) == 1 / np.sqrt(8)


def test_fully_masked_row_raises_or_gives_zeros() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    mask = np.array([[True, True], [False, False]])
    with pytest.raises(FullyMaskedRowError) as info:
        softmax(x, mask=mask)
    assert info.value.argument == "mask"
    for precision in ("float64", "mp", "arb"):
        out = softmax(x, mask=mask, fully_masked="zero", precision=precision)
        values = out.mid if isinstance(out, BallArray) else np.asarray(out, dtype=float)
        assert np.all(values[1] == 0) and abs(values[0].sum() - 1) < 1e-15


def test_additive_mask_with_minus_infinity_equals_boolean_mask() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5))
    keep = rng.random((3, 5)) < 0.5
    keep[:, 0] = True
    additive = np.where(keep, 0.0, -np.inf)
    assert np.array_equal(softmax(x, mask=keep), softmax(x, mask=additive))


@pytest.mark.parametrize("bad, argument, error", [
    ({"q": np.full((1, 2, 3), np.nan)}, "q", NonFiniteError),
    ({"v": np.full((1, 2, 3), np.inf)}, "v", NonFiniteError),
    ({"k": np.ones((1, 2, 4))}, "k", ShapeError),
    ({"v": np.ones((1, 5, 3))}, "v", ShapeError),
    ({"q": np.ones((1, 2, 3), dtype=complex)}, "q", DTypeError),
    ({"q": "not an array"}, "q", DTypeError),
    ({"scale": float("nan")}, "scale", InvalidArgumentError),
    ({"mask": np.ones((3, 3), dtype=bool)}, "mask", ShapeError),
    ({"fully_masked": "ignore"}, "fully_masked", InvalidArgumentError),
])
def test_bad_attention_input_raises_a_typed_error_naming_the_argument(bad, argument, error) -> None:
    args = {"q": np.ones((1, 2, 3)), "k": np.ones((1, 2, 3)), "v": np.ones((1, 2, 3))} | bad
    with pytest.raises(error) as info:
        attention(**args)
    assert isinstance(info.value, ValueError)
    assert argument in info.value.argument


@pytest.mark.parametrize("precision", ["float128", "mp:5", "arb:12", "arb:x", 3])
def test_bad_precision_raises(precision) -> None:
    with pytest.raises(InvalidArgumentError):
        softmax(np.ones(3), precision=precision)


@given(st.integers(1, 6), st.integers(1, 6))
@at_most(10)
def test_vjp_rejects_a_cotangent_of_the_wrong_shape(lq: int, dv: int) -> None:
    q = np.ones((lq, 2))
    with pytest.raises(ShapeError):
        attention_vjp(q, q, np.ones((lq, dv)), np.ones((lq, dv + 1)))


# ---- multi-head projections and softmax rounding ---------------------------------------------

def _timm_attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, num_heads):
    """timm / DiT ``Attention.forward`` transcribed in torch (qkv reshape (N, L, 3, H, Dh))."""
    n, length, channels = x.shape
    qkv = torch.nn.functional.linear(x, qkv_weight, qkv_bias)
    q, k, v = qkv.reshape(n, length, 3, num_heads, channels // num_heads).permute(2, 0, 3, 1, 4)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return torch.nn.functional.linear(out.transpose(1, 2).reshape(n, length, channels), proj_weight, proj_bias)


@st.composite
def multi_head_inputs(draw):
    heads = draw(st.integers(1, 4))
    channels = heads * draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tokens = draw(st.integers(1, 6))
    return (rng.standard_normal((draw(st.integers(1, 2)), tokens, channels)),
            rng.standard_normal((3 * channels, channels)) / np.sqrt(channels), rng.standard_normal(3 * channels),
            rng.standard_normal((channels, channels)) / np.sqrt(channels), rng.standard_normal(channels), heads)


@given(multi_head_inputs())
@at_most(20)
def test_multi_head_attention_matches_timm_layout_and_is_certified(inputs) -> None:
    from ditcheck.reference import multi_head_attention

    ours = multi_head_attention(*inputs)
    theirs = _timm_attention(*(torch.from_numpy(a) for a in inputs[:5]), inputs[5]).numpy()
    assert np.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    balls = multi_head_attention(*inputs, precision="arb:100")
    assert balls.within(ours, 1e-12 * (1 + np.abs(ours))).all()


def test_qkv_order_knob_permutes_the_projection() -> None:
    from ditcheck.reference import multi_head_attention

    x, w, b, pw, pb, heads = _fixed_multi_head_inputs()
    blocks = np.split(w, 3), np.split(b, 3)
    reordered_w = np.concatenate([blocks[0][i] for i in (1, 0, 2)])  # stored as k, q, v
    reordered_b = np.concatenate([blocks[1][i] for i in (1, 0, 2)])
    assert np.allclose(multi_head_attention(x, reordered_w, reordered_b, pw, pb, heads, qkv_order="kqv"),
                       multi_head_attention(x, w, b, pw, pb, heads), rtol=1e-14, atol=1e-14)
    assert not np.allclose(multi_head_attention(x, reordered_w, reordered_b, pw, pb, heads),
                           multi_head_attention(x, w, b, pw, pb, heads))


def _fixed_multi_head_inputs():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((2, 5, 8)), rng.standard_normal((24, 8)), rng.standard_normal(24),
            rng.standard_normal((8, 8)), rng.standard_normal(8), 2)


@given(st.integers(0, 2**32 - 1), st.sampled_from([1.0, 30.0, 700.0]), st.integers(1, 40))
def test_float64_softmax_within_its_rounding_bound(seed: int, spread: float, width: int) -> None:
    from ditcheck.reference.rounding import softmax_error_bound

    rng = np.random.default_rng(seed)
    x = rng.uniform(-spread, spread, (3, width))
    keep = rng.random((3, width)) < 0.7
    keep[:, 0] = True
    assert softmax(x, mask=keep, precision="arb:113").within(softmax(x, mask=keep),
                                                             softmax_error_bound(x, keep)).all()


def test_integer_masks_and_bad_axes_are_rejected() -> None:
    x = np.ones((2, 3))
    with pytest.raises(DTypeError) as info:
        softmax(x, mask=np.ones((2, 3), dtype=int))
    assert info.value.argument == "mask"
    with pytest.raises(ShapeError) as info:
        softmax(x, axis=5)
    assert info.value.argument == "axis"


@pytest.mark.parametrize("change, argument", [
    ({"num_heads": 0}, "num_heads"), ({"num_heads": -2}, "num_heads"), ({"num_heads": 3}, "num_heads"),
    ({"qkv_bias": np.ones(5)}, "qkv_bias"), ({"proj_weight": np.ones((8, 4))}, "proj_weight"),
    ({"proj_bias": np.ones(3)}, "proj_bias"),
])
def test_bad_multi_head_arguments_are_named(change, argument) -> None:
    from ditcheck.reference import multi_head_attention

    x, w, b, pw, pb, heads = _fixed_multi_head_inputs()
    args = {"x": x, "qkv_weight": w, "qkv_bias": b, "proj_weight": pw, "proj_bias": pb, "num_heads": heads} | change
    with pytest.raises(InvalidArgumentError) as info:
        multi_head_attention(**args)
    assert info.value.argument == argument


@pytest.mark.parametrize("scale", [float("nan"), "a", None])
def test_ld7_scale_must_be_a_finite_real(scale) -> None:
    arrays = WeightGradientCase(tokens=3, dim=2, seed=0).build()
    with pytest.raises(InvalidArgumentError) as info:
        attention_weight_gradient(**arrays, scale=scale)
    assert info.value.argument == "scale"


def test_rounding_bound_is_vacuous_not_nan_when_logit_errors_overflow() -> None:
    """Logits near 1e306: exp(2 Delta) overflows; each weight error is then bounded by 1, not NaN."""
    q = np.full((1, 1, 2, 2), 1e153)
    k = np.full((1, 1, 3, 2), 1e153)
    v = np.ones((1, 1, 3, 2))
    bound = attention_error_bound(q, k, v)
    assert np.all(np.isfinite(bound)) and np.all(bound >= 1.0)


def test_require_within_rejects_a_nan_tolerance() -> None:
    from ditcheck.properties.certified import require_within

    q, k, v = (np.random.default_rng(i).standard_normal((1, 1, 3, 2)) for i in range(3))
    balls = attention(q, k, v, precision="arb:113")
    with pytest.raises(PropertyViolation, match="NaN tolerance"):
        require_within(balls, attention(q, k, v), np.full(balls.shape, np.nan), "REF-rounding", "attention")
