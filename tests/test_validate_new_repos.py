"""Engine recognitions and conventions added for DiT code bases met on 2026-12-07 (DDT, Lumina-Next, ...), each
on a replica of the pattern (``tests/targets/new_repos.py``) with a planted bug it must catch and a near miss it must
not take for the pattern."""

from __future__ import annotations

import pytest

from ditcheck.validate import dit
from targets import float32_islands as fi
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


# float32 islands decided by what a float64 run computed, never by the forward's source text


@pytest.mark.parametrize("norm", [fi.RMSNormHalfOnlyUpcast, fi.RMSNormCommentOnly],
                         ids=["upcast-of-half-only", "float32-in-a-comment"])
def test_a_norm_that_computes_nothing_in_float32_is_held_to_float64(norm) -> None:
    # eps outside the sqrt: 4.9e-7 in float64, within float32's bound: a float32 island would hide it
    report = dit(fi.NormThenProjection(norm), inputs=fi.inputs, dtype="float64", examples=2)
    assert not report.ok and not _check(report, "RMSNorm").ok, str(report)
    assert not report.precision, str(report)


def test_a_norm_upcasting_with_to_torch_float_is_a_float32_island() -> None:
    report = dit(fi.NormThenProjection(fi.RMSNormToTorchFloat), inputs=fi.inputs, dtype="float64", examples=2)
    assert report.ok, str(report)
    assert [p.id for p in report.precision] == ["precision: RMSNorm"], str(report)


def test_a_norm_known_by_its_shapes_is_a_float32_island_only_when_it_computed_in_float32() -> None:
    # eps outside the sqrt in float64 (5.3e-7, within float32's bound): was a precision line by rule, now a mismatch
    planted = dit(fi.NormThenProjection(fi.Normalizer), inputs=fi.inputs, dtype="float64", examples=2)
    assert not planted.ok and not planted.precision, str(planted)
    assert not _check(planted, "Normalizer").ok
    upcast = dit(fi.NormThenProjection(fi.Normalizer, upcast=True), inputs=fi.inputs, dtype="float64", examples=2)
    assert upcast.ok and [p.id for p in upcast.precision] == ["precision: Normalizer"], str(upcast)


def test_float32_work_of_an_unrecognised_block_in_a_float64_run_is_named() -> None:
    # a 3e-7 scale inside float32 inline code no component covers: the report must say float32 ran there
    report = dit(fi.UpcastResidual(scale=1.0000003), inputs=fi.inputs, dtype="float64", examples=2)
    notes = [n for n in report.notes if n.startswith("float32 inside a float64 run")]
    assert notes and "block (UpcastBlock: created float32)" in notes[0], str(report)
    assert "block.out (Linear: float32 met float64)" in notes[0]
    assert "float32 inside" in report.to_json()
    # a model computing nothing in float32 has no such note
    clean = dit(fi.NormFeedForward(), inputs=fi.inputs, dtype="float64", examples=1)
    assert not [n for n in clean.notes if "float32 inside" in n], str(clean)


def test_a_hard_coded_eps_of_one_half_is_a_finding_not_an_identity() -> None:
    report = dit(fi.NormFeedForward(eps=0.5), inputs=fi.inputs, dtype="float64", examples=1)
    assert not _check(report, "RMSNorm").ok, str(report)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_identities_the_numbers_fit_are_notes_of_the_report(dtype: str) -> None:
    report = dit(fi.NormFeedForward(eps=1e-6), inputs=fi.inputs, dtype=dtype, examples=1)
    assert report.ok, str(report)
    assert any(n.startswith("norm (RMSNorm): eps stated nowhere") and "fits" in n for n in report.notes), str(report)
    assert any(n.startswith("ffn (FeedForward):") and "gelu fits" in n for n in report.notes), str(report)
    assert "gelu fits" in report.to_json() and "gelu fits" in str(report)


