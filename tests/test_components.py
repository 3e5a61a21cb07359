"""ditcheck.reference.components (and layers.pos_embed_2d's diffusers knobs, reference.native).

Each object against an independent evaluation: a direct mpmath transcription of its formula written
here (scalar loops, 30 digits), a closed form, or third-party code in float64 (diffusers, torch); the arb
path encloses the mpmath value; and each convention knob shown to matter: flipping it moves the result
by far more than the float64 tolerance used for agreement (TOL).
"""

from __future__ import annotations

import warnings

import itertools
import math
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
import pytest
import torch

from ditcheck.reference import components as C
from ditcheck.reference import layers
from ditcheck.reference.errors import InvalidArgumentError, ShapeError
from ditcheck.reference.native import Native

#: agreement of the float64 path with a 30-digit evaluation (a few dozen roundings of O(1) values)
TOL = 1e-12
#: a knob "matters" when flipping it moves the result by more than this (a million times TOL)
MATTERS = 1e-6

rng = np.random.default_rng(20261206)


def randn(*shape: int, scale: float = 1.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale


def mp_array(fn: Callable[..., Any], *shape: int) -> np.ndarray:
    """An ndarray of floats from fn(index) evaluated at 30 digits."""
    out = np.empty(shape)
    with mpmath.workdps(30):
        for index in itertools.product(*(range(n) for n in shape)):
            out[index] = float(fn(*index))
    return out


def mpf(x: Any) -> mpmath.mpf:
    return mpmath.mpf(float(x))


def close(a: Any, b: Any, tol: float = TOL) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and float(np.max(np.abs(a - b), initial=0.0)) <= tol * max(1.0, float(np.max(np.abs(b))))


def differs(a: Any, b: Any) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape != b.shape or float(np.max(np.abs(a - b))) > MATTERS


def mp_silu(x: mpmath.mpf) -> mpmath.mpf:
    return x / (1 + mpmath.exp(-x))


def mp_gelu(x: mpmath.mpf) -> mpmath.mpf:
    return x * (1 + mpmath.erf(x / mpmath.sqrt(2))) / 2


def mp_gelu_tanh(x: mpmath.mpf) -> mpmath.mpf:
    return x * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (x + mpmath.mpf(44715) / 10**6 * x**3))) / 2


MP_ACTIVATIONS = {"silu": mp_silu, "gelu": mp_gelu, "gelu-tanh": mp_gelu_tanh,
                  "approximate-gelu": lambda x: x / (1 + mpmath.exp(-mpmath.mpf(1702) / 1000 * x)),
                  "relu": lambda x: max(x, 0), "identity": lambda x: x}


# ----------------------------------------------------------------------------------------
# Activations, TimestepEmbedding


@pytest.mark.parametrize("name", C.ACTIVATIONS)
def test_activation_against_mpmath(name: str) -> None:
    x = randn(3, 7, scale=3)
    expected = mp_array(lambda i, j: MP_ACTIVATIONS[name](mpf(x[i, j])), 3, 7)
    assert close(C.activation(x, name), expected)


def test_activations_differ_pairwise() -> None:
    """The sigmoid(1.702x) form is not GELU: every pair of activations is told apart."""
    x = randn(50, scale=2)
    for a, b in itertools.combinations(C.ACTIVATIONS, 2):
        assert differs(C.activation(x, a), C.activation(x, b)), (a, b)


def test_approximate_gelu_is_diffusers_approximate_gelu() -> None:
    x = randn(4, 6, scale=3)
    torch_value = (torch.from_numpy(x) * torch.sigmoid(1.702 * torch.from_numpy(x))).numpy()
    assert close(C.approximate_gelu(x), torch_value, 1e-15)


