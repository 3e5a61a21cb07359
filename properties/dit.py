"""Properties of the whole DiT: certified forward pass, float64 envelope, torch agreement, adaLN-Zero, LD2 form.

Each ``check_*`` takes the implementation under test first and a case drawn from the
strategies below (small models: hidden 8-32, depth 1-2, 1-4 heads, patch 1-2, non-square
latent grids, learn_sigma both ways, with and without class labels) and raises
PropertyViolation via ``require``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ditcheck.reference.dit import (ADALN_CHUNK_ORDER, FINAL_ADALN_CHUNK_ORDER, DiTConfig, dit_block, dit_forward,
                                    dit_intermediates, dit_param_shapes, random_dit_params, zero_adaln)
from ditcheck.reference.precision import Arb, convert_params
from ditcheck.reference.schedules import sigma2

from .certified import require_narrow
from .strategies import fill, orthonormal_columns, seeds
from .violation import require

__all__ = [
    "DIT_FLOAT64_ENVELOPE",
    "TORCH_AGREEMENT",
    "DiTCase",
    "LatentScoreCase",
    "dit_configs",
    "dit_cases",
    "latent_score_cases",
    "check_dit_float64_envelope",
    "check_block_matches",
    "check_intermediates_match",
    "check_adaln_zero",
    "check_random_params_informative",
    "check_latent_score_form",
]

#: Stated envelope (not a derived bound) for |float64 DiT - exact| relative to max(1, max |exact|):
#: the worst case measured over 600 random dit_cases (with and without convention knobs) was 3.1e-14,
#: so 2^-36 ~ 1.5e-11 leaves a factor ~500 and still flags a float32 step (errors ~1e-7) by 10^4.
DIT_FLOAT64_ENVELOPE = 2.0**-36
#: Two float64 transcriptions of the same DiT agree to this, relative to max |reference| (normwise).
TORCH_AGREEMENT = 1e-12

_CERTIFIED = Arb(128)


# ----------------------------------------------------------------------------------------
# Cases and strategies


@dataclass(frozen=True)
class DiTCase:
    """A DiT configuration, parameter seed and inputs: everything needed to rerun one example."""

    config: DiTConfig
    param_seed: int
    input_seed: int
    times: tuple[float, ...]
    labels: tuple[int, ...] | None

    @property
    def batch(self) -> int:
        return len(self.times)

    def params(self) -> dict[str, np.ndarray]:
        return random_dit_params(self.config, self.param_seed)

    def latents(self) -> np.ndarray:
        return fill((self.batch, self.config.in_channels, *self.config.latent_size), self.input_seed)

    def t(self) -> np.ndarray:
        return np.asarray(self.times, dtype=np.float64)

    def y(self) -> np.ndarray | None:
        return None if self.labels is None else np.asarray(self.labels, dtype=np.int64)

    def inputs(self) -> dict[str, Any]:
        """Keyword arguments of dit_forward / dit_intermediates."""
        return {"params": self.params(), "x": self.latents(), "t": self.t(), "y": self.y(), "config": self.config}

    def block_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Tokens [N, T, D] and conditioning c [N, D] for one block."""
        hidden = self.config.hidden_size
        return (fill((self.batch, self.config.num_tokens, hidden), self.input_seed + 1),
                fill((self.batch, hidden), self.input_seed + 2))


def _divisors_up_to(n: int, limit: int) -> list[int]:
    return [k for k in range(1, limit + 1) if n % k == 0]


