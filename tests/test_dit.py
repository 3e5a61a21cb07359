"""The whole DiT: certified forward, float64 envelope, agreement with the torch DiT, adaLN-Zero, LD2; planted bugs; bad input.

The torch DiT's own hook-by-hook agreement and float32 checks are in tests/test_models.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flint
import numpy as np
import pytest
import torch
from helpers import at_most, expect_caught
from hypothesis import given

from ditcheck.models import dit as models
from ditcheck.properties import dit as props
from ditcheck.properties.layers import check_ball_contains_mp
from ditcheck.properties.torch_dit import float64_dit, hook_intermediates
from ditcheck.reference.dit import (DIFFUSERS_DIT_KNOBS, DiTConfig, dit_block, dit_forward, dit_intermediates,
                                    dit_latent_score, final_layer, random_dit_params,
                                    timestep_embedder, zero_adaln)
from ditcheck.reference.errors import (DTypeError, InvalidArgumentError, NonFiniteError, NotOrthonormalError,
                                       ShapeError)
from ditcheck.reference.precision import BallArray
from ditcheck.reference.schedules import sigma

# ----------------------------------------------------------------------------------------
# The torch DiT of ditcheck.models.dit (facebookresearch/DiT's layout, every DiTConfig knob) as the second
# implementation; ``planted`` switches on one named bug by changing the built model, not a copy of its code.


def plant(block: models.DiTBlock, planted: str | None) -> models.DiTBlock:
    """Apply the named block bug: chunk_order, shift_scale_swapped, mlp_eps_ignored or missing_gate."""
    order = list(block.chunk_order)
    if planted == "chunk_order":
        order[:3] = order[:3][::-1]
    elif planted == "shift_scale_swapped":
        i, j = order.index("shift_msa"), order.index("scale_msa")
        order[i], order[j] = order[j], order[i]
    elif planted == "mlp_eps_ignored":
        block.norm2.eps = 1e-6
    elif planted == "missing_gate":
        gate = order.index("gate_msa")

        def ungate(_module: torch.nn.Module, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
            chunks = list(out.chunk(6, dim=1))
            chunks[gate] = torch.ones_like(chunks[gate])
            return torch.cat(chunks, dim=1)

        block.adaLN_modulation.register_forward_hook(ungate)
    block.chunk_order = tuple(order)
    return block


def torch_block(planted: str | None = None):
    def block(x: np.ndarray, c: np.ndarray, params: Mapping[str, np.ndarray], prefix: str,
              config: DiTConfig) -> np.ndarray:
        module = models.DiTBlock(config, models.sdpa_attention, dtype=torch.float64)
        module.load_state_dict({name.removeprefix(prefix + "."): torch.from_numpy(np.asarray(value))
                                for name, value in params.items() if name.startswith(prefix + ".")}, strict=True)
        with torch.no_grad():
            return plant(module.eval(), planted)(torch.from_numpy(x), torch.from_numpy(c)).numpy()

    return block


def torch_hooks(planted: str | None = None):
    """Forward-hook activations of the torch DiT under the reference's names, plus the output.

    ``planted``: a block bug of :func:`plant`, or "sin_cos_swapped" (timestep features in the other order).
    """

    def factory(config: DiTConfig, params: Mapping[str, np.ndarray]) -> models.DiT:
        model = float64_dit(config, params)
        if planted == "sin_cos_swapped":
            model.t_embedder.flip_sin_to_cos = not model.t_embedder.flip_sin_to_cos
        for block in model.blocks:
            plant(block, planted)
        return model

    return hook_intermediates(factory)


# ----------------------------------------------------------------------------------------
# Certified forward and float64


@at_most(4)
@given(props.dit_cases(max_hidden=16, max_tokens=6))
def test_dit_ball_contains_mp_at_twice_the_precision(case: props.DiTCase) -> None:
    check_ball_contains_mp(dit_forward, case)


def test_planted_radius_loss_in_dit_is_caught() -> None:
    def dit_without_radius(*args: Any, precision: str = "float64", **kwargs: Any) -> Any:
        out = dit_forward(*args, precision=precision, **kwargs)
        if isinstance(out, BallArray):
            return BallArray(np.frompyfunc(lambda ball: flint.arb(ball.mid()), 1, 1)(out.balls))
        return out

    expect_caught(lambda case: check_ball_contains_mp(dit_without_radius, case),
                  props.dit_cases(max_hidden=8, max_tokens=2, max_depth=1), claim="certified-ball", max_examples=3)


@at_most(20)
@given(props.dit_cases(conventions=True))
def test_float64_dit_within_envelope_of_ball(case: props.DiTCase) -> None:
    props.check_dit_float64_envelope(dit_forward, case)


def test_planted_float32_weights_are_caught() -> None:
    def float32_weights(params: Mapping[str, np.ndarray], **inputs: Any) -> np.ndarray:
        rounded = {name: np.asarray(value, dtype=np.float32).astype(np.float64) for name, value in params.items()}
        return dit_forward(rounded, **inputs)

    expect_caught(lambda case: props.check_dit_float64_envelope(float32_weights, case), props.dit_cases(),
                  claim="dit-float64-envelope", max_examples=10)


# ----------------------------------------------------------------------------------------
# Agreement with the torch DiT (ditcheck.models.dit)


@given(props.dit_cases(conventions=True))
def test_torch_dit_block_agrees_with_reference(case: props.DiTCase) -> None:
    props.check_block_matches(torch_block(), case)


@pytest.mark.parametrize("planted", ["missing_gate", "chunk_order", "shift_scale_swapped", "mlp_eps_ignored"])
def test_planted_block_bugs_are_caught(planted: str) -> None:
    expect_caught(lambda case: props.check_block_matches(torch_block(planted), case),
                  props.dit_cases(conventions=True), claim="dit-block")


def test_planted_missing_model_output_is_caught() -> None:
    def without_output(**inputs: Any) -> dict[str, Any]:
        return {name: value for name, value in torch_hooks()(**inputs).items() if name != "unpatchify"}

    expect_caught(lambda case: props.check_intermediates_match(without_output, case), props.dit_cases(),
                  claim="dit-intermediates", max_examples=5)


def test_planted_timestep_bug_is_localised_to_t_embedder() -> None:
    caught = expect_caught(lambda case: props.check_intermediates_match(torch_hooks("sin_cos_swapped"), case),
                           props.dit_cases(), claim="dit-intermediates")
    assert "'t_embedder'" in str(caught)


def test_diffusers_knobs_reproduce_diffusers_conventions() -> None:
    """DIFFUSERS_DIT_KNOBS reproduce the torch DiT built the diffusers way (shift-1 timesteps, MLP norm eps 1e-5)."""
    config = DiTConfig(input_size=(4, 6), patch_size=2, in_channels=2, hidden_size=16, depth=2, num_heads=2,
                       num_classes=3, **DIFFUSERS_DIT_KNOBS)
    case = props.DiTCase(config, param_seed=1, input_seed=2, times=(3.0, 600.0), labels=(0, 3))
    props.check_intermediates_match(torch_hooks(), case)
    original = dit_forward(**{**case.inputs(), "config": config.replace(downscale_freq_shift=0.0, ln_eps_mlp=1e-6)})
    assert np.max(np.abs(dit_forward(**case.inputs()) - original)) > 1e-4  # the knobs change the output


# ----------------------------------------------------------------------------------------
# adaLN-Zero and the random parameters


@given(props.dit_cases(conventions=True))
def test_adaln_zero_makes_blocks_identity_and_output_zero(case: props.DiTCase) -> None:
    props.check_adaln_zero(dit_intermediates, case)


@given(props.dit_cases())
def test_torch_dit_adaln_zero(case: props.DiTCase) -> None:
    props.check_adaln_zero(torch_hooks(), case)


def test_planted_missing_gate_breaks_adaln_zero() -> None:
    expect_caught(lambda case: props.check_adaln_zero(torch_hooks("missing_gate"), case), props.dit_cases(),
                  claim="adaln-zero")


@given(props.dit_cases())
def test_random_params_are_informative(case: props.DiTCase) -> None:
    props.check_random_params_informative(random_dit_params, case)


def test_planted_dit_initialisation_is_caught() -> None:
    """DiT's own initialize_weights (adaLN-Zero) as the 'random' parameters makes checks vacuous."""
    expect_caught(lambda case: props.check_random_params_informative(
        lambda config, seed: zero_adaln(random_dit_params(config, seed), config), case), props.dit_cases(),
        claim="random-params")


