"""ditcheck.validate.attention: real third-party attention conforms, every planted attention bug is caught,
failures are isolated and reproducible, and the tolerance rule reports its three candidates."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
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
from ditcheck.properties.attention import (LONG_LENGTHS, TILE_BOUNDARY_LENGTHS, VALIDATION_KINDS, AttentionCase,
                                           attention_cases)
from ditcheck.properties.validation import attention_rounding_bound, check_conforms, derive_tolerance, unit_roundoff
from ditcheck.reference import attention as reference_attention
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.validate import attention, load_target
from ditcheck.validate._attention import (_kind_examples, _Mode, attention_case_error, draw_examples, fits_dtype,
                                         sampled_query_rows)

TARGETS = Path(__file__).parent / "targets"
#: For checks that are not about sequence length: the long example is 129 tokens, not 4096 (a CPU backward at 4096
#: tokens takes seconds; the length families have their own tests below).
SHORT = {"max_tokens": 129}
#: The planted bugs of issue 14 (long and tile-boundary lengths, GQA, half-precision overflow, masks).
ISSUE_14_BUGS = ["length_switched_path", "long_path_bf16_logits", "tiled_kv_heads", "fp16_no_upcast",
                 "chunked_attention_drops_partial_chunk", "local_window_attention", "mask_nan_on_empty_rows",
                 "key_padding_inverted"]


def failing(report) -> list[str]:
    return [check.id for check in report.checks if not check.ok]


# ----------------------------------------------------------------------------------------
# Real third-party code conforms


@pytest.mark.parametrize("name", sorted(pb.CLEAN_ATTENTION))
def test_real_attention_conforms(name: str) -> None:
    fn, options = pb.CLEAN_ATTENTION[name]
    report = attention(fn, **SHORT, examples=25, seed=1, **options)
    assert report.ok, str(report)
    assert {check.id for check in report.checks} >= {"forward[large_logits]", "grad[near_ties]"}
    assert all(check.examples > 0 for check in report.checks)


def test_clean_code_over_many_seeds_raises_no_false_alarm() -> None:
    """SDPA (flash backend) and MultiheadAttention over 4 seeds: zero failing checks (larger runs: the report)."""
    alarms = [(name, seed, failing(report))
              for name in ("sdpa_flash", "multihead_attention") for seed in range(2, 6)
              for report in [attention(pb.CLEAN_ATTENTION[name][0], **SHORT, examples=15, seed=seed,
                                       **pb.CLEAN_ATTENTION[name][1])]
              if not report.ok]
    assert alarms == []


# ----------------------------------------------------------------------------------------
# Planted bugs are caught, each at the check that should see it

ATTENTION_BUGS = sorted(name for name, bug in pb.BUGS.items() if bug.validator == "attention")


@pytest.mark.parametrize("name", ATTENTION_BUGS)
def test_planted_attention_bug_is_caught(name: str) -> None:
    bug = pb.BUGS[name]
    # the older bugs show at any length; the issue-14 ones need the long and tile-boundary examples, 3 per family
    settings = {"examples": KERNEL_EXAMPLES} if name in ISSUE_14_BUGS else {"examples": 30, **SHORT}
    report = attention(bug.target, **settings, **bug.options)
    assert not report.ok
    assert any(check.startswith(bug.fails) for check in failing(report)), str(report)
    assert report.exit_code == 1


@pytest.mark.parametrize("seed", [2, 8])
def test_each_check_sees_a_case_where_layout_and_scale_bugs_show(seed: int) -> None:
    """One example per kind is the structural one (B = 2, H = 3, Lq != Lk, D >= 2, logits of range >= 1): on these
    seeds the free draws alone had H = 1 or L = 1 in every forward[normal] example and missed heads_merged_wrong.
    With few examples a kind still draws 3: the structural one, a long one and one at tile boundaries."""
    for name in ("heads_merged_wrong", "wrong_scale"):
        bug = pb.BUGS[name]
        report = attention(bug.target, **SHORT, examples=5, seed=seed, gradients=False, **bug.options)
        assert all(check.examples == 3 for check in report.checks)
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
    report = attention(pb.sdpa_math, **SHORT, examples=10)
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
    report = attention(fn, **SHORT, examples=5, kinds=("normal", "one_hot"))
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
    assert attention(pb.sdpa_math, dtype=torch.float16, **SHORT, examples=40, seed=20, kinds=("integers",)).ok


def test_a_hung_target_times_out_and_the_run_goes_on() -> None:
    start = time.perf_counter()
    report = attention(hangs, **SHORT, examples=6, kinds=("normal", "integers"), timeout=0.2)
    assert time.perf_counter() - start < 4
    assert not report.ok and all("timed out" in check.message for check in report.checks)
    # after a time-out a kind makes no further call (the hung one may still run); the other kind still runs
    assert [check.examples for check in report.checks] == [1, 1]


def test_gradients_demanded_of_a_non_differentiable_target_fail() -> None:
    def detached(q, k, v):
        return pb.sdpa_math(q, k, v).detach()

    assert attention(detached, **SHORT, examples=5).ok  # gradients=None: checked when available
    report = attention(detached, **SHORT, examples=5, gradients=True)
    assert not report.ok
    assert all("does not require grad" in c.message for c in report.checks if c.id.startswith("grad"))


def test_a_target_that_never_returns_cannot_be_run() -> None:
    report = attention(load_target(f"{TARGETS / 'broken.py'}:raises"), **SHORT, examples=3)
    assert not report.loaded and report.exit_code == 2
    assert "kernel not compiled" in str(report)


@pytest.mark.parametrize("kwargs, argument", [({"dtype": "float8"}, "dtype"), ({"layout": "lbhd"}, "layout"),
                                              ({"examples": 0}, "examples"), ({"kinds": ("huge",)}, "kinds"),
                                              ({"kinds": "normal"}, "kinds"), ({"seed": "7"}, "seed"),
                                              ({"timeout": 0.0}, "timeout"), ({"scale": math.nan}, "scale"),
                                              ({"gradients": "yes"}, "gradients"), ({"device": "nodevice"}, "device"),
                                              ({"mask": "causal"}, "mask"), ({"mask": "boolean"}, "mask"),
                                              ({"self_attention": "yes"}, "self_attention"), ({"gqa": 1}, "gqa"),
                                              ({"kinds": ("overflow",)}, "kinds")])
def test_bad_arguments_raise_typed_errors(kwargs, argument) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        attention(pb.sdpa_math, **kwargs)
    assert info.value.argument == argument


def test_same_seed_same_report_other_seed_other_cases() -> None:
    first, again = (attention(pb.sdpa_math, **SHORT, examples=10, seed=7).to_json() for _ in range(2))
    assert first == again
    other = attention(pb.sdpa_math, **SHORT, examples=10, seed=8)
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
    report = attention(load_target(f"{Path(pb.__file__)}:wrong_scale"), **SHORT, examples=10, kinds=("normal",),
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
    short = ["--max-tokens", "129"]
    assert main(["validate", "attention", clean, "--examples", "10", *short, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ok"] is True
    assert "CONFORMS" in capsys.readouterr().out
    bug = f"{Path(pb.__file__)}:kv_swapped"
    assert main(["validate", "attention", bug, "--examples", "10", *short, "--save-failures", str(tmp_path / "f")]) == 1
    assert list((tmp_path / "f").glob("*.npz"))
    assert main(["validate", "attention", f"{TARGETS / 'broken.py'}:raises", "--examples", "2", *short]) == 2
    assert main(["validate", "attention", "no.such.module:fn"]) == 2
    assert "could not be used" in capsys.readouterr().err
    assert main(["validate", "attention", f"{Path(pb.__file__)}:heads_merged_wrong", "--layout", "blhd",
                 "--examples", "20", "--no-grad", *short]) == 1


# ----------------------------------------------------------------------------------------
# The inputs real kernels break on (issue 14): long and tile-boundary lengths, grouped-query heads,
# self-attention modules, half-precision overflow, masks with fully masked rows

sys_path_targets = str(TARGETS)
KERNEL_EXAMPLES = 15  # 3 per family: the structural, the long and one tile-boundary example
#: SDPA's flash CPU kernel forms q k^T in float32 before scaling: with bfloat16 inputs whose unscaled products
#: pass 3.4e38 it returns NaN where the math backend (scale first) does not. A real discrepancy (see the report).
FLASH_BF16 = "sdpa_flash_bfloat16"


def real_attention():
    import sys

    if sys_path_targets not in sys.path:
        sys.path.insert(0, sys_path_targets)
    return importlib.import_module("real_attention")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(pb.CLEAN_KERNELS) - {FLASH_BF16}))
def test_real_kernels_conform_on_long_tiled_gqa_masked_and_overflow_inputs(name: str) -> None:
    fn, options = pb.CLEAN_KERNELS[name]
    report = attention(fn, examples=KERNEL_EXAMPLES, seed=1, **options)
    assert report.ok, str(report)
    assert all(check.examples > 0 for check in report.checks)
    if options.get("dtype") in ("float16", "bfloat16"):
        assert "forward[overflow]" in {check.id for check in report.checks}


def test_sdpa_flash_bfloat16_overflows_where_the_math_backend_does_not() -> None:
    flash = attention(pb.sdpa_flash, dtype="bfloat16", examples=6, seed=1, **SHORT)
    assert set(failing(flash)) == {"forward[overflow]", "grad[overflow]"}, str(flash)
    assert "non-finite" in next(c.message for c in flash.checks if c.id == "forward[overflow]")
    assert attention(pb.sdpa_math, dtype="bfloat16", kinds=("overflow",), examples=3, seed=1, **SHORT).ok


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "manual"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_timm_attention_conforms_as_self_attention(fused: bool, dtype: str) -> None:
    if importlib.util.find_spec("timm") is None:  # not importorskip: timm's own __init__ needs torchvision
        pytest.skip("timm not installed (pip install --no-deps timm: its layers need only torch; .ci/run does)")
    try:
        fn = real_attention().timm_attention(fused)
    except ImportError as error:  # pragma: no cover - depends on the timm version
        pytest.skip(f"timm.layers.attention could not be loaded without timm's package __init__: {error}")
    report = attention(fn, layout="blhd", dtype=dtype, self_attention=True, examples=KERNEL_EXAMPLES, seed=2)
    assert report.ok, str(report)


def test_self_attention_module_without_the_flag_is_diagnosed() -> None:
    """timm's Attention builds q, k, v from one x: every Lq != Lk call raises. The report says so and names
    --self-attention instead of leaving a bare false alarm."""
    targets = [pb.self_attention_only]
    if importlib.util.find_spec("timm") is not None:
        try:
            targets.append(real_attention().timm_attention(True))
        except ImportError:  # pragma: no cover
            pass
    for fn in targets:
        report = attention(fn, **SHORT, examples=10, seed=0, gradients=False,
                           layout="blhd" if fn is not pb.self_attention_only else "bhld")
        assert not report.ok and report.loaded
        assert any("--self-attention" in note and "Lq != Lk" in note for note in report.notes), str(report)
    assert not any("--self-attention" in note for note in attention(pb.sdpa_math, **SHORT, examples=10).notes)


def test_one_input_target_gets_q_equal_k_equal_v() -> None:
    report = attention(pb.self_attention_one_input, self_attention=True, **SHORT, examples=10, seed=3)
    assert report.ok, str(report)
    assert {check.id for check in report.checks} >= {"forward[normal]", "grad[normal]"}


@pytest.mark.parametrize("processor", ["AttnProcessor2_0", "AttnProcessor"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_diffusers_processors_conform(processor: str, dtype: str) -> None:
    pytest.importorskip("diffusers", reason="diffusers not installed")
    report = attention(real_attention().diffusers_processor(processor), layout="blhd", dtype=dtype,
                       examples=KERNEL_EXAMPLES, seed=4)
    assert report.ok, str(report)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", ISSUE_14_BUGS)
def test_kernel_bugs_are_caught_on_other_seeds(name: str, seed: int) -> None:
    """Two more seeds, 3 examples per family (structural, long, tile boundary); the 20-seed sweep is
    test_kernel_bug_sweep_and_false_alarms_over_20_seeds (audit)."""
    bug = pb.BUGS[name]
    report = attention(bug.target, seed=seed, examples=KERNEL_EXAMPLES, **bug.options)
    assert any(check.startswith(bug.fails) for check in failing(report)), str(report)


def real_module_targets() -> dict[str, tuple]:
    """diffusers' two processors and, when timm is installed, timm's Attention (fused and manual), in float32 and
    float16: (target, validate.attention options)."""
    real = real_attention()
    targets = {f"diffusers_{processor}_{dtype}": (real.diffusers_processor(processor), {"layout": "blhd",
                                                                                        "dtype": dtype})
               for processor in ("AttnProcessor2_0", "AttnProcessor") for dtype in ("float32", "float16")}
    if importlib.util.find_spec("timm") is not None:
        targets.update({f"timm_{'fused' if fused else 'manual'}_{dtype}": (
            real.timm_attention(fused), {"layout": "blhd", "dtype": dtype, "self_attention": True})
            for fused in (True, False) for dtype in ("float32", "float16")})
    return targets


@pytest.mark.audit
def test_kernel_bug_sweep_and_false_alarms_over_20_seeds() -> None:
    """Every issue-14 bug caught on 20 of 20 seeds; 0 failing checks on the clean kernels and the real modules
    (the README's figures; timm's modules when timm is installed). 3 examples per family: the structural, long
    and tile-boundary inputs this issue added (the short draws are those of the older sweeps)."""
    missed = [(name, seed) for name in ISSUE_14_BUGS for seed in range(20)
              if not any(c.startswith(pb.BUGS[name].fails)
                         for c in failing(attention(pb.BUGS[name].target, seed=seed, examples=KERNEL_EXAMPLES,
                                                    **pb.BUGS[name].options)))]
    clean = {**{name: pb.CLEAN_KERNELS[name] for name in set(pb.CLEAN_KERNELS) - {FLASH_BF16}},
             **real_module_targets()}
    alarms = [(name, seed, failing(report)) for name in sorted(clean) for seed in range(20)
              for report in [attention(clean[name][0], seed=seed, examples=KERNEL_EXAMPLES, **clean[name][1])]
              if not report.ok]
    assert missed == [] and alarms == []


@pytest.mark.parametrize("kind", VALIDATION_KINDS)
@pytest.mark.parametrize("flags", [{}, {"self_attention": True}, {"gqa": True, "mask": "key-padding"}])
def test_every_family_draws_long_and_tile_boundary_lengths(kind: str, flags: dict) -> None:
    mode = _Mode(dtype=torch.float16, pass_scale=True, **flags)
    cases = _kind_examples(kind, 0, 10, mode, seed=5)
    structural, long, tiled = cases[0], cases[1], cases[2]
    assert long.query_tokens in LONG_LENGTHS and long.key_tokens in LONG_LENGTHS
    assert tiled.query_tokens in TILE_BOUNDARY_LENGTHS and tiled.key_tokens in TILE_BOUNDARY_LENGTHS
    if flags.get("self_attention"):
        assert all(case.query_tokens == case.key_tokens for case in cases)
    else:
        assert structural.query_tokens != structural.key_tokens
    if flags.get("gqa"):
        assert (structural.heads, structural.kv_heads) == (4, 2)  # tiled and interleaved kv heads differ here
        assert all(case.heads % case.key_value_heads == 0 for case in cases)
        assert structural.empty_rows and all(case.mask == "key-padding" for case in cases)


def test_tile_boundary_lengths_and_sampled_rows() -> None:
    assert {1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025} <= set(
        TILE_BOUNDARY_LENGTHS) and max(TILE_BOUNDARY_LENGTHS) == 4096
    assert list(sampled_query_rows(100, 0)) == list(range(100))
    rows = set(sampled_query_rows(4096, 0))
    assert {0, 4095, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025, 2047, 2048, 2049} <= rows
    assert len(rows) < 50  # the reference costs O(rows x Lk): affordable at 4096


def test_gqa_draws_mha_mqa_and_grouped_ratios_and_the_report_prints_them() -> None:
    report = attention(pb.gqa_enable_gqa, gqa=True, **SHORT, examples=40, seed=0, gradients=False)
    assert report.ok, str(report)
    note = next(note for note in report.notes if note.startswith("GQA head ratios"))
    ratios = [tuple(map(int, item.split(":"))) for item in note.split(": ", 1)[1].split(";")[0].split(", ")]
    assert any(h == kv for h, kv in ratios) and any(kv == 1 < h for h, kv in ratios)
    assert any(1 < kv < h for h, kv in ratios)


def test_overflow_family_overflows_unscaled_products_only() -> None:
    """float16, head dims >= 32: max |q . k| past 65504, the scaled logits (and the partial sums of scale-first
    code) inside the format; the inputs themselves are ordinary numbers (|q|, |k| ~ hundreds)."""
    mode = _Mode(dtype=torch.float16, pass_scale=True)
    for case in _kind_examples("overflow", 0, 6, mode, seed=0):
        q, k, _, _ = case.build()
        q, k = (torch.tensor(a, dtype=torch.float16).double().numpy() for a in (q, k))
        products = np.abs(q @ np.swapaxes(k, -1, -2))
        scale = 1 / math.sqrt(case.head_dim) if case.scale is None else case.scale
        assert products.max() > 65504 and scale * products.max() < 65504 / 2
        assert np.abs(q).max() < 1e3 and np.abs(k).max() < 1e3


def test_baseline_is_best_practice_and_named_and_overflow_fails() -> None:
    """fp16_no_upcast (q k^T before the scale, softmax in float16) returns NaN on the overflow family while SDPA
    (the baseline's way: scale first, float32 softmax) does not; the report names the baseline."""
    clean = attention(pb.sdpa_math, dtype="float16", kinds=("overflow",), examples=6, seed=0, **SHORT)
    assert clean.ok, str(clean)
    assert "float32" in clean.settings["baseline"] and "scale folded into q" in clean.settings["baseline"]
    assert "baseline=best practice" in str(clean)
    buggy = attention(pb.fp16_no_upcast, dtype="float16", kinds=("overflow",), examples=6, seed=0, **SHORT)
    assert failing(buggy) == ["forward[overflow]", "grad[overflow]"]
    assert "non-finite" in buggy.checks[0].message
    assert any("float16 and bfloat16 only" in note for note in attention(pb.sdpa_math, **SHORT, examples=5).notes)


def test_masks_with_fully_masked_rows_state_the_policy() -> None:
    report = attention(pb.sdpa_masked, mask="additive", **SHORT, examples=10, seed=6)
    assert report.ok, str(report)
    assert any("fully_masked='zero'" in note for note in report.notes)
    with pytest.raises(InvalidArgumentError) as info:
        attention(pb.multihead_attention, layout="blhd", mask="key-padding")
    assert info.value.argument == "mask"


@pytest.mark.parametrize("mask_kind", ["boolean", "additive", "key-padding"])
def test_masked_rounding_bound_contains_sdpa_errors(mask_kind: str) -> None:
    case = AttentionCase(batch=2, heads=2, query_tokens=9, key_tokens=11, head_dim=6, value_dim=6, seed=8,
                         kind="large_logits", logit_range=60.0, mask=mask_kind, empty_rows=True)
    q, k, v, mask = case.build()
    q, k, v = (torch.tensor(a, dtype=torch.float32) for a in (q, k, v))
    if mask.dtype != bool:
        mask = torch.tensor(mask, dtype=torch.float32).double().numpy()
    got = pb.sdpa_masked(q, k, v, attn_mask=torch.tensor(mask, dtype=None if mask.dtype == bool else torch.float32))
    arrays = [t.double().numpy() for t in (q, k, v)]
    exact = reference_attention(*arrays, mask=mask, fully_masked="zero")
    bound = attention_rounding_bound(*arrays, torch.float32, mask=mask)
    assert np.all(np.abs(got.double().numpy() - exact) <= bound)
    empty = (-1, slice(None), slice(None)) if mask_kind == "key-padding" else (0, slice(None), 0)
    assert np.all(exact[empty] == 0) and np.all(bound[empty] < 1e-30)  # empty rows: zeros, no slack


def test_mixed_precision_bound_is_finite_where_the_float16_one_is_vacuous() -> None:
    rng = np.random.default_rng(0)
    q, k, v = (torch.tensor(rng.standard_normal((1, 1, n, 16)), dtype=torch.float16).double().numpy()
               for n in (3, 2048, 2048))
    vacuous = attention_rounding_bound(q, k, v, torch.float16)
    mixed = attention_rounding_bound(q, k, v, torch.float16, accumulation=torch.float32)
    assert not np.all(np.isfinite(vacuous)) and np.all(np.isfinite(mixed))
    got = pb.sdpa_flash(*(torch.tensor(a, dtype=torch.float16) for a in (q, k, v))).double().numpy()
    assert np.all(np.abs(got - reference_attention(q, k, v)) <= mixed)


def test_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ditcheck.cli import main

    bugs = Path(pb.__file__)
    short = ["--max-tokens", "129", "--no-grad"]
    assert main(["validate", "attention", f"{bugs}:gqa_enable_gqa", "--gqa", "--examples", "10", *short]) == 0
    assert "GQA head ratios drawn" in capsys.readouterr().out
    assert main(["validate", "attention", f"{bugs}:tiled_kv_heads", "--gqa", "--examples", "5", *short]) == 1
    assert main(["validate", "attention", f"{bugs}:self_attention_only", "--self-attention", "--examples", "5",
                 *short]) == 0
    assert main(["validate", "attention", f"{bugs}:key_padding_inverted", "--mask", "key-padding", "--examples", "5",
                 "--no-grad", "--save-failures", str(tmp_path)]) == 1
    assert main(["validate", "attention", f"{bugs}:sdpa_math", "--mask", "boolean"]) == 2
    assert "attn_mask" in capsys.readouterr().err