def test_timestep_mlp_against_mpmath_and_activation_knob() -> None:
    x, w1, b1, w2, b2 = randn(2, 5), randn(4, 5), randn(4), randn(3, 4), randn(3)

    def entry(i: int, j: int) -> mpmath.mpf:
        hidden = [mp_silu(sum(mpf(w1[h, c]) * mpf(x[i, c]) for c in range(5)) + mpf(b1[h])) for h in range(4)]
        return sum(mpf(w2[j, h]) * hidden[h] for h in range(4)) + mpf(b2[j])

    assert close(C.timestep_mlp(x, w1, b1, w2, b2), mp_array(entry, 2, 3))
    assert differs(C.timestep_mlp(x, w1, b1, w2, b2), C.timestep_mlp(x, w1, b1, w2, b2, act="gelu"))
    assert differs(C.timestep_mlp(x, w1, b1, w2, b2), C.timestep_mlp(x, w1, b1, w2, b2, post_act="silu"))


# ----------------------------------------------------------------------------------------
# Norms


def test_rms_norm_against_mpmath_and_torch() -> None:
    x, w, b = randn(3, 8), randn(8), randn(8)

    def entry(i: int, j: int) -> mpmath.mpf:
        mean_square = sum(mpf(v) ** 2 for v in x[i]) / 8
        return mpf(x[i, j]) / mpmath.sqrt(mean_square + mpf(1e-6)) * mpf(w[j]) + mpf(b[j])

    assert close(C.rms_norm(x, w, b, eps=1e-6), mp_array(entry, 3, 8))
    norm = torch.nn.RMSNorm(8, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(w))
    assert close(C.rms_norm(x, w, eps=1e-6), norm(torch.from_numpy(x)).detach().numpy())


def test_rms_norm_knobs_matter() -> None:
    x = randn(4, 16, scale=0.01)  # mean square 1e-4: eps 1e-6 vs 1e-5 moves the output by ~4%
    w = randn(16)
    base = C.rms_norm(x, w, eps=1e-6)
    assert differs(base, C.rms_norm(x, w, eps=1e-5))
    assert differs(base, C.rms_norm(x, None, eps=1e-6))
    assert differs(base, C.rms_norm(x, w, randn(16), eps=1e-6))
    for fmt in ("bfloat16", "float16"):
        assert differs(base, C.rms_norm(x, w, eps=1e-6, variance_format=fmt)), fmt
    # a float32 variance moves the output by float32 rounding only (~1e-7): the size of diffusers' island
    moved = np.max(np.abs(C.rms_norm(x, w, eps=1e-6, variance_format="float32") - base) / np.abs(base))
    assert 0 < moved < 1e-6


def test_rms_norm_float16_variance_matches_torch() -> None:
    x = randn(5, 32)
    t = torch.from_numpy(x).float()
    variance = t.to(torch.float16).pow(2).mean(-1, keepdim=True).float()
    torch_value = (t * torch.rsqrt(variance + 1e-6)).double().numpy()
    ours = C.rms_norm(x.astype(np.float32).astype(np.float64), eps=1e-6, variance_format="float16")
    assert close(ours, torch_value, 1e-6)  # equal up to float32 rounding of the target's own product


def test_qk_norm_per_head_and_across_heads() -> None:
    """Closed form: with eps 0 and no weight each head (or the whole row) has RMS exactly 1 (to rounding)."""
    x = randn(2, 5, 3 * 4, scale=3) * np.repeat([0.1, 1.0, 10.0], 4)  # heads of very different scale
    per_head = C.qk_norm(x, None, num_heads=3, eps=0.0)
    rms_heads = np.sqrt(np.mean(per_head.reshape(2, 5, 3, 4) ** 2, axis=-1))
    assert close(rms_heads, np.ones((2, 5, 3)))
    across = C.qk_norm(x, None, num_heads=3, eps=0.0, across_heads=True)
    assert close(np.sqrt(np.mean(across**2, axis=-1)), np.ones((2, 5)))
    assert differs(per_head, across)
    weight = randn(4)
    tiled = C.qk_norm(x, weight, num_heads=3, eps=1e-6, across_heads=True)
    assert close(tiled, C.qk_norm(x, np.tile(weight, 3), num_heads=3, eps=1e-6, across_heads=True))
    assert differs(C.qk_norm(x, weight, num_heads=3, kind="layer"), C.qk_norm(x, weight, num_heads=3))


