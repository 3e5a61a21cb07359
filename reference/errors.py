"""Typed errors for bad input. Every error names the argument and what was expected."""

from __future__ import annotations

__all__ = [
    "InvalidArgumentError",
    "NonFiniteError",
    "ShapeError",
    "DTypeError",
    "NotOrthonormalError",
    "NotPositiveDefiniteError",
    "TimeOutOfRangeError",
    "FullyMaskedRowError",
    "PrecisionError",
]


class InvalidArgumentError(ValueError):
    """Base class: ``argument`` is the offending parameter's name, ``expected`` what it should be."""

    def __init__(self, argument: str, expected: str, got: str | None = None):
        self.argument = argument
        self.expected = expected
        self.got = got
        message = f"argument {argument!r}: expected {expected}"
        if got is not None:
            message += f"; got {got}"
        super().__init__(message)


class NonFiniteError(InvalidArgumentError):
    """An input holds NaN or +-Inf where only finite numbers make sense."""


class ShapeError(InvalidArgumentError):
    """An input has the wrong number of dimensions or sizes that do not match."""


class DTypeError(InvalidArgumentError, TypeError):
    """An input has a dtype that cannot be converted exactly to float64."""


class NotOrthonormalError(InvalidArgumentError):
    """A basis matrix B fails B^T B = I."""


class NotPositiveDefiniteError(InvalidArgumentError):
    """A covariance or kernel matrix is not symmetric positive (semi)definite."""


class TimeOutOfRangeError(InvalidArgumentError):
    """A diffusion time lies outside its schedule's domain."""


class FullyMaskedRowError(InvalidArgumentError):
    """A softmax row has every entry masked out, so its normalisation is 0/0."""


class PrecisionError(InvalidArgumentError):
    """An unknown precision name or an invalid number of digits / bits."""
