"""ditcheck validate scheduler: diffusers' DDPM/DDIM step loops driven by the exact eps of a Gaussian mixture."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from ditcheck.reference import mixtures
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.validate import _scheduler as validate_scheduler
from ditcheck.validate import TargetError

diffusers = pytest.importorskip("diffusers")


def test_exact_eps_matches_the_reference_score():
    mixture = validate_scheduler.default_target()
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((6, 2)))
    alpha_bar = 0.37
    # alpha_bar = e^-2t in OU-unit time: t = -ln(alpha_bar)/2
    t = -math.log(alpha_bar) / 2
    expected = -math.sqrt(1 - alpha_bar) * mixtures.score(mixture, x.numpy(), t, "ou-unit")
    np.testing.assert_allclose(validate_scheduler.exact_eps(mixture, x, alpha_bar).numpy(), expected, rtol=1e-12,
                               atol=1e-12)


def test_ddpm_clip_sample_biases_and_unclipped_reaches_the_target():
    """The DDPM default clip_sample=True clamps x0_hat to [-1, 1]: with data beyond that range it is biased even with exact eps."""
    report = validate_scheduler.scheduler(
        diffusers.DDPMScheduler, steps=(400,), samples=1500,
        settings=[("own config", {}), ("clip_sample=False", {"clip_sample": False})])
    own, unclipped = report.configs
    assert own.biased and report.exit_code == 1
    assert not unclipped.biased
    assert unclipped.runs[-1].w2 < 3 * report.exact_floor_w2 + 0.02
    assert "clip_sample=False" in " ".join(report.findings())


def test_ddim_discretisation_error_shrinks_with_steps():
    report = validate_scheduler.scheduler(
        diffusers.DDIMScheduler, steps=(5, 100), samples=1500,
        settings=[("clip_sample=False", {"clip_sample": False})])
    few, many = report.configs[0].runs
    assert few.biased and not many.biased
    assert many.w2 < few.w2 / 2
    assert report.exit_code == 0


def test_bad_targets_and_arguments():
    with pytest.raises(TargetError):
        validate_scheduler.scheduler(lambda: object(), steps=(2,), samples=100)
    with pytest.raises(InvalidArgumentError) as info:
        validate_scheduler.scheduler(diffusers.DDPMScheduler, steps=(2000,), samples=100)
    assert info.value.argument == "steps"
    with pytest.raises(InvalidArgumentError) as info:
        validate_scheduler.scheduler(diffusers.DDPMScheduler, samples=10)
    assert info.value.argument == "samples"


class _BrokenStepScheduler:
    """A diffusers-style scheduler whose step() fails: a failure of the target (exit code 2), not a finding."""

    alphas_cumprod = torch.linspace(0.99, 0.01, 10, dtype=torch.float64)
    timesteps = torch.arange(9, -1, -1)

    def set_timesteps(self, steps):
        pass

    def step(self, eps, t, x, generator=None):
        raise RuntimeError("planted failure")


def test_a_scheduler_that_cannot_step_is_a_target_error():
    with pytest.raises(TargetError) as info:
        validate_scheduler.scheduler(_BrokenStepScheduler, steps=(2,), samples=100)
    assert "planted failure" in str(info.value)
    parser = argparse.ArgumentParser()
    validate_scheduler.add_arguments(parser)
    args = parser.parse_args(["x:y", "--steps", "2", "--samples", "100"])
    args.target = _BrokenStepScheduler
    assert validate_scheduler.run(args) == 2


def test_cli_run(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    validate_scheduler.add_arguments(parser)
    out = tmp_path / "report.json"
    args = parser.parse_args(["diffusers:DDIMScheduler", "--steps", "50", "--samples", "300", "--json", str(out)])
    code = validate_scheduler.run(args)
    printed = capsys.readouterr().out
    assert "DDIMScheduler" in printed and "clip_sample=False" in printed
    payload = json.loads(out.read_text())
    assert payload["scheduler"] == "DDIMScheduler" and payload["findings"]
    # DDIM's default clip_sample=True clamps x0_hat to [-1, 1] and the default target reaches beyond it: the own
    # configuration is biased (variance z ~ 14 measured), clip_sample=False is not (|z| ~ 1)
    configs = {config["label"]: config["runs"][-1] for config in payload["configs"]}
    assert code == 1
    assert max(configs["own config"]["mean_z"], configs["own config"]["variance_z"]) > 5
    assert max(configs["clip_sample=False"]["mean_z"], configs["clip_sample=False"]["variance_z"]) < 5
    assert validate_scheduler.run(parser.parse_args(["no_such_module_xyz:Thing"])) == 2