# ----------------------------------------------------------------------------------------
# adaLN family


def test_adaln_chunks_against_mpmath_and_orders_matter() -> None:
    emb, w, b = randn(2, 4), randn(18, 4), randn(18)
    chunks = C.adaln_chunks(emb, w, b, C.ADALN_ZERO_ORDER)

    def entry(i: int, j: int) -> mpmath.mpf:
        return sum(mpf(w[j, c]) * mp_silu(mpf(emb[i, c])) for c in range(4)) + mpf(b[j])

    projected = mp_array(entry, 2, 18)
    for index, name in enumerate(C.ADALN_ZERO_ORDER):
        assert close(chunks[name], projected[:, 3 * index:3 * index + 3])
    swapped = C.adaln_chunks(emb, w, b, ("scale_msa", "shift_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp"))
    assert differs(chunks["shift_msa"], swapped["shift_msa"])
    with pytest.raises(ShapeError):
        C.adaln_chunks(emb, randn(17, 4), randn(17), C.ADALN_ZERO_ORDER)


def test_ada_layer_norm_zero_matches_diffusers_and_order_matters() -> None:
    from diffusers.models.normalization import AdaLayerNormZero, AdaLayerNormZeroSingle

    x, emb = randn(2, 5, 8), randn(2, 8)
    module = AdaLayerNormZero(8).double()
    with torch.no_grad():
        module.linear.weight.copy_(torch.from_numpy(randn(48, 8)))
        module.linear.bias.copy_(torch.from_numpy(randn(48)))
    w, b = module.linear.weight.detach().numpy(), module.linear.bias.detach().numpy()
    theirs = module(torch.from_numpy(x), emb=torch.from_numpy(emb))
    ours = C.ada_layer_norm_zero(x, emb, w, b, eps=1e-6)
    for a, t in zip(ours, theirs):
        assert close(a, t.detach().numpy())
    other = ("scale_msa", "shift_msa", "gate_msa", "scale_mlp", "shift_mlp", "gate_mlp")
    assert differs(ours[0], C.ada_layer_norm_zero(x, emb, w, b, eps=1e-6, order=other)[0])
    quiet = x * 1e-3  # variance 1e-6: the LayerNorm eps (1e-6 vs 1e-5) matters
    assert differs(C.ada_layer_norm_zero(quiet, emb, w, b, eps=1e-6)[0], C.ada_layer_norm_zero(quiet, emb, w, b, eps=1e-5)[0])
    single = AdaLayerNormZeroSingle(8).double()
    with torch.no_grad():
        single.linear.weight.copy_(torch.from_numpy(w[:24]))
        single.linear.bias.copy_(torch.from_numpy(b[:24]))
    theirs = single(torch.from_numpy(x), emb=torch.from_numpy(emb))
    ours = C.ada_layer_norm_zero_single(x, emb, w[:24], b[:24], eps=1e-6)
    assert all(close(a, t.detach().numpy()) for a, t in zip(ours, theirs))


