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
        diffusers.DDPMScheduler, steps=(400,), samples=1500, schedule=False,
        settings=[("own config", {}), ("clip_sample=False", {"clip_sample": False})])
    own, unclipped = report.configs
    assert own.biased and report.exit_code == 1
    assert not unclipped.biased
    assert unclipped.runs[-1].w2 < 3 * report.exact_floor_w2 + 0.02
    assert "clip_sample=False" in " ".join(report.findings())


def test_ddim_discretisation_error_shrinks_with_steps():
    report = validate_scheduler.scheduler(
        diffusers.DDIMScheduler, steps=(5, 100), samples=1500, schedule=False,
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


def test_a_scheduler_whose_step_raises_is_a_failed_check_not_a_crash(capsys):
    """Isolation: the exception is a failed run with its message; nothing ran at all, so the exit code is 2."""
    report = validate_scheduler.scheduler(_BrokenStepScheduler, steps=(2,), samples=100, search=False)
    assert report.configs[0].failed and report.exit_code == 2
    assert "planted failure" in report.configs[0].runs[0].error and "planted failure" in " ".join(report.findings())
    parser = argparse.ArgumentParser()
    validate_scheduler.add_arguments(parser)
    args = parser.parse_args(["x:y", "--steps", "2", "--samples", "100"])
    args.target = _BrokenStepScheduler
    assert validate_scheduler.run(args) == 2
    assert "Traceback" not in capsys.readouterr().out


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


# ----------------------------------------------------------------------------------------
# Families: flow matching, EDM, multistep solvers; --config; isolation; out of scope

from ditcheck.validate import _scheduler_schedule as schedule_properties  # noqa: E402
from ditcheck.validate._scheduler_families import OutOfScope  # noqa: E402


def _own(report):
    return report.configs[0]


@pytest.mark.parametrize("config", [{}, {"shift": 3.0}, {"use_dynamic_shifting": True}])
def test_flow_matching_validates_with_shipped_configurations(config):
    """SD3-style shift 3.0 and Flux-style dynamic shifting (mu = FLUX_MU) reach the target with the exact velocity."""
    report = validate_scheduler.scheduler(diffusers.FlowMatchEulerDiscreteScheduler, steps=(10, 100), samples=1500,
                                          config=config, search=False)
    own = _own(report)
    assert own.family == "flow" and not own.biased and report.exit_code == 0
    assert own.runs[0].w2 > own.runs[-1].w2  # the discretisation error shrinks with the steps
    failures = {check.name: check for check in own.schedule_failures}
    if config.get("shift", 1.0) != 1.0:
        # a real finding: set_timesteps takes the constructor's already shifted sigma_min as the end of the grid it
        # shifts again, so at N = T the schedule ends at shift(shift(1/T)) = 0.0089, not the constructor's 0.0030
        assert list(failures) == ["training schedule at N = T"], own.schedule
        assert "0.0089" in failures["training schedule at N = T"].detail
    else:
        assert not failures, own.schedule


@pytest.mark.parametrize("name", ["EDMEulerScheduler", "UniPCMultistepScheduler", "SASolverScheduler",
                                  "DPMSolverMultistepScheduler", "DEISMultistepScheduler"])
def test_edm_and_multistep_solvers_validate(name):
    """UniPC and SA-Solver crashed the old validator with an AssertionError inside step(); they now validate."""
    report = validate_scheduler.scheduler(getattr(diffusers, name), steps=(100,), samples=1500, search=False,
                                          schedule=False)
    assert report.exit_code == 0 and not _own(report).failed, report.findings()


def test_config_overrides_parse_and_bad_ones_are_typed_errors():
    assert validate_scheduler.parse_config_overrides(["shift=3.0", "use_dynamic_shifting=true",
                                                      "final_sigmas_type=zero", "shift_terminal=null"]) == {
        "shift": 3.0, "use_dynamic_shifting": True, "final_sigmas_type": "zero", "shift_terminal": None}
    with pytest.raises(InvalidArgumentError) as info:
        validate_scheduler.parse_config_overrides(["shift"])
    assert info.value.argument == "--config"


def test_out_of_scope_and_unbuildable_schedulers_exit_2_with_a_reason(capsys):
    parser = argparse.ArgumentParser()
    validate_scheduler.add_arguments(parser)
    assert validate_scheduler.run(parser.parse_args(["diffusers:RePaintScheduler", "--quick"])) == 2
    assert validate_scheduler.run(parser.parse_args(["diffusers:VQDiffusionScheduler", "--quick"])) == 2
    err = capsys.readouterr().err
    assert "inpainting" in err and "discrete-token" in err and "Traceback" not in err
    with pytest.raises(OutOfScope):
        validate_scheduler.scheduler(diffusers.RePaintScheduler, steps=(2,), samples=100)


def test_a_configuration_that_raises_is_a_failed_check_and_the_search_goes_on():
    """LCM refuses more steps than its original_inference_steps (50): that run fails with the message, the rest runs."""
    report = validate_scheduler.scheduler(diffusers.LCMScheduler, steps=(4, 100), samples=300, search=False,
                                          schedule=False)
    own = _own(report)
    assert own.runs[-1].error and "original_steps" in own.runs[-1].error
    assert own.runs[0].error is None and not own.failed and report.exit_code in (0, 1)


# ----------------------------------------------------------------------------------------
# Planted schedule bugs: each a subclass of a real scheduler; each caught by its property, the parent passes


class _TwiceShiftedFlow(diffusers.FlowMatchEulerDiscreteScheduler):
    """Planted: the sigmas get the shift applied a second time after the timesteps were taken from them."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        s = self.config.shift
        self.sigmas = s * self.sigmas / (1 + (s - 1) * self.sigmas)


class _SwappedDDIM(diffusers.DDIMScheduler):
    """Planted: two neighbouring timesteps swapped."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        t = self.timesteps.clone()
        t[[2, 3]] = t[[3, 2]]
        self.timesteps = t


class _SigmaMinEuler(diffusers.EulerDiscreteScheduler):
    """Planted: final_sigmas_type='zero' configured, but the schedule ends at the smallest training sigma."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        sigmas = self.sigmas.clone()
        sigmas[-1] = sigmas[-2] * 0.5
        self.sigmas = sigmas


class _EndpointFlow(diffusers.FlowMatchEulerDiscreteScheduler):
    """Planted: inference grid ends at 1/(T + 1) instead of the constructor's 1/T (a 1e-3 relative slip at the end)."""

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        train = self.config.num_train_timesteps
        sigmas = np.linspace(1.0, 1.0 / (train + 1), num_inference_steps)
        sigmas = self.config.shift * sigmas / (1 + (self.config.shift - 1) * sigmas)
        super().set_timesteps(num_inference_steps, device=device, sigmas=list(sigmas), **kwargs)


class _Rho5Karras(diffusers.EulerDiscreteScheduler):
    """Planted: Karras sigmas with rho = 5 instead of the documented 7."""

    def _convert_to_karras(self, in_sigmas, num_inference_steps):
        sigma_min, sigma_max = in_sigmas[-1].item(), in_sigmas[0].item()
        ramp = np.linspace(0, 1, num_inference_steps)
        rho = 5.0
        return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


class _OffByOneLeading(diffusers.DDIMScheduler):
    """Planted: leading spacing with steps_offset applied twice (every timestep one too high)."""

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self.timesteps = self.timesteps + 1


PLANTED_SCHEDULES = [
    (_TwiceShiftedFlow, diffusers.FlowMatchEulerDiscreteScheduler, {"shift": 3.0}, "timesteps agree with sigmas"),
    (_SwappedDDIM, diffusers.DDIMScheduler, {}, "monotone, ends as configured"),
    (_SigmaMinEuler, diffusers.EulerDiscreteScheduler, {}, "monotone, ends as configured"),
    (_EndpointFlow, diffusers.FlowMatchEulerDiscreteScheduler, {}, "training schedule at N = T"),
    (_Rho5Karras, diffusers.EulerDiscreteScheduler, {"use_karras_sigmas": True}, "knob formulas"),
    (_OffByOneLeading, diffusers.DDIMScheduler, {}, "knob formulas"),
]


@pytest.mark.parametrize("planted, parent, config, prop", PLANTED_SCHEDULES,
                         ids=[p[0].__name__ for p in PLANTED_SCHEDULES])
def test_each_schedule_property_catches_its_planted_bug(planted, parent, config, prop):
    def checks(cls):
        merged = {k: v for k, v in {**dict(cls().config), **config}.items() if not k.startswith("_")}
        return {c.name: c for c in schedule_properties.schedule_checks(lambda: cls.from_config(merged), merged)}

    assert checks(parent)[prop].passed is True, checks(parent)[prop]
    assert checks(planted)[prop].passed is False, checks(planted)[prop]


def test_twice_shifted_flow_is_also_biased_in_sampling():
    """The same planted bug seen by the sampling check: the model is told one time, the step uses another."""
    report = validate_scheduler.scheduler(_TwiceShiftedFlow, steps=(50,), samples=1500, config={"shift": 3.0},
                                          search=False, schedule=False)
    assert _own(report).biased and report.exit_code == 1


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_ddim_validates_in_every_parameterisation(prediction):
    report = validate_scheduler.scheduler(diffusers.DDIMScheduler, steps=(100,), samples=1500, search=False,
                                          schedule=False, config={"clip_sample": False, "prediction_type": prediction})
    assert report.exit_code == 0, report.findings()


class _WrongPreconditioningEDM(diffusers.EDMEulerScheduler):
    """Planted: c_skip and c_out computed with sigma_data = 1 while the configuration says 0.5."""

    def precondition_outputs(self, sample, model_output, sigma):
        sigma_data = 1.0
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
        return c_skip * sample + c_out * model_output


def test_edm_preconditioning_is_checked_against_karras_formulas():
    """The exact model follows Karras et al. Table 1 with the configured sigma_data, not the scheduler's own code."""
    good = validate_scheduler.scheduler(diffusers.EDMEulerScheduler, steps=(100,), samples=1500, search=False,
                                        schedule=False)
    bad = validate_scheduler.scheduler(_WrongPreconditioningEDM, steps=(100,), samples=1500, search=False,
                                       schedule=False)
    assert good.exit_code == 0 and bad.exit_code == 1 and _own(bad).biased
