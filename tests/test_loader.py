"""ditcheck.loader: the one MODULE:ATTR loader (files and dotted modules, factories, a typed error per failure)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ditcheck import loader
from ditcheck.loader import FactoryError, LoadError, build, load, load_function, load_module, resolved_spec, split_spec
from ditcheck.reference.errors import InvalidArgumentError

SOURCE = '''
import torch

import sibling

CONSTANT = 3


class Box:
    class Inner:
        value = 7


def attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


def make_attention():
    return attention


def make_linear():
    return torch.nn.Linear(2, 2)


def raises():
    raise RuntimeError("planted factory failure")


def returns_int():
    return sibling.VALUE


linear = torch.nn.Linear(2, 2)
'''


@pytest.fixture
def target_file(tmp_path: Path) -> Path:
    (tmp_path / "sibling.py").write_text("VALUE = 5\n")
    path = tmp_path / "user_target.py"
    path.write_text(SOURCE)
    return path


def _error(call, kind=LoadError) -> LoadError:
    with pytest.raises(kind) as info:
        call()
    assert isinstance(info.value, InvalidArgumentError)
    return info.value


def test_file_and_dotted_module_and_dotted_attribute(target_file: Path) -> None:
    assert load(f"{target_file}:CONSTANT") == 3
    assert load(f"{target_file}:Box.Inner.value") == 7
    assert load(f"{target_file}:returns_int")() == 5  # the file's folder is importable: sibling imports work
    assert load("ditcheck.reference.errors:InvalidArgumentError") is InvalidArgumentError
    assert split_spec("C:\\models\\m.py:make") == ("C:\\models\\m.py", "make")  # the last colon splits


def test_a_relative_file_path_is_resolved(target_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(target_file.parent)
    assert load("user_target.py:CONSTANT") == 3


def test_a_module_in_the_current_directory_is_importable(target_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(target_file.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(target_file.parent))])
    monkeypatch.delitem(sys.modules, "user_target", raising=False)
    assert load("user_target:CONSTANT") == 3


def test_factories_are_called_once_and_plain_objects_are_not(target_file: Path) -> None:
    fn = load_function(f"{target_file}:make_attention")
    assert fn.__name__ == "attention"
    assert load_function(f"{target_file}:attention").__name__ == "attention"  # needs arguments: not a factory
    assert isinstance(load_module(f"{target_file}:make_linear"), torch.nn.Linear)
    assert isinstance(load_module(f"{target_file}:linear"), torch.nn.Linear)
    assert isinstance(load_module("torch.nn:Identity"), torch.nn.Identity)  # a class is a zero-argument factory
    module = torch.nn.ReLU()
    assert load_function(module) is module  # already loaded objects pass through; a module is never called
    calls = []
    assert build(lambda: calls.append(1) or "built", lambda o: o == "built", "a string") == "built"
    assert calls == [1]


def test_no_colon_or_an_empty_part_names_the_argument() -> None:
    for spec in ("no_colon", ":attr", "module:", 3):
        error = _error(lambda: load(spec, argument="--model"))  # type: ignore[arg-type]
        assert error.argument == "--model" and "MODULE:ATTR" in error.expected


def test_missing_file(tmp_path: Path) -> None:
    error = _error(lambda: load(f"{tmp_path / 'absent.py'}:f", argument="model"))
    assert error.argument == "model" and "absent.py" in str(error.got)


def test_import_failure_keeps_the_original_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken_import.py"
    broken.write_text("import no_such_package_for_ditcheck\n")
    error = _error(lambda: load(f"{broken}:f"))
    assert "ModuleNotFoundError" in str(error.got) and "no_such_package_for_ditcheck" in str(error.got)
    syntax = tmp_path / "syntax_error.py"
    syntax.write_text("def f(:\n")
    assert "SyntaxError" in str(_error(lambda: load(f"{syntax}:f")).got)
    exits = tmp_path / "exits.py"
    exits.write_text("raise SystemExit(3)\n")
    assert "SystemExit" in str(_error(lambda: load(f"{exits}:f")).got)
    assert "ModuleNotFoundError" in str(_error(lambda: load("no_such_package_for_ditcheck.sub:f")).got)


def test_missing_attribute(target_file: Path) -> None:
    error = _error(lambda: load(f"{target_file}:Box.Missing"))
    assert "Box.Missing" in error.expected and "'Missing'" in str(error.got)
    assert "'nope'" in str(_error(lambda: load("ditcheck.loader:nope")).got)


def test_a_factory_that_raises_or_returns_the_wrong_kind(target_file: Path) -> None:
    error = _error(lambda: load_function(f"{target_file}:raises", argument="target"), FactoryError)
    assert "planted factory failure" in str(error.got) and "RuntimeError" in str(error.got)
    error = _error(lambda: load_module(f"{target_file}:returns_int"), FactoryError)
    assert "returns_int() returned a int" in str(error.got)
    error = _error(lambda: load_function(f"{target_file}:CONSTANT"))  # neither a callable nor a factory
    assert error.got == "int" and not isinstance(error, FactoryError)


def test_every_error_is_typed_and_the_loader_is_the_only_one() -> None:
    """validate's TargetError is a LoadError, and no other module carries its own MODULE:ATTR loader."""
    from ditcheck.validate import TargetError

    assert issubclass(TargetError, LoadError) and issubclass(FactoryError, LoadError)
    root = Path(loader.__file__).resolve().parents[1]
    holders = [str(p.relative_to(root)) for folder in ("ditcheck", "properties", "reference")
               for p in (root / folder).rglob("*.py") if "spec_from_file_location" in p.read_text()]
    assert holders == ["ditcheck/loader.py"]


