"""Properties of the torch DiT (ditcheck.models.dit): agreement with the reference, float32 error, LD2 score network.

Each ``check_*`` takes the implementation under test first (a model factory or a score function)
and a case from the strategies of properties.dit / properties.mixtures, and raises
PropertyViolation via ``require``. The float32 baseline is :data:`NAIVE_FLOAT32`: the reference's
own formulas evaluated in NumPy float32 (explicit softmax(scale q k^T) v, two-pass LayerNorm, one
rounding per elementary operation, BLAS sgemm for products, no fused kernels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

from ditcheck import bounds
from ditcheck.fast_attention.attention import EXP_FLOPS  # the exact-attention model of attention.predicted_cost
from ditcheck.models.dit import DiT, LatentScoreNetwork
from ditcheck.reference import formats
from ditcheck.reference.dit import DiTConfig, dit_forward, dit_intermediates, dit_latent_score, random_dit_params
from ditcheck.reference.errors import InvalidArgumentError, PrecisionError
from ditcheck.reference.mixtures import denoiser_q, denoiser_q_function
from ditcheck.reference.native import Native
from ditcheck.reference.precision import Float64, Precision
from ditcheck.reference.schedules import Schedule

from .mixtures import MixtureCase, measure_ld2, mixture_cases
from .dit import TORCH_AGREEMENT, DiTCase, LatentScoreCase, check_intermediates_match, dit_cases
from .measurement import Measurement
from .violation import require

__all__ = [
    "NAIVE_FLOAT32",
    "FLOAT32_FACTOR",
    "FLOAT32_FLOOR",
    "ModelFactory",
    "ScaledDiTCase",
    "scaled_dit_cases",
    "float64_dit",
    "float32_dit",
    "hook_intermediates",
    "check_torch_dit_matches",
    "check_float32_within_naive",
    "check_torch_latent_score_matches",
    "torch_ld2_score",
    "measure_ld2_error_identity",
    "check_ld2_error_identity",
    "TorchLD2Case",
    "torch_ld2_cases",
    "measure_torch_ld2",
    "check_criteria_recomputed",
]

#: The float32 torch DiT may err (vs the float64 reference on the same float32-rounded inputs) by at most
#: this multiple of the naive float32 evaluation's error ...
FLOAT32_FACTOR = 4.0
#: ... or by this floor, relative to max(1, max |exact|): 8 float32 unit roundoffs, for cases where the naive
#: evaluation happens to be almost exact (FlashAttention's rule broke on a zero baseline without a floor).
FLOAT32_FLOOR = 8 * formats.FLOAT32.unit_roundoff

ModelFactory = Callable[[DiTConfig, Mapping[str, np.ndarray]], nn.Module]


#: The reference's formulas in NumPy float32, every array and constant float32 so that each operation rounds once
#: to float32 (erf: libm's double erf rounded to float32). Not a rounding-error bound: the same-dtype baseline of the
#: PyTorch SDPA / FlashAttention tests (docs/conventions.md#tolerances).
NAIVE_FLOAT32: Precision = Native("float32")


@dataclass(frozen=True)
class ScaledDiTCase(DiTCase):
    """A DiTCase whose random parameters have another scale (reference.dit.random_dit_params' ``scale``)."""

    weight_scale: float = 1.0

    def params(self) -> dict[str, np.ndarray]:
        return random_dit_params(self.config, self.param_seed, self.weight_scale)


@st.composite
def scaled_dit_cases(draw: st.DrawFn, scales: tuple[float, ...] = (0.25, 1.0, 2.0), **options: Any) -> ScaledDiTCase:
    """dit_cases(**options) with the weight scale drawn from ``scales`` (2: activations up to ~1e3, sharp attention)."""
    case = draw(dit_cases(**options))
    return ScaledDiTCase(**{field.name: getattr(case, field.name) for field in fields(DiTCase)},
                         weight_scale=draw(st.sampled_from(scales)))


def float64_dit(config: DiTConfig, params: Mapping[str, np.ndarray]) -> nn.Module:
    """ditcheck.models.dit.DiT in float64 on the CPU holding ``params`` (the implementation the properties check by default)."""
    return DiT.from_params(config, params, dtype=torch.float64)


def float32_dit(config: DiTConfig, params: Mapping[str, np.ndarray]) -> nn.Module:
    """ditcheck.models.dit.DiT in float32 holding ``params`` rounded to float32."""
    return DiT.from_params(config, params, dtype=torch.float32)


def _call(model: nn.Module, x: np.ndarray, t: np.ndarray, y: np.ndarray | None, dtype: torch.dtype) -> torch.Tensor:
    labels = None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))
    with torch.no_grad():
        return model(torch.from_numpy(x).to(dtype), torch.from_numpy(t).to(dtype), labels)


