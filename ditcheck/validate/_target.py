"""Loading a target named MODULE:ATTR and calling it in isolation (exceptions and timeouts become messages)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ditcheck.reference.errors import InvalidArgumentError

__all__ = ["TargetError", "TargetTimeoutError", "load_target", "resolve_factory", "call_isolated", "DEFAULT_TIMEOUT"]

#: Seconds one call of the target may take before it counts as hung (tiny inputs: real code takes milliseconds).
DEFAULT_TIMEOUT = 60.0


class TargetError(InvalidArgumentError):
    """The target could not be loaded, built or called (the CLI's exit code 2), or returned something unusable."""

    def describe(self) -> str:
        """A short message for a report: what happened when the target was called, or what was wrong with its output."""
        if self.argument == "target" and self.got is not None:
            return self.got
        return f"{self.argument}: expected {self.expected}; got {self.got}"


class TargetTimeoutError(TargetError):
    """A call of the target ran past its time-out (it may still be running: later calls are not made)."""


def _import_module(name: str) -> Any:
    if name.endswith(".py") or "/" in name or "\\" in name:
        path = Path(name).resolve()
        if not path.is_file():
            raise TargetError("target", "MODULE:ATTR with MODULE a dotted module name or a .py file",
                              f"no file {str(path)!r}")
        module_name = f"_ditcheck_target_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise TargetError("target", "an importable .py file", str(path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.parent))  # sibling imports of the target file
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[module_name]
            raise TargetError("target", f"{path.name} to import", f"{type(error).__name__}: {error}") from error
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: a module in the current directory is importable
    try:
        return importlib.import_module(name)
    except Exception as error:
        raise TargetError("target", f"module {name!r} to import", f"{type(error).__name__}: {error}") from error


def load_target(spec: str) -> Any:
    """The object named by ``MODULE:ATTR`` (MODULE a dotted module or a path to a .py file; ATTR may be dotted).

    A dotted MODULE is imported as ``python -m`` would: with the current directory on the path.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise TargetError("target", "MODULE:ATTR (e.g. mypkg.attn:flash or path/to/file.py:make_model)", repr(spec))
    module_name, attribute = spec.rsplit(":", 1)
    if not module_name or not attribute:
        raise TargetError("target", "MODULE:ATTR with both parts non-empty", repr(spec))
    obj = _import_module(module_name)
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise TargetError("target", f"an attribute {attribute!r} of {module_name!r}", f"no {part!r}")
        obj = getattr(obj, part)
    return obj


def _takes_no_arguments(obj: Any) -> bool:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in signature.parameters.values()) and not any(
        p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())


def resolve_factory(obj: Any, want_module: bool) -> Any:
    """A zero-argument factory is called once to get the target; ``want_module``: the result must be an nn.Module."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj
    if want_module:
        if inspect.isclass(obj) or callable(obj):
            try:
                built = obj()
            except Exception as error:
                raise TargetError("target", "an nn.Module or a zero-argument callable returning one",
                                  f"calling {getattr(obj, '__name__', obj)!r}() raised {type(error).__name__}: "
                                  f"{error}") from error
            if isinstance(built, torch.nn.Module):
                return built
            raise TargetError("target", "an nn.Module or a zero-argument callable returning one",
                              f"{type(built).__name__}")
        raise TargetError("target", "an nn.Module or a zero-argument callable returning one", type(obj).__name__)
    if not callable(obj):
        raise TargetError("target", "a callable fn(q, k, v) or a zero-argument factory of one", type(obj).__name__)
    if _takes_no_arguments(obj) and not inspect.isbuiltin(obj):
        try:
            built = obj()
        except Exception as error:
            raise TargetError("target", "a callable fn(q, k, v) or a zero-argument factory of one",
                              f"calling the factory raised {type(error).__name__}: {error}") from error
        if not callable(built):
            raise TargetError("target", "a zero-argument factory returning a callable fn(q, k, v)",
                              type(built).__name__)
        return built
    return obj


def call_isolated(fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> Any:
    """fn(*args, **kwargs); an exception or a call running past ``timeout`` seconds raises TargetError.

    A hung call cannot be killed from Python: it is left running in a daemon thread and reported.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as error:  # the target's failure is data here, reported to the user
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True, name="ditcheck-target")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TargetTimeoutError("target", f"a call returning within {timeout:g} s", f"timed out after {timeout:g} s")
    if "error" in outcome:
        error = outcome["error"]
        raise TargetError("target", "a call that returns", f"raised {type(error).__name__}: {error}") from error
    return outcome["value"]