def test_ada_layer_norm_continuous_scale_shift_order() -> None:
    from diffusers.models.normalization import AdaLayerNormContinuous

    x, cond = randn(2, 5, 8), randn(2, 6)
    module = AdaLayerNormContinuous(8, 6, elementwise_affine=False, eps=1e-6).double()
    with torch.no_grad():
        module.linear.weight.copy_(torch.from_numpy(randn(16, 6)))
        module.linear.bias.copy_(torch.from_numpy(randn(16)))
    w, b = module.linear.weight.detach().numpy(), module.linear.bias.detach().numpy()
    theirs = module(torch.from_numpy(x), torch.from_numpy(cond)).detach().numpy()
    assert close(C.ada_layer_norm_continuous(x, cond, w, b, eps=1e-6), theirs)
    # DiT's final layer chunks (shift, scale): the opposite order
    assert differs(C.ada_layer_norm_continuous(x, cond, w, b, eps=1e-6, order=("shift", "scale")), theirs)
    assert differs(C.ada_layer_norm_continuous(x, cond, w, b, eps=1e-6, norm="rms"), theirs)


def test_scale_shift_table_chunks_closed_form() -> None:
    table, emb = randn(6, 4), randn(2, 24)
    chunks = C.scale_shift_table_chunks(table, emb)
    for i, name in enumerate(C.ADALN_ZERO_ORDER):
        assert np.array_equal(chunks[name], table[i][None] + emb[:, 4 * i:4 * i + 4])
    other = C.scale_shift_table_chunks(table, emb, order=C.ADALN_ZERO_ORDER[::-1])
    assert differs(chunks["shift_msa"], other["shift_msa"])


# ----------------------------------------------------------------------------------------
# FeedForward


@pytest.mark.parametrize("activation_fn", C.FEED_FORWARD_ACTIVATIONS)
def test_feed_forward_matches_diffusers(activation_fn: str) -> None:
    from diffusers.models.attention import FeedForward

    module = FeedForward(6, dim_out=5, mult=2, activation_fn=activation_fn).double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.from_numpy(randn(*parameter.shape)))
    x = randn(2, 3, 6)
    proj, out = module.net[0].proj, module.net[2]
    ours = C.feed_forward(x, proj.weight.detach().numpy(), proj.bias.detach().numpy(), out.weight.detach().numpy(),
                          out.bias.detach().numpy(), activation_fn)
    assert close(ours, module(torch.from_numpy(x)).detach().numpy())


def test_feed_forward_variants_and_gate_order_matter() -> None:
    x, wp, bp, wo, bo = randn(2, 6), randn(8, 6), randn(8), randn(5, 4), randn(5)
    glu = {name: C.feed_forward(x, wp, bp, wo, bo, name) for name in ("geglu", "swiglu")}
    assert differs(glu["geglu"], glu["swiglu"])
    assert differs(glu["geglu"], C.feed_forward(x, wp, bp, wo, bo, "geglu", gate_first=True))
    wo8 = randn(5, 8)
    plain = {name: C.feed_forward(x, wp, bp, wo8, bo, name)
             for name in ("gelu", "gelu-approximate", "geglu-approximate", "linear-silu")}
    for a, b in itertools.combinations(plain, 2):
        assert differs(plain[a], plain[b]), (a, b)


def test_gated_linear_unit_against_mpmath() -> None:
    x = randn(3, 8, scale=2)
    expected = mp_array(lambda i, j: mpf(x[i, j]) * mp_gelu(mpf(x[i, j + 4])), 3, 4)
    assert close(C.gated_linear_unit(x, "gelu"), expected)
    expected = mp_array(lambda i, j: mpf(x[i, j + 4]) * mp_silu(mpf(x[i, j])), 3, 4)
    assert close(C.gated_linear_unit(x, "silu", gate_first=True), expected)


# ----------------------------------------------------------------------------------------
# Attention variants


def test_joint_attention_orders_agree_without_a_mask_and_differ_with_one() -> None:
    a = [randn(2, 4, 3) for _ in range(3)]
    b = [randn(2, 2, 3) for _ in range(3)]
    ab = C.joint_attention(*a, *b, order="ab")
    ba = C.joint_attention(*a, *b, order="ba")
    assert all(close(x, y) for x, y in zip(ab, ba))  # a permutation of the keys: the same reals
    from ditcheck.reference.attention import attention
    q, k, v = (np.concatenate([x, y], axis=-2) for x, y in zip(a, b))
    assert close(ab[0], attention(q, k, v)[..., :4, :]) and close(ab[1], attention(q, k, v)[..., 4:, :])
    prefix = np.array([True, True, False, True, True, True])  # a mask written for [b, a] order
    masked = [C.joint_attention(*a, *b, order=o, mask=prefix) for o in ("ab", "ba")]
    assert differs(masked[0][0], masked[1][0])