def hook_intermediates(factory: ModelFactory = float64_dit) -> Callable[..., dict[str, np.ndarray]]:
    """Forward-hook activations of ``factory(config, params)`` keyed by submodule name, plus the output as "unpatchify".

    The returned function has dit_intermediates' signature (params, x, t, y, config), so
    properties.dit.check_intermediates_match compares it with the reference name by name.
    """

    def intermediates(params: Mapping[str, np.ndarray], x: np.ndarray, t: np.ndarray, y: np.ndarray | None,
                      config: DiTConfig) -> dict[str, np.ndarray]:
        model = factory(config, params)
        seen: dict[str, np.ndarray] = {}

        def keep(name: str) -> Callable[..., None]:
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                if isinstance(output, torch.Tensor):
                    seen[name] = output.detach().double().numpy()
            return hook

        handles = [module.register_forward_hook(keep(name)) for name, module in model.named_modules() if name]
        try:
            seen["unpatchify"] = _call(model, x, t, y, torch.float64).double().numpy()
        finally:
            for handle in handles:
                handle.remove()
        return seen

    return intermediates


def check_torch_dit_matches(factory: ModelFactory, case: DiTCase) -> None:
    """The torch DiT equals the reference DiT in float64: every hooked activation and the output to TORCH_AGREEMENT
    (properties.dit.check_intermediates_match, which names the first submodule that diverges)."""
    check_intermediates_match(hook_intermediates(factory), case)


def _rounded(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32).astype(np.float64)


def check_float32_within_naive(factory: ModelFactory, case: DiTCase, factor: float = FLOAT32_FACTOR,
                               floor: float = FLOAT32_FLOOR) -> None:
    """float32 torch DiT error <= max(factor x naive float32 error, floor); errors vs the float64 reference / max(1, max |exact|).

    Inputs and parameters are rounded to float32 first, so all three see bit-identical inputs
    (docs/conventions.md#tolerances); the float64 reference (within 2^-36 of exact, properties.dit) stands for the truth.
    """
    config, y = case.config, case.y()
    params = {name: _rounded(value) for name, value in case.params().items()}
    x, t = _rounded(case.latents()), _rounded(case.t())
    exact = dit_forward(params, x, t, y, config)
    naive = dit_forward(params, x, t, y, config, precision=NAIVE_FLOAT32)
    require(naive.dtype == np.float32, "dit-float32", "the naive baseline was not evaluated in float32",
            dtype=str(naive.dtype))
    model = factory(config, params)
    got = _call(model, x.astype(np.float32), t.astype(np.float32), y, torch.float32)
    require(got.dtype == torch.float32, "dit-float32", "the model did not compute in float32", dtype=str(got.dtype),
            case=case)
    got = got.double().numpy()
    size = max(1.0, float(np.max(np.abs(exact))))
    error = float(np.max(np.abs(got - exact))) / size
    baseline = float(np.max(np.abs(naive.astype(np.float64) - exact))) / size
    allowed = max(factor * baseline, floor)
    require(error <= allowed, "dit-float32", "float32 model error exceeds the naive-float32 allowance",
            error=error, naive_error=baseline, factor=factor, floor=floor, case=case)


# ----------------------------------------------------------------------------------------
# LD2


def check_torch_latent_score_matches(score_network: Callable[..., nn.Module], case: LatentScoreCase,
                                     output: str = "q", schedule: str = "ou-half") -> None:
    """LD2 in torch: ``score_network(dit, basis, schedule=, output=)`` (LatentScoreNetwork) equals
    reference.dit.dit_latent_score in float64 to TORCH_AGREEMENT, relative to max |reference|."""
    dit, config = case.dit, case.dit.config
    params, x, t, y, basis = dit.params(), case.x(), dit.t(), dit.y(), case.basis()
    expected = dit_latent_score(params, config, x, t, basis, y, schedule, output)
    network = score_network(float64_dit(config, params), basis, schedule=schedule, output=output)
    labels = None if y is None else torch.from_numpy(y)
    with torch.no_grad():
        got = network(torch.from_numpy(x), torch.from_numpy(t), labels).numpy()
    require(got.shape == expected.shape, "LD2", "score has the wrong shape", got=got.shape, case=case)
    gap = float(np.max(np.abs(got - expected), initial=0.0) / max(np.max(np.abs(expected), initial=0.0), 1e-300))
    require(gap <= TORCH_AGREEMENT, "LD2", "torch latent score differs from dit_latent_score", relative_gap=gap,
            output=output, case=case)


