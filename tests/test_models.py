"""The torch DiT and LD2 score network (ditcheck.models.dit) against the reference; float32 vs naive; planted bugs; bad input."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from helpers import at_most, expect_caught
from hypothesis import given
from hypothesis import strategies as st

from ditcheck.models import dit as models
from ditcheck.models.dit import DiT, LatentScoreNetwork, params_from_model, sdpa_attention, state_dict_from_params
from ditcheck.properties import dit as props
from ditcheck.properties import torch_dit as tprops
from ditcheck.properties.mixtures import MixtureCase, check_ld2, mixture_cases
from ditcheck.reference.dit import DiTConfig, dit_forward, dit_param_shapes, random_dit_params
from ditcheck.reference.errors import (DTypeError, InvalidArgumentError, NonFiniteError, NotOrthonormalError,
                                       PrecisionError, ShapeError, TimeOutOfRangeError)

# ----------------------------------------------------------------------------------------
# Planted bugs: small changes applied to a freshly built model (no copies of the model code)


def with_mlp_eps(eps: float) -> tprops.ModelFactory:
    """Planted: the MLP-branch LayerNorm built with another eps (diffusers' 1e-5 in an original-DiT config)."""
    def factory(config: DiTConfig, params: Mapping[str, np.ndarray]) -> DiT:
        model = tprops.float64_dit(config, params)
        for block in model.blocks:
            block.norm2.eps = eps
        return model
    return factory


def kv_swapped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return sdpa_attention(q, v, k, scale)


def with_attention(attention: models.AttentionFn, dtype: torch.dtype = torch.float64) -> tprops.ModelFactory:
    def factory(config: DiTConfig, params: Mapping[str, np.ndarray]) -> DiT:
        return DiT.from_params(config, params, attention=attention, dtype=dtype)
    return factory


def without_gate(config: DiTConfig, params: Mapping[str, np.ndarray]) -> DiT:
    """Planted: gate_msa replaced by 1 (x + attn(...) instead of x + gate * attn(...)), via a hook on adaLN_modulation."""
    model = tprops.float64_dit(config, params)
    index = config.adaln_chunk_order.index("gate_msa")

    def ungate(_module: torch.nn.Module, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
        chunks = list(out.chunk(6, dim=1))
        chunks[index] = torch.ones_like(chunks[index])
        return torch.cat(chunks, dim=1)

    for block in model.blocks:
        block.adaLN_modulation.register_forward_hook(ungate)
    return model


class TransposedUnpatchify(DiT):
    """Planted: patch rows and columns exchanged (nhwpqc -> nchqwp)."""

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), p, c = self.config.grid, self.config.patch_size, self.config.out_channels
        x = torch.einsum("nhwpqc->nchqwp", x.reshape(x.shape[0], h, w, p, p, c))
        return x.reshape(x.shape[0], c, h * p, w * p)


def transposed_unpatchify(config: DiTConfig, params: Mapping[str, np.ndarray]) -> DiT:
    return TransposedUnpatchify.from_params(config, params)


@pytest.fixture
def shift_scale_swapped(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Planted: modulate(x, shift, scale) computes x (1 + shift) + scale."""
    original = models.modulate
    monkeypatch.setattr(models, "modulate", lambda x, shift, scale: original(x, scale, shift))
    yield


# ----------------------------------------------------------------------------------------
# float64: the torch DiT is the reference DiT


@given(tprops.scaled_dit_cases(conventions=True))
def test_torch_dit_matches_reference_intermediates(case: tprops.ScaledDiTCase) -> None:
    tprops.check_torch_dit_matches(tprops.float64_dit, case)


@pytest.mark.parametrize("planted", [with_mlp_eps(1e-5), with_attention(kv_swapped), without_gate,
                                     transposed_unpatchify], ids=["mlp_eps", "kv_swapped", "missing_gate",
                                                                  "unpatchify_transposed"])
def test_planted_model_bugs_are_caught(planted: tprops.ModelFactory) -> None:
    expect_caught(lambda case: tprops.check_torch_dit_matches(planted, case), props.dit_cases(),
                  claim="dit-intermediates")


def test_planted_shift_scale_swap_is_caught_and_localised(shift_scale_swapped: None) -> None:
    caught = expect_caught(lambda case: tprops.check_torch_dit_matches(tprops.float64_dit, case), props.dit_cases(),
                           claim="dit-intermediates")
    assert "'blocks.0.attn'" in str(caught)  # norm1 and adaLN agree; the first activation after modulate differs


def test_state_dict_is_the_reference_parameter_dict() -> None:
    """Names, order and shapes are dit_param_shapes(config); params -> model -> params is the identity."""
    config = DiTConfig(input_size=(4, 6), patch_size=2, in_channels=3, hidden_size=16, depth=2, num_heads=4,
                       num_classes=5, learn_sigma=False, mlp_ratio=1.5, frequency_dim=17)
    shapes = dit_param_shapes(config)
    assert [(name, tuple(v.shape)) for name, v in DiT(config).state_dict().items()] == list(shapes.items())
    assert not DiT(config).pos_embed.requires_grad
    params = random_dit_params(config, seed=4)
    back = params_from_model(DiT.from_params(config, params))
    assert back.keys() == params.keys() and all(np.array_equal(back[name], params[name]) for name in params)
    unconditional = config.replace(num_classes=0)
    assert "y_embedder.embedding_table.weight" not in DiT(unconditional).state_dict()


def test_fresh_model_is_adaln_zero_with_the_sincos_table() -> None:
    """Construction follows DiT.initialize_weights: output exactly 0, pos_embed the reference's sin-cos table."""
    config = DiTConfig(input_size=4, patch_size=2, in_channels=2, hidden_size=8, depth=1, num_heads=2, num_classes=3)
    model = DiT(config, dtype=torch.float64)
    params = random_dit_params(config, seed=0)
    assert np.array_equal(params_from_model(model)["pos_embed"], params["pos_embed"])
    with torch.no_grad():
        out = model(torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.tensor([1.0, 5.0], dtype=torch.float64),
                    torch.tensor([0, 3]))
    assert out.shape == (2, 4, 4, 4) and not out.any()


def test_device_and_dtype_are_honoured() -> None:
    config = DiTConfig(input_size=2, patch_size=1, in_channels=1, hidden_size=8, depth=1, num_heads=1, num_classes=0)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        model = DiT(config, device="cpu", dtype=dtype)
        assert {p.dtype for p in model.state_dict().values()} == {dtype}
        with torch.no_grad():
            assert model(torch.zeros(1, 1, 2, 2, dtype=dtype), torch.zeros(1, dtype=dtype)).dtype == dtype


# ----------------------------------------------------------------------------------------
# float32: within a small multiple of the naive float32 evaluation


@at_most(25)
@given(props.dit_cases(conventions=True))
def test_float32_dit_error_within_naive_float32(case: props.DiTCase) -> None:
    tprops.check_float32_within_naive(tprops.float32_dit, case)


def half_precision_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return sdpa_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), scale).to(q.dtype)