def test_linear_attention_against_mpmath_and_kernel_matters() -> None:
    q, k, v = randn(2, 4, 3), randn(2, 5, 3), randn(2, 5, 2)

    def entry(n: int, i: int, c: int) -> mpmath.mpf:
        relu = lambda t: max(mpf(t), 0)  # noqa: E731
        weights = [sum(relu(k[n, j, d]) * relu(q[n, i, d]) for d in range(3)) for j in range(5)]
        return sum(w * mpf(v[n, j, c]) for j, w in enumerate(weights)) / (sum(weights) + mpf(1e-15))

    assert close(C.linear_attention(q, k, v), mp_array(entry, 2, 4, 2), 1e-10)
    assert differs(C.linear_attention(q, k, v), C.linear_attention(q, k, v, kernel="identity"))
    # eps matters exactly where a query sees no positive feature: the output is 0, not 0/0
    silent = C.linear_attention(-np.abs(q), k, v)
    assert np.array_equal(silent, np.zeros_like(silent))


# ----------------------------------------------------------------------------------------
# RoPE


def test_rope_frequencies_against_mpmath_and_knobs() -> None:
    ids = rng.integers(0, 6, size=(7, 3)).astype(np.float64)
    axes = (4, 6, 6)
    cos, sin = C.rope_frequencies(ids, axes, theta=10000.0)

    def angle(row: int, channel: int) -> mpmath.mpf:
        start = 0
        for axis, dim in enumerate(axes):
            if channel < start + dim:
                i = (channel - start) // 2  # interleaved: channels 2i and 2i+1 share angle i
                return mpf(ids[row, axis]) * mpmath.power(10000, -mpmath.mpf(2 * i) / dim)
            start += dim
        raise AssertionError

    assert close(cos, mp_array(lambda r, c: mpmath.cos(angle(r, c)), 7, 16))
    assert close(sin, mp_array(lambda r, c: mpmath.sin(angle(r, c)), 7, 16))
    assert differs(cos, C.rope_frequencies(ids, axes, theta=256.0)[0])
    assert differs(cos, C.rope_frequencies(ids, (6, 4, 6), theta=10000.0)[0])
    assert differs(cos, C.rope_frequencies(ids, axes, pairing="half")[0])


def test_rope_tables_match_diffusers_in_float64() -> None:
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    positions = np.arange(5, dtype=np.float64)
    for interleave, pairing in ((True, "interleaved"), (False, "half")):
        cos, sin = get_1d_rotary_pos_embed(8, positions, theta=10000.0, use_real=True,
                                           repeat_interleave_real=interleave, freqs_dtype=torch.float64)
        ours = C.rope_frequencies(positions[:, None], (8,), pairing=pairing)
        # diffusers returns the tables .float(): agreement to float32 rounding
        assert close(ours[0], cos.double().numpy(), 1e-7) and close(ours[1], sin.double().numpy(), 1e-7)


@pytest.mark.parametrize(("pairing", "unbind"), [("interleaved", -1), ("half", -2)])
def test_apply_rope_matches_diffusers_and_pairings_differ(pairing: str, unbind: int) -> None:
    from diffusers.models.embeddings import apply_rotary_emb

    x = randn(2, 3, 5, 8)  # [B, H, L, D]
    cos, sin = C.rope_frequencies(np.arange(5.0)[:, None] * 1.7, (8,), pairing=pairing)
    theirs = apply_rotary_emb(torch.from_numpy(x), (torch.from_numpy(cos), torch.from_numpy(sin)),
                              use_real_unbind_dim=unbind).numpy()
    # diffusers computes x.float() * cos: float32 products
    assert close(C.apply_rope(x, cos, sin, pairing), theirs, 1e-6)
    other = "half" if pairing == "interleaved" else "interleaved"
    assert differs(C.apply_rope(x, cos, sin, pairing), C.apply_rope(x, cos, sin, other))