class _LatentFunction(nn.Module):
    """A reference LatentFunction f(xp, h, t) (e.g. a mixture's exact q) as a network on latents [N, d0, 1, 1]."""

    def __init__(self, f: Callable[..., Any]):
        super().__init__()
        self.f = f

    def forward(self, images: torch.Tensor, t: torch.Tensor, y: Any = None) -> torch.Tensor:
        h = images.reshape(images.shape[0], -1).double().numpy()
        out = np.asarray(self.f(Float64(), h, t.double().numpy()), dtype=np.float64)
        return torch.from_numpy(out).reshape(images.shape).to(images.dtype)


def torch_ld2_score(score_network: Callable[..., nn.Module] = LatentScoreNetwork, output: str = "q"
                    ) -> Callable[..., np.ndarray]:
    """``score_network`` with f a reference latent function, in the signature of reference.latent.ld2_score.

    Lets properties.mixtures.check_ld2 check the torch composition: with W_B = B and f = q (the exact
    q of a latent Gaussian mixture) the torch LD2 score must be the mixture's true score.
    """

    def score(x: np.ndarray, t: np.ndarray, basis: np.ndarray, f: Callable[..., Any],
              schedule: str | Schedule = "ou-half", *, precision: str = "float64") -> np.ndarray:
        if precision != "float64":
            raise PrecisionError("precision", "'float64' (the torch score network computes in float64)",
                                 repr(precision))
        latent_dim = np.shape(basis)[1]
        network = score_network(_LatentFunction(f), basis, schedule=schedule, output=output,
                                latent_shape=(latent_dim, 1, 1), dtype=torch.float64)
        with torch.no_grad():
            return network(torch.from_numpy(np.asarray(x, dtype=np.float64)), torch.from_numpy(np.asarray(t))).numpy()

    return score


def measure_ld2_error_identity(score_network: Callable[..., nn.Module], case: MixtureCase, seed: int) -> Measurement:
    """LD2 error identity (Hu et al. 2024, sec. 3): |sigma_t^2 ||s_f - s_q|| - ||f - q||| relative to ||f - q||, vs its rounding allowance.

    f is a random-weight DiT (seed ``seed``) on the latent h = B^T x as a [1, d0, 1] image, q the mixture's
    exact q; both scores come from ``score_network`` with W_B = B (s_q is the true score: check_ld2).
    Hence an L2 error delta of f is exactly a score error delta / sigma_t^2. Rounding allowance:
    4 (D + d0) u (||f|| + ||q|| + 2 ||x||), the error of forming B f - x and B q - x. The worst point
    (largest gap / allowance) is reported, both divided by its ||f - q||.
    """
    mixture, x = case.mixture, case.x
    basis, latent_dim = mixture.basis, mixture.latent_dim
    config = DiTConfig(input_size=(latent_dim, 1), patch_size=1, in_channels=1, hidden_size=8, depth=1, num_heads=2,
                       num_classes=0, learn_sigma=False)
    dit = float64_dit(config, random_dit_params(config, seed))
    times = case.times_array()
    with torch.no_grad():
        network = score_network(dit, basis, schedule=case.schedule)
        s_f = network(torch.from_numpy(x), torch.from_numpy(times)).numpy()
        latents = torch.from_numpy(x @ basis)
        f = dit(latents.reshape(-1, 1, latent_dim, 1), torch.from_numpy(times)).reshape(-1, latent_dim).numpy()
    s_q = torch_ld2_score(score_network)(x, times, basis, denoiser_q_function(mixture, case.schedule), case.schedule)
    q = np.asarray(denoiser_q(mixture, x @ basis, times, case.schedule))
    _, sigma2 = case.coefficients()
    lhs = sigma2[:, 0] * np.linalg.norm(s_f - s_q, axis=1)
    rhs = np.linalg.norm(f - q, axis=1)
    norms = np.linalg.norm(f, axis=1) + np.linalg.norm(q, axis=1) + 2 * np.linalg.norm(x, axis=1)
    allowance = 4 * (basis.shape[0] + latent_dim) * formats.FLOAT64.unit_roundoff * norms
    gap = np.abs(lhs - rhs)
    worst = int(np.argmax(gap / allowance))
    scale = max(float(rhs[worst]), 1e-300)
    return Measurement(float(gap[worst] / scale), float(allowance[worst] / scale), (case, seed))