# ----------------------------------------------------------------------------------------
# LD2 with a DiT


@at_most(15)
@given(props.latent_score_cases())
def test_dit_latent_score_has_the_ld2_form(case: props.LatentScoreCase) -> None:
    props.check_latent_score_form(dit_latent_score, case)


def sigma_instead_of_variance(params: Any, config: Any, x: Any, t: Any, basis: Any, y: Any = None,
                              schedule: str = "ou-half", *, precision: Any = "float64") -> Any:
    """Planted: s = (B f - x)/sigma_t (the Hu et al. variance sigma(t) misread as a standard deviation)."""
    scores = dit_latent_score(params, config, x, t, basis, y, schedule, precision=precision)
    return BallArray(scores.balls * sigma(t, schedule, precision=precision).balls[:, None])


def variance_channels(params: Any, config: DiTConfig, x: Any, t: Any, basis: Any, y: Any = None,
                      schedule: str = "ou-half", *, precision: Any = "float64") -> Any:
    """Planted: f taken from the learned-variance channels (the second half) instead of the noise prediction."""
    if not config.learn_sigma:
        return dit_latent_score(params, config, x, t, basis, y, schedule, precision=precision)
    channels = config.in_channels
    order = np.r_[channels:2 * channels, 0:channels]
    swapped = dict(params)
    for name in ("final_layer.linear.weight", "final_layer.linear.bias"):
        value = params[name].reshape(config.patch_size**2, 2 * channels, *params[name].shape[1:])
        swapped[name] = value[:, order].reshape(params[name].shape)
    return dit_latent_score(swapped, config, x, t, basis, y, schedule, precision=precision)


