"""ditcheck.validate.dit on forks of the original DiT (tests/targets/dit_forks.py): recognition by evidence (head
counts renamed three ways or stated nowhere, every class and attribute renamed, a SiT-style forward), ambiguity
reported with its options, overrides, and planted bugs each caught at the right first divergence."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.layers import pos_embed_2d
from ditcheck.validate import dit, recognise
from targets import dit_forks as forks


@pytest.mark.parametrize("factory", [forks.fork_attn_heads, forks.fork_attn_n_heads, forks.fork_top_level_heads,
                                     forks.fork_no_heads_anywhere, forks.renamed])
def test_forks_that_rename_things_are_recognised_and_conform(factory) -> None:
    report = dit(factory(), examples=2, diagnose=False)
    assert report.ok, str(report)
    assert "heads 4" in report.settings["architecture"]
    assert any("reproduces block 0's recorded attention" in note for note in report.notes), report.notes
    assert {"x_embedder", "t_embedder", "y_embedder", "blocks.0", "blocks.1", "final_layer"} <= \
        {check.id.split(" ~ ")[-1] for check in report.checks}


def test_renamed_fork_maps_every_reference_parameter_to_its_own_name() -> None:
    layout = recognise(forks.renamed())
    assert layout.names["blocks.1.attn.qkv.weight"] == "layers.1.mix.to_qkv.weight"
    assert layout.names["blocks.0.adaLN_modulation.1.bias"] == "layers.0.mod.bias"
    assert layout.names["t_embedder.mlp.2.weight"] == "noise.fc_out.weight"
    assert layout.names["y_embedder.embedding_table.weight"] == "classes.table.weight"
    assert layout.names["pos_embed"] == "grid_code"
    hooked = {reference: target for target, reference, _ in layout.hooks}
    assert hooked["blocks.0.norm1"] == "layers.0.ln_a" and hooked["blocks.0.norm2"] == "layers.0.ln_b"
    assert hooked["x_embedder"] == "tokenize" and hooked["final_layer"] == "head"


def test_sit_style_forward_is_compared_on_its_first_channels() -> None:
    layout = recognise(forks.sit_style())
    assert layout.config.learn_sigma and layout.output_channels == forks.CHANNELS
    report = dit(forks.sit_style(), examples=2, diagnose=False)
    assert report.ok, str(report)
    assert "returns the first 2 channels" in report.settings["architecture"]


def test_a_sit_style_fork_with_a_bug_is_a_discrepancy_with_a_reproducer(tmp_path, capsys) -> None:
    """The worst example, the reproducer and the diagnosis compare the first C channels SiT returns with the
    reference's 2C (they raised a broadcast error, exit 2, on willisma/SiT with a planted bug)."""
    import runpy
    from pathlib import Path

    from ditcheck.cli import main

    target = f"{Path(forks.__file__)}:sit_style_sin_cos_flipped"
    assert main(["validate", "dit", target, "--examples", "2", "--save-failures", str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert "first divergence: t_embedder" in text and "flip_sin_to_cos=False" in text, text
    runpy.run_path(str(next(tmp_path.glob("*.py"))), run_name="__main__")  # re-runs the target
    printed = capsys.readouterr().out
    rerun = float(printed.split("max |target - reference|")[1].split()[0])
    assert rerun > 1e-3 and rerun == float(printed.split("(ditcheck saw")[1].split()[0])


def test_torch_compiled_blocks_are_validated_eagerly_with_every_hook() -> None:
    """A block compiled before ditcheck hooked it calls the hooks, but dynamo guards on them: it re-traced the block
    with ditcheck's hook code at every change of the hooks (this test: 47 s and about 300 frames compiled; a 2-block
    LightningDiT: 45 s and its localisation timed out). Run eagerly (dynamo compiles no frame: 2.5 s), it conforms,
    says so, and a 1e-3 change in block 1 is caught there."""
    from torch._dynamo.utils import counters

    clean, buggy = forks.compiled_blocks(), forks.compiled_blocks(block1_scale=1.0 + 1e-3)
    frames = counters["frames"]["total"]
    report = dit(clean, examples=2, diagnose=False)
    assert report.ok, str(report)
    assert any(note.startswith("torch.compile ignored: blocks.0, blocks.1") for note in report.notes), report.notes
    report = dit(buggy, examples=2, diagnose=False)
    assert not report.ok and (report.first_divergence or "").startswith("blocks.1"), str(report)
    assert counters["frames"]["total"] == frames  # nothing compiled while ditcheck ran the targets



def _stance() -> str:
    """torch.compile's current stance (process-wide: torch._dynamo.eval_frame._stance; torch 2.13 has no getter)."""
    import torch._dynamo.eval_frame

    stance = getattr(torch._dynamo.eval_frame, "_stance", None)
    return "default" if stance is None else stance.stance


def test_the_compile_stance_is_restored_when_dit_returns() -> None:
    """force_eager is process-wide: ditcheck sets it once, in the caller's thread, for the whole validation (it was
    entered in every target thread, where overlapping or abandoned calls could leave it on after dit returned)."""
    before = _stance()
    report = dit(forks.compiled_blocks(), examples=1, diagnose=False)
    assert report.ok and _stance() == before, (_stance(), str(report))


def test_the_compile_stance_is_not_left_on_by_a_timed_out_target(monkeypatch) -> None:
    """A target that hangs in the comparison run (after recognition) is abandoned, still running: when dit returns,
    the stance is back to what it was (a stance entered in the hung thread stayed on)."""
    import threading

    from ditcheck.validate import models

    model = forks.compiled_blocks()
    comparing, release, hung = threading.Event(), threading.Event(), []
    capture = models.capture

    def flagged(*args: Any, **kwargs: Any) -> Any:
        comparing.set()
        return capture(*args, **kwargs)

    def stall(*_: Any) -> None:
        if comparing.is_set() and not hung:
            hung.append(threading.current_thread())
            release.wait()
    monkeypatch.setattr(models, "capture", flagged)
    model.final_layer.register_forward_pre_hook(stall)  # after the compiled blocks: they do not run again
    before = _stance()
    try:
        report = dit(model, examples=1, diagnose=False, timeout=2.0)
        after = _stance()
    finally:
        release.set()
    assert "timed out after 2 s" in str(report) and len(hung) == 1, str(report)
    assert after == before, after
    hung[0].join(10.0)
    assert not hung[0].is_alive() and _stance() == before


def test_the_compile_note_says_eager_only_where_torch_has_stances(monkeypatch) -> None:
    """Without torch.compiler.set_stance (torch < 2.6) eager() changes nothing: the note says the compiled modules
    run as compiled (it claimed force_eager)."""
    from ditcheck.validate.dit_precision import compile_note, eager

    model = forks.compiled_blocks()
    assert compile_note(model).startswith("torch.compile ignored: blocks.0, blocks.1 run eagerly (force_eager)")
    assert compile_note(forks.original_style()) is None
    monkeypatch.delattr(torch.compiler, "set_stance")
    before = _stance()
    with eager():
        assert _stance() == before
    assert compile_note(model) == ("torch.compile: blocks.0, blocks.1 compiled; run as compiled (this torch has no "
                                   "torch.compiler.set_stance to run them eagerly)")

@pytest.mark.parametrize(("option", "message"), [
    ("swiglu", ("got a gated MLP (SwiGLU-style): blocks.0.mlp.w12 maps 32 -> 170 = 2 x 85 and blocks.0.mlp.w3 maps "
                "85 -> 32; not supported")),
    ("wo_shift", "got none; blocks.0.adaLN_modulation.1 maps 32 -> 128: 4 chunks, an adaLN without shifts")])
def test_lightningdit_structures_the_reference_lacks_are_named(option: str, message: str) -> None:
    """hustvl/LightningDiT's SwiGLU MLP and shift-less adaLN: could not run (exit 2), saying what was found (the
    messages were 'one MLP output map in blocks.0 (340 -> 64); got 0: []' and '... got none')."""
    report = dit(forks.lightning(option), examples=1)
    assert not report.loaded and message in report.notes[0], report.notes


@pytest.mark.parametrize(("option", "first", "parameters"), [
    ("qk_norm", "blocks.0.attn", ("['blocks.0.attn.q_norm.weight', 'blocks.0.attn.q_norm.bias', "
                                  "'blocks.0.attn.k_norm.weight', 'blocks.0.attn.k_norm.bias']")),
    ("rmsnorm", "blocks.0.norm1", "['blocks.0.norm1.weight']")])
def test_lightningdit_norms_are_a_discrepancy_naming_the_parameters_the_reference_lacks(option: str, first: str,
                                                                                        parameters: str) -> None:
    """qk-norm and RMSNorm: a discrepancy at the right submodule (exit 1) whose report names the parameters the
    original has no counterpart for (the diagnosis alone said 'no single convention knob ... explains')."""
    report = dit(forks.lightning(option), examples=1, diagnose=False)
    assert report.loaded and not report.ok and report.first_divergence == first, str(report)
    assert any(note.startswith(f"{first} (") and f"no counterpart for: {parameters}" in note
               for note in report.notes), report.notes


def test_a_forward_returning_a_tuple_is_compared_on_its_first_element(capsys) -> None:
    """REPA's SiT returns (x, zs): every call 'failed' (output: expected a torch.Tensor; got tuple), exit 1 on a
    conforming model. The first element is compared, on the stored and the block-by-block paths, and bugs show."""
    from pathlib import Path

    from ditcheck.cli import main

    assert main(["validate", "dit", f"{Path(forks.__file__)}:repa_style", "--examples", "2"]) == 0
    assert "output: the forward returns a tuple of 2; its first element is the prediction compared" in \
        capsys.readouterr().out
    report = dit(forks.repa_style(flip=False), examples=2)
    assert report.loaded and not report.ok and report.first_divergence == "t_embedder", str(report)
    assert report.diagnosis and report.diagnosis[0]["knobs"] == {"flip_sin_to_cos": False}, report.diagnosis
    assert dit(forks.repa_style(), stream=True, examples=1).ok
    assert dit(forks.repa_style(flip=False), stream=True, examples=1).first_divergence == "t_embedder"


def test_learn_sigma_override_contradicting_the_shapes_is_refused() -> None:
    report = dit(forks.original_style(), learn_sigma=False, examples=1)
    assert not report.loaded and "learn_sigma" in str(report)
    assert dit(forks.original_style(), learn_sigma=True, examples=1, diagnose=False).ok


def test_head_count_stated_nowhere_and_not_reproduced_is_an_ambiguity_with_options() -> None:
    """No attribute states the head count and a planted scale bug makes every divisor miss the recorded attention:
    recognition says so, lists the best options, and --heads settles it (then the bug is found)."""
    with torch.random.fork_rng():  # recognition probes the model's own weights: which divisors rank best depends on
        torch.manual_seed(0)       # them (with seed 1, 4 heads rank third of the four listed; unseeded, this was flaky)
        model = forks.OriginalStyleDiT(head_attr=None, scale_power=-1.0)
    report = dit(model, examples=1)
    assert not report.loaded and report.exit_code == 2
    assert "pass heads= / --heads N" in str(report) and "(best: 4 (error" in str(report)
    settled = dit(forks.OriginalStyleDiT(head_attr=None, scale_power=-1.0), heads=4, examples=1, diagnose=False)
    assert settled.loaded and not settled.ok and settled.first_divergence == "blocks.0.attn"


def test_an_attribute_contradicting_the_recorded_attention_is_an_ambiguity() -> None:
    model = forks.OriginalStyleDiT()
    for block in model.blocks:
        block.attn.num_heads = 2  # says 2; the code computes with 4
    report = dit(model, examples=1)
    assert not report.loaded and "the attributes say" in str(report) and "reproduced by 4 heads" in str(report)
    assert dit(model, heads=4, examples=1, diagnose=False).ok


def test_overrides_set_convention_knobs_and_bad_ones_are_typed_errors() -> None:
    report = dit(forks.fork_bug("timestep_shift_1"), overrides={"downscale_freq_shift": 1.0}, examples=1,
                 diagnose=False)
    assert report.ok, str(report)
    with pytest.raises(InvalidArgumentError) as info:
        dit(forks.original_style(), overrides={"colour": 1})
    assert info.value.argument == "overrides"
    with pytest.raises(InvalidArgumentError) as info:
        dit(forks.original_style(), heads=0)
    assert info.value.argument == "heads"


PLANTED = sorted(forks.FORK_BUGS)


@pytest.mark.parametrize("name", PLANTED)
def test_planted_fork_bug_is_caught_at_its_first_divergence(name: str) -> None:
    _, options, first = forks.FORK_BUGS[name]
    report = dit(forks.fork_bug(name), examples=2, diagnose=False, **options)
    assert report.loaded and not report.ok, str(report)
    assert report.first_divergence is not None and report.first_divergence.startswith(first), str(report)


def test_original_style_dit_in_float64_conforms_with_its_float32_islands_reported() -> None:
    """The original computes its timestep frequencies in float32 (in float64 it raises: float32 features meet float64
    weights) and fills pos_embed through .float(): in float64 ditcheck maps those requests to float64, conforms, and
    reports both islands apart (exit 0); --strict-precision fails them."""
    model = forks.original_style_float64()
    report = dit(model, examples=2, diagnose=False)
    assert report.ok and report.exit_code == 0, str(report)
    found = {finding.id: finding for finding in report.precision}
    assert set(found) == {"precision: pos_embed", "precision: t_embedder"}, found
    assert "stored rounded to float32" in found["precision: pos_embed"].message
    assert "computes in float32 (TimestepEmbedder" in found["precision: t_embedder"].message
    assert all(finding.ok for finding in found.values())
    strict = dit(forks.original_style_float64(), examples=1, diagnose=False, strict_precision=True)
    assert strict.exit_code == 1 and {"precision: pos_embed", "precision: t_embedder"} <= {
        check.id for check in strict.checks if not check.ok}


def test_a_fork_without_float32_requests_has_no_islands() -> None:
    report = dit(forks.renamed().double(), examples=1, diagnose=False)
    assert report.ok and [f.id for f in report.precision] == ["precision: pos_embed"], str(report)


def test_every_example_batch_has_the_null_label_and_t_at_zero_small_mid_and_end() -> None:
    from ditcheck.validate.dit_run import LAST_TIMESTEP, draw_dit_examples

    config = recognise(forks.original_style()).config
    for example in draw_dit_examples(config, 5, seed=1):
        times = sorted(example.times)
        assert times[0] == 0.0 and 0 < times[1] <= 1.0 and 1.0 < times[2] < LAST_TIMESTEP and times[3] == LAST_TIMESTEP
        assert config.num_classes in example.labels and sum(label == config.num_classes for label in example.labels) == 1
        assert all(0 <= label <= config.num_classes for label in example.labels)


def test_weights_model_keeps_the_targets_own_weights() -> None:
    """weights="model" validates with the target's own (here perturbed, "trained") weights and leaves them as they
    were; a NaN among them is a failed "weights" check naming the entry (exit 1), which the default random weights
    replace (conforms)."""
    trained = forks.original_style()
    with torch.no_grad():
        for parameter in trained.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    before = {name: value.clone() for name, value in trained.state_dict().items()}
    assert dit(trained, weights="model", examples=1, diagnose=False).ok
    assert all(torch.equal(before[name], value) for name, value in trained.state_dict().items())
    with torch.no_grad():
        trained.blocks[1].mlp.fc2.bias[0] = float("nan")
    own = dit(trained, weights="model", examples=1, diagnose=False)
    assert own.exit_code == 1 and "blocks.1.mlp.fc2.bias" in str(own), str(own)
    assert dit(trained, examples=1, diagnose=False).ok


def test_cli_flags_for_forks(tmp_path, capsys) -> None:
    from pathlib import Path

    from ditcheck.cli import main

    target = f"{Path(forks.__file__)}:"
    assert main(["validate", "dit", target + "fork_top_level_heads", "--examples", "1"]) == 0
    assert main(["validate", "dit", target + "original_style_float64", "--examples", "1", "--no-diagnosis"]) == 0
    assert "precision: t_embedder: computes in float32" in capsys.readouterr().out
    assert main(["validate", "dit", target + "original_style_float64", "--examples", "1", "--no-diagnosis",
                 "--strict-precision"]) == 1
    assert main(["validate", "dit", target + "sit_style", "--examples", "1", "--no-learn-sigma"]) == 2
    assert main(["validate", "dit", target + "original_style", "--examples", "1", "--heads", "4",
                 "--set", "downscale_freq_shift=0.0", "--weights", "model"]) == 0
    assert main(["validate", "dit", target + "original_style", "--set", "colour=3", "--examples", "1"]) == 2
    path = tmp_path / "ckpt.pt"
    torch.save(forks.original_style().state_dict(), path)
    assert main(["validate", "dit", target + "original_style", "--checkpoint", str(path), "--examples", "1"]) == 0


# ----------------------------------------------------------------------------------------
# Block by block (the full-size path, dit_stream), on the tiny forks


@pytest.mark.parametrize("factory", [forks.original_style, forks.renamed, forks.sit_style,
                                     forks.original_style_float64])
def test_block_by_block_path_conforms_on_clean_forks(factory) -> None:
    report = dit(factory(), examples=2, stream=True)
    assert report.ok, str(report)
    assert report.settings["path"].startswith("block by block")
    assert {"blocks.0", "blocks.1", "final_layer"} <= {check.id.split(" ~ ")[-1] for check in report.checks}


@pytest.mark.parametrize("name", PLANTED)
def test_block_by_block_path_catches_each_planted_bug_at_the_same_place(name: str) -> None:
    _, options, first = forks.FORK_BUGS[name]
    report = dit(forks.fork_bug(name), examples=2, diagnose=False, stream=True, **options)
    assert report.loaded and not report.ok
    assert report.first_divergence is not None and report.first_divergence.startswith(first), str(report)


def test_block_by_block_random_weights_replace_the_zero_adaln_init() -> None:
    from ditcheck.validate.dit_stream import randomise_weights

    model = forks.original_style()
    layout = recognise(model)
    randomise_weights(model, layout, layout.config, seed=3)
    assert all(bool(block.adaLN_modulation[1].weight.abs().min() > 0) for block in model.blocks)
    exact = pos_embed_2d(forks.HIDDEN, layout.config.grid, 10000.0)
    assert torch.equal(model.pos_embed[0], torch.from_numpy(exact).float())


def test_block_by_block_is_refused_for_the_diffusers_layout() -> None:
    from targets.clean import tiny_diffusers_dit

    with pytest.raises(InvalidArgumentError) as info:
        dit(tiny_diffusers_dit(), convention="diffusers", stream=True, examples=1)
    assert info.value.argument == "stream"


# ----------------------------------------------------------------------------------------
# No false alarms: the clean targets over 10 seeds (each seed draws its own weights, latents, times, labels)


def _clean_targets() -> dict[str, tuple[Any, dict[str, Any]]]:
    from ditcheck.models.dit import DiT
    from targets.clean import tiny_diffusers_dit

    import planted_bugs as pb

    return {"ditcheck DiT": (pb.clean_dit, {}),
            "original style": (forks.original_style, {}),
            "original style float64": (forks.original_style_float64, {}),
            "renamed fork": (forks.renamed, {}),
            "SiT style": (forks.sit_style, {}),
            "no heads attribute": (forks.fork_no_heads_anywhere, {}),
            "ditcheck DiT float64": (lambda: DiT(pb.TINY, dtype=torch.float64), {}),
            "diffusers float32": (tiny_diffusers_dit, {"convention": "diffusers"}),
            "diffusers float64": (tiny_diffusers_dit, {"convention": "diffusers", "dtype": torch.float64}),
            "original style, block by block": (forks.original_style, {"stream": True})}


FALSE_ALARM_SEEDS = range(10)


@pytest.mark.audit
@pytest.mark.parametrize("name", list(_clean_targets()))
def test_no_false_alarm_over_ten_seeds_on_clean_targets(name: str) -> None:
    """Every clean target conforms for seeds 0-9 (3 examples each); the worst error/tolerance is printed (-s).

    Measured 2026-12-06: 0 false alarms in 10 targets x 10 seeds; worst error/tolerance 0.5 (the target computes
    what the naive candidate does: error = naive error = tolerance / 2), 0.625 for the original style in float64;
    17 s for the 10 targets on 2 lightly loaded cores."""
    factory, options = _clean_targets()[name]
    alarms, worst = [], 0.0
    for seed in FALSE_ALARM_SEEDS:
        report = dit(factory(), seed=seed, diagnose=False, **options)
        if not report.ok:
            alarms.append((seed, [check.id for check in report.checks if not check.ok]))
        worst = max([worst] + [check.ratio for check in report.checks if check.ratio is not None])
    print(f"{name}: worst error/tolerance {worst:.3g} over seeds {list(FALSE_ALARM_SEEDS)}")
    assert not alarms, alarms


def _streaming(monkeypatch: Any) -> Any:
    """An event set once StreamingComparison.run starts (dit calls the target before, to recognise it)."""
    import threading

    from ditcheck.validate.dit_stream import StreamingComparison

    started, run = threading.Event(), StreamingComparison.run

    def armed(self: Any, *args: Any) -> Any:
        started.set()
        return run(self, *args)
    monkeypatch.setattr(StreamingComparison, "run", armed)
    return started


def _final_layer_runs(model: Any, streaming: Any) -> list[Any]:
    """The threads in which ``model.final_layer`` returns in the streaming run (a forward hook of the test's own)."""
    import threading

    runs: list[Any] = []

    def record(*_: Any) -> None:  # returns None: the output unchanged
        if streaming.is_set():
            runs.append(threading.current_thread())
    model.final_layer.register_forward_hook(record)
    return runs


def test_block_by_block_a_hang_between_two_hooks_is_a_timed_out_call(monkeypatch) -> None:
    """The time-out bounds the target's own work between hooked submodules (the comparison runs meanwhile in
    another thread and is not counted): a block that never returns in the streaming run (not in recognition,
    which calls the target first) is reported, not waited for; once it returns, the abandoned target stops at
    its next hook (it never reaches the final layer) and removes the validator's hooks. Until then the hooks
    stay, inert in any other thread: the test's thread calls the final layer and it returns."""
    import threading

    model = forks.original_style()
    streaming, release, hung, block_inputs = _streaming(monkeypatch), threading.Event(), [], []

    def stall(_module: Any, inputs: Any) -> None:
        if streaming.is_set():
            hung.append(threading.current_thread())
            block_inputs.append(inputs)
            release.wait()
    model.blocks[1].register_forward_pre_hook(stall)
    finals = _final_layer_runs(model, streaming)
    try:
        report = dit(model, examples=2, stream=True, timeout=5.0)
        with torch.no_grad():
            model.final_layer(*block_inputs[0])  # the stopped comparison's hooks: not raised here, not removed
        assert sum(len(module._forward_hooks) for module in model.modules()) > 1
    finally:
        release.set()  # let the abandoned daemon thread go on to its next hook
    assert not report.loaded and report.exit_code == 2, str(report)
    assert "timed out after 5 s" in str(report) and len(hung) == 1  # the first example's call: no other is made
    hung[0].join(10.0)
    assert not hung[0].is_alive() and [thread.name for thread in finals] == [threading.current_thread().name]
    assert [len(module._forward_hooks) for module in model.modules() if module._forward_hooks] == [1]  # the test's


def test_block_by_block_hooks_ignore_calls_from_any_other_thread(monkeypatch) -> None:
    """The streaming hooks act only in the thread running the target: a hooked submodule (the final layer, on
    block 0's tokens) called from another thread while the target runs returns normally and hands nothing over,
    so the final layer is still compared on the target's own call (an other-thread call taken for it was a
    discrepancy at final_layer, and marked it done before the target reached it)."""
    import threading

    model = forks.original_style()
    streaming, intruders, raised = _streaming(monkeypatch), [], []

    def intrude(_module: Any, inputs: Any, _output: Any) -> None:  # returns None: the output unchanged
        if not streaming.is_set() or intruders:
            return

        def call_final_layer() -> None:
            try:
                with torch.no_grad():
                    model.final_layer(*inputs)
            except BaseException as error:  # noqa: BLE001 - asserted below, in the test's thread
                raised.append(error)
        intruders.append(threading.Thread(target=call_final_layer, name="test-intruder"))
        intruders[0].start()
        intruders[0].join()
    model.blocks[0].register_forward_hook(intrude)
    finals = _final_layer_runs(model, streaming)
    report = dit(model, examples=1, stream=True, diagnose=False)
    assert len(intruders) == 1 and raised == []
    assert [thread.name == "test-intruder" for thread in finals] == [True, False]  # then the target's own call
    assert report.ok, str(report)
    assert "final_layer" in {check.id.split(" ~ ")[-1] for check in report.checks}


def test_block_by_block_the_comparison_does_not_count_against_the_time_out(monkeypatch) -> None:
    """A comparison slower than the time-out (the target waits for it with IN_FLIGHT outputs handed over) is not
    a hung target."""
    import time

    from ditcheck.validate.dit_stream import StreamingComparison

    compare, slow = StreamingComparison._compare, [3.0]

    def slow_compare(self: Any, *args: Any) -> None:
        time.sleep(slow.pop() if slow else 0.0)  # the first comparison only
        compare(self, *args)
    monkeypatch.setattr(StreamingComparison, "_compare", slow_compare)
    report = dit(forks.original_style(), examples=1, stream=True, timeout=2.0)
    assert report.ok and not slow, str(report)


def test_block_by_block_a_failing_comparison_is_raised_as_itself_and_stops_the_target(monkeypatch) -> None:
    """An error of the comparison (ditcheck's own, reference side) is not reported as the target raising: it is
    raised, and the target, which runs ahead of the comparison, stops at its next hook."""
    from ditcheck.validate.dit_stream import StreamingComparison

    def failing(self: Any, *args: Any) -> None:
        raise RuntimeError("planted comparison failure")
    monkeypatch.setattr(StreamingComparison, "_compare", failing)
    model = forks.original_style()
    finals = _final_layer_runs(model, _streaming(monkeypatch))
    with pytest.raises(RuntimeError, match="planted comparison failure"):
        dit(model, examples=1, stream=True)
    assert finals == []  # 18 hooked submodules: the target stops after at most IN_FLIGHT + 2 of them
    assert [len(module._forward_hooks) for module in model.modules() if module._forward_hooks] == [1]