def check_ld2_error_identity(score_network: Callable[..., nn.Module], case: MixtureCase, seed: int) -> None:
    """LD2 error identity: sigma_t^2 ||s_f(x) - s_q(x)|| = ||f(B^T x, t) - q(B^T x, t)|| pointwise, within rounding
    (measure_ld2_error_identity)."""
    m = measure_ld2_error_identity(score_network, case, seed)
    require(m.ratio <= 1, "LD2", "sigma_t^2 ||s_f - s_q|| != ||f - q||", worst=m.ratio, relative_gap=m.observed,
            case=case)


@dataclass(frozen=True)
class TorchLD2Case:
    """LD2 on ditcheck's torch LatentScoreNetwork: a latent mixture and points, and the seed of a random DiT f."""

    mixture: MixtureCase
    dit_seed: int


def torch_ld2_cases(max_latent: int = 3) -> st.SearchStrategy[TorchLD2Case]:
    """TorchLD2Cases over properties.mixtures.mixture_cases (every schedule, tails included)."""
    return st.builds(TorchLD2Case, mixture_cases(max_latent=max_latent), st.integers(0, 2**32 - 1))


def measure_torch_ld2(case: TorchLD2Case, score_network: Callable[..., nn.Module] = LatentScoreNetwork) -> Measurement:
    """LD2 (Hu et al. 2024, sec. 3, score-network form) on the torch LatentScoreNetwork: s = W_B f/sigma^2 - x/sigma^2.

    With f = q its score is the true score, and sigma_t^2 ||s_f - s_q|| = ||f - q|| for a random DiT f.

    Both are relative errors held to their float64 rounding tolerances (properties.mixtures.measure_ld2
    with torch_ld2_score, measure_ld2_error_identity); the worse of the two (largest observed/limit) is
    returned, the other's ratio is in ``forms``.
    """
    score = measure_ld2(case.mixture, network_score=torch_ld2_score(score_network))
    identity = measure_ld2_error_identity(score_network, case.mixture, case.dit_seed)
    worst = score if score.ratio >= identity.ratio else identity
    return Measurement(worst.observed, worst.limit, case,
                       forms={"score with f = q": score.ratio, "error identity": identity.ratio})


# ----------------------------------------------------------------------------------------
# LD6: the criteria analyser


def _relative(got: float, expected: float) -> float:
    return abs(got - expected) / max(abs(expected), 1e-300)


