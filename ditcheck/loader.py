"""One loader for ``MODULE:ATTR`` specifications (the CLI, ``ditcheck validate``, ``ditcheck criteria``, the plugin).

``MODULE`` is a dotted module name (imported as ``python -m`` would: the current directory is importable) or a
path to a ``.py`` file (its folder goes on ``sys.path`` so that sibling imports work); ``ATTR`` may be dotted.
An attribute that is a zero-argument factory (a class or function needing no arguments) is called once to
build the object. Every failure is a :class:`LoadError` naming the argument the spec came from and saying
what went wrong: no colon, no such file, the import failed (with the original message), no such attribute,
or the factory raised / returned the wrong kind of object (:class:`FactoryError`).

A .py file's sibling imports are its own: on every load its folder is moved to ``sys.path[0]``, and a module cached
from another loaded file's own copy of a top-level name (``other/name/__init__.py`` or ``other/name.py``, with its
submodules) is set aside from ``sys.modules`` when the file's folder has an importable copy of that name
(``folder/name/__init__.py`` or ``folder/name.py``), so a fork and its upstream side by side each get their own
``models`` package, also when loaded a, b, a. A failed load leaves ``sys.modules``, ``sys.path`` and the record
of loaded folders as before: its own half-imported siblings removed, those set aside for it put back.

Limits (not handled):

- a sibling import run after another file with a same-named sibling was loaded (inside ``forward``, or in a
  factory called only after the other file's load) gets whatever ``sys.modules`` then holds for that name:
  the other file's copy if that file imported it, not its own (Python keeps one module per name);
- a dotted ``MODULE`` (``models.dit:DiT``) whose top-level package is already cached from a loaded file's folder
  is that cached package, whatever the current directory holds: a dotted reference beside a file target that
  imports a package of the same name is the target's code;
- a namespace package (a sibling folder without ``__init__.py``) is never set aside: a namespace portion loses
  to a regular package of that name anywhere on ``sys.path``, so it is not taken for a copy of its own;
- a sibling named like a module already imported from elsewhere (a ``random.py`` beside the file, an installed
  package, one in a .venv inside a loaded folder) is not imported: the file gets the cached module, as Python's
  own import would.

This module sits in its own layer just above ``ditcheck.reference`` (pyproject's import contract): it
imports only the reference's errors, the standard library and torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ditcheck.reference.errors import InvalidArgumentError

__all__ = ["LoadError", "FactoryError", "SPEC_FORMAT", "split_spec", "import_module_or_file", "resolved_spec", "load",
           "takes_no_arguments", "build", "load_module", "load_function"]

#: How a spec is written, for error messages and help texts.
SPEC_FORMAT = "MODULE:ATTR (MODULE a dotted module name or a path to a .py file, e.g. mypkg.attn:flash or model.py:make)"


class LoadError(InvalidArgumentError):
    """A ``MODULE:ATTR`` spec could not be turned into an object (``argument`` names where the spec came from)."""


class FactoryError(LoadError):
    """A zero-argument factory raised, or returned something other than what was asked for."""


def split_spec(spec: str, *, argument: str = "target") -> tuple[str, str]:
    """``"MODULE:ATTR"`` -> ``("MODULE", "ATTR")``; the last colon splits (a Windows drive letter stays in MODULE)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise LoadError(argument, SPEC_FORMAT, repr(spec))
    module_name, attribute = spec.rsplit(":", 1)
    if not module_name or not attribute:
        raise LoadError(argument, f"{SPEC_FORMAT} with both parts non-empty", repr(spec))
    return module_name, attribute


def _is_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


#: the folders of the .py files loaded so far (each put on sys.path for its sibling imports)
_LOADED_FOLDERS: list[Path] = []