def test_apply_rope_is_a_rotation_of_each_pair() -> None:
    """Closed form: |(x_a, x_b)| is preserved for each rotating pair, and the angle-0 table is the identity."""
    x = randn(4, 6, 8)
    cos, sin = C.rope_frequencies(rng.uniform(0, 9, size=(6, 1)), (8,))
    rotated = C.apply_rope(x, cos, sin)
    pairs = lambda t: np.sqrt(t[..., 0::2] ** 2 + t[..., 1::2] ** 2)  # noqa: E731
    assert close(pairs(rotated), pairs(x))
    assert np.array_equal(C.apply_rope(x, np.ones((6, 8)), np.zeros((6, 8))), x)


# ----------------------------------------------------------------------------------------
# Patches and tables


def test_patchify_3d_matches_conv3d() -> None:
    x, weight, bias = randn(2, 3, 4, 4, 6), randn(5, 3, 2, 2, 3), randn(5)
    conv = torch.nn.functional.conv3d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias),
                                      stride=(2, 2, 3))
    assert close(C.patchify_3d(x, weight, bias, (2, 2, 3)), conv.flatten(2).transpose(1, 2).numpy())
    with pytest.raises(ShapeError):
        C.patchify_3d(x, weight, bias, (1, 2, 3))


def test_unpatchify_3d_is_wans_output_layout() -> None:
    # diffusers WanTransformer3DModel: reshape(B, f, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6), flattened
    tokens = randn(2, 2 * 2 * 2, 2 * 2 * 3 * 5)
    wan = torch.from_numpy(tokens).reshape(2, 2, 2, 2, 2, 2, 3, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    expected = wan.flatten(6, 7).flatten(4, 5).flatten(2, 3).numpy()
    assert np.array_equal(C.unpatchify_3d(tokens, (2, 2, 3), (2, 2, 2)), expected)
    with pytest.raises(ShapeError):
        C.unpatchify_3d(tokens, (2, 2, 3), (2, 2, 1))


def test_pos_embed_2d_diffusers_knobs() -> None:
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    # positions i / (n / base) / scale exact in binary: diffusers computes them in float32
    for grid, base, scale in (((4, 4), 2, 1.0), ((4, 8), 4, 2.0), ((3, 3), 3, 1.0)):
        theirs = get_2d_sincos_pos_embed(16, grid, base_size=base, interpolation_scale=scale).numpy()
        assert close(layers.pos_embed_2d(16, grid, base_size=base, interpolation_scale=scale), theirs, 1e-15)
    dit = layers.pos_embed_2d(16, 4)
    assert np.array_equal(dit, layers.pos_embed_2d(16, 4, base_size=4))
    assert differs(dit, layers.pos_embed_2d(16, 4, base_size=2))
    assert differs(dit, layers.pos_embed_2d(16, 4, interpolation_scale=2.0))


def test_round_to_format_matches_torch_casts() -> None:
    x = randn(1000, scale=100)
    for fmt, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16), ("float32", torch.float32)):
        theirs = torch.from_numpy(x).to(torch.float32).to(dtype).double().numpy()
        assert np.array_equal(C.round_to_format(x.astype(np.float32).astype(np.float64), fmt), theirs), fmt
    beyond = np.array([1e40, -1e40, 7e4, -7e4])  # past float32's / float16's max: +-inf as torch casts, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fmt, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16), ("float32", torch.float32)):
            theirs = torch.from_numpy(beyond).to(dtype).double().numpy()
            assert np.array_equal(C.round_to_format(beyond, fmt), theirs), fmt