def test_planted_low_precision_attention_is_caught_in_float32() -> None:
    expect_caught(lambda case: tprops.check_float32_within_naive(with_attention(half_precision_attention,
                                                                                torch.float32), case),
                  props.dit_cases(), claim="dit-float32", max_examples=10)


def test_naive_baseline_computes_in_float32() -> None:
    config = DiTConfig(input_size=(2, 4), patch_size=2, in_channels=2, hidden_size=8, depth=1, num_heads=2,
                       num_classes=2, gelu_approximate="none")
    case = props.DiTCase(config, 1, 2, (3.0, 700.0), (0, 2))
    naive = dit_forward(**case.inputs(), precision=tprops.NAIVE_FLOAT32)
    exact = dit_forward(**case.inputs())
    assert naive.dtype == np.float32
    assert 1e-9 < np.max(np.abs(naive - exact)) / np.max(np.abs(exact)) < 1e-4


# ----------------------------------------------------------------------------------------
# LD2: the latent score network


@at_most(40)
@given(props.latent_score_cases(), st.sampled_from(["q", "eps"]))
def test_torch_latent_score_matches_reference(case: props.LatentScoreCase, output: str) -> None:
    tprops.check_torch_latent_score_matches(LatentScoreNetwork, case, output)


class SigmaNotVariance(LatentScoreNetwork):
    """Planted: divides by sigma_t (Hu et al.'s sigma(t) is the variance; misread as a standard deviation)."""

    def sigma2(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        return torch.sqrt(super().sigma2(t, batch))


def test_planted_sigma_for_variance_is_caught() -> None:
    expect_caught(lambda case: tprops.check_torch_latent_score_matches(SigmaNotVariance, case),
                  props.latent_score_cases(), claim="LD2", max_examples=10)


@at_most(40)
@given(mixture_cases(max_latent=3))
def test_torch_ld2_with_exact_q_is_the_true_score(case: MixtureCase) -> None:
    check_ld2(case, network_score=tprops.torch_ld2_score())


def test_planted_q_read_as_noise_prediction_is_caught() -> None:
    expect_caught(lambda case: check_ld2(case, network_score=tprops.torch_ld2_score(output="eps")),
                  mixture_cases(max_latent=3), claim="LD2", max_examples=10)


@at_most(30)
@given(mixture_cases(max_latent=3), st.integers(0, 2**32 - 1))
def test_score_error_is_network_error_over_variance(case: MixtureCase, seed: int) -> None:
    tprops.check_ld2_error_identity(LatentScoreNetwork, case, seed)


def test_planted_sigma_for_variance_breaks_the_error_identity() -> None:
    expect_caught(lambda args: tprops.check_ld2_error_identity(SigmaNotVariance, *args),
                  st.tuples(mixture_cases(max_latent=3), st.integers(0, 2**32 - 1)), claim="LD2", max_examples=10)


# ----------------------------------------------------------------------------------------
# Bad input

CONFIG = DiTConfig(input_size=(4, 6), patch_size=2, in_channels=2, hidden_size=8, depth=1, num_heads=2, num_classes=3)
PARAMS = random_dit_params(CONFIG, seed=0)
MODEL = DiT.from_params(CONFIG, PARAMS)
X, T = torch.ones(2, 2, 4, 6, dtype=torch.float64), torch.tensor([1.0, 10.0], dtype=torch.float64)
Y = torch.tensor([0, 3])


def test_valid_forward_matches_reference_on_the_sample() -> None:
    with torch.no_grad():
        out = MODEL(X, T, Y).numpy()
    expected = dit_forward(PARAMS, X.numpy(), T.numpy(), Y.numpy(), CONFIG)
    assert out.shape == (2, 4, 4, 6) and np.max(np.abs(out - expected)) <= 1e-12 * np.max(np.abs(expected))


def test_wrong_config_type_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        DiT("DiT-XL/2")  # type: ignore[arg-type]
    assert info.value.argument == "config"
    with pytest.raises(InvalidArgumentError) as info:
        DiT(CONFIG, attention="flash")  # type: ignore[arg-type]
    assert info.value.argument == "attention"


@pytest.mark.parametrize(("inputs", "error", "argument"), [
    ({"x": torch.ones(2, 2, 4, 4, dtype=torch.float64)}, ShapeError, "x"),
    ({"x": torch.ones(2, 4, 6, dtype=torch.float64)}, ShapeError, "x"),
    ({"x": np.ones((2, 2, 4, 6))}, InvalidArgumentError, "x"), ({"t": [1.0, 10.0]}, InvalidArgumentError, "t"),
    ({"x": torch.ones(2, 2, 4, 6, dtype=torch.int64)}, DTypeError, "x"),
    ({"t": torch.ones(3, dtype=torch.float64)}, ShapeError, "t"),
    ({"y": torch.tensor([0.0, 1.0])}, DTypeError, "y"), ({"y": torch.tensor([0, 4])}, InvalidArgumentError, "y"),
    ({"y": torch.tensor([-1, 0])}, InvalidArgumentError, "y"), ({"y": torch.tensor([0])}, ShapeError, "y"),
])
def test_bad_forward_input_names_the_argument(inputs: dict[str, Any], error: type, argument: str) -> None:
    call = {"x": X, "t": T, "y": Y, **inputs}
    with pytest.raises(error) as info:
        MODEL(**call)
    assert type(info.value) is error and info.value.argument == argument


def test_labels_for_an_unconditional_model_are_rejected() -> None:
    config = CONFIG.replace(num_classes=0)
    with pytest.raises(InvalidArgumentError) as info:
        DiT(config, dtype=torch.float64)(X, T, Y)
    assert info.value.argument == "y"


def test_bad_parameters_name_the_entry() -> None:
    with pytest.raises(NonFiniteError) as info:
        state_dict_from_params({**PARAMS, "blocks.0.attn.qkv.weight": np.full((24, 8), np.nan)})
    assert info.value.argument == "params['blocks.0.attn.qkv.weight']"
    with pytest.raises(ShapeError) as info:
        DiT.from_params(CONFIG, {**PARAMS, "final_layer.linear.bias": np.ones(3)})
    assert info.value.argument == "params['final_layer.linear.bias']"
    with pytest.raises(InvalidArgumentError) as info:
        DiT.from_params(CONFIG, {k: v for k, v in PARAMS.items() if k != "pos_embed"})
    assert info.value.argument == "params"
    with pytest.raises(DTypeError) as info:
        state_dict_from_params([1.0])  # type: ignore[arg-type]
    assert info.value.argument == "params"


SMALL = DiTConfig(input_size=2, patch_size=1, in_channels=1, hidden_size=8, depth=1, num_heads=1, num_classes=0)
BASIS = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 4)))[0]


