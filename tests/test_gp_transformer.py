"""GP2: the unrolled gradient-descent transformer (ditcheck/gp/transformer.py) and the reference iteration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given

from ditcheck.bounds import gp2_condition_upper, gp2_rate, gp2_rounding_floor
from ditcheck.gp.transformer import GradientStepBlock, KernelAttention, UnrolledGPTransformer, positional_encodings
from ditcheck.properties.gp import GPCase, gp_cases
from ditcheck.properties.gp import UnrolledCase, check_gp2_attention_weights, check_gp2_unrolled, unrolled_cases
from ditcheck.reference import gp
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, ShapeError
from ditcheck.reference.formats import FLOAT64

from helpers import at_most, expect_caught


@at_most(50)
@given(unrolled_cases(max_steps=40))
def test_gp2_blocks_reproduce_the_iteration_and_obey_the_rate(case: UnrolledCase) -> None:
    check_gp2_unrolled(case)


@at_most(20)
@given(unrolled_cases(max_steps=20))
def test_gp2_in_float32_within_the_float32_floor(case: UnrolledCase) -> None:
    check_gp2_unrolled(case, dtype=torch.float32)


@at_most(8)
@given(gp_cases(max_frames=4, max_dim=2))
def test_gp2_float64_transformer_within_its_floor_of_the_certified_iterate(problem) -> None:
    """arb balls contain the exact K-th iterate for the float64 step h: the floor bounds the transformer alone."""
    steps = 12
    model = UnrolledGPTransformer(problem.gamma, problem.sigma_matrix, steps, schedule=problem.schedule,
                                  dtype=torch.float64)
    x = problem.x[:1]
    out = model(torch.as_tensor(x), problem.time).numpy()
    balls = gp.gradient_descent(x, problem.time, problem.gamma, problem.sigma_matrix, steps, problem.schedule,
                                precision="arb:128")
    assert np.all(balls.rad <= 1e-30 * (1 + np.abs(balls.mid)))
    kappa = gp2_condition_upper(problem.time, problem.gamma, problem.sigma_matrix, problem.schedule)
    exact = gp.gp_score(x, problem.time, problem.gamma, problem.sigma_matrix, problem.schedule)
    floor = float(gp2_rounding_floor(steps, kappa, problem.frames, problem.dim, FLOAT64.unit_roundoff))
    assert balls.within(out, floor * 1.01 * np.linalg.norm(exact)).all()  # 1.01: ||s*|| from the float64 score


@pytest.mark.parametrize("kind, parameters", [("exponential", {"length_scale": 2.0}),
                                              ("squared-exponential", {"length_scale": 1.5}),
                                              ("polynomial", {"nu": 1.0})])
def test_error_decays_with_depth_for_each_decay_class(kind: str, parameters: dict[str, float]) -> None:
    """The GP2 table (ditcheck bench gp): error vs K per decay class, below (1 - 1/kappa)^K and decreasing."""
    gamma = gp.gamma_matrix(12, kind, **parameters)
    sigma_matrix = np.array([[1.0, 0.4], [0.4, 0.8]])
    x = gp.sample_gp(gamma, sigma_matrix, 4, seed=7)
    t = 0.5
    model = UnrolledGPTransformer(gamma, sigma_matrix, 64, dtype=torch.float64)
    iterates = model(torch.as_tensor(x), t, return_iterates=True).numpy()
    exact = gp.gp_score(x, t, gamma, sigma_matrix)
    errors = np.array([np.linalg.norm(iterates[k] - exact) / np.linalg.norm(exact) for k in range(65)])
    kappa = float(gp2_condition_upper(t, gamma, sigma_matrix))
    assert np.all(np.diff(errors) < 0)  # every block moves closer: I - hA is a contraction with eigenvalues in [0, 1)
    assert np.all(errors <= gp2_rate(kappa, 1) ** np.arange(65) + 1e-12)
    assert errors[-1] < 0.5 * gp2_rate(kappa, 64)  # the rate is not vacuous here: it is within a small factor


def test_encodings_give_the_same_weights_and_the_one_hot_ones_are_exact() -> None:
    gamma = gp.gamma_matrix(7, "polynomial", nu=0.7)
    for encoding in ("one-hot", "factor", "softmax"):
        model = UnrolledGPTransformer(gamma, np.eye(3), 2, encoding=encoding, dtype=torch.float64)
        weights = model.attention_weights().numpy()
        assert np.allclose(weights, gamma, rtol=0, atol=1e-14)
    exact = UnrolledGPTransformer(gamma, np.eye(3), 1, encoding="one-hot", dtype=torch.float64)
    assert np.array_equal(exact.attention_weights().numpy(), gamma)
    table, _, _ = positional_encodings(gamma, "factor")
    assert table.shape == (7, 7) and np.allclose(table @ table.T, gamma, atol=1e-14)


def test_single_sequence_zero_blocks_and_tensor_times() -> None:
    gamma = gp.gamma_matrix(4, "exponential", length_scale=1.0)
    x = gp.sample_gp(gamma, np.eye(2), 2, seed=3)
    model = UnrolledGPTransformer(gamma, np.eye(2), 5, dtype=torch.float64)
    batch = model(torch.as_tensor(x), torch.tensor([0.2, 0.9], dtype=torch.float64))
    single = model(torch.as_tensor(x[1]), 0.9)
    assert torch.equal(single, batch[1])
    assert model(torch.as_tensor(x[1]), 0.9, return_iterates=True).shape == (6, 4, 2)
    zero = UnrolledGPTransformer(gamma, np.eye(2), 0, dtype=torch.float64)
    assert torch.equal(zero(torch.as_tensor(x), 0.5), torch.zeros(2, 4, 2, dtype=torch.float64))
    assert np.array_equal(zero.attention_weights().numpy(), gamma)


# ---- planted bugs -------------------------------------------------------------------------------


class _DoubleStep(UnrolledGPTransformer):
    def step_size(self, t: np.ndarray) -> np.ndarray:
        return 2 * super().step_size(t)


def _double_step_iteration(x, t, gamma, sigma_matrix, steps, schedule="ou-half"):
    h = gp.gradient_descent_step_size(t, gamma, sigma_matrix, schedule)
    return gp.gradient_descent(x, t, gamma, sigma_matrix, steps, schedule, step_size=2 * np.reshape(h, (-1,)))


def test_planted_step_size_two_over_lambda_max_is_caught_by_the_rate() -> None:
    """h = 2/lambda_max in the transformer and the reference alike: they agree, the top mode no longer contracts."""
    caught = expect_caught(lambda case: check_gp2_unrolled(case, build=_DoubleStep, iterate=_double_step_iteration),
                           unrolled_cases(), claim="GP2")
    assert "bound" in caught.context  # the rate, not the transformer-vs-iteration comparison


def test_planted_transposed_kronecker_factor_in_the_iteration_is_caught() -> None:
    def transposed(x, t, gamma, sigma_matrix, steps, schedule="ou-half"):
        n = x.shape[0]
        a2 = gp.coefficients(gp.FLOAT64, t, schedule, n)[1] ** 2
        s2 = gp.coefficients(gp.FLOAT64, t, schedule, n)[2]
        h = np.broadcast_to(gp.gradient_descent_step_size(t, gamma, sigma_matrix, schedule), (n,))
        kron = np.kron(sigma_matrix, gamma)  # wrong order: Sigma (x) Gamma on the row-major vec
        flat, state = x.reshape(n, -1), np.zeros((n, x[0].size))
        for _ in range(steps):
            state = state - h[:, None] * (a2[:, None] * state @ kron + s2[:, None] * state + flat)
        return state.reshape(x.shape)

    expect_caught(lambda case: check_gp2_unrolled(case, iterate=transposed), unrolled_cases(max_steps=4), claim="GP2")


class _NoGain(KernelAttention):
    """Softmax attention without the per-token gain: weights gamma(i, j) / sum_j gamma(i, j)."""

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        scores = (z @ self.w_q) @ (z @ self.w_k).transpose(-1, -2)
        return torch.softmax(scores, dim=-1) if self.softmax else scores


class _NoGainBlock(GradientStepBlock):
    def __init__(self, gamma, sigma_matrix, encoding="one-hot", *, device=None, dtype=None):
        super().__init__(gamma, sigma_matrix, encoding, device=device, dtype=dtype)
        self.attn = _NoGain(gamma, sigma_matrix, encoding, device=device, dtype=dtype)


def _no_gain_model(gamma, sigma_matrix, num_blocks, **kwargs):
    model = UnrolledGPTransformer(gamma, sigma_matrix, num_blocks, **kwargs)
    model.blocks = torch.nn.ModuleList(_NoGainBlock(model.gamma, model.sigma_matrix, model.encoding,
                                                    dtype=kwargs.get("dtype")) for _ in range(max(num_blocks, 1)))
    return model


def test_planted_softmax_without_gain_is_caught() -> None:
    expect_caught(lambda case: check_gp2_attention_weights(case, build=_no_gain_model), unrolled_cases(max_steps=1),
                  claim="GP2")


def test_planted_missing_noise_term_is_caught() -> None:
    """Gate b = 0 (drops sigma_t^2 s): the iteration then solves alpha^2 Gamma (x) Sigma s = -x instead."""

    class NoNoise(UnrolledGPTransformer):
        def gates(self, t, count):
            out = super().gates(t, count)
            out[:, 1] = 0.0
            return out

    expect_caught(lambda case: check_gp2_unrolled(case, build=NoNoise), unrolled_cases(), claim="GP2")


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call, error, argument", [
    (lambda: UnrolledGPTransformer(np.eye(3), np.eye(2), 2, encoding="rope"), InvalidArgumentError, "encoding"),
    (lambda: UnrolledGPTransformer(np.eye(3), np.eye(2), -1), InvalidArgumentError, "num_blocks"),
    (lambda: UnrolledGPTransformer(np.eye(3), np.eye(2), 1, encoding="softmax"), InvalidArgumentError, "gamma"),
    (lambda: UnrolledGPTransformer(np.eye(3), np.eye(2), 1)(torch.zeros(2, 3, 3), 0.5), ShapeError, "x"),
    (lambda: UnrolledGPTransformer(np.array([[1.0, 2.0], [2.0, 1.0]]), np.eye(2), 1), InvalidArgumentError, "gamma"),
    (lambda: gp.gradient_descent(np.zeros((3, 2)), 0.5, np.eye(3), np.eye(2), -1), InvalidArgumentError, "steps"),
    (lambda: gp.gradient_descent(np.zeros((2, 3, 2)), 0.5, np.eye(3), np.eye(2), 2, step_size=np.ones(3)),
     ShapeError, "step_size"),
    (lambda: gp2_rounding_floor(-1, 2.0, 3, 2, FLOAT64.unit_roundoff), InvalidArgumentError, "steps"),
    (lambda: positional_encodings(np.ones((3, 2))), ShapeError, "gamma"),
    (lambda: UnrolledGPTransformer(np.eye(3), np.eye(2), 1, dtype=torch.float64)(torch.zeros(3, 2), 0.5),
     DTypeError, "x"),
    (lambda: check_gp2_attention_weights(UnrolledCase(GPCase(3, 2, "exponential", (("length_scale", 1.0),), 0, 1,
                                                             "ou-half", 0.5), 1, "one-hot"), dtype=torch.bfloat16),
     InvalidArgumentError, "dtype"),
])
def test_bad_input_raises_typed_errors(call, error: type, argument: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert info.value.argument == argument


# ---- ditcheck bench gp ----------------------------------------------------------------------------


def test_bench_gp_tables_and_arguments() -> None:
    from ditcheck.bench import gp as bench
    from ditcheck.cli import build_parser

    rows = bench.gp2_rows(frames=6, depths=(0, 3, 12), sequences=2)
    assert [row.kind for row in rows] == ["exponential", "squared-exponential", "polynomial"]
    for row in rows:
        assert row.errors[0] == 1.0 and all(e <= b + row.floor for e, b in zip(row.errors, row.bounds))
        assert row.gap <= row.floor
    banding = bench.gp3_rows(frames=8, widths=(1, 7))
    assert {row[2] for row in banding} <= {"positive definite", "indefinite", "undecided"}
    assert all(r[4] == 0.0 for r in banding if r[1] == 7)  # full band: the kernel itself
    args = build_parser().parse_args(["bench", "gp", "--quick", "--plot", "out.png", "--ablation"])
    assert args.quick and args.plot == "out.png" and args.ablation and args.threads == 1
    for bad in (["--threads", "0"], ["--time", "0"], ["--time", "nan"], ["--steps", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "gp", *bad])
