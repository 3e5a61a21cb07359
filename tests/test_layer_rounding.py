"""ditcheck.reference.layer_rounding: each layer's a-priori bound contains the observed error in float32 and float64.

For every format the inputs are first rounded to it (the bound is of the computation, at exact inputs of the
format); the exact result is the reference's arb ball at those inputs. Every bound is shown to catch a planted
1e-3 relative error of the output, and the float32 bound to be about 2^29 times the float64 one (it scales with u).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from ditcheck.properties.layers import dit_2d_sincos_pos_embed, dit_timestep_embedding
from ditcheck.properties.strategies import FAMILIES, fill
from ditcheck.reference import components, layer_rounding
from ditcheck.reference import layers as ref
from ditcheck.reference.formats import FLOAT32, FLOAT64, Format
from ditcheck.reference.layer_rounding import BOUND_PRECISION

NUMPY_DTYPE = {"float32": np.float32, "float64": np.float64}
FORMATS = [FLOAT32, FLOAT64]


def in_format(x: np.ndarray, fmt: Format) -> np.ndarray:
    """x rounded to ``fmt`` and read back as float64: the exact inputs the computation in ``fmt`` sees."""
    return np.asarray(x).astype(NUMPY_DTYPE[fmt.name]).astype(np.float64)


def torch_in(fmt: Format, function: Callable[..., torch.Tensor], *arrays: np.ndarray | None, **options: Any) -> np.ndarray:
    """``function`` of the arrays as torch tensors of ``fmt``, returned as float64."""
    dtype = getattr(torch, fmt.name)
    tensors = [None if a is None else torch.from_numpy(np.asarray(a)).to(dtype) for a in arrays]
    return function(*tensors, **options).double().numpy()


def numpy_in(fmt: Format, function: Callable[..., np.ndarray], *arrays: np.ndarray | None) -> np.ndarray:
    """``function`` of the arrays as NumPy arrays of ``fmt`` (NumPy keeps float32 arithmetic in float32)."""
    dtype = NUMPY_DTYPE[fmt.name]
    return np.asarray(function(*(None if a is None else np.asarray(a, dtype=dtype) for a in arrays)), dtype=np.float64)


def two_pass_layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(variance + x.dtype.type(eps)) * weight + bias


def diffusers_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """diffusers.models.normalization.RMSNorm's forward, in the input's dtype: x * rsqrt(mean(x^2) + eps) * w."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def torch_dit_timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """DiT's TimestepEmbedder.timestep_embedding in the dtype of ``t`` (DiT runs it in float32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=t.dtype) / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def mae_pos_embed(dtype: type, embed_dim: int, grid_size: tuple[int, int]) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed (as DiT copies it) with every array in ``dtype``."""
    def one_axis(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(dim // 2, dtype=dtype) / dtype(dim / 2.0)
        omega = dtype(1.0) / dtype(10000) ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(grid_size[1], dtype=dtype), np.arange(grid_size[0], dtype=dtype)), axis=0)
    return np.concatenate([one_axis(embed_dim // 2, grid[0]), one_axis(embed_dim // 2, grid[1])], axis=1)


def layer_cases(fmt: Format, seed: int) -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    """Per layer: (the certified exact value, the bound, the computed value in ``fmt``), inputs rounded to ``fmt``."""
    family = FAMILIES[seed % len(FAMILIES)]
    x = in_format(fill((3, 24), seed, family, 3.0), fmt)
    weight, bias = (in_format(fill(shape, seed + 1, "normal", 1.0), fmt) for shape in ((5, 24), (5,)))
    gain, shift = (in_format(fill((24,), seed + s, "uniform", 2.0), fmt) for s in (2, 3))
    t = in_format(np.abs(fill((4,), seed, "uniform", 1000.0)), fmt)
    gelu_x, silu_x = in_format(x * 3, fmt), in_format(np.clip(x * 10, -60, 60), fmt)  # inside float32's silu domain
    xp = BOUND_PRECISION
    cases = {
        "linear": (ref.linear(x, weight, bias, precision=xp), layer_rounding.linear_rounding_bound(x, weight, bias, fmt),
                   torch_in(fmt, torch.nn.functional.linear, x, weight, bias)),
        "layer_norm": (ref.layer_norm(x, gain, shift, 1e-6, precision=xp),
                       layer_rounding.layer_norm_rounding_bound(x, gain, shift, 1e-6, fmt),
                       numpy_in(fmt, two_pass_layer_norm, x, gain, shift)),
        "rms_norm": (components.rms_norm(x, gain, None, 1e-6, precision=xp),
                     layer_rounding.rms_norm_rounding_bound(x, gain, None, 1e-6, fmt),
                     torch_in(fmt, diffusers_rms_norm, x, gain)),
        "rms_norm[torch]": (components.rms_norm(x, gain, None, 1e-6, precision=xp),
                            layer_rounding.rms_norm_rounding_bound(x, gain, None, 1e-6, fmt),
                            torch_in(fmt, lambda a, w: torch.nn.functional.rms_norm(a, (24,), w, 1e-6), x, gain)),
        "silu": (ref.silu(silu_x, precision=xp), layer_rounding.silu_rounding_bound(silu_x, fmt),
                 torch_in(fmt, torch.nn.functional.silu, silu_x)),
        "timestep_embedding": (ref.timestep_embedding(t, 64, flip_sin_to_cos=True, precision=xp),
                               layer_rounding.timestep_embedding_rounding_bound(t, 64, fmt=fmt),
                               torch_in(fmt, torch_dit_timestep_embedding, t, dim=64)),
        "pos_embed_2d": (ref.pos_embed_2d(32, (3, 5), precision=xp),
                         layer_rounding.pos_embed_rounding_bound(32, (3, 5), pow_path=True, fmt=fmt),
                         mae_pos_embed(NUMPY_DTYPE[fmt.name], 32, (3, 5)).astype(np.float64)),
    }
    for form in ("tanh", "none"):
        cases[f"gelu[{form}]"] = (ref.gelu(gelu_x, form, precision=xp),
                                  layer_rounding.gelu_rounding_bound(gelu_x, form, fmt),
                                  torch_in(fmt, torch.nn.functional.gelu, gelu_x, approximate=form))
    return cases


LAYERS = ["linear", "layer_norm", "rms_norm", "rms_norm[torch]", "silu", "timestep_embedding", "pos_embed_2d",
          "gelu[tanh]", "gelu[none]"]


@pytest.fixture(scope="module", params=[(fmt, seed) for fmt in FORMATS for seed in range(len(FAMILIES))],
                ids=lambda p: f"{p[0].name}-{FAMILIES[p[1]]}")
def cases(request: pytest.FixtureRequest) -> tuple[Format, dict[str, tuple[Any, np.ndarray, np.ndarray]]]:
    fmt, seed = request.param
    return fmt, layer_cases(fmt, seed)


@pytest.mark.parametrize("layer", LAYERS)
def test_bound_contains_the_observed_error(cases: tuple[Format, dict[str, Any]], layer: str) -> None:
    fmt, table = cases
    exact, bound, computed = table[layer]
    assert computed.shape == exact.shape and np.all(np.isfinite(bound))
    assert exact.within(computed, bound).all(), f"{layer} in {fmt.name}: error above its bound"


@pytest.mark.parametrize("layer", LAYERS)
def test_planted_relative_error_of_1e_3_exceeds_the_bound(cases: tuple[Format, dict[str, Any]], layer: str) -> None:
    fmt, table = cases
    exact, bound, computed = table[layer]
    assert not exact.within(computed * (1 + 1e-3), bound).all(), f"{layer} in {fmt.name}: 1e-3 error not caught"


def test_float32_bounds_scale_with_the_unit_roundoff() -> None:
    """The same derivation with u = 2^-24 instead of 2^-53: every bound grows by about 2^29, none by much more."""
    x = fill((2, 16), 0, "normal", 1.0)
    ratio = FLOAT32.unit_roundoff / FLOAT64.unit_roundoff
    for bound in (lambda fmt: layer_rounding.layer_norm_rounding_bound(x, fmt=fmt),
                  lambda fmt: layer_rounding.rms_norm_rounding_bound(x, fmt=fmt),
                  lambda fmt: layer_rounding.gelu_rounding_bound(x, "tanh", fmt),
                  lambda fmt: layer_rounding.silu_rounding_bound(x, fmt)):
        growth = bound(FLOAT32) / bound(FLOAT64)
        assert np.all((0.9 * ratio < growth) & (growth < 1.1 * ratio))


def test_silu_domain_keeps_every_rounding_relative() -> None:
    """Beyond silu_domain(fmt) the bound is infinite; inside it exp(D) is finite and D e^-D is normal in fmt."""
    assert layer_rounding.SILU_DOMAIN == layer_rounding.silu_domain(FLOAT64) == 708
    assert layer_rounding.silu_domain(FLOAT32) == 87
    for fmt in FORMATS:
        domain = layer_rounding.silu_domain(fmt)
        assert math.exp(domain) <= fmt.max_finite and domain * math.exp(-domain) >= fmt.smallest_normal
        x = np.array([-domain - 1, -domain, domain + 1])
        assert np.isinf(layer_rounding.silu_rounding_bound(x, fmt)).tolist() == [True, False, True]


def test_float64_dit_transcriptions_within_the_float64_bounds() -> None:
    """The properties' float64 transcriptions of DiT's embeddings are within the same bounds (the checks' own use)."""
    t = np.array([0.0, 1.0, 17.5, 999.0])
    exact = ref.timestep_embedding(t, 32, flip_sin_to_cos=True, precision=BOUND_PRECISION)
    assert exact.within(dit_timestep_embedding(t, 32), layer_rounding.timestep_embedding_rounding_bound(t, 32)).all()
    table = ref.pos_embed_2d(16, (4, 3), precision=BOUND_PRECISION)
    assert table.within(dit_2d_sincos_pos_embed(16, (4, 3)),
                        layer_rounding.pos_embed_rounding_bound(16, (4, 3), pow_path=True)).all()