def check_criteria_recomputed(analyse: Callable[..., Sequence[Any]], case: DiTCase, eps: float = 1e-4,
                              degree_fn: Callable[[float, float], int] | None = None) -> None:
    """LD6 measurements of ``analyse(model, x, t, y, eps=, degree_fn=)`` on the torch DiT equal a direct NumPy recomputation.

    The recomputation starts from the reference's activations (dit_intermediates: norm1 output and
    adaLN chunks), forms the attention input modulate(norm1 x, shift_msa, scale_msa), q, k, v from the
    qkv weights in config.qkv_order, and from them R per head (scale config.attention_scale or
    1/sqrt(d)), max |q|, max |k|, max |v W_O^T|, sqrt(ln L), the degree degree_fn(R, eps) (default
    bounds.minimal_degree), the rank C(d + g, g) and the FLOP model of ditcheck.fast_attention.criteria. Reals agree
    to 1e-12 relative.
    """
    degree_fn = bounds.minimal_degree if degree_fn is None else degree_fn
    config, params = case.config, case.params()
    x, t, y = case.latents(), case.t(), case.y()
    labels = None if y is None else torch.from_numpy(y)
    layers = analyse(float64_dit(config, params), torch.from_numpy(x), torch.from_numpy(t), labels, eps=eps,
                     degree_fn=degree_fn)
    require(len(layers) == config.depth, "LD6", "one result per attention layer", got=len(layers), case=case)
    activations = dit_intermediates(params, x, t, y, config)
    heads, d, length = config.num_heads, config.hidden_size // config.num_heads, config.num_tokens
    scale = 1 / math.sqrt(d) if config.attention_scale is None else config.attention_scale
    for i, layer in enumerate(layers):
        prefix = f"blocks.{i}"
        require(layer.name == f"{prefix}.attn", "LD6", "layers out of order or misnamed", got=layer.name, case=case)
        modulation = activations[f"{prefix}.adaLN_modulation"]
        chunks = dict(zip(config.adaln_chunk_order, np.split(modulation, 6, axis=1)))
        inputs = activations[f"{prefix}.norm1"] * (1 + chunks["scale_msa"][:, None]) + chunks["shift_msa"][:, None]
        qkv = inputs @ params[f"{prefix}.attn.qkv.weight"].T + params[f"{prefix}.attn.qkv.bias"]
        parts = dict(zip(config.qkv_order, np.split(qkv, 3, axis=-1)))
        q, k = (parts[name].reshape(case.batch, length, heads, d).transpose(0, 2, 1, 3) for name in "qk")
        radius = np.max(np.abs(scale * q @ np.swapaxes(k, -1, -2)), axis=(0, 2, 3))
        value_output = np.max(np.abs(parts["v"] @ params[f"{prefix}.attn.proj.weight"].T))
        try:
            degree: int | None = int(degree_fn(float(np.max(radius)), eps))
        except InvalidArgumentError:
            degree = None
        rank = None if degree is None else math.comb(d + degree, degree)
        exact = heads * length * length * (4.0 * d + EXP_FLOPS)
        expected = {"radius": float(np.max(radius)), "max_query": float(np.max(np.abs(q))),
                    "max_key": float(np.max(np.abs(k))), "max_value_output": float(value_output),
                    "flops_exact": exact, "scale": scale}
        # LD6's threshold is on the entries of Q, K in Alman-Song's convention exp(Q K^T / d): the layer's scale
        # folded in as sqrt(d scale) on each side, so |logit| <= B^2; R itself is set against ln L
        folded = math.sqrt(scale) * max(float(np.max(np.abs(q))), float(np.max(np.abs(k))))
        expected.update(entry_bound_folded=folded, entry_bound=math.sqrt(d) * folded)
        require(float(np.max(radius)) <= layer.entry_bound ** 2 * (1 + 1e-12), "LD6",
                f"{prefix}: R exceeds B^2 (B is not the Alman-Song entry bound)", case=case)
        if length >= 2:
            expected["threshold"] = math.sqrt(math.log(length))
            expected["logit_threshold"] = math.log(length)
            require(layer.below_threshold == (layer.entry_bound < layer.threshold), "LD6",
                    f"{prefix}: threshold verdict (B against sqrt(ln L))", case=case)
            require(layer.logit_below == (layer.radius < layer.logit_threshold), "LD6",
                    f"{prefix}: threshold verdict (R against ln L)", case=case)
        else:
            require(layer.threshold is None and layer.below_threshold is None and layer.logit_threshold is None
                    and layer.logit_below is None, "LD6", f"{prefix}: a threshold reported for a single key", case=case)
        if rank is not None:
            poly = heads * (2.0 * length * rank + 4.0 * length * rank * (d + 1))
            expected.update(flops_poly=poly, speedup=exact / poly)
        else:
            require(layer.flops_poly is None and layer.speedup is None, "LD6",
                    f"{prefix}: polynomial cost reported without a certified degree", case=case)
        for name, value in expected.items():
            gap = _relative(float(getattr(layer, name)), value)
            require(gap <= TORCH_AGREEMENT, "LD6", f"{prefix}: {name} differs from the recomputation",
                    got=getattr(layer, name), expected=value, case=case)
        per_head = max(_relative(a, b) for a, b in zip(layer.radius_per_head, radius.tolist()))
        require(len(layer.radius_per_head) == heads and per_head <= TORCH_AGREEMENT, "LD6",
                f"{prefix}: R per head differs", got=layer.radius_per_head, expected=radius.tolist(), case=case)
        require((layer.degree, layer.rank, layer.heads, layer.head_dim, layer.key_length) == (degree, rank, heads, d,
                length), "LD6", f"{prefix}: degree, rank or shape differs",
                got=(layer.degree, layer.rank, layer.heads, layer.head_dim, layer.key_length),
                expected=(degree, rank, heads, d, length), case=case)
