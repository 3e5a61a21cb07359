"""The pytest plugin: ``--ditcheck-attention MODULE:ATTR`` runs the attention checks on third-party code,
names the target in the run header, honours an xfail file and warns about ids that match nothing."""

from __future__ import annotations

import pytest

import ditcheck.validate  # noqa: F401  (imported here: in-process pytester runs must not re-import numpy/torch)
from ditcheck.plugin import check_ids

pytest_plugins = ["pytester"]

TARGET = '''
import torch
import torch.nn.functional as F


def sdpa(q, k, v, scale=None):
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def wrong_scale(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1], dim=-1) @ v


def gqa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def tiled_kv_heads(q, k, v):
    group = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1))


def self_attention(q, k, v):
    assert q.shape[-2] == k.shape[-2], "self-attention: one sequence"
    return F.scaled_dot_product_attention(q, k, v)


def masked(q, k, v, attn_mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def mask_ignored(q, k, v, attn_mask=None):
    return F.scaled_dot_product_attention(q, k, v)
'''

ARGS = ("-p", "no:cacheprovider", "-p", "no:benchmark", "--ditcheck-examples", "4", "--ditcheck-max-tokens", "129")


@pytest.fixture
def target(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(thirdparty=TARGET)
    return pytester


def test_clean_target_passes_every_check_and_is_named_in_the_header(target: pytest.Pytester) -> None:
    result = target.runpytest_inprocess("--ditcheck-attention", "thirdparty:sdpa", *ARGS)
    result.stdout.fnmatch_lines(["ditcheck: attention target thirdparty:sdpa (dtype float32*"])
    result.assert_outcomes(passed=len(check_ids()))


def test_buggy_target_fails_with_the_check_and_a_reproducer(target: pytest.Pytester) -> None:
    result = target.runpytest_inprocess("--ditcheck-attention", "thirdparty:wrong_scale", *ARGS)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 4
    result.stdout.fnmatch_lines(["*validate-attention:forward[[]normal[]]*",
                                 "*ditcheck validate attention thirdparty:wrong_scale --kinds normal*"])


def test_xfail_file_marks_checks_and_warns_about_unknown_ids(target: pytest.Pytester) -> None:
    target.path.joinpath("xfail.txt").write_text("forward[normal]   # scale bug, tracked upstream\n"
                                                 "forward[normall]\n")
    result = target.runpytest_inprocess("--ditcheck-attention", "thirdparty:wrong_scale", "--ditcheck-xfail",
                                        "xfail.txt", "-k", "forward", *ARGS)
    outcomes = result.parseoutcomes()
    assert outcomes.get("xfailed") == 1
    result.stdout.fnmatch_lines(["*ditcheck xfail id 'forward[[]normall[]]' (in xfail.txt) matches no ditcheck check*"])


def test_environment_variable_selects_the_target(target: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DITCHECK_ATTENTION", "thirdparty:sdpa")
    result = target.runpytest_inprocess("-k", "grad", *ARGS)
    result.stdout.fnmatch_lines(["ditcheck: attention target thirdparty:sdpa*"])
    result.assert_outcomes(passed=len([i for i in check_ids() if i.startswith("grad")]))


def test_unloadable_target_is_a_usage_error(target: pytest.Pytester) -> None:
    result = target.runpytest_inprocess("--ditcheck-attention", "thirdparty:missing", *ARGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ditcheck-attention thirdparty:missing*no 'missing'*"])


def test_without_the_option_the_plugin_adds_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one():\n    assert True\n")
    result = pytester.runpytest_inprocess(*ARGS)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("target_name, flags, outcome", [
    ("gqa", ["--ditcheck-gqa"], "passed"),
    ("tiled_kv_heads", ["--ditcheck-gqa"], "failed"),
    ("self_attention", ["--ditcheck-self-attention"], "passed"),
    ("self_attention", [], "failed"),
    ("masked", ["--ditcheck-mask", "boolean"], "passed"),
    ("mask_ignored", ["--ditcheck-mask", "boolean"], "failed"),
    ("mask_ignored", [], "passed"),
])
def test_mode_options_reach_the_checks(target: pytest.Pytester, target_name: str, flags: list[str],
                                       outcome: str) -> None:
    """--ditcheck-gqa / --ditcheck-self-attention / --ditcheck-mask are the CLI's --gqa / --self-attention / --mask:
    each reaches the checks (a target whose bug shows only under its option fails with it and passes without),
    and is named in the header and in a failure's reproducer."""
    result = target.runpytest_inprocess("--ditcheck-attention", f"thirdparty:{target_name}", *flags,
                                        "-k", "forward and normal", *ARGS)
    result.assert_outcomes(**{outcome: 1})
    if flags:
        result.stdout.fnmatch_lines([f"ditcheck: attention target thirdparty:{target_name} (*{flags[0][10:]}*"])
    if outcome == "failed" and flags:
        result.stdout.fnmatch_lines([f"*ditcheck validate attention thirdparty:{target_name} --kinds normal*"
                                     + f"{flags[0][10:]}*"])
    if outcome == "failed" and not flags:
        result.stdout.fnmatch_lines(["*hint=*--self-attention*"])


def test_half_precision_adds_the_overflow_checks() -> None:
    assert "forward[overflow]" in check_ids("float16") and "forward[overflow]" not in check_ids("float32")
