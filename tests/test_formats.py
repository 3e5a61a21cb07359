"""ditcheck.reference.formats: the formats against numpy/torch finfo, gamma_n, and the bounds built on it.

Each bound is checked against an mpmath evaluation of the exact value on a few inputs, computed in an
emulated narrow format (NumPy float16 arithmetic rounds every operation to float16), and shown to catch
a planted bug: the same bound evaluated with float32's unit roundoff for a float16 computation.
"""

from __future__ import annotations

import math

import flint
import mpmath
import numpy as np
import pytest
import torch
from ditcheck.properties.validation import smallest_subnormal, unit_roundoff
from ditcheck.reference import formats
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.formats import (
    BFLOAT16,
    FLOAT16,
    FLOAT32,
    FLOAT64,
    FORMATS,
    Format,
    format_named,
    gamma,
    gamma_in,
    gamma_or_inf,
    softmax_relative_error,
)
from ditcheck.reference.precision import Arb, resolve_precision

from ditcheck import bounds

NUMPY_TYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_matches_torch_finfo(name: str) -> None:
    fmt, dtype = FORMATS[name], getattr(torch, name)
    info = torch.finfo(dtype)
    assert fmt.name == name and fmt.torch_dtype == str(dtype)
    assert fmt.unit_roundoff == info.eps / 2 and fmt.machine_epsilon == info.eps
    assert fmt.smallest_normal == info.tiny == info.smallest_normal
    assert fmt.max_finite == info.max
    assert fmt.significand_bits == -round(math.log2(info.eps)) + 1
    smallest = torch.nextafter(torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype))
    assert fmt.smallest_subnormal == float(smallest)
    resolve_precision(fmt.reference)  # a precision the reference knows


@pytest.mark.parametrize("name", list(NUMPY_TYPES))
def test_format_matches_numpy_finfo(name: str) -> None:
    fmt, info = FORMATS[name], np.finfo(NUMPY_TYPES[name])
    assert fmt.unit_roundoff == float(info.eps) / 2
    assert fmt.smallest_normal == float(info.smallest_normal)
    assert fmt.smallest_subnormal == float(info.smallest_subnormal)
    assert fmt.max_finite == float(info.max)


