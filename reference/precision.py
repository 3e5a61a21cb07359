"""Three precisions behind one array vocabulary: float64 NumPy, mpmath, and arb balls.

Every reference function is written once, generically, against a ``Precision``
object ``xp`` that supplies elementwise functions, reductions and matmul for its
number type. Structural operations (reshape, transpose, indexing, concatenate,
where) are plain NumPy and work unchanged on object arrays of ``mpf`` or ``arb``.

* ``Float64``: NumPy float64, vectorised, rounded.
* ``Mp(digits)``: object arrays of ``mpmath.mpf`` at ``digits`` significant digits.
  A readable second opinion; not certified.
* ``Arb(bits)``: object arrays of ``flint.arb`` at ``bits`` of working precision.
  Every operation is a ball operation, so the result encloses the exact real
  number that the float64 inputs define. Returned as a :class:`BallArray`.

Inputs are float64 arrays, read as exact binary numbers. A public reference
function is made with :func:`reference_function`; its ``precision`` keyword
accepts a Precision object or a string ``"float64"``, ``"mp"``, ``"mp:60"``,
``"arb"``, ``"arb:256"``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import flint
import mpmath
import numpy as np
from threadpoolctl import ThreadpoolController

from .errors import DTypeError, InvalidArgumentError, NonFiniteError, PrecisionError
from . import formats

__all__ = [
    "Precision",
    "NumpyPrecision",
    "Float64",
    "FLOAT64",
    "Mp",
    "Arb",
    "BallArray",
    "resolve_precision",
    "reference_function",
    "as_float64_array",
    "require_positive_int",
    "require_real",
    "require_choice",
    "arb_from_mpf",
    "DEFAULT_MP_DIGITS",
    "DEFAULT_ARB_BITS",
]

DEFAULT_MP_DIGITS = 40
DEFAULT_ARB_BITS = 128
UNIT_ROUNDOFF = formats.FLOAT64.unit_roundoff  # of float64, the Float64 precision's format


@functools.cache
def _blas_controller() -> Any:
    return ThreadpoolController()  # scans the loaded libraries once (tens of ms): cached


def _single_thread_blas() -> Any:
    """A context in which BLAS (NumPy's OpenBLAS) runs on one thread; the previous limits come back on exit."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _frompyfunc(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Elementwise application of a scalar function to an object array (or scalar)."""
    return np.frompyfunc(fn, 1, 1)


class Precision:
    """The arithmetic of one precision. Subclasses supply the scalar functions."""

    name: str = ""
    certified: bool = False

    def context(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def asarray(self, x: np.ndarray) -> Any:
        """Exact conversion of a float64 array to this precision's array type."""
        raise NotImplementedError

    def const(self, value: float | int) -> Any:
        """An exact scalar (float64 or integer value) of this precision."""
        raise NotImplementedError

    def pi(self) -> Any:
        raise NotImplementedError

    # elementwise functions; each maps an array (or scalar) to the same shape
    exp: Callable[[Any], Any]
    expm1: Callable[[Any], Any]
    log: Callable[[Any], Any]
    log1p: Callable[[Any], Any]
    sqrt: Callable[[Any], Any]
    erf: Callable[[Any], Any]
    tanh: Callable[[Any], Any]
    sin: Callable[[Any], Any]
    cos: Callable[[Any], Any]

    def sum(self, x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Any:
        return np.sum(x, axis=axis, keepdims=keepdims)

    def mean(self, x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Any:
        count = x.size if axis is None else math.prod(np.shape(x)[a] for a in np.atleast_1d(axis))
        return self.sum(x, axis=axis, keepdims=keepdims) / count

    def matmul(self, a: Any, b: Any) -> Any:
        if np.ndim(a) > 2 and np.ndim(b) == 2:
            # [..., M, K] @ [K, N] as one [(...) M, K] GEMM: NumPy runs a stack as one BLAS call per slice,
            # measured 1.5x the CPU time for a DiT-XL/2 linear (4 x 256 tokens, 1152 -> 4608)
            a = np.asarray(a)
            return np.matmul(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + (np.shape(b)[-1],))
        if np.ndim(a) > 2 or np.ndim(b) > 2:
            # a stack of small GEMMs (attention per head): one BLAS thread each. Measured for DiT-XL/2's
            # logits (64 x [256, 72] @ [72, 256]) on 2 cores: 0.54 CPU s with OpenBLAS's 2 threads (their
            # start-up and spinning dominate), 0.023 s with one.
            with _single_thread_blas():
                return np.matmul(a, b)
        return np.matmul(a, b)

    def shift(self, x: Any, axis: int) -> np.ndarray:
        """A float64 array close to max(x, axis) (keepdims), used only as an exact shift.

        Softmax and log-sum-exp are invariant under any shift, so an approximate
        maximum changes nothing mathematically; it only keeps exp() in range.
        """
        return np.max(self.to_float(x), axis=axis, keepdims=True)

    def to_float(self, x: Any) -> np.ndarray:
        """Nearest float64 of each entry (of each midpoint, for balls). For shifts and display only."""
        raise NotImplementedError

    def zeros(self, shape: Sequence[int]) -> Any:
        return self.asarray(np.zeros(shape))

    def finalize(self, x: Any) -> Any:
        """Turn an internal result into the public return type of this precision."""
        return x

    def __repr__(self) -> str:
        return self.name


class NumpyPrecision(Precision):
    """A rounded precision whose elementwise functions are NumPy's ufuncs (libm or NumPy's SIMD kernels as installed).

    Float64 below, and reference.native's float32 / long double, differ only in the array type they round to.
    """

    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    sqrt = staticmethod(np.sqrt)
    tanh = staticmethod(np.tanh)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)


class Float64(NumpyPrecision):
    """Vectorised NumPy float64 (rounded arithmetic; libm and BLAS as installed)."""

    name = "float64"

    def asarray(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def const(self, value: float | int) -> np.float64:
        return np.float64(value)

    def pi(self) -> np.float64:
        return np.float64(np.pi)

    @staticmethod
    def erf(x: Any) -> Any:
        # NumPy has no erf; math.erf is libm's, accurate to about 1 ulp.
        return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=np.float64)

    def to_float(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)


class Mp(Precision):
    """mpmath at ``digits`` significant decimal digits (not certified)."""

    def __init__(self, digits: int = DEFAULT_MP_DIGITS):
        if not isinstance(digits, int) or isinstance(digits, bool) or not 10 <= digits <= 10_000:
            raise PrecisionError("digits", "an integer from 10 to 10000", repr(digits))
        self.digits = digits
        self.name = f"mp:{digits}"

    def context(self) -> contextlib.AbstractContextManager[None]:
        return mpmath.workdps(self.digits)

    def asarray(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(_frompyfunc(mpmath.mpf)(np.asarray(x, dtype=np.float64)), dtype=object)

    def const(self, value: float | int) -> mpmath.mpf:
        return mpmath.mpf(value)

    def pi(self) -> mpmath.mpf:
        return +mpmath.pi

    exp = staticmethod(_frompyfunc(mpmath.exp))
    expm1 = staticmethod(_frompyfunc(mpmath.expm1))
    log = staticmethod(_frompyfunc(mpmath.log))
    log1p = staticmethod(_frompyfunc(mpmath.log1p))
    sqrt = staticmethod(_frompyfunc(mpmath.sqrt))
    erf = staticmethod(_frompyfunc(mpmath.erf))
    tanh = staticmethod(_frompyfunc(mpmath.tanh))
    sin = staticmethod(_frompyfunc(mpmath.sin))
    cos = staticmethod(_frompyfunc(mpmath.cos))

    def to_float(self, x: Any) -> np.ndarray:
        return np.asarray(_frompyfunc(float)(x), dtype=np.float64)


class Arb(Precision):
    """Ball arithmetic (python-flint's arb) at ``bits`` of working precision. Certified."""

    certified = True

    def __init__(self, bits: int = DEFAULT_ARB_BITS):
        if not isinstance(bits, int) or isinstance(bits, bool) or not 53 <= bits <= 100_000:
            raise PrecisionError("bits", "an integer from 53 to 100000", repr(bits))
        self.bits = bits
        self.name = f"arb:{bits}"

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        saved = flint.ctx.prec
        flint.ctx.prec = self.bits
        try:
            yield
        finally:
            flint.ctx.prec = saved

    def asarray(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(_frompyfunc(flint.arb)(np.asarray(x, dtype=np.float64)), dtype=object)

    def const(self, value: float | int) -> flint.arb:
        return flint.arb(value)

    def pi(self) -> flint.arb:
        return flint.arb.pi()

    exp = staticmethod(_frompyfunc(flint.arb.exp))
    expm1 = staticmethod(_frompyfunc(flint.arb.expm1))
    log = staticmethod(_frompyfunc(flint.arb.log))
    log1p = staticmethod(_frompyfunc(flint.arb.log1p))
    sqrt = staticmethod(_frompyfunc(flint.arb.sqrt))
    erf = staticmethod(_frompyfunc(flint.arb.erf))
    tanh = staticmethod(_frompyfunc(flint.arb.tanh))
    sin = staticmethod(_frompyfunc(flint.arb.sin))
    cos = staticmethod(_frompyfunc(flint.arb.cos))

    def matmul(self, a: Any, b: Any) -> np.ndarray:
        """Batched matmul through flint's arb_mat (C loops; rigorous error propagation)."""
        a = np.asarray(a, dtype=object)
        b = np.asarray(b, dtype=object)
        vector_a, vector_b = a.ndim == 1, b.ndim == 1
        if vector_a:
            a = a[None, :]
        if vector_b:
            b = b[:, None]
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a = np.broadcast_to(a, batch + a.shape[-2:])
        b = np.broadcast_to(b, batch + b.shape[-2:])
        out = np.empty(batch + (a.shape[-2], b.shape[-1]), dtype=object)
        for index in np.ndindex(*batch):
            product = flint.arb_mat(a[index].tolist()) * flint.arb_mat(b[index].tolist())
            out[index] = np.array(product.entries(), dtype=object).reshape(a.shape[-2], b.shape[-1])
        if vector_a:
            out = out[..., 0, :]
        if vector_b:
            out = out[..., 0]
        return out

    def to_float(self, x: Any) -> np.ndarray:
        return np.asarray(_frompyfunc(lambda b: float(b.mid()))(x), dtype=np.float64)

    def finalize(self, x: Any) -> BallArray:
        return BallArray(x)


FLOAT64 = Float64()


# ----------------------------------------------------------------------------------------
# Ball arrays


def _float_up(value: flint.arb) -> float:
    """Smallest float64 >= every point of the ball ``value`` (its exact upper endpoint, rounded up)."""
    upper = value.upper()  # an exact dyadic number (radius 0), so the comparison below is decided
    f = float(upper)
    if flint.arb(f) < upper:
        f = float(np.nextafter(f, np.inf))
    return f


def _radius_up(ball: flint.arb) -> float:
    return _float_up(ball.rad())


def _conversion_error_up(ball: flint.arb) -> float:
    """Upper bound on |float(mid) - x| over every x in the ball (ball arithmetic encloses the difference)."""
    return _float_up(abs(ball - flint.arb(float(ball.mid()))))


def arb_from_mpf(value: mpmath.mpf) -> flint.arb:
    """Exact arb copy of an mpmath number (its binary mantissa and exponent)."""
    if not mpmath.isfinite(value):
        return flint.arb.nan()
    # _mpf_ = (sign, mantissa, exponent, bitcount); mpf(value) would round to the current precision
    sign, mantissa, exponent, _ = value._mpf_
    mantissa = -int(mantissa) if sign else int(mantissa)
    saved = flint.ctx.prec
    flint.ctx.prec = max(saved, int(mantissa).bit_length() + 8)  # m * 2^e is then exact
    try:
        return flint.arb((flint.fmpz(int(mantissa)), int(exponent)))
    finally:
        flint.ctx.prec = saved


def _as_exact_balls(x: Any, argument: str) -> np.ndarray:
    """Exact arb objects for float64 arrays, mpmath object arrays, or BallArrays."""
    if isinstance(x, BallArray):
        return x.balls
    arr = np.asarray(x)
    if arr.dtype == object:
        def convert(v: Any) -> flint.arb:
            if isinstance(v, flint.arb):
                return v
            if isinstance(v, mpmath.mpf):
                return arb_from_mpf(v)
            return flint.arb(float(v))
        return np.asarray(_frompyfunc(convert)(arr), dtype=object)
    if arr.dtype.kind not in "fiu":
        raise DTypeError(argument, "a real float array, mpmath objects or a BallArray", str(arr.dtype))
    return np.asarray(_frompyfunc(flint.arb)(arr.astype(np.float64)), dtype=object)


class BallArray:
    """An array of arb balls, each guaranteed to contain the exact real result.

    ``mid`` and ``rad`` are float64 views: ``rad`` is the ball radius rounded up.
    ``to_float64()`` returns nearest float64 values with a rigorous bound on
    their distance from the exact result (radius plus midpoint rounding).
    The balls themselves are in ``balls`` (an object array of ``flint.arb``).
    """

    __array_priority__ = 100

    def __init__(self, balls: Any):
        arr = np.asarray(balls, dtype=object)
        if arr.ndim == 0 and not isinstance(arr.item(), flint.arb):
            raise DTypeError("balls", "flint.arb objects", type(arr.item()).__name__)
        self.balls = arr

    @property
    def shape(self) -> tuple[int, ...]:
        return self.balls.shape

    @property
    def ndim(self) -> int:
        return self.balls.ndim

    @property
    def size(self) -> int:
        return self.balls.size

    def __len__(self) -> int:
        return len(self.balls)

    def __getitem__(self, index: Any) -> BallArray:
        return BallArray(self.balls[index])

    @functools.cached_property
    def mid(self) -> np.ndarray:
        return np.asarray(_frompyfunc(lambda b: float(b.mid()))(self.balls), dtype=np.float64)

    @functools.cached_property
    def rad(self) -> np.ndarray:
        return np.asarray(_frompyfunc(_radius_up)(self.balls), dtype=np.float64)

    def to_float64(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, error): |values - exact| <= error entrywise, rigorously."""
        return self.mid, np.asarray(_frompyfunc(_conversion_error_up)(self.balls), dtype=np.float64)

    def contains(self, x: Any) -> np.ndarray:
        """Entrywise: does the ball contain ``x`` (float64, mpmath, or a ball, exactly)?"""
        other = _as_exact_balls(x, "x")
        return np.asarray(np.frompyfunc(flint.arb.contains, 2, 1)(self.balls, other), dtype=bool)

    def overlaps(self, other: Any) -> np.ndarray:
        """Entrywise: can the two values be equal (the balls intersect)?"""
        balls = _as_exact_balls(other, "other")
        return np.asarray(np.frompyfunc(flint.arb.overlaps, 2, 1)(self.balls, balls), dtype=bool)

    def within(self, x: Any, tolerance: Any) -> np.ndarray:
        """Entrywise: is |x - exact| <= tolerance possible, i.e. does [x +- tolerance] meet the ball?

        Exact comparisons; ``x`` and ``tolerance`` are float64 arrays (broadcast).
        """
        x = np.asarray(x, dtype=np.float64)
        tolerance = np.asarray(tolerance, dtype=np.float64)
        interval = np.frompyfunc(lambda m, r: flint.arb(float(m), float(r)), 2, 1)(x, tolerance)
        return self.overlaps(np.asarray(interval, dtype=object))

    def max_rad(self) -> float:
        return float(np.max(self.rad)) if self.size else 0.0

    def rel_rad(self) -> np.ndarray:
        """Radius relative to |midpoint| (inf where the midpoint is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.rad / np.abs(self.mid)

    def __repr__(self) -> str:
        return f"BallArray(shape={self.shape}, max_rad={self.max_rad():.3g})"


# ----------------------------------------------------------------------------------------
# Public wrappers

_PRECISIONS: dict[str, Callable[..., Precision]] = {"float64": Float64, "mp": Mp, "arb": Arb}


def resolve_precision(precision: str | Precision) -> Precision:
    """A Precision object from ``"float64"``, ``"mp"``, ``"mp:DIGITS"``, ``"arb"``, ``"arb:BITS"``."""
    if isinstance(precision, Precision):
        return precision
    if not isinstance(precision, str):
        raise PrecisionError("precision", "'float64', 'mp[:digits]', 'arb[:bits]' or a Precision", repr(precision))
    name, _, size = precision.partition(":")
    if name not in _PRECISIONS or (name == "float64" and size):
        raise PrecisionError("precision", "'float64', 'mp[:digits]', 'arb[:bits]' or a Precision", repr(precision))
    if not size:
        return _PRECISIONS[name]()
    if not size.isdigit():
        raise PrecisionError("precision", f"'{name}:N' with N a positive integer", repr(precision))
    return _PRECISIONS[name](int(size))


def as_float64_array(x: Any, argument: str, *, allow_neg_inf: bool = False) -> np.ndarray:
    """Validate and convert one input: real floats only, exact upcast to float64, finite."""
    if isinstance(x, (np.ndarray, np.generic, float, int, list, tuple)) and not isinstance(x, bool):
        arr = np.asarray(x)
    else:
        raise DTypeError(argument, "a NumPy float64 array (or array-like of real floats)", type(x).__name__)
    if arr.dtype.kind not in "fiu":
        raise DTypeError(argument, "a real floating-point array", str(arr.dtype))
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if allow_neg_inf:
        bad &= ~np.isneginf(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteError(argument, "finite values" + (" (or -inf)" if allow_neg_inf else ""),
                             f"{arr[where]} at index {where}")
    return arr


def require_positive_int(value: Any, argument: str) -> int:
    """``value`` as an int if it is a positive integer (not a bool), else InvalidArgumentError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(argument, "a positive integer", repr(value))
    return int(value)


def require_choice(value: Any, choices: Sequence[Any], argument: str) -> Any:
    """``value`` if it is one of ``choices`` (a name from a fixed list), else InvalidArgumentError naming ``argument``."""
    if value not in choices:
        raise InvalidArgumentError(argument, f"one of {tuple(choices)}", repr(value))
    return value


def require_real(value: Any, argument: str, *, low: float = -math.inf, low_inclusive: bool = True) -> float:
    """``value`` as a float if it is a finite real number >= low (> low unless low_inclusive)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(argument, "a finite real number", repr(value))
    number = float(value)
    in_range = number >= low if low_inclusive else number > low
    if not math.isfinite(number) or not in_range:
        relation = ">=" if low_inclusive else ">"
        expected = "a finite real number" + ("" if low == -math.inf else f" {relation} {low:g}")
        raise InvalidArgumentError(argument, expected, repr(value))
    return number


F = TypeVar("F", bound=Callable[..., Any])


def _finalize_tree(xp: Precision, out: Any) -> Any:
    if isinstance(out, tuple):
        return tuple(_finalize_tree(xp, o) for o in out)
    if isinstance(out, dict):
        return {k: _finalize_tree(xp, v) for k, v in out.items()}
    if isinstance(out, (np.ndarray, flint.arb, mpmath.mpf, np.floating, float)):
        if xp.certified:
            return BallArray(out)
        return out
    return out


def reference_function(*, arrays: Sequence[str] = (), params: Sequence[str] = (),
                       neg_inf_ok: Sequence[str] = ()) -> Callable[[F], Any]:
    """Make a public reference function from a generic one ``fn(xp, ...)``.

    The public function has the same parameters without ``xp`` plus a keyword
    ``precision``. Arguments named in ``arrays`` are validated (real, finite,
    exact float64) and converted to the precision's arrays; ``params`` name
    mappings of such arrays (parameter dicts). ``neg_inf_ok`` lists array
    arguments that may hold -inf (additive masks). The generic function stays
    reachable as ``.generic`` for composition inside other reference functions.
    """

    def decorate(fn: F) -> Any:
        signature = inspect.signature(fn)
        public_params = list(signature.parameters.values())[1:]
        precision_param = inspect.Parameter("precision", inspect.Parameter.KEYWORD_ONLY, default="float64",
                                            annotation="str | Precision")

        @functools.wraps(fn)
        def public(*args: Any, precision: str | Precision = "float64", **kwargs: Any) -> Any:
            xp = resolve_precision(precision)
            bound = signature.bind(xp, *args, **kwargs)
            bound.apply_defaults()
            with xp.context():
                for name in arrays:
                    value = bound.arguments.get(name)
                    if value is not None:
                        arr = as_float64_array(value, name, allow_neg_inf=name in neg_inf_ok)
                        bound.arguments[name] = xp.asarray(arr)
                for name in params:
                    value = bound.arguments.get(name)
                    if value is not None:
                        bound.arguments[name] = convert_params(xp, value, name)
                out = fn(*bound.args, **bound.kwargs)
                return _finalize_tree(xp, out)

        public.__signature__ = signature.replace(parameters=[*public_params, precision_param])  # type: ignore[attr-defined]
        public.generic = fn  # type: ignore[attr-defined]
        return public

    return decorate


def convert_params(xp: Precision, params: Mapping[str, Any], argument: str = "params") -> dict[str, Any]:
    """Validate and convert every array in a (flat) parameter mapping; non-arrays pass through."""
    if not isinstance(params, Mapping):
        raise DTypeError(argument, "a mapping from parameter names to float arrays", type(params).__name__)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, (np.ndarray, list, tuple, float)) and not isinstance(value, bool):
            out[key] = xp.asarray(as_float64_array(value, f"{argument}[{key!r}]"))
        else:
            out[key] = value
    return out
