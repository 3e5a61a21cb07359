"""pytest plugin (entry point ``pytest11``): ditcheck's Hypothesis profiles and attention checks of third-party code.

``--hypothesis-profile NAME`` (Hypothesis' own option) or ``DITCHECK_PROFILE=NAME``
selects smoke, ci or audit. The command-line option wins over the environment.

``pytest --ditcheck-attention MODULE:ATTR`` (or ``DITCHECK_ATTENTION=MODULE:ATTR``) adds one test
per check of ``ditcheck.validate.attention`` (forward and gradients, per adversarial input
kind) run against that function; the run header names the target. ``--ditcheck-self-attention``,
``--ditcheck-gqa`` and ``--ditcheck-mask KIND`` are the command line's ``--self-attention``,
``--gqa`` and ``--mask``. ``--ditcheck-xfail FILE``
lists check ids expected to fail (one per line, ``#`` comments), and ids that match no check
are reported as warnings. Without the option the plugin adds nothing and changes no setting
of another project's suite.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from ditcheck.properties.attention import HALF_PRECISION_KINDS, VALIDATION_KINDS
from ditcheck.properties.profiles import load_profile_from_environment, register_profiles
from ditcheck.properties.validation import Tolerance
from ditcheck.properties.violation import PropertyViolation
from ditcheck.reference.formats import FORMATS

register_profiles()

_TARGET_ENV = "DITCHECK_ATTENTION"
_PARTS = ("forward", "grad")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ditcheck", "ditcheck: validate a third-party attention function")
    group.addoption("--ditcheck-attention", metavar="MODULE:ATTR", default=None,
                    help=f"run ditcheck's attention checks against this fn(q, k, v) (or set {_TARGET_ENV})")
    group.addoption("--ditcheck-xfail", metavar="FILE", default=None,
                    help="file of ditcheck check ids expected to fail, one per line")
    group.addoption("--ditcheck-dtype", default="float32", choices=tuple(FORMATS),
                    help="dtype of q, k, v for --ditcheck-attention (default float32)")
    group.addoption("--ditcheck-layout", default="bhld", choices=("bhld", "blhd"),
                    help="tensor layout of the target: bhld [B, H, L, D] or blhd [B, L, H, D] (default bhld)")
    group.addoption("--ditcheck-examples", type=int, default=20, metavar="N",
                    help="examples per check for --ditcheck-attention (default 20)")
    group.addoption("--ditcheck-seed", type=int, default=0, metavar="S", help="seed of the examples (default 0)")
    group.addoption("--ditcheck-self-attention", action="store_true", default=False,
                    help="draw Lq == Lk only (self-attention targets; one-argument targets get q = k = v = x)")
    group.addoption("--ditcheck-gqa", action="store_true", default=False,
                    help="k, v may have fewer heads than q (Hkv in H, 1 and divisors; head h reads kv head "
                         "h // (H/Hkv))")
    group.addoption("--ditcheck-max-tokens", type=int, default=4096, metavar="N",
                    help="longest Lq and Lk drawn (default 4096; lower it for slow targets)")
    group.addoption("--ditcheck-mask", default="none", choices=("none", "boolean", "additive", "key-padding"),
                    help="pass attn_mask= (boolean, additive) or key_padding_mask= (key-padding) (default none)")


def _target_spec(config: pytest.Config) -> str | None:
    return config.getoption("ditcheck_attention", default=None) or os.environ.get(_TARGET_ENV) or None


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("hypothesis_profile", default=None):
        load_profile_from_environment()
    spec = _target_spec(config)
    if spec:
        # lazy: the loader imports torch, and this plugin is loaded by every pytest run in the environment
        from ditcheck.loader import LoadError, load_function

        try:
            config.stash[_FN] = load_function(spec, argument="--ditcheck-attention")
        except LoadError as error:
            raise pytest.UsageError(f"--ditcheck-attention {spec}: {error}") from error


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"ditcheck: hypothesis profile {settings.get_current_profile_name()!r}"]
    spec = _target_spec(config)
    if spec:
        lines.append(f"ditcheck: attention target {spec} (dtype {config.getoption('ditcheck_dtype')}, layout "
                     f"{config.getoption('ditcheck_layout')}, {config.getoption('ditcheck_examples')} examples per "
                     f"check, seed {config.getoption('ditcheck_seed')}{''.join(_mode_flags(config))})")
    return lines


_FN = pytest.StashKey[Any]()


def check_ids(dtype: str = "float32") -> list[str]:
    """Every check id the attention suite reports for ``dtype``: forward[KIND] and grad[KIND] per input family
    (the overflow family for float16 and bfloat16 only)."""
    kinds = [kind for kind in VALIDATION_KINDS if dtype in ("float16", "bfloat16") or kind not in HALF_PRECISION_KINDS]
    return [f"{part}[{kind}]" for part in _PARTS for kind in kinds]


def _mode_flags(config: pytest.Config) -> list[str]:
    """The --self-attention / --gqa / --mask settings in force, as command-line flags (header and reproducers)."""
    flags = [" --self-attention"] if config.getoption("ditcheck_self_attention") else []
    flags += [" --gqa"] if config.getoption("ditcheck_gqa") else []
    mask = config.getoption("ditcheck_mask")
    flags += [f" --mask {mask}"] if mask != "none" else []
    max_tokens = config.getoption("ditcheck_max_tokens")
    return flags + ([f" --max-tokens {max_tokens}"] if max_tokens != 4096 else [])


def _read_xfail(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise pytest.UsageError(f"--ditcheck-xfail {path}: {error}") from error
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


class DitcheckSuite(pytest.Collector):
    """The ditcheck attention checks, one item per check id."""

    def collect(self) -> list[pytest.Item]:
        return [AttentionCheckItem.from_parent(self, name=check_id)
                for check_id in check_ids(self.config.getoption("ditcheck_dtype"))]


class AttentionCheckItem(pytest.Item):
    """One check of ditcheck.validate.attention against the --ditcheck-attention target."""

    def runtest(self) -> None:
        from ditcheck.validate import attention  # lazy: torch, only in a run given --ditcheck-attention

        config = self.config
        part, kind = self.name.split("[")
        kind = kind.rstrip("]")
        report = attention(config.stash[_FN], dtype=config.getoption("ditcheck_dtype"),
                           layout=config.getoption("ditcheck_layout"),
                           examples=config.getoption("ditcheck_examples"), seed=config.getoption("ditcheck_seed"),
                           kinds=(kind,), gradients=None if part == "grad" else False,
                           target=_target_spec(config), self_attention=config.getoption("ditcheck_self_attention"),
                           gqa=config.getoption("ditcheck_gqa"), mask=config.getoption("ditcheck_mask"),
                           max_tokens=config.getoption("ditcheck_max_tokens"))
        check = next((c for c in report.checks if c.id == self.name), None)
        if check is None:
            pytest.skip("; ".join(report.notes) or f"{self.name} not run")
        if not check.ok:
            tolerance = check.tolerance.describe() if isinstance(check.tolerance, Tolerance) else "n/a"
            hints = {"hint": next(note for note in report.notes if "--self-attention" in note)} \
                if any("--self-attention" in note for note in report.notes) else {}
            raise PropertyViolation(f"validate-attention:{self.name}", check.message or "outside tolerance",
                                    observed=check.observed, tolerance=tolerance, worst_case=check.worst_case, **hints,
                                    reproduce=f"ditcheck validate attention {_target_spec(config)} --kinds {kind} "
                                              f"--dtype {config.getoption('ditcheck_dtype')} "
                                              f"--layout {config.getoption('ditcheck_layout')}"
                                              f"{''.join(_mode_flags(config))} "
                                              f"--examples {config.getoption('ditcheck_examples')} "
                                              f"--seed {config.getoption('ditcheck_seed')} --save-failures DIR")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, PropertyViolation):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return "ditcheck-attention", None, f"ditcheck attention {self.name} of {_target_spec(self.config)}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Append the attention checks (before -k / -m deselection runs), marking those listed in the xfail file."""
    if _FN not in config.stash:
        return
    suite = DitcheckSuite.from_parent(session, name="ditcheck-attention")
    added = suite.collect()
    xfail_file = config.getoption("ditcheck_xfail")
    if xfail_file:
        listed = _read_xfail(xfail_file)
        for item in added:
            if item.name in listed or item.nodeid in listed:
                item.add_marker(pytest.mark.xfail(reason=f"listed in {xfail_file}", strict=False))
        known = {item.name for item in added} | {item.nodeid for item in added}
        for unknown in [entry for entry in listed if entry not in known]:
            warnings.warn(pytest.PytestWarning(f"ditcheck xfail id {unknown!r} (in {xfail_file}) matches no ditcheck "
                                               f"check; known ids: "
                                               f"{', '.join(check_ids(config.getoption('ditcheck_dtype')))}"))
    items.extend(added)