def uninformative_balls(params: Any, config: DiTConfig, x: Any, t: Any, basis: Any, y: Any = None,
                        schedule: str = "ou-half", *, precision: Any = "float64") -> Any:
    """Planted: balls 0 +- 1e30, which overlap everything (a certified path that certifies nothing)."""
    return BallArray(np.frompyfunc(lambda _: flint.arb(0, 1e30), 1, 1)(np.empty(np.shape(x), dtype=object)))


@pytest.mark.parametrize("planted", [sigma_instead_of_variance, variance_channels, uninformative_balls])
def test_planted_latent_score_bugs_are_caught(planted: Any) -> None:
    expect_caught(lambda case: props.check_latent_score_form(planted, case), props.latent_score_cases(),
                  claim="LD2", max_examples=20)


# ----------------------------------------------------------------------------------------
# Bad input

CONFIG = DiTConfig(input_size=(4, 6), patch_size=2, in_channels=2, hidden_size=8, depth=1, num_heads=2,
                   num_classes=3)
PARAMS = random_dit_params(CONFIG, seed=0)
X = np.ones((2, 2, 4, 6))
T = np.array([1.0, 10.0])
Y = np.array([0, 3])


def test_valid_sample_call() -> None:
    assert dit_forward(PARAMS, X, T, Y, CONFIG).shape == (2, 4, 4, 6)
    assert dit_forward(PARAMS, X, T, None, CONFIG).shape == (2, 4, 4, 6)