# ----------------------------------------------------------------------------------------
# Precisions: arb encloses, Native rounds where it says


CERTIFIED: dict[str, Callable[[str], Any]] = {
    "rms_norm": lambda p: C.rms_norm(X, W, eps=1e-6, precision=p),
    "approximate_gelu": lambda p: C.approximate_gelu(X, precision=p),
    "qk_norm": lambda p: C.qk_norm(X, None, num_heads=2, precision=p),
    "ada_layer_norm_continuous": lambda p: C.ada_layer_norm_continuous(X, X[:, 0, :], np.ones((8, 4)), None,
                                                                       precision=p),
    "rope": lambda p: C.apply_rope(X, *C.rope_frequencies(np.arange(3.0)[:, None], (4,), precision="float64"),
                                   precision=p),
    "linear_attention": lambda p: C.linear_attention(X, X, X, precision=p),
    "feed_forward": lambda p: C.feed_forward(X, np.ones((8, 4)), None, np.ones((4, 4)), None, "geglu", precision=p),
}
X = randn(2, 3, 4)
W = randn(4)


@pytest.mark.parametrize("name", list(CERTIFIED))
def test_arb_ball_contains_mpmath_and_float64(name: str) -> None:
    balls = CERTIFIED[name]("arb:128")
    mp = CERTIFIED[name]("mp:40")
    assert np.all(balls.contains(mp))
    assert close(balls.mid, CERTIFIED[name]("float64"))


def test_native_precisions_round_where_they_say() -> None:
    x = randn(4, 32)
    exact = C.rms_norm(x, eps=1e-6, precision="mp:40")
    exact = np.asarray(exact, dtype=np.float64)
    single = C.rms_norm(x, eps=1e-6, precision=Native("float32"))
    assert single.dtype == np.float32
    assert 1e-9 < np.max(np.abs(single - exact)) < 1e-5
    extended = C.rms_norm(x, eps=1e-6, precision=Native("longdouble"))
    error64 = np.max(np.abs(C.rms_norm(x, eps=1e-6) - exact))
    assert np.max(np.abs(extended.astype(np.float64) - exact)) <= max(error64, 2.0**-53 * np.max(np.abs(exact)))
    for order in ("sequential", "reversed"):
        assert close(Native("float32", order).matmul(x.astype(np.float32), x.T.astype(np.float32)), x @ x.T, 1e-5)


@pytest.mark.parametrize(("channels", "out", "kernel", "stride", "padding", "groups"), [
    (6, 6, 3, 1, 1, 6),    # Sana's depthwise 3x3
    (6, 8, 1, 1, 0, 1),    # 1x1 (GLUMBConv's inverted and point convolutions)
    (6, 4, 3, 2, 1, 2),    # grouped, strided
])
def test_conv2d_matches_torch(channels: int, out: int, kernel: int, stride: int, padding: int, groups: int) -> None:
    x, weight, bias = randn(2, channels, 5, 7), randn(out, channels // groups, kernel, kernel), randn(out)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias),
                                          stride=stride, padding=padding, groups=groups).numpy()
    assert close(C.conv2d(x, weight, bias, stride, padding, groups), expected)
    assert close(C.conv2d(x, weight, None, stride, padding, groups), expected - bias[None, :, None, None])


