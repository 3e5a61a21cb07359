"""How a property reports failure: an AssertionError subclass that carries the case."""

from __future__ import annotations

from typing import Any

__all__ = ["PropertyViolation", "require"]


class PropertyViolation(AssertionError):
    """A property did not hold. ``claim`` is the claim id of docs/claims.md (or area), ``context`` the case."""

    def __init__(self, claim: str, message: str, **context: Any):
        self.claim = claim
        self.context = context
        details = "; ".join(f"{k}={v!r}" for k, v in context.items())
        super().__init__(f"[{claim}] {message}" + (f" ({details})" if details else ""))


def require(condition: Any, claim: str, message: str, **context: Any) -> None:
    """Raise PropertyViolation(claim, message, **context) unless ``condition`` is truthy."""
    if not bool(condition):
        raise PropertyViolation(claim, message, **context)