@pytest.mark.parametrize(("changes", "argument"), [
    ({"num_heads": 3}, "num_heads"), ({"hidden_size": 10, "num_heads": 1}, "hidden_size"),
    ({"input_size": (4, 5)}, "input_size"), ({"patch_size": 0}, "patch_size"), ({"num_classes": -1}, "num_classes"),
    ({"ln_eps_mlp": 0.0}, "ln_eps_mlp"), ({"gelu_approximate": "erf"}, "gelu_approximate"),
    ({"qkv_order": "qqv"}, "qkv_order"), ({"adaln_chunk_order": ("shift_msa",) * 6}, "adaln_chunk_order"),
    ({"final_adaln_chunk_order": ("scale", "gate")}, "final_adaln_chunk_order"),
    ({"downscale_freq_shift": 128.0}, "downscale_freq_shift"), ({"learn_sigma": 1}, "learn_sigma"),
    ({"attention_scale": float("nan")}, "attention_scale"), ({"mlp_ratio": 0.01}, "mlp_ratio"),
    ({"depth": 1.5}, "depth"), ({"time_scale": float("inf")}, "time_scale"),
])
def test_invalid_config_names_the_field(changes: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        CONFIG.replace(**changes)
    assert info.value.argument == argument


def test_non_finite_parameter_names_the_entry() -> None:
    corrupted = {**PARAMS, "blocks.0.attn.qkv.weight": np.full((24, 8), np.nan)}
    with pytest.raises(NonFiniteError) as info:
        dit_forward(corrupted, X, T, Y, CONFIG)
    assert info.value.argument == "params['blocks.0.attn.qkv.weight']"


def test_wrong_parameter_shape_names_the_entry() -> None:
    with pytest.raises(ShapeError) as info:
        dit_forward({**PARAMS, "final_layer.linear.bias": np.ones(3)}, X, T, Y, CONFIG)
    assert info.value.argument == "params['final_layer.linear.bias']"


@pytest.mark.parametrize("params", [
    {k: v for k, v in PARAMS.items() if k != "y_embedder.embedding_table.weight"},
    {**PARAMS, "blocks.1.attn.qkv.weight": np.ones((24, 8))},
])
def test_missing_or_unexpected_parameters_are_rejected(params: dict[str, np.ndarray]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        dit_forward(params, X, T, Y, CONFIG)
    assert info.value.argument == "params"


def test_string_parameters_are_rejected() -> None:
    with pytest.raises(DTypeError) as info:
        dit_forward({**PARAMS, "x_embedder.proj.bias": np.array(["a"] * 8)}, X, T, Y, CONFIG)
    assert info.value.argument == "params['x_embedder.proj.bias']"


@pytest.mark.parametrize(("inputs", "error", "argument"), [
    ({"x": np.ones((2, 2, 4, 4))}, ShapeError, "x"), ({"x": np.ones((2, 2, 4))}, ShapeError, "x"),
    ({"x": np.full((2, 2, 4, 6), np.inf)}, NonFiniteError, "x"), ({"x": X.astype(complex)}, DTypeError, "x"),
    ({"t": np.array([1.0])}, ShapeError, "t"), ({"t": np.array([np.nan, 1.0])}, NonFiniteError, "t"),
    ({"y": np.array([0.0, 1.0])}, DTypeError, "y"), ({"y": np.array([0, 4])}, InvalidArgumentError, "y"),
    ({"y": np.array([0])}, ShapeError, "y"), ({"config": "DiT-XL/2"}, InvalidArgumentError, "config"),
    ({"params": [1.0]}, DTypeError, "params"),
])
def test_bad_forward_input_names_the_argument(inputs: dict[str, Any], error: type, argument: str) -> None:
    call = {"params": PARAMS, "x": X, "t": T, "y": Y, "config": CONFIG, **inputs}
    with pytest.raises(error) as info:
        dit_forward(**call)
    assert info.value.argument == argument


def test_labels_for_an_unconditional_model_are_rejected() -> None:
    config = CONFIG.replace(num_classes=0)
    with pytest.raises(InvalidArgumentError) as info:
        dit_forward(random_dit_params(config, 0), X, T, Y, config)
    assert info.value.argument == "y"


def test_block_and_final_layer_check_their_inputs() -> None:
    tokens, c = np.ones((2, 6, 8)), np.ones((2, 8))
    with pytest.raises(ShapeError) as info:
        dit_block(tokens, np.ones((2, 7)), PARAMS, "blocks.0", CONFIG)
    assert info.value.argument == "c"
    with pytest.raises(InvalidArgumentError) as info:
        dit_block(tokens, c, PARAMS, "blocks.1", CONFIG)
    assert info.value.argument == "params"
    with pytest.raises(ShapeError) as info:
        final_layer(np.ones((2, 6, 9)), c, PARAMS, CONFIG)
    assert info.value.argument == "x"
    with pytest.raises(ShapeError) as info:
        timestep_embedder(np.ones((2, 1)), PARAMS, CONFIG)
    assert info.value.argument == "t"


def test_latent_score_checks_its_basis() -> None:
    config = DiTConfig(input_size=2, patch_size=1, in_channels=1, hidden_size=8, depth=1, num_heads=1, num_classes=0)
    params = random_dit_params(config, 0)
    x, t = np.ones((1, 5)), np.array([0.5])
    with pytest.raises(ShapeError) as info:
        dit_latent_score(params, config, x, t, np.eye(5)[:, :3])
    assert info.value.argument == "basis"
    with pytest.raises(NotOrthonormalError) as info:
        dit_latent_score(params, config, x, t, 2 * np.eye(5)[:, :4])
    assert info.value.argument == "basis"


def test_eps_output_reads_the_network_as_a_noise_prediction() -> None:
    """output='eps': sigma^2 s + x = P x - sigma B n, where output='q' gives sigma^2 s_q + x = B n (P = B B^T)."""
    config = DiTConfig(input_size=2, patch_size=1, in_channels=2, hidden_size=8, depth=1, num_heads=2,
                       num_classes=0, learn_sigma=False)
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((12, 8)))[0]
    x, t = rng.standard_normal((3, 12)), np.array([0.3, 1.0, 2.5])
    params = random_dit_params(config, seed=5)
    variance = sigma(t, "ou-half")[:, None] ** 2
    raw = dit_latent_score(params, config, x, t, basis) * variance + x          # B n
    eps = dit_latent_score(params, config, x, t, basis, output="eps") * variance + x
    expected = x @ basis @ basis.T - np.sqrt(variance) * raw
    assert np.allclose(eps, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(InvalidArgumentError) as info:
        dit_latent_score(params, config, x, t, basis, output="v")
    assert info.value.argument == "output"