def test_resolved_spec_makes_a_file_path_absolute_and_leaves_modules(tmp_path, monkeypatch) -> None:
    """A saved reproducer loads the target from any directory: a relative .py path becomes absolute."""
    (tmp_path / "models.py").write_text("def factory():\n    return 1\n")
    monkeypatch.chdir(tmp_path)
    resolved = resolved_spec("models.py:factory")
    assert resolved == f"{tmp_path.resolve() / 'models.py'}:factory"
    monkeypatch.chdir(tmp_path.parent)
    assert load(resolved)() == 1
    assert resolved_spec("ditcheck.loader:load") == "ditcheck.loader:load"
    assert resolved_spec("no_colon") == "no_colon" and resolved_spec(len) is len
    assert resolved_spec("models.py:") == "models.py:" and resolved_spec(":factory") == ":factory"  # malformed


@pytest.fixture
def isolated_loads(monkeypatch: pytest.MonkeyPatch):
    """sys.path and the loader's record of loaded folders as they were after the test; the test's sibling
    packages (top-level names starting with 'loader_case_') out of sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(loader, "_LOADED_FOLDERS", [])
    yield
    for name in [name for name in sys.modules if name.startswith("loader_case_")]:
        del sys.modules[name]


def _write(folder: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


_WHO_FACTORY = "import loader_case_sibling\nWHO = loader_case_sibling.WHO\n\ndef who():\n    import loader_case_sibling\n" \
               "    return loader_case_sibling.WHO\n"


def test_a_file_loaded_again_after_another_imports_its_own_siblings_again(tmp_path: Path, isolated_loads) -> None:
    """a, b, a: the second load of a put a's folder back at sys.path[0] (it stayed behind b's: a got b's sibling,
    so `validate --all` with two forks of one upstream compared the second fork's bug with the first's code)."""
    folders = {who: _write(tmp_path / who, {"factory.py": _WHO_FACTORY, "loader_case_sibling.py": f"WHO = {who!r}\n"})
               for who in ("a", "b")}
    loaded = [load(f"{folders[who] / 'factory.py'}:who") for who in ("a", "b", "a")]
    assert [function.__globals__["WHO"] for function in loaded] == ["a", "b", "a"]
    assert loaded[2]() == "a" and sys.path[0] == str(folders["a"])


def test_an_installed_package_inside_a_loaded_folder_is_not_set_aside(tmp_path: Path, isolated_loads) -> None:
    """A package from a .venv inside a loaded file's folder is no sibling of that file, and a same-named data
    folder (no __init__.py) beside the next file does not shadow it: one copy, so isinstance keeps working."""
    project = _write(tmp_path / "project", {
        "model.py": "import loader_case_installed\n\ndef make():\n    return loader_case_installed.Kind()\n",
        ".venv/site/loader_case_installed/__init__.py": "class Kind:\n    pass\n",
        "upstream/model.py": "import loader_case_installed\n\ndef make():\n    return loader_case_installed.Kind()\n",
        "upstream/loader_case_installed/readme.txt": "data, not a package\n"})
    sys.path.append(str(project / ".venv" / "site"))
    built = load(f"{project / 'model.py'}:make")()
    assert isinstance(load(f"{project / 'upstream' / 'model.py'}:make")(), type(built))
    import loader_case_installed  # lazy: imported here, after the loads, as user code would

    assert isinstance(built, loader_case_installed.Kind)


def test_a_data_folder_named_like_another_files_sibling_package_does_not_set_it_aside(tmp_path: Path,
                                                                                      isolated_loads) -> None:
    """A directory without __init__.py beside the second file is no package of its own (a namespace portion
    loses to the first file's regular package), so the first file's package is not imported a second time."""
    first = _write(tmp_path / "first", {"model.py": "import loader_case_models\n",
                                        "loader_case_models/__init__.py": "class Kind:\n    pass\n"})
    second = _write(tmp_path / "second", {"model.py": "import loader_case_models\n",
                                          "loader_case_models/weights.txt": "data\n"})
    first_package = load(f"{first / 'model.py'}:loader_case_models")
    assert load(f"{second / 'model.py'}:loader_case_models") is first_package


def test_a_failed_load_leaves_the_modules_the_path_and_the_loaded_folders_as_before(tmp_path: Path,
                                                                                   isolated_loads) -> None:
    """The second file imports its own package, then fails: its package leaves sys.modules, the first file's
    comes back (a lazy import from the first file's factory gets its own again), sys.path is as before."""
    package = {"loader_case_models/__init__.py": "WHO = {who!r}\n", "loader_case_models/ops.py": "WHO = {who!r}\n"}
    factory = "import loader_case_models, loader_case_models.ops\n{tail}\ndef who():\n" \
              "    import loader_case_models.ops\n    return loader_case_models.WHO + loader_case_models.ops.WHO\n"
    first = _write(tmp_path / "first", {"factory.py": factory.format(tail=""),
                                        **{k: v.format(who="a") for k, v in package.items()}})
    failing = _write(tmp_path / "failing", {"factory.py": factory.format(tail="import loader_case_not_installed\n"),
                                            **{k: v.format(who="b") for k, v in package.items()}})
    who = load(f"{first / 'factory.py'}:who")
    modules = {name: sys.modules[name] for name in ("loader_case_models", "loader_case_models.ops")}
    path, loaded = list(sys.path), list(loader._LOADED_FOLDERS)
    modules_before = set(sys.modules)
    error = _error(lambda: load(f"{failing / 'factory.py'}:who"))
    assert "loader_case_not_installed" in str(error.got)
    assert all(sys.modules[name] is module for name, module in modules.items())
    assert set(sys.modules) == modules_before and sys.path == path and loader._LOADED_FOLDERS == loaded
    assert who() == "aa"
