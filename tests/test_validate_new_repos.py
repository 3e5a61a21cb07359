"""Engine recognitions and conventions added for DiT code bases met on 2026-12-07 (DDT, Lumina-Next, ...), each
on a replica of the pattern (``tests/targets/new_repos.py``) with a planted bug it must catch and a near miss it must
not take for the pattern."""

from __future__ import annotations

import pytest

from ditcheck.validate import dit
from targets import new_repos as nr


def _check(report, component: str):
    """The report's row for one recognised class (its id starts with the class name)."""
    return next(check for check in report.checks if check.id.split(" (")[0] == component)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_decoupled_replica_conforms_with_its_stated_eps_period_and_swiglu(dtype: str) -> None:
    report = dit(nr.Decoupled(), inputs=nr.decoupled_inputs, dtype=dtype)
    assert report.ok, str(report)
    # each is recomputed (in float64 the RMSNorm's float32 inside is a precision line of its own, not a failure)
    norm_islands = [line for line in str(report).splitlines() if "precision: VarianceEpsilonRMSNorm" in line]
    assert _check(report, "ShortPeriodTimestepEmbedder").ok and _check(report, "FeedForward").ok
    assert _check(report, "VarianceEpsilonRMSNorm").ok if dtype == "float32" else norm_islands


def test_swiglu_feed_forward_with_gate_and_up_swapped_is_named() -> None:
    report = dit(nr.Decoupled({"gate_swapped": True}), inputs=nr.decoupled_inputs, examples=1)
    assert not report.ok
    assert report.first_divergence.startswith("blocks.0.mlp (FeedForward)"), str(report)
    assert "gate_order=('w3', 'w1')" in str(report)


def test_a_feed_forward_with_one_more_child_is_not_taken_for_swiglu() -> None:
    report = dit(nr.Decoupled({"extra_child": True}), inputs=nr.decoupled_inputs, examples=1)
    assert report.ok, str(report)
    # nor for diffusers' FeedForward of the same name (its ``net`` list): not recognised, rather than a traceback
    # "recognised, configuration not modelled: ... no attribute 'net'"
    assert not any(check.id.startswith("FeedForward") for check in report.checks)
    assert any("FeedForward" in note for note in report.notes if note.startswith("not recognised"))
    assert not any("configuration not modelled" in note for note in report.notes), report.notes


def test_a_cross_attention_given_no_caption_lengths_may_give_each_image_its_own_caption() -> None:
    # Sana's code without xformers (Open-Sora's with mask None too): each image sees its own caption; PixArt-alpha's
    # xformers path (every image sees every caption token) stays the default reading, tested on its replica
    report = dit(nr.OwnCaption(), inputs=nr.own_caption_inputs)
    assert report.ok, str(report)  # was: a mismatch at cross_attn, no knob explaining it
    assert _check(report, "MultiHeadCrossAttention").ok
    wrong = dit(nr.OwnCaption({"kv_swapped": True}), inputs=nr.own_caption_inputs, examples=1)
    assert not wrong.ok and wrong.first_divergence.startswith("cross_attn (MultiHeadCrossAttention)"), str(wrong)
    assert "kv_order=('v', 'k')" in str(wrong)
