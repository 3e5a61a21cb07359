"""The forward call's inputs a user supplies (``ditcheck validate dit MODEL --inputs MODULE:ATTR``).

ditcheck builds every input itself for the layouts it recognises (the original DiT layout, every diffusers
transformer class in :mod:`ditcheck.validate.zoo`). Any other torch model (an original PixArt, Flux, Latte or
Open-Sora code base, a research fork) is checked component by component from inputs the user gives: an
*inputs function* ``make(seed)`` (or ``make()``) returning the arguments of one forward call, as

* a dict: keyword arguments (``{"x": x, "timestep": t, "y": y}``);
* a tuple or list: positional arguments (``(x, t, y)``);
* a pair (tuple, dict): both;
* one tensor: the only positional argument.

A function taking one parameter receives each example's seed (draw fresh inputs from it); one taking none is
called once per example; a value that is not callable (a dict or tuple at module level) is used for every example.
Floating tensors at any depth are cast to the run's dtype and every tensor moved to its device
(:func:`ditcheck.validate.zoo.to_device`), so one function serves float32 and float64 runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ditcheck.loader import load
from ditcheck.reference.errors import InvalidArgumentError

from ._target import TargetError, call_isolated

__all__ = ["CallArguments", "INPUTS_FORMAT", "INPUTS_HINT", "call_arguments", "inputs_function", "inputs_label", "draw_inputs"]

#: positional and keyword arguments of one forward call
CallArguments = tuple[tuple[Any, ...], dict[str, Any]]

#: what an inputs function returns, for error messages and help texts
INPUTS_FORMAT = ("a dict of keyword arguments, a tuple of positional ones, an (args tuple, kwargs dict) pair or "
                 "one tensor")

#: said where a model is neither the original DiT layout nor a diffusers class
INPUTS_HINT = ("to check any other torch model component by component, give the forward call's inputs: --inputs "
               "MODULE:ATTR (Python: inputs=), a function of the example seed returning " + INPUTS_FORMAT)


def call_arguments(value: Any, *, argument: str = "inputs") -> CallArguments:
    """(args, kwargs) of a forward call from what an inputs function returned (the forms of the module docstring)."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise InvalidArgumentError(argument, "a dict with string keys (keyword arguments)",
                                       repr([key for key in value if not isinstance(key, str)][:3]))
        return (), dict(value)
    if isinstance(value, torch.Tensor):
        return (value,), {}
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and isinstance(value[0], (tuple, list)) and isinstance(value[1], dict):
            return tuple(value[0]), call_arguments(value[1], argument=argument)[1]
        return tuple(value), {}
    raise InvalidArgumentError(argument, INPUTS_FORMAT, type(value).__name__)


def _takes_seed(function: Callable[..., Any]) -> bool:
    """Whether ``function(seed)`` is a valid call (one parameter without a default, or *args)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [p for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1 or (not required and any(p.kind == p.VAR_POSITIONAL for p in parameters))


def inputs_function(inputs: Any, *, argument: str = "inputs") -> Callable[[int], CallArguments]:
    """``seed -> (args, kwargs)`` from ``inputs``: a ``MODULE:ATTR`` string (loaded, not called), a function of the
    seed or of nothing, or fixed values. A function needing more than one argument raises InvalidArgumentError
    naming ``argument``; what the function returns is checked at each call (:func:`call_arguments`)."""
    if isinstance(inputs, str):
        inputs = load(inputs, argument=argument)
    if not callable(inputs) or isinstance(inputs, torch.nn.Module):
        fixed = call_arguments(inputs, argument=argument)
        return lambda seed: fixed
    if _takes_seed(inputs):
        return lambda seed: call_arguments(inputs(seed), argument=argument)
    try:
        inspect.signature(inputs).bind()
    except TypeError as error:
        raise InvalidArgumentError(argument, "a function of the example seed, or of no argument",
                                   f"{getattr(inputs, '__qualname__', inputs)!r}: {error}") from error
    except ValueError:
        pass  # no signature to read (a builtin): called as it is
    return lambda seed: call_arguments(inputs(), argument=argument)


def draw_inputs(function: Callable[[int], CallArguments], seed: int, timeout: float) -> CallArguments:
    """``function(seed)`` (from :func:`inputs_function`) run like a target, in isolation with a time-out: the user's
    code may raise or hang (a TargetError). A malformed return value raises its InvalidArgumentError naming
    ``inputs`` as itself, not wrapped as a failed call."""
    try:
        return call_isolated(function, seed, timeout=timeout)
    except TargetError as error:
        if isinstance(error.__cause__, InvalidArgumentError):
            raise error.__cause__ from None
        raise


def inputs_label(inputs: Any) -> str:
    """How a report names the inputs: the ``MODULE:ATTR`` given, else the function's qualified name."""
    return inputs if isinstance(inputs, str) else getattr(inputs, "__qualname__", "given")