def score_network(**kwargs: Any) -> LatentScoreNetwork:
    return LatentScoreNetwork(DiT.from_params(SMALL, random_dit_params(SMALL, 0)), kwargs.pop("basis", BASIS),
                              **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "argument"), [
    ({"basis": 2 * BASIS}, NotOrthonormalError, "basis"), ({"basis": BASIS[:, :3]}, ShapeError, "basis"),
    ({"basis": torch.from_numpy(BASIS).float()}, NotOrthonormalError, "basis"),
    ({"output": "v"}, InvalidArgumentError, "output"), ({"schedule": "cosine"}, InvalidArgumentError, "schedule"),
])
def test_bad_score_network_arguments_are_rejected(kwargs: dict[str, Any], error: type, argument: str) -> None:
    with pytest.raises(error) as info:
        score_network(**kwargs)
    assert info.value.argument == argument


def test_score_network_needs_a_latent_shape_for_other_networks() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        LatentScoreNetwork(torch.nn.Identity(), BASIS)
    assert info.value.argument == "latent_shape"


@pytest.mark.parametrize(("x", "t", "schedule", "error", "argument"), [
    (torch.ones(2, 5, dtype=torch.float64), 0.5, "ou-half", ShapeError, "x"),
    (torch.ones(2, 6, dtype=torch.float64), torch.ones(3), "ou-half", ShapeError, "t"),
    (torch.ones(2, 6, dtype=torch.float64), 0.0, "ou-half", TimeOutOfRangeError, "t"),
    (torch.ones(2, 6, dtype=torch.float64), torch.tensor([0.5, -1.0]), "ou-half", TimeOutOfRangeError, "t"),
    (torch.ones(2, 6, dtype=torch.float64), 1.5, "vp-linear", TimeOutOfRangeError, "t"),
    (torch.ones(2, 6, dtype=torch.float32), 0.5, "ou-half", DTypeError, "x"),
])
def test_bad_score_inputs_name_the_argument(x: torch.Tensor, t: Any, schedule: str, error: type,
                                            argument: str) -> None:
    network = score_network(schedule=schedule)
    with pytest.raises(error) as info:
        network(x, t)
    assert info.value.argument == argument


def test_torch_ld2_score_refuses_other_precisions() -> None:
    with pytest.raises(PrecisionError) as info:
        tprops.torch_ld2_score()(np.zeros((1, 6)), np.array([0.5]), BASIS, lambda xp, h, t: h, precision="arb:64")
    assert info.value.argument == "precision"
