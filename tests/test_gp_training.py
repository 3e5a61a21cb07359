"""GP4: a tiny DiT trained on GP sequences (ditcheck/gp/training.py); the full run is ``ditcheck bench gp``."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from torch import nn

from ditcheck.gp.training import (AttentionRecorder, GPTrainingConfig, GPTrainingResult, evaluate_gp_dit,
                                  kernel_correlation, lag_contrast, lag_profile, train_gp_dit)
from ditcheck.models.dit import sdpa_attention
from ditcheck.properties.gp import check_gp4_attention
from ditcheck.reference import gp
from ditcheck.reference.errors import InvalidArgumentError, ShapeError
from ditcheck.reference.schedules import sigma2

from helpers import expect_caught

#: A run of a few seconds on one core: 8 frames, one block, two heads, 150 Adam steps.
TINY = GPTrainingConfig.for_kind("exponential", frames=8, hidden_size=32, depth=1, num_heads=2, steps=150, batch=64,
                                 eval_sequences=128, learning_rate=3e-3, eval_times=(0.1, 0.3, 1.0))


@pytest.fixture(scope="module")
def tiny() -> GPTrainingResult:
    return train_gp_dit(TINY)


def test_tiny_dit_learns_the_gp_score_beyond_independent_frames(tiny: GPTrainingResult) -> None:
    assert np.mean(tiny.losses[-20:]) < 0.8 * np.mean(tiny.losses[:20])
    assert tiny.untrained_errors == [1.0] * 3  # adaLN-Zero: the untrained DiT predicts eps = 0, score 0
    errors, baseline = np.array(tiny.score_errors), np.array(tiny.baseline_errors)
    assert np.all(errors[1:] < 0.85 * baseline[1:])  # uses the other frames: beats the best frame-by-frame score


def test_gp4_tiny_dit_attention_follows_the_kernel(tiny: GPTrainingResult) -> None:
    from ditcheck.bench.gp import _gp4_verdict

    check_gp4_attention(tiny)
    assert _gp4_verdict(tiny) == "holds"


def test_planted_attention_without_positions_is_caught_as_a_flat_profile() -> None:
    """Zeroed position embedding: attention can only use content, so its lag profile is nearly flat.

    Its correlation with gamma stays high (0.88-0.99 measured), so the contrast must be what catches it.
    """
    no_positions = replace(TINY, position_embedding=False)
    caught = expect_caught(lambda config: check_gp4_attention(train_gp_dit(config)), st.just(no_positions),
                           claim="GP4", max_examples=1)
    assert "contrast" in caught.context


def test_planted_attention_growing_with_the_lag_is_caught_by_the_correlation(tiny: GPTrainingResult) -> None:
    """The trained profile reversed over lags >= 1: same contrast, attention now prefers far frames."""
    profile = tiny.attention_profile.copy()
    profile[1:] = profile[1:][::-1]
    caught = expect_caught(lambda result: check_gp4_attention(result),
                           st.just(replace(tiny, attention_profile=profile)), claim="GP4", max_examples=1)
    assert "correlation" in caught.context


class _ExactScore(nn.Module):
    """eps = -sigma_t * exact score, in DiT's latent layout: evaluate_gp_dit must then report error 0."""

    def __init__(self, config: GPTrainingConfig):
        super().__init__()
        self.config = config
        self.unused = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        frames = x.squeeze(-1).permute(0, 2, 1).numpy()
        time = float(t[0])
        score = gp.gp_score(frames, time, self.config.gamma, self.config.sigma_matrix)
        eps = -math.sqrt(float(sigma2(np.array([time]))[0])) * score
        return torch.as_tensor(eps).permute(0, 2, 1).unsqueeze(-1)


def test_evaluation_reports_zero_error_for_the_exact_score() -> None:
    """The layout [N, H, d] <-> [N, d, H, 1], the sign and the sigma_t of score = -eps / sigma_t are right."""
    config = GPTrainingConfig.for_kind("polynomial", frames=5, dim=3, eval_sequences=16)
    errors, baseline, weights = evaluate_gp_dit(_ExactScore(config), AttentionRecorder(), config)
    assert max(errors) < 1e-13 and min(baseline) > 0.01
    assert weights.shape == (0, 1, 5, 5)


def test_lag_profile_of_a_toeplitz_kernel_is_its_first_row() -> None:
    gamma = gp.gamma_matrix(6, "squared-exponential", length_scale=1.5)
    assert np.allclose(lag_profile(np.stack([gamma, gamma])), gamma[0], rtol=1e-15, atol=0)
    assert kernel_correlation(gamma[0], gamma[0]) == pytest.approx(1.0, abs=1e-15)
    assert lag_contrast(np.array([1.0, 0.5, 0.5, 0.5])) == 0.0
    assert math.isnan(kernel_correlation(np.ones(4), gamma[0, :4]))


def test_recorder_equals_sdpa_and_keeps_weights_only_while_recording() -> None:
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=torch.float64) for _ in range(3))
    recorder = AttentionRecorder()
    assert torch.allclose(recorder(q, k, v, 0.5), sdpa_attention(q, k, v, 0.5), rtol=0, atol=1e-14)
    assert recorder.weights == []
    recorder.recording = True
    recorder(q, k, v, 0.5)
    assert recorder.weights[0].shape == (2, 3, 5, 5)
    assert torch.allclose(recorder.weights[0].sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))


@pytest.mark.parametrize("call, error, argument", [
    (lambda: GPTrainingConfig(frames=0), InvalidArgumentError, "frames"),
    (lambda: GPTrainingConfig(steps=-1), InvalidArgumentError, "steps"),
    (lambda: GPTrainingConfig(t_min=2.0, t_max=1.0), InvalidArgumentError, "t_min"),
    (lambda: GPTrainingConfig(learning_rate=0.0), InvalidArgumentError, "learning_rate"),
    (lambda: GPTrainingConfig(t_max=float("inf")), InvalidArgumentError, "t_min"),
    (lambda: GPTrainingConfig(eval_times=(0.0, 1.0)), InvalidArgumentError, "eval_times"),
    (lambda: GPTrainingConfig.for_kind("matern"), InvalidArgumentError, "kind"),
    (lambda: lag_profile(np.ones((2, 3, 4))), ShapeError, "weights"),
    (lambda: kernel_correlation(np.ones(3), np.ones(4)), ShapeError, "profile"),
])
def test_bad_input_raises_typed_errors(call, error: type, argument: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert info.value.argument == argument