def test_format_lookup_and_typed_errors() -> None:
    assert format_named("bfloat16") is BFLOAT16
    assert format_named(str(torch.float16)) is FLOAT16
    assert format_named(FLOAT32) is FLOAT32
    assert bounds.format_of(torch.float64) is FLOAT64
    assert all(bounds.torch_dtype_of(name) == getattr(torch, name) for name in FORMATS)
    assert bounds.torch_dtype_of(BFLOAT16) == torch.bfloat16
    for bad, call in [("float8", lambda: format_named("float8", "target_dtype")),
                      ("int32", lambda: bounds.format_of(torch.int32, "target_dtype")),
                      ("3", lambda: bounds.format_of(3, "target_dtype")),  # type: ignore[arg-type]
                      ("np", lambda: bounds.format_of(np.float16, "target_dtype"))]:  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert info.value.argument == "target_dtype", bad
    with pytest.raises(InvalidArgumentError) as info:
        formats.unit_roundoff_of(1.5)
    assert info.value.argument == "unit_roundoff"
    # the validation rule's accessors read the same table
    assert unit_roundoff(torch.bfloat16) == 2.0**-8 and smallest_subnormal("float16") == 2.0**-24
    with pytest.raises(AttributeError):
        FLOAT16.significand_bits = 12  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_gamma_is_monotone_exact_and_refuses_nu_at_limit(fmt: Format) -> None:
    u = fmt.unit_roundoff
    n = np.unique(np.geomspace(1, 0.49 / u, 60).astype(np.int64))
    values = gamma(n, fmt)
    assert np.all(np.diff(values) > 0) and np.all(values >= n * u)
    with mpmath.workdps(50):
        for count, value in zip(n[::7], values[::7]):
            exact = mpmath.mpf(int(count)) * mpmath.mpf(u) / (1 - mpmath.mpf(int(count)) * mpmath.mpf(u))
            assert abs(mpmath.mpf(float(value)) - exact) <= 2 * FLOAT64.unit_roundoff * exact
    limit_n = int(math.ceil(1 / u))  # n u >= 1
    with pytest.raises(InvalidArgumentError) as info:
        gamma(limit_n, fmt)
    assert info.value.argument == "n"
    with pytest.raises(InvalidArgumentError):
        gamma(int(1e-7 / u) + 1, fmt, limit=1e-7)
    assert gamma_or_inf(limit_n, fmt) == math.inf and gamma_or_inf(limit_n // 2, fmt, limit=0.5) == math.inf
    assert gamma_or_inf(limit_n // 2 - 1, fmt, limit=0.5) < 1
    assert gamma_or_inf(10, fmt) == float(gamma(10, fmt)) == bounds.gamma(10, fmt) == bounds.gamma(10, u)


def test_gamma_in_arb_encloses_the_exact_value() -> None:
    xp = Arb(128)
    with xp.context():
        ball = gamma_in(xp, 1000, FLOAT16)
        assert ball.contains(flint.arb(1000) / 1048)  # 1000 u / (1 - 1000 u), u = 2^-11, exactly
        assert not ball.contains(flint.arb(1000) / 1048 * (1 + flint.arb(2) ** -40))


def _float16_dot(x: np.ndarray, y: np.ndarray) -> float:
    """A sequential float16 dot product: every product and sum rounded to float16 (NumPy float16 arithmetic)."""
    total = np.float16(0)
    for a, b in zip(x.astype(np.float16), y.astype(np.float16)):
        total = np.float16(total + np.float16(a * b))
    return float(total)


def _exact_dot(x: np.ndarray, y: np.ndarray) -> mpmath.mpf:
    with mpmath.workdps(60):
        return mpmath.fsum(mpmath.mpf(float(a)) * mpmath.mpf(float(b)) for a, b in zip(x, y))


def _worst_dot_ratio(fmt: Format) -> float:
    """max over a few inputs of |float16 dot - exact| / (gamma_n(fmt) sum |x y|) (Higham eq. 3.13)."""
    rng, worst = np.random.default_rng(7), 0.0
    for n in (8, 64, 300):
        for _ in range(5):
            x = rng.uniform(0.5, 1.0, n).astype(np.float16).astype(np.float64)  # same signs: no cancellation
            y = rng.uniform(0.5, 1.0, n).astype(np.float16).astype(np.float64)
            error = abs(mpmath.mpf(_float16_dot(x, y)) - _exact_dot(x, y))
            worst = max(worst, float(error) / (float(gamma(n, fmt)) * float(np.sum(np.abs(x * y)))))
    return worst


def test_dot_product_bound_holds_for_float16_and_catches_float32_u() -> None:
    assert _worst_dot_ratio(FLOAT16) <= 1
    assert _worst_dot_ratio(FLOAT32) > 1  # planted: float32's u for a float16 computation


def _float16_softmax(x: np.ndarray) -> np.ndarray:
    """softmax along the last axis with max-subtraction, every operation rounded to float16."""
    h = x.astype(np.float16)
    e = np.exp(h - np.max(h, axis=-1, keepdims=True))  # float16 exp: float32 exp rounded, < 1 float16 ulp
    total = np.zeros(h.shape[:-1] + (1,), dtype=np.float16)
    for j in range(h.shape[-1]):
        total = total + e[..., j:j + 1]
    return (e / total).astype(np.float64)


def _exact_softmax(x: np.ndarray) -> np.ndarray:
    with mpmath.workdps(50):
        out = np.empty(x.shape)
        for i, row in enumerate(x):
            terms = [mpmath.exp(mpmath.mpf(float(v))) for v in row]
            total = mpmath.fsum(terms)
            out[i] = [float(t / total) for t in terms]
    return out


def _worst_softmax_ratio(fmt: Format) -> float:
    rng = np.random.default_rng(3)
    # logit spread <= 8: every exp stays in float16's normal range, where the relative bound applies
    x = rng.uniform(-4, 4, (12, 40)).astype(np.float16).astype(np.float64)
    exact = _exact_softmax(x)
    relative = np.abs(_float16_softmax(x) - exact) / exact
    return float(np.max(relative / softmax_relative_error(x, None, fmt, exp_ulps=1)))


def test_softmax_bound_holds_for_float16_and_catches_float32_u() -> None:
    assert _worst_softmax_ratio(FLOAT16) <= 1
    assert _worst_softmax_ratio(FLOAT32) > 1  # planted: float32's u for a float16 computation


def test_softmax_store_and_mask_arguments() -> None:
    x = np.array([[0.0, 1.0, -2.0, 3.0]])
    keep = np.array([[True, True, False, True]])
    plain = softmax_relative_error(x, keep, FLOAT16, exp_ulps=1)
    stored = softmax_relative_error(x, keep, FLOAT32, exp_ulps=1, store=FLOAT16.unit_roundoff)
    assert np.all(stored < plain) and np.all(stored > FLOAT16.unit_roundoff)
    with pytest.raises(InvalidArgumentError):  # a float16 gamma_n of 3000 terms is refused, not silently wrong
        softmax_relative_error(np.zeros((1, 3000)), None, FLOAT16, exp_ulps=1)
