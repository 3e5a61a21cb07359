"""ditcheck.validate.attention: real third-party attention conforms, every planted attention bug is caught,
failures are isolated and reproducible, and the tolerance rule reports its three candidates."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import runpy
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import at_most, expect_caught
from hypothesis import given
from hypothesis import strategies as st

import planted_bugs as pb
from ditcheck.properties.attention import AttentionCase, attention_cases
from ditcheck.properties.validation import attention_rounding_bound, check_conforms, derive_tolerance, unit_roundoff
from ditcheck.reference import attention as reference_attention
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.validate import attention, load_target
from ditcheck.validate._attention import attention_case_error, draw_examples, fits_dtype

TARGETS = Path(__file__).parent / "targets"


def failing(report) -> list[str]:
    return [check.id for check in report.checks if not check.ok]


# ----------------------------------------------------------------------------------------
# Real third-party code conforms


@pytest.mark.parametrize("name", sorted(pb.CLEAN_ATTENTION))
def test_real_attention_conforms(name: str) -> None:
    fn, options = pb.CLEAN_ATTENTION[name]
    report = attention(fn, examples=25, seed=1, **options)
    assert report.ok, str(report)
    assert {check.id for check in report.checks} >= {"forward[large_logits]", "grad[near_ties]"}
    assert all(check.examples > 0 for check in report.checks)


def test_clean_code_over_many_seeds_raises_no_false_alarm() -> None:
    """SDPA (flash backend) and MultiheadAttention over 4 seeds: zero failing checks (larger runs: the report)."""
    alarms = [(name, seed, failing(report))
              for name in ("sdpa_flash", "multihead_attention") for seed in range(2, 6)
              for report in [attention(pb.CLEAN_ATTENTION[name][0], examples=15, seed=seed,
                                       **pb.CLEAN_ATTENTION[name][1])]
              if not report.ok]
    assert alarms == []


# ----------------------------------------------------------------------------------------
# Planted bugs are caught, each at the check that should see it

ATTENTION_BUGS = sorted(name for name, bug in pb.BUGS.items() if bug.validator == "attention")


@pytest.mark.parametrize("name", ATTENTION_BUGS)
def test_planted_attention_bug_is_caught(name: str) -> None:
    bug = pb.BUGS[name]
    report = attention(bug.target, examples=30, **bug.options)
    assert not report.ok
    assert bug.fails in failing(report), str(report)
    assert report.exit_code == 1


@pytest.mark.parametrize("seed", [2, 8])
def test_each_check_sees_a_case_where_layout_and_scale_bugs_show(seed: int) -> None:
    """One example per kind is the structural one (B = 2, H = 3, Lq != Lk, D >= 2, logits of range >= 1): on these
    seeds the free draws alone had H = 1 or L = 1 in every forward[normal] example and missed heads_merged_wrong."""
    for name in ("heads_merged_wrong", "wrong_scale"):
        bug = pb.BUGS[name]
        report = attention(bug.target, examples=5, seed=seed, gradients=False, **bug.options)
        assert all(check.examples == 1 for check in report.checks)
        assert bug.fails in failing(report), str(report)
        if name == "heads_merged_wrong":  # a layout bug shows on every kind (near-ties hide a wrong scale)
            assert set(failing(report)) == {check.id for check in report.checks}, str(report)


def test_property_catches_planted_bug() -> None:
    """The conformance property (check_conforms on one drawn case) catches the wrong-scale bug."""
    cases = attention_cases(masks=("none",)).map(lambda c: dataclasses.replace(c, value_dim=c.head_dim))

    def check(case) -> None:
        observed, tolerance = attention_case_error(pb.wrong_scale, case)
        check_conforms(observed, tolerance, "validate-attention", "wrong_scale vs reference", case=case)

    expect_caught(check, cases, claim="validate-attention")


@at_most(30)
@given(attention_cases(masks=("none",)).map(lambda c: dataclasses.replace(c, value_dim=c.head_dim)))
def test_property_holds_for_sdpa(case) -> None:
    observed, tolerance = attention_case_error(pb.sdpa_math, case)
    check_conforms(observed, tolerance, "validate-attention", "SDPA vs reference", case=case)


# ----------------------------------------------------------------------------------------
# The tolerance rule


def test_tolerance_reports_three_candidates_and_which_applied() -> None:
    tolerance = derive_tolerance(1e-7, 5e-7, 0.5, torch.float32)
    assert tolerance.naive == pytest.approx(2e-7) and tolerance.apriori == 5e-7
    assert tolerance.floor == pytest.approx(4 * 2 * 2.0**-24 * 0.5)
    assert tolerance.value == 5e-7 and tolerance.applied == "a-priori"
    zero = derive_tolerance(0.0, None, 1.0, torch.float32)  # FlashAttention's zero-baseline failure: the floor
    assert zero.applied == "floor" and zero.value > 0
    report = attention(pb.sdpa_math, examples=10)
    data = json.loads(report.to_json())
    entry = data["checks"][0]["tolerance"]
    assert {"naive", "apriori", "floor", "applied", "value"} <= set(entry)
    assert "a-priori" in str(report) and "naive" in str(report)


def test_rounding_bound_scales_with_unit_roundoff_and_contains_observed_errors() -> None:
    case = dataclasses.replace(pb_case(), value_dim=5)
    q, k, v, _ = case.build()
    q, k, v = (torch.tensor(a, dtype=torch.float32).double().numpy() for a in (q, k, v))
    bound32 = attention_rounding_bound(q, k, v, torch.float32)
    bound16 = attention_rounding_bound(q, k, v, "float16")
    assert np.all(bound16 > bound32)
    assert unit_roundoff("bfloat16") == 2.0**-8
    got = pb.sdpa_math(*(torch.tensor(a, dtype=torch.float32) for a in (q, k, v))).double().numpy()
    assert np.all(np.abs(got - reference_attention(q, k, v)) <= bound32)


def pb_case() -> AttentionCase:
    return AttentionCase(batch=2, heads=2, query_tokens=7, key_tokens=9, head_dim=5, value_dim=5, seed=3,
                         kind="large_logits", logit_range=80.0)


# ----------------------------------------------------------------------------------------
# Isolation, bad input, reproducibility


def nan_output(q, k, v):
    return torch.full_like(q, math.nan)


def wrong_shape(q, k, v):
    return torch.cat([q, q], dim=-2)


def wrong_dtype(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2), -1).double() @ v.double()


def hangs(q, k, v):
    time.sleep(5)
    return q


@pytest.mark.parametrize("fn, message, exit_code", [(nan_output, "non-finite", 1), (wrong_shape, "shape", 1),
                                                    (wrong_dtype, "dtype", 1), (None, "raised", 2)])
def test_unusable_outputs_are_failed_checks_with_a_message(fn, message, exit_code) -> None:
    """A wrong output is a discrepancy (exit 1); a target that never returns could not be called (exit 2)."""
    if fn is None:  # a target that raises
        fn = load_target(f"{TARGETS / 'broken.py'}:raises")
    report = attention(fn, examples=5, kinds=("normal", "one_hot"))
    assert not report.ok and len(report.checks) >= 2  # the run went on past the first failure
    assert all(message in check.message for check in report.checks if not check.ok), str(report)
    assert report.exit_code == exit_code


def test_cases_outside_the_dtype_are_not_drawn() -> None:
    """integers-kind q, k nearly orthogonal get rescaled to entries ~5e7: not float16 numbers (inf), so such a
    case is out of the float16 domain, not a failure of the target."""
    huge = AttentionCase(batch=1, heads=1, query_tokens=1, key_tokens=1, head_dim=6, value_dim=6, seed=1,
                         kind="integers", logit_range=0.13093964903405822)
    assert not fits_dtype(huge, torch.float16) and fits_dtype(huge, torch.float32)
    with pytest.raises(InvalidArgumentError):
        attention_case_error(pb.sdpa_math, huge, dtype=torch.float16)
    assert attention(pb.sdpa_math, dtype=torch.float16, examples=40, seed=20, kinds=("integers",)).ok


def test_a_hung_target_times_out_and_the_run_goes_on() -> None:
    start = time.perf_counter()
    report = attention(hangs, examples=6, kinds=("normal", "integers"), timeout=0.2)
    assert time.perf_counter() - start < 4
    assert not report.ok and all("timed out" in check.message for check in report.checks)
    # after a time-out a kind makes no further call (the hung one may still run); the other kind still runs
    assert [check.examples for check in report.checks] == [1, 1]


def test_gradients_demanded_of_a_non_differentiable_target_fail() -> None:
    def detached(q, k, v):
        return pb.sdpa_math(q, k, v).detach()

    assert attention(detached, examples=5).ok  # gradients=None: checked when available
    report = attention(detached, examples=5, gradients=True)
    assert not report.ok
    assert all("does not require grad" in c.message for c in report.checks if c.id.startswith("grad"))


def test_a_target_that_never_returns_cannot_be_run() -> None:
    report = attention(load_target(f"{TARGETS / 'broken.py'}:raises"), examples=3)
    assert not report.loaded and report.exit_code == 2
    assert "kernel not compiled" in str(report)


@pytest.mark.parametrize("kwargs, argument", [({"dtype": "float8"}, "dtype"), ({"layout": "lbhd"}, "layout"),
                                              ({"examples": 0}, "examples"), ({"kinds": ("huge",)}, "kinds"),
                                              ({"kinds": "normal"}, "kinds"), ({"seed": "7"}, "seed"),
                                              ({"timeout": 0.0}, "timeout"), ({"scale": math.nan}, "scale"),
                                              ({"gradients": "yes"}, "gradients"), ({"device": "nodevice"}, "device")])
def test_bad_arguments_raise_typed_errors(kwargs, argument) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        attention(pb.sdpa_math, **kwargs)
    assert info.value.argument == argument


def test_same_seed_same_report_other_seed_other_cases() -> None:
    first, again = (attention(pb.sdpa_math, examples=10, seed=7).to_json() for _ in range(2))
    assert first == again
    other = attention(pb.sdpa_math, examples=10, seed=8)
    assert [c.worst_case for c in other.checks] != [c.worst_case for c in json_checks(first)]


def test_draws_do_not_depend_on_what_is_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis mines literal constants from loaded modules; the validator's draws must not change with them
    (without ditcheck's guard, importing this module changes the drawn timesteps)."""
    strategy = st.lists(st.floats(0.0, 999.0), min_size=20, max_size=20)  # as the DiT timesteps
    before = draw_examples(strategy, 10, 3)
    values = ", ".join(f"{i * 3.3 + 0.77:.4f}" for i in range(200))
    (tmp_path / "constants_module.py").write_text(f"VALUES = [{values}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("constants_module")
    assert draw_examples(strategy, 10, 3) == before


def json_checks(text: str):
    return [type("C", (), c) for c in json.loads(text)["checks"]]


def test_saved_failure_reruns_the_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = attention(load_target(f"{Path(pb.__file__)}:wrong_scale"), examples=10, kinds=("normal",),
                       target=f"{Path(pb.__file__)}:wrong_scale")
    written = report.save_failures(tmp_path)
    assert {p.suffix for p in written} == {".npz", ".py"}
    script = next(p for p in written if p.suffix == ".py")
    capsys.readouterr()
    runpy.run_path(str(script), run_name="__main__")  # in-process: a subprocess would re-import torch
    error = float(capsys.readouterr().out.split("forward error")[1].split()[0])
    assert error > 1e-3  # the re-run shows the same discrepancy


# ----------------------------------------------------------------------------------------
# Command line


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ditcheck.cli import main

    clean = f"{TARGETS / 'clean.py'}:sdpa"
    out = tmp_path / "report.json"
    assert main(["validate", "attention", clean, "--examples", "10", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ok"] is True
    assert "CONFORMS" in capsys.readouterr().out
    bug = f"{Path(pb.__file__)}:kv_swapped"
    assert main(["validate", "attention", bug, "--examples", "10", "--save-failures", str(tmp_path / "f")]) == 1
    assert list((tmp_path / "f").glob("*.npz"))
    assert main(["validate", "attention", f"{TARGETS / 'broken.py'}:raises", "--examples", "2"]) == 2
    assert main(["validate", "attention", "no.such.module:fn"]) == 2
    assert "could not be used" in capsys.readouterr().err
    assert main(["validate", "attention", f"{Path(pb.__file__)}:heads_merged_wrong", "--layout", "blhd",
                 "--examples", "20", "--no-grad"]) == 1