@st.composite
def dit_configs(draw: st.DrawFn, max_hidden: int = 32, max_tokens: int = 16, max_depth: int = 2,
                max_channels: int = 3, conventions: bool = False) -> DiTConfig:
    """Small DiTs (hidden 8..max_hidden, 1-4 heads, patch 1-2, h*w <= max_tokens non-square grids,
    learn_sigma both ways, num_classes 0 or 1-4). ``conventions`` also draws every convention knob."""
    hidden = draw(st.sampled_from(list(range(8, max_hidden + 1, 4))))
    side = draw(st.integers(1, min(4, max_tokens)))
    grid = (side, draw(st.integers(1, min(4, max_tokens // side))))
    patch = draw(st.integers(1, 2))
    knobs: dict[str, Any] = {}
    if conventions:
        shift = draw(st.sampled_from([0.0, 1.0]))
        knobs = {
            "mlp_ratio": draw(st.sampled_from([4.0, 2.0, 1.5])),
            "ln_eps_attn": draw(st.sampled_from([1e-6, 1e-5])), "ln_eps_mlp": draw(st.sampled_from([1e-6, 1e-5])),
            "ln_eps_final": draw(st.sampled_from([1e-6, 1e-5])),
            "gelu_approximate": draw(st.sampled_from(["tanh", "none"])),
            "frequency_dim": draw(st.sampled_from([256, 32, 17])), "max_period": draw(st.sampled_from([1e4, 1e3])),
            "flip_sin_to_cos": draw(st.booleans()), "downscale_freq_shift": shift,
            "time_scale": draw(st.sampled_from([1.0, 1000.0])),
            "attention_scale": draw(st.sampled_from([None, 0.5, 0.125])),
            "qkv_order": "".join(draw(st.permutations("qkv"))),
            "adaln_chunk_order": tuple(draw(st.permutations(ADALN_CHUNK_ORDER))),
            "final_adaln_chunk_order": tuple(draw(st.permutations(FINAL_ADALN_CHUNK_ORDER))),
        }
    return DiTConfig(input_size=(grid[0] * patch, grid[1] * patch), patch_size=patch,
                     in_channels=draw(st.integers(1, max_channels)), hidden_size=hidden,
                     depth=draw(st.integers(1, max_depth)),
                     num_heads=draw(st.sampled_from(_divisors_up_to(hidden, 4))),
                     num_classes=draw(st.sampled_from([0, 1, 4])), learn_sigma=draw(st.booleans()), **knobs)


def _labels(draw: st.DrawFn, config: DiTConfig, batch: int) -> tuple[int, ...] | None:
    """None (no label embedding) or labels in 0..num_classes, the last being the null class."""
    if not config.num_classes or draw(st.booleans()):
        return None
    return tuple(draw(st.lists(st.integers(0, config.num_classes), min_size=batch, max_size=batch)))


@st.composite
def dit_cases(draw: st.DrawFn, max_batch: int = 2, **config_options: Any) -> DiTCase:
    """A DiTCase: config from dit_configs(**config_options), timesteps in DiT's range [0, 1000)
    (or [0, 1] when time_scale = 1000), labels or None."""
    config = draw(dit_configs(**config_options))
    batch = draw(st.integers(1, max_batch))
    top = 1.0 if config.time_scale == 1000.0 else 999.0
    times = tuple(draw(st.lists(st.floats(0.0, top, allow_nan=False), min_size=batch, max_size=batch)))
    return DiTCase(config, draw(seeds()), draw(seeds()), times, _labels(draw, config, batch))


@dataclass(frozen=True)
class LatentScoreCase:
    """LD2 with a DiT: ambient x [N, D] = latent dim d0 = C*H*W plus ``extra`` dims, basis seed, times."""

    dit: DiTCase
    extra_dims: int
    basis_seed: int
    ambient_seed: int
    factor: float

    @property
    def latent_dim(self) -> int:
        config = self.dit.config
        return config.in_channels * config.latent_size[0] * config.latent_size[1]

    def basis(self) -> np.ndarray:
        return orthonormal_columns(self.latent_dim + self.extra_dims, self.latent_dim, self.basis_seed)

    def x(self) -> np.ndarray:
        return fill((self.dit.batch, self.latent_dim + self.extra_dims), self.ambient_seed)


@st.composite
def latent_score_cases(draw: st.DrawFn, max_latent_dim: int = 12) -> LatentScoreCase:
    """Small DiTs with d0 = C*H*W <= max_latent_dim, OU-half times in [0.05, 5], a power-of-two factor."""
    config = draw(dit_configs(max_hidden=16, max_tokens=4, max_depth=1, max_channels=2).filter(
        lambda c: c.in_channels * c.latent_size[0] * c.latent_size[1] <= max_latent_dim))
    batch = draw(st.integers(1, 2))
    times = tuple(draw(st.lists(st.floats(0.05, 5.0), min_size=batch, max_size=batch)))
    dit = DiTCase(config, draw(seeds()), draw(seeds()), times, _labels(draw, config, batch))
    # powers of two scale the final layer exactly, so linearity can be checked on exact parameters
    return LatentScoreCase(dit, draw(st.integers(0, 3)), draw(seeds()), draw(seeds()),
                           draw(st.sampled_from([-2.0, 0.5, 4.0, -0.25])))


# ----------------------------------------------------------------------------------------
# Properties


def _relative_gap(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(got - expected), initial=0.0) / max(np.max(np.abs(expected), initial=0.0), 1e-300))


def check_dit_float64_envelope(forward: Callable[..., np.ndarray], case: DiTCase) -> None:
    """float64 DiT forward within DIT_FLOAT64_ENVELOPE * max(1, max |exact|) of the certified (arb:128) ball."""
    inputs = case.inputs()
    ball = dit_forward(**inputs, precision=_CERTIFIED)
    got = np.asarray(forward(**inputs))
    require(got.shape == ball.shape, "dit-float64-envelope", "wrong output shape", got=got.shape,
            expected=ball.shape, case=case)
    require(np.all(np.isfinite(got)), "dit-float64-envelope", "non-finite float64 output", case=case)
    envelope = DIT_FLOAT64_ENVELOPE * max(1.0, float(np.max(np.abs(ball.mid))))
    inside = ball.within(got, np.full(got.shape, envelope))
    require(inside.all(), "dit-float64-envelope", "float64 forward outside the stated envelope of the ball",
            worst=float(np.max(np.abs(got - ball.mid))), envelope=envelope, case=case)


def check_block_matches(block: Callable[..., np.ndarray], case: DiTCase) -> None:
    """An implementation of DiTBlock (blocks.0) agrees with the reference dit_block in float64 to TORCH_AGREEMENT."""
    x, c = case.block_inputs()
    params, config = case.params(), case.config
    expected = dit_block(x, c, params, "blocks.0", config)
    got = np.asarray(block(x, c, params, "blocks.0", config))
    require(got.shape == expected.shape, "dit-block", "wrong output shape", got=got.shape, case=case)
    gap = _relative_gap(got, expected)
    require(gap <= TORCH_AGREEMENT, "dit-block", "DiT block differs from the reference", relative_gap=gap,
            case=case)


def check_intermediates_match(intermediates: Callable[..., Mapping[str, np.ndarray]], case: DiTCase) -> None:
    """Named activations (forward-hook names) agree with dit_intermediates to TORCH_AGREEMENT; names the first divergence.

    Only names both sides report are compared, but every block and the final layer must be among them.
    """
    inputs = case.inputs()
    expected = dit_intermediates(**inputs)
    got = intermediates(**inputs)
    needed = [f"blocks.{i}" for i in range(case.config.depth)] + ["x_embedder", "t_embedder", "final_layer",
                                                                  "unpatchify"]
    missing = [name for name in needed if name not in got]
    require(not missing, "dit-intermediates", "activations missing from the implementation", missing=missing,
            case=case)
    for name, value in expected.items():
        if name not in got:
            continue
        observed = np.asarray(got[name])
        require(observed.shape == np.shape(value), "dit-intermediates", f"first divergence at {name!r}: shape",
                got=observed.shape, expected=np.shape(value), case=case)
        gap = _relative_gap(observed, value)
        require(gap <= TORCH_AGREEMENT, "dit-intermediates", f"first divergence at {name!r}", relative_gap=gap,
                case=case)


def check_adaln_zero(intermediates: Callable[..., Mapping[str, np.ndarray]], case: DiTCase) -> None:
    """adaLN-Zero (DiT.initialize_weights): with zeroed adaLN and final linear every block is exactly the
    identity and the output is exactly 0."""
    inputs = case.inputs()
    inputs["params"] = zero_adaln(inputs["params"], case.config)
    activations = intermediates(**inputs)
    previous = np.asarray(activations["x_embedder"]) + inputs["params"]["pos_embed"]
    for i in range(case.config.depth):
        block = np.asarray(activations[f"blocks.{i}"])
        require(np.array_equal(block, previous), "adaln-zero", f"blocks.{i} is not the identity with zero adaLN",
                max_change=float(np.max(np.abs(block - previous))), case=case)
        previous = block
    output = np.asarray(activations["final_layer"])
    require(not output.any(), "adaln-zero", "output is not exactly 0 at adaLN-Zero init",
            max_abs=float(np.max(np.abs(output))), case=case)


def check_random_params_informative(factory: Callable[[DiTConfig, int], Mapping[str, np.ndarray]],
                                    case: DiTCase) -> None:
    """Random parameters are usable for checking: every state-dict entry present, every learned one non-zero
    (adaLN included; pos_embed is DiT's fixed sin-cos table), activations O(1), every block changes its input."""
    config = case.config
    params = factory(config, case.param_seed)
    for name, shape in dit_param_shapes(config).items():
        value = np.asarray(params.get(name))
        require(value.shape == shape, "random-params", f"{name}: wrong shape", got=value.shape, case=case)
        require(name == "pos_embed" or np.all(value != 0), "random-params", f"{name} has zero entries (checks through it are vacuous)",
                case=case)
    activations = dit_intermediates(params, case.latents(), case.t(), case.y(), config)
    previous = activations["x_embedder"] + params["pos_embed"]
    for i in range(config.depth):
        block = activations[f"blocks.{i}"]
        require(not np.array_equal(block, previous), "random-params", f"blocks.{i} is the identity", case=case)
        previous = block
    largest = max(float(np.max(np.abs(v))) for v in activations.values())
    require(1e-2 <= largest <= 1e2, "random-params", "activations are not O(1)", largest=largest, case=case)


def check_latent_score_form(score: Callable[..., Any], case: LatentScoreCase, schedule: str = "ou-half") -> None:
    """LD2 (exact, certified): sigma_t^2 s(x, t) + x = B f(B^T x, t), f = DiT noise channels, and s is affine
    in f: scaling final_layer.linear by a gives sigma^2 s_a + x = a (sigma^2 s + x). Checked by ball overlap."""
    dit, config = case.dit, case.dit.config
    params, x, t, y, basis = dit.params(), case.x(), dit.t(), dit.y(), case.basis()
    scores = score(params, config, x, t, basis, y, schedule, precision=_CERTIFIED)
    require(scores.shape == x.shape, "LD2", "score has the wrong shape", got=scores.shape, expected=x.shape,
            case=case)
    scaled = dict(params)
    for name in ("final_layer.linear.weight", "final_layer.linear.bias"):
        scaled[name] = case.factor * params[name]
    scaled_scores = score(scaled, config, x, t, basis, y, schedule, precision=_CERTIFIED)
    xp = _CERTIFIED
    variance = sigma2(t, schedule, precision=xp).balls
    with xp.context():
        exact_x, exact_basis = xp.asarray(x), xp.asarray(basis)
        latents = np.reshape(xp.matmul(exact_x, exact_basis), (dit.batch, config.in_channels, *config.latent_size))
        noise = dit_forward.generic(xp, convert_params(xp, params), latents, xp.asarray(t), y, config)
        network = np.reshape(noise[:, :config.in_channels], (dit.batch, case.latent_dim))
        expected = xp.matmul(network, np.transpose(exact_basis))
        recovered = scores.balls * variance[:, None] + exact_x
        recovered_scaled = scaled_scores.balls * variance[:, None] + exact_x
        overlaps = np.frompyfunc(lambda a, b: a.overlaps(b), 2, 1)
        for balls in (scores, scaled_scores):
            require_narrow(balls, "LD2", case=case)
        form = np.asarray(overlaps(recovered, expected), dtype=bool)
        linear_in_f = np.asarray(overlaps(recovered_scaled, xp.const(case.factor) * recovered), dtype=bool)
    require(form.all(), "LD2", "sigma^2 s + x != B f(B^T x) (balls disjoint)",
            first=tuple(int(i) for i in np.argwhere(~form)[0]) if not form.all() else None, case=case)
    require(linear_in_f.all(), "LD2", "score is not affine in f with the LD2 coefficients (balls disjoint)",
            case=case)