def test_an_eps_stated_as_variance_epsilon_is_the_norms_eps() -> None:
    wrong = dit(nr.Decoupled({"forward_eps": 1e-5}), inputs=nr.decoupled_inputs, examples=1)
    assert not wrong.ok and wrong.first_divergence.startswith("blocks.0.norm1 (VarianceEpsilonRMSNorm)"), str(wrong)
    assert "eps=1e-05" in str(wrong)


def test_a_timestep_period_stated_as_the_default_of_timestep_embedding_is_the_embedders_period() -> None:
    wrong = dit(nr.Decoupled({"called_period": 10000}), inputs=nr.decoupled_inputs, examples=1)
    assert not wrong.ok and wrong.first_divergence.startswith("t_embedder (ShortPeriodTimestepEmbedder)"), \
        str(wrong)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_dict_output_and_float32_upcasting_leaf_subclasses_conform(dtype: str) -> None:
    report = dit(nr.DictOutput(), inputs=nr.dict_output_inputs, dtype=dtype)
    assert report.ok, str(report)  # was: "output: returned a dict, not a tensor"; float64: Float32LayerNorm failed
    if dtype == "float64":  # their float32 inside is a precision line each, within float32's bound
        assert {finding.id for finding in report.precision} >= {"precision: Float32LayerNorm", "precision: Float32SiLU"}
    wrong_eps = dit(nr.DictOutput({"forward_eps": 1e-5}), inputs=nr.dict_output_inputs, dtype=dtype, examples=1)
    assert not wrong_eps.ok and wrong_eps.first_divergence.startswith("norm (Float32LayerNorm)"), str(wrong_eps)
    infinite = dit(nr.DictOutput({"infinite": True}), inputs=nr.dict_output_inputs, dtype=dtype, examples=1)
    assert any(check.id == "output" and not check.ok and "non-finite" in check.message for check in infinite.checks)


def test_an_attention_whose_forward_casts_its_logits_to_float32_is_a_float32_island_in_float64() -> None:
    report = dit(nr.Float32Softmax(), inputs=nr.tokens_inputs, dtype="float64")
    assert report.ok, str(report)  # was: a mismatch at attn, "explained by compute_format='float32'"
    assert [finding.id for finding in report.precision] == ["precision: Attention"]
    for dtype in ("float32", "float64"):  # the float32 island is still held to float32's tolerance
        wrong = dit(nr.Float32Softmax({"head_dim_scale": True}), inputs=nr.tokens_inputs, dtype=dtype, examples=1)
        assert not wrong.ok and wrong.first_divergence.startswith("attn (Attention)"), str(wrong)


def test_an_rms_norm_of_the_users_code_normalising_in_float32_is_a_float32_island_in_float64() -> None:
    report = dit(nr.NormThenLinear(), inputs=nr.tokens_inputs, dtype="float64")
    assert report.ok, str(report)  # was: 3 mismatches at norm, "explained by compute_format='float32'"
    assert [finding.id for finding in report.precision] == ["precision: RMSNorm"]
    wrong = dit(nr.NormThenLinear({"forward_eps": 1e-5}), inputs=nr.tokens_inputs, dtype="float64", examples=1)
    assert not wrong.ok and wrong.first_divergence.startswith("norm (RMSNorm)"), str(wrong)


def test_float32_features_meeting_a_float64_linear_run_as_written_in_a_float64_run() -> None:
    report = dit(nr.SinusoidThenLinear(), inputs=nr.sinusoid_inputs, dtype="float64")
    # was: every call raised ("mat1 and mat2 must have the same dtype"): COULD NOT RUN
    assert report.ok and report.loaded, str(report)
    assert [finding.id for finding in report.precision] == ["precision: Float32Sinusoid"]
    wrong = dit(nr.SinusoidThenLinear({"sin_first": True}), inputs=nr.sinusoid_inputs, dtype="float64", examples=1)
    assert not wrong.ok and wrong.first_divergence.startswith("t_embedder (Float32Sinusoid)"), str(wrong)