def _location(module: ModuleType) -> Path | None:
    """The file a module was imported from (None: built in, or a namespace package, which has no file)."""
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _own_copy(folder: Path, top: str) -> Path | None:
    """The file ``import top`` runs when ``folder`` comes first on sys.path: ``folder/top/__init__.py`` or else
    ``folder/top.py`` (the order of Python's path finder); None when ``folder`` holds neither.

    A directory without ``__init__.py`` does not count: as a namespace package portion it loses to a regular
    package of that name anywhere on sys.path, so it is no copy of its own (and a data folder is no package)."""
    for candidate in (folder / top / "__init__.py", folder / f"{top}.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _top_level_names(predicate: Callable[[str, ModuleType], bool]) -> set[str]:
    """The top-level names of the cached top-level modules for which ``predicate(name, module)`` holds."""
    return {name for name, module in list(sys.modules.items())
            if "." not in name and module is not None and predicate(name, module)}


def _with_top_level(tops: set[str]) -> list[str]:
    """Every cached module name in those top-level packages (the package and its submodules)."""
    return [name for name in list(sys.modules) if name.split(".")[0] in tops]


def _shadowing_siblings(folder: Path) -> list[str]:
    """The cached modules that a file in ``folder`` would import from its own folder but that were imported from
    another loaded file's folder: a fork and its upstream side by side, each importing its own ``models`` package.
    Left in sys.modules, the second file would silently get the first one's code (a reference that is the target).

    Only a package or module cached from exactly another loaded folder's own copy of that name is set aside, and
    only when ``folder`` has an importable copy of its own: an installed package (in a .venv inside a loaded
    folder too), the standard library, or a same-named data folder are left alone."""
    others = [other for other in _LOADED_FOLDERS if other != folder]

    def cached_from_another_folder(top: str, module: ModuleType) -> bool:
        cached, own = _location(module), _own_copy(folder, top)
        return (cached is not None and own is not None and cached != own
                and any(cached == _own_copy(other, top) for other in others))

    return _with_top_level(_top_level_names(cached_from_another_folder))


def _own_siblings(folder: Path) -> list[str]:
    """The cached modules imported from ``folder``'s own copies of their top-level names."""
    return _with_top_level(_top_level_names(
        lambda top, module: _location(module) is not None and _location(module) == _own_copy(folder, top)))


def _put_first_on_sys_path(folder: Path) -> None:
    """``folder`` at sys.path[0], moved there if it was further down: the file loaded last imports its own
    siblings, also when it was loaded before another file (a, b, a: the second a must not import b's)."""
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))


def _restore(modules: dict[str, ModuleType], path: list[str], loaded: list[Path], failed_folder: Path) -> None:
    """Undo a failed file load: its sibling packages (half imported) leave sys.modules, the packages set aside
    for it come back, and sys.path and the loaded folders are as before. Other modules it imported first
    (an installed package) stay: they are the same for every file, and some cannot be imported twice."""
    for name in _own_siblings(failed_folder):
        if name not in modules:
            del sys.modules[name]
    for name, module in modules.items():
        if sys.modules.get(name) is not module:
            sys.modules[name] = module
    sys.path[:] = path
    _LOADED_FOLDERS[:] = loaded


def import_module_or_file(name: str, *, argument: str = "target") -> ModuleType:
    """The module named ``name``: a dotted module, or a .py file executed afresh under a private module name."""
    if _is_path(name):
        path = Path(name).resolve()
        if not path.is_file():
            raise LoadError(argument, "an existing .py file before ':'", f"no file {str(path)!r}")
        module_name = f"_ditcheck_loaded_{path.stem}_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise LoadError(argument, "an importable .py file", str(path))
        module = importlib.util.module_from_spec(spec)
        modules_before, path_before, loaded_before = dict(sys.modules), list(sys.path), list(_LOADED_FOLDERS)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up by name while it runs
        _put_first_on_sys_path(path.parent)  # sibling imports of the file
        for shadowed in _shadowing_siblings(path.parent):
            # the file imports its own siblings, now and in its factory (a lazy `from models import DiT` when it is
            # built); the other file keeps the objects it already holds
            del sys.modules[shadowed]
        if path.parent not in _LOADED_FOLDERS:
            _LOADED_FOLDERS.append(path.parent)
        try:
            spec.loader.exec_module(module)
        except BaseException as error:  # SystemExit in a script's top level is a failed import too
            sys.modules.pop(module_name, None)
            _restore(modules_before, path_before, loaded_before, path.parent)
            raise LoadError(argument, f"{path.name} to import", f"{type(error).__name__}: {error}") from error
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: a module in the current directory is importable
    try:
        return importlib.import_module(name)
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        raise LoadError(argument, f"module {name!r} to import", f"{type(error).__name__}: {error}") from error


