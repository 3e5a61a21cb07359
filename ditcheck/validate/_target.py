"""Calling a target in isolation (exceptions and timeouts become messages); loading is :mod:`ditcheck.loader`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ditcheck.loader import LoadError

__all__ = ["TargetError", "TargetTimeoutError", "Heartbeat", "call_isolated", "require_output", "DEFAULT_TIMEOUT"]

#: Seconds one call of the target may take before it counts as hung (tiny inputs: real code takes milliseconds).
DEFAULT_TIMEOUT = 60.0


class TargetError(LoadError):
    """The target could not be loaded, built or called (the CLI's exit code 2), or returned something unusable.

    A :class:`~ditcheck.loader.LoadError` (what the loader raises), so ``except LoadError`` catches both.
    """

    def describe(self) -> str:
        """A short message for a report: what happened when the target was called, or what was wrong with its output."""
        if self.argument == "target" and self.got is not None:
            return self.got
        return f"{self.argument}: expected {self.expected}; got {self.got}"


class TargetTimeoutError(TargetError):
    """A call of the target ran past its time-out (it may still be running: later calls are not made)."""


class Heartbeat:
    """When a long call last made progress (a submodule call of the target finishing), so that a time-out means
    "no progress for this long", not "longer than this in total": validating a full-size model recomputes every
    submodule call as it finishes and runs for minutes without being hung."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.paused = False

    def beat(self, *_: Any) -> None:
        """Record progress now (usable as a forward hook: extra arguments are ignored)."""
        self.last = time.monotonic()

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """The time-out does not run inside (not nested): the caller's own work that the call may wait for, such as
        comparing the outputs the call hands over, never counts against the call; progress is recorded at the end."""
        self.paused = True
        try:
            yield
        finally:
            self.beat()  # before the clock runs again
            self.paused = False


def call_isolated(fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT,
                  heartbeat: Heartbeat | None = None, **kwargs: Any) -> Any:
    """fn(*args, **kwargs); an exception or a call running past ``timeout`` seconds raises TargetError.

    ``heartbeat``: ``fn`` beats it as it makes progress, and the time-out counts from the last beat instead of
    from the start (and stands still while the heartbeat is paused, :meth:`Heartbeat.pause`). A hung call cannot
    be killed from Python: it is left running in a daemon thread and reported.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as error:  # the target's failure is data here, reported to the user
            outcome["error"] = error

    progress = heartbeat or Heartbeat()  # never beaten: the call's total time
    progress.beat()
    worker = threading.Thread(target=run, daemon=True, name="ditcheck-target")
    worker.start()
    while worker.is_alive():
        remaining = timeout if progress.paused else progress.last + timeout - time.monotonic()
        if remaining <= 0:
            expected, got = ((f"a call progressing at least every {timeout:g} s", f"timed out after {timeout:g} s "
                              "without progress") if heartbeat else
                             (f"a call returning within {timeout:g} s", f"timed out after {timeout:g} s"))
            raise TargetTimeoutError("target", expected, got)
        worker.join(remaining)
    if "error" in outcome:
        error = outcome["error"]
        raise TargetError("target", "a call that returns", f"raised {type(error).__name__}: {error}") from error
    return outcome["value"]


def require_output(value: Any, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``value`` if the target returned a torch.Tensor of ``shape`` and ``dtype`` (the input dtype); else TargetError
    saying what is wrong with it (a wrong output is a failed call, never a crash of the validator)."""
    if not isinstance(value, torch.Tensor):
        raise TargetError("output", "a torch.Tensor", type(value).__name__)
    if tuple(value.shape) != shape:
        raise TargetError("output", f"shape {shape}", str(tuple(value.shape)))
    if value.dtype != dtype:
        raise TargetError("output", f"dtype {dtype} (the input dtype)", str(value.dtype))
    return value