def test_qk_norm_layer_norm_bias_per_head_and_tiled_across_heads() -> None:
    """CogVideoX's QK LayerNorm has a bias: per head it is the head's LayerNorm; across heads weight and bias tile."""
    x, weight, bias = randn(2, 5, 3 * 4), randn(4), randn(4)
    per_head = torch.nn.functional.layer_norm(torch.from_numpy(x).unflatten(-1, (3, 4)), (4,), torch.from_numpy(weight),
                                              torch.from_numpy(bias), 1e-6).flatten(-2).numpy()
    assert close(C.qk_norm(x, weight, 3, 1e-6, "layer", bias=bias), per_head)
    across = torch.nn.functional.layer_norm(torch.from_numpy(x), (12,), torch.from_numpy(np.tile(weight, 3)),
                                            torch.from_numpy(np.tile(bias, 3)), 1e-6).numpy()
    assert close(C.qk_norm(x, weight, 3, 1e-6, "layer", True, bias), across)
    assert differs(per_head, across)


def test_wan_rope_tables_from_grid_positions_and_axis_split() -> None:
    """WanRotaryPosEmbed (float64 angles, stored float32): rope_frequencies over rope_grid_positions, Wan's split."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    assert C.wan_rope_axes(16) == (8, 4, 4) and C.wan_rope_axes(128) == (44, 42, 42)
    rope = WanRotaryPosEmbed(16, (1, 2, 2), 32)
    cos, sin = rope(torch.zeros(1, 4, 3, 4, 6))
    positions = C.rope_grid_positions((3, 2, 3))
    assert positions.shape == (18, 3) and positions[4].tolist() == [0, 1, 1]
    ref_cos, ref_sin = C.rope_frequencies(positions, C.wan_rope_axes(16), 10000.0, "interleaved")
    assert close(cos[0, :, 0].double().numpy(), ref_cos, 1e-7) and close(sin[0, :, 0].double().numpy(), ref_sin, 1e-7)
    assert differs(ref_cos, C.rope_frequencies(positions, (4, 4, 8), 10000.0, "interleaved")[0])


# ----------------------------------------------------------------------------------------
# Bad input: typed errors naming the argument


@pytest.mark.parametrize(("call", "argument"), [
    (lambda: C.rms_norm(randn(2, 4), randn(3)), "weight"),
    (lambda: C.rms_norm(randn(2, 4), variance_format="float8"), "variance_format"),
    (lambda: C.qk_norm(randn(2, 6), num_heads=4), "num_heads"),
    (lambda: C.adaln_chunks(randn(2, 4), randn(12, 4), None, ("shift", "shift")), "order"),
    (lambda: C.apply_rope(randn(2, 4), np.ones((2, 4)), np.zeros((2, 4)), pairing="diagonal"), "pairing"),
    (lambda: C.rope_frequencies(np.zeros((3, 2)), (4,)), "positions"),
    (lambda: C.rope_frequencies(np.zeros((3, 1)), (5,)), "axes_dims[0]"),
    (lambda: C.feed_forward(randn(2, 4), randn(8, 4), None, randn(4, 8), None, "gelu-fast"), "activation_fn"),
    (lambda: C.patchify_3d(randn(1, 1, 2, 2, 2), randn(1, 1, 2, 2, 2), None, (2, 2)), "patch_size"),
    (lambda: C.unpatchify_3d(randn(1, 2, 4), (1, 2, 2), (1, 2)), "grid"),
    (lambda: C.activation(randn(3), "mish"), "activation"),
    (lambda: C.joint_attention(*[randn(1, 2, 2)] * 6, order="ca"), "order"),
    (lambda: layers.pos_embed_2d(16, 4, base_size=0), "base_size"),
    (lambda: C.round_to_format(randn(3), "float8"), "fmt"),
    (lambda: C.conv2d(randn(1, 4, 3, 3), randn(4, 3, 1, 1), groups=2), "weight"),
    (lambda: C.conv2d(randn(1, 4, 3, 3), randn(4, 4, 1, 1), padding=-1), "padding"),
    (lambda: C.rope_grid_positions(()), "grid"),
    (lambda: C.wan_rope_axes(0), "head_dim"),
])
def test_bad_input_is_a_typed_error(call: Callable[[], Any], argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        call()
    assert caught.value.argument == argument
    assert math.isfinite(len(str(caught.value)))