def resolved_spec(spec: Any, folder: str | Path | None = None) -> Any:
    """``spec`` with a .py file's path made absolute (``models.py:DiT_S_2`` -> ``/home/me/models.py:DiT_S_2``; a
    relative path is read from ``folder``, default the current directory), so a saved reproducer or a targets file
    loads the same target from any directory; a dotted module, a malformed spec or a non-string is returned
    unchanged."""
    try:
        module_name, attribute = split_spec(spec)
    except LoadError:
        return spec
    return f"{(Path(folder or '.') / module_name).resolve()}:{attribute}" if _is_path(module_name) else spec


def load(spec: str, *, argument: str = "target") -> Any:
    """The object named by ``spec`` (``MODULE:ATTR``), not called: see :func:`build` for factories."""
    module_name, attribute = split_spec(spec, argument=argument)
    obj: Any = import_module_or_file(module_name, argument=argument)
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise LoadError(argument, f"an attribute {attribute!r} of {module_name!r}", f"no {part!r}")
        obj = getattr(obj, part)
    return obj


def takes_no_arguments(obj: Any) -> bool:
    """True when ``obj()`` is a valid call: every parameter has a default (and there is no ``*args`` to fill)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    parameters = signature.parameters.values()
    return all(p.default is not inspect.Parameter.empty or p.kind == p.VAR_KEYWORD for p in parameters)


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__


def build(obj: Any, accept: Callable[[Any], bool], expected: str, *, argument: str = "target") -> Any:
    """``obj`` itself if ``accept(obj)``, else ``obj()`` (a zero-argument factory) if that is accepted.

    Raises :class:`LoadError` when ``obj`` is neither, :class:`FactoryError` when the factory raises or
    returns something ``accept`` rejects.
    """
    if accept(obj):
        return obj
    if not callable(obj):
        raise LoadError(argument, f"{expected} or a zero-argument factory of one", type(obj).__name__)
    try:
        built = obj()
    except Exception as error:
        raise FactoryError(argument, f"a zero-argument factory of {expected}",
                           f"calling {_name(obj)}() raised {type(error).__name__}: {error}") from error
    if not accept(built):
        raise FactoryError(argument, f"a zero-argument factory of {expected}",
                           f"{_name(obj)}() returned a {type(built).__name__}")
    return built


def load_module(spec: Any, *, argument: str = "target") -> torch.nn.Module:
    """An ``nn.Module`` from a spec string (or an already loaded object): the module, or a factory's result."""
    obj = load(spec, argument=argument) if isinstance(spec, str) else spec
    return build(obj, lambda o: isinstance(o, torch.nn.Module), "an nn.Module", argument=argument)


def load_function(spec: Any, *, argument: str = "target") -> Callable[..., Any]:
    """A callable from a spec string (or a loaded object); a zero-argument factory is called to get it.

    A callable that needs arguments (``fn(q, k, v)``, an ``nn.Module``) is returned as it is; a Python
    callable needing none is taken to be a factory. Builtins are never called (their signatures are opaque).
    """
    obj = load(spec, argument=argument) if isinstance(spec, str) else spec
    is_factory = (callable(obj) and not isinstance(obj, torch.nn.Module) and not inspect.isbuiltin(obj)
                  and takes_no_arguments(obj))
    if not is_factory:
        return build(obj, callable, "a callable", argument=argument)
    return build(obj, lambda o: o is not obj and callable(o), "a callable", argument=argument)
