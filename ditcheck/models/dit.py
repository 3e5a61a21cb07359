"""The torch DiT (Peebles & Xie 2023; facebookresearch/DiT models.py) and the LD2 latent score network.

Read top to bottom like the original: embedders, attention, MLP, the adaLN-Zero block, the
final layer, the model, then the converters between torch state dicts and the reference's
float64 parameter dicts, then the LD2 score network of Hu et al. 2024.

Every knob of :class:`ditcheck.reference.dit.DiTConfig` is honoured, state-dict names and
shapes are exactly ``reference.dit.dit_param_shapes(config)`` (so an original DiT checkpoint
loads), and submodule names are the names ``reference.dit.dit_intermediates`` records, so a
forward hook on ``model.blocks[0].attn`` sees the reference's ``"blocks.0.attn"``.
What the original has and this model leaves out: label dropout for classifier-free-guidance
training (pass the null label ``num_classes`` instead) and ``forward_with_cfg``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ditcheck.reference.dit import DiTConfig, check_params
from ditcheck.reference.errors import DTypeError, InvalidArgumentError, ShapeError
from ditcheck.reference.latent import ORTHONORMAL_TOLERANCE, check_orthonormal
from ditcheck.reference.layers import pos_embed_2d
from ditcheck.reference.precision import FLOAT64, as_float64_array
from ditcheck.reference.schedules import Schedule, get_schedule

__all__ = [
    "AttentionFn",
    "sdpa_attention",
    "modulate",
    "TimestepEmbedder",
    "LabelEmbedder",
    "PatchEmbed",
    "Attention",
    "Mlp",
    "DiTBlock",
    "FinalLayer",
    "DiT",
    "state_dict_from_params",
    "params_from_model",
    "LatentScoreNetwork",
    "network_dtype",
]

#: ``attention(q, k, v, scale) -> out`` on [B, H, L, D] tensors: softmax(scale q k^T) v, or an approximation of it.
AttentionFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Exact attention softmax(scale q k^T) v through torch's scaled_dot_product_attention, scale passed explicitly."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """DiT ``modulate``: x * (1 + scale) + shift, [N, D] rows broadcast over the tokens of x [N, T, D]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _factory(device: Any, dtype: Any) -> dict[str, Any]:
    return {"device": device, "dtype": dtype}


def _check_config(config: Any) -> DiTConfig:
    if not isinstance(config, DiTConfig):
        raise InvalidArgumentError("config", "a ditcheck.reference.dit.DiTConfig", type(config).__name__)
    return config


# ----------------------------------------------------------------------------------------
# Embedding layers for timesteps, class labels and patches


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> [N, D]: mlp.2(SiLU(mlp.0(sinusoidal features of size frequency_dim)))."""

    def __init__(self, config: DiTConfig, *, device: Any = None, dtype: Any = None):
        super().__init__()
        self.frequency_dim = config.frequency_dim
        self.max_period = config.max_period
        self.flip_sin_to_cos = config.flip_sin_to_cos
        self.downscale_freq_shift = config.downscale_freq_shift
        self.time_scale = config.time_scale
        self.mlp = nn.Sequential(
            nn.Linear(config.frequency_dim, config.hidden_size, **_factory(device, dtype)),
            nn.SiLU(),
            nn.Linear(config.hidden_size, config.hidden_size, **_factory(device, dtype)),
        )

    def timestep_embedding(self, t: Tensor) -> Tensor:
        """freqs_i = exp(-ln(max_period) i/(half - shift)), args = time_scale t freqs; [cos, sin] if flip_sin_to_cos.

        GLIDE / DiT at the defaults; diffusers' Timesteps with downscale_freq_shift=1 (docs/conventions.md#diffusers).
        """
        half = self.frequency_dim // 2
        dtype = self.mlp[0].weight.dtype
        index = torch.arange(half, dtype=dtype, device=t.device)
        freqs = torch.exp(-math.log(self.max_period) * index / (half - self.downscale_freq_shift))
        args = (self.time_scale * t.to(dtype))[:, None] * freqs[None, :]
        halves = [torch.cos(args), torch.sin(args)] if self.flip_sin_to_cos else [torch.sin(args), torch.cos(args)]
        return F.pad(torch.cat(halves, dim=-1), (0, self.frequency_dim % 2))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.timestep_embedding(t))


class LabelEmbedder(nn.Module):
    """Class labels [N] in 0..num_classes -> [N, D]; row num_classes is the null class of classifier-free guidance."""

    def __init__(self, config: DiTConfig, *, device: Any = None, dtype: Any = None):
        super().__init__()
        self.embedding_table = nn.Embedding(config.num_classes + 1, config.hidden_size, **_factory(device, dtype))

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels)


class PatchEmbed(nn.Module):
    """timm PatchEmbed as DiT uses it: Conv2d(C, D, kernel = stride = p), then [N, D, h, w] -> tokens [N, h*w, D]."""

    def __init__(self, config: DiTConfig, *, device: Any = None, dtype: Any = None):
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(config.in_channels, config.hidden_size, kernel_size=p, stride=p,
                              **_factory(device, dtype))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


# ----------------------------------------------------------------------------------------
# Attention, MLP and the adaLN-Zero block


class Attention(nn.Module):
    """timm Attention as DiT uses it: qkv Linear(D, 3D) split in ``qkv_order``, heads, attention, proj Linear(D, D).

    ``attention_fn(q, k, v, scale)`` computes the per-head mixing on [N, H, T, D/H]; it is stored
    without being registered as a submodule, so swapping it never changes the state dict.
    """

    def __init__(self, config: DiTConfig, attention: AttentionFn, *, device: Any = None, dtype: Any = None):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        # the reference's exact real 1/sqrt(d) rounded once (head_dim ** -0.5 can differ by an ulp)
        self.scale = 1.0 / math.sqrt(self.head_dim) if config.attention_scale is None else config.attention_scale
        self.qkv_order = config.qkv_order
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, **_factory(device, dtype))
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, **_factory(device, dtype))
        self.set_attention(attention)

    def set_attention(self, attention: AttentionFn) -> None:
        """Use ``attention(q, k, v, scale)`` from now on (not registered: state-dict names stay DiT's)."""
        if not callable(attention):
            raise InvalidArgumentError("attention", "a callable (q, k, v, scale) -> out", type(attention).__name__)
        object.__setattr__(self, "attention_fn", attention)

    def forward(self, x: Tensor) -> Tensor:
        n, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        parts = dict(zip(self.qkv_order, qkv.unbind(0)))
        out = self.attention_fn(parts["q"], parts["k"], parts["v"], self.scale)
        return self.proj(out.transpose(1, 2).reshape(n, tokens, channels))


class Mlp(nn.Module):
    """timm Mlp as DiT configures it: fc2(GELU(fc1(x))), GELU exact (erf) or tanh, no dropout."""

    def __init__(self, config: DiTConfig, *, device: Any = None, dtype: Any = None):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.mlp_hidden, **_factory(device, dtype))
        self.act = nn.GELU(approximate=config.gelu_approximate)
        self.fc2 = nn.Linear(config.mlp_hidden, config.hidden_size, **_factory(device, dtype))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """adaLN-Zero block (Peebles & Xie 2023, sec. 3.2): x += gate_msa attn(mod(norm1 x)); x += gate_mlp mlp(mod(norm2 x))."""

    def __init__(self, config: DiTConfig, attention: AttentionFn, *, device: Any = None, dtype: Any = None):
        super().__init__()
        d = config.hidden_size
        self.chunk_order = config.adaln_chunk_order
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=config.ln_eps_attn, **_factory(device, dtype))
        self.attn = Attention(config, attention, device=device, dtype=dtype)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=config.ln_eps_mlp, **_factory(device, dtype))
        self.mlp = Mlp(config, device=device, dtype=dtype)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d, **_factory(device, dtype)))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        m = dict(zip(self.chunk_order, self.adaLN_modulation(c).chunk(6, dim=1)))
        x = x + m["gate_msa"].unsqueeze(1) * self.attn(modulate(self.norm1(x), m["shift_msa"], m["scale_msa"]))
        x = x + m["gate_mlp"].unsqueeze(1) * self.mlp(modulate(self.norm2(x), m["shift_mlp"], m["scale_mlp"]))
        return x


class FinalLayer(nn.Module):
    """linear(modulate(norm_final(x), shift, scale)) -> [N, T, p*p*C_out], (shift, scale) = adaLN_modulation(c)."""

    def __init__(self, config: DiTConfig, *, device: Any = None, dtype: Any = None):
        super().__init__()
        d = config.hidden_size
        self.chunk_order = config.final_adaln_chunk_order
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=config.ln_eps_final, **_factory(device, dtype))
        self.linear = nn.Linear(d, config.patch_size**2 * config.out_channels, **_factory(device, dtype))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d, **_factory(device, dtype)))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        m = dict(zip(self.chunk_order, self.adaLN_modulation(c).chunk(2, dim=1)))
        return self.linear(modulate(self.norm_final(x), m["shift"], m["scale"]))


# ----------------------------------------------------------------------------------------
# The model


class DiT(nn.Module):
    """Diffusion Transformer (Peebles & Xie 2023, fig. 3): latents [N, C, H, W], timesteps [N], labels [N] -> [N, C_out, H, W].

    ``attention`` is used inside every block (default: exact SDPA with an explicit scale).
    Construction initialises like the original (``initialize_weights``: xavier, sin-cos pos_embed,
    adaLN-Zero, so the output is exactly 0); load informative weights with :meth:`from_params`.
    """

    def __init__(self, config: DiTConfig, *, attention: AttentionFn | None = None, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        self.config = config = _check_config(config)
        attention = sdpa_attention if attention is None else attention
        self.x_embedder = PatchEmbed(config, device=device, dtype=dtype)
        self.t_embedder = TimestepEmbedder(config, device=device, dtype=dtype)
        self.y_embedder = LabelEmbedder(config, device=device, dtype=dtype) if config.num_classes else None
        # fixed sin-cos table, a Parameter that is not trained (as in the original: it lives in the state dict)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, config.hidden_size, **_factory(device, dtype)),
                                      requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(config, attention, device=device, dtype=dtype)
                                     for _ in range(config.depth)])
        self.final_layer = FinalLayer(config, device=device, dtype=dtype)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The original DiT.initialize_weights: xavier-uniform linears (zero bias), sin-cos pos_embed, adaLN-Zero."""
        def basic(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(basic)
        table = pos_embed_2d(self.config.hidden_size, self.config.grid, self.config.pos_embed_max_period)
        with torch.no_grad():
            self.pos_embed.copy_(torch.from_numpy(table)[None])
        weight = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for layer in [*self.blocks, self.final_layer]:
            nn.init.zeros_(layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    @classmethod
    def from_params(cls, config: DiTConfig, params: Mapping[str, Any], *, attention: AttentionFn | None = None,
                    device: Any = None, dtype: Any = None) -> DiT:
        """A DiT holding ``params`` (a reference parameter dict: exactly dit_param_shapes(config)), in eval mode.

        ``dtype`` defaults to float64, the parameters' own precision (not torch's default dtype).
        """
        dtype = torch.float64 if dtype is None else dtype
        model = cls(config, attention=attention, device=device, dtype=dtype)
        check_params(params, _check_config(config))
        model.load_state_dict(state_dict_from_params(params, device=device, dtype=dtype), strict=True)
        return model.eval()

    def set_attention(self, attention: AttentionFn) -> None:
        """Use ``attention(q, k, v, scale)`` in every block."""
        for block in self.blocks:
            block.attn.set_attention(attention)

    def unpatchify(self, x: Tensor) -> Tensor:
        """Tokens [N, h*w, p*p*C_out] -> [N, C_out, h*p, w*p] (einsum nhwpqc -> nchpwq)."""
        (h, w), p, c = self.config.grid, self.config.patch_size, self.config.out_channels
        x = torch.einsum("nhwpqc->nchpwq", x.reshape(x.shape[0], h, w, p, p, c))
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x [N, C, H, W], t [N] (raw DiT timesteps; multiplied by config.time_scale), y [N] or None -> [N, C_out, H, W].

        y = num_classes is the null class; y = None adds no label embedding at all (as reference.dit does).
        """
        self._check_inputs(x, t, y)
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t)
        if y is not None:
            c = c + self.y_embedder(y)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))

    def _check_inputs(self, x: Tensor, t: Tensor, y: Tensor | None) -> None:
        config = self.config
        for name, value in (("x", x), ("t", t)):
            if not isinstance(value, Tensor):
                raise InvalidArgumentError(name, "a torch.Tensor", type(value).__name__)
        expected = (config.in_channels, *config.latent_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ShapeError("x", f"a tensor [N, {expected[0]}, {expected[1]}, {expected[2]}] (latents)",
                             str(tuple(x.shape)))
        if not x.is_floating_point():
            raise DTypeError("x", "a floating-point tensor", str(x.dtype))
        batch = x.shape[0]
        if tuple(t.shape) != (batch,):
            raise ShapeError("t", f"a tensor of shape ({batch},), one timestep per sample", str(tuple(t.shape)))
        if y is None:
            return
        if not config.num_classes:
            raise InvalidArgumentError("y", "None: config.num_classes is 0 (unconditional model)", "labels")
        if not isinstance(y, Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise DTypeError("y", "an integer tensor of class labels", getattr(y, "dtype", type(y).__name__))
        if tuple(y.shape) != (batch,):
            raise ShapeError("y", f"shape ({batch},), one label per sample", str(tuple(y.shape)))
        if batch and (int(y.min()) < 0 or int(y.max()) > config.num_classes):
            raise InvalidArgumentError("y", f"labels in 0..{config.num_classes} ({config.num_classes} = null class)",
                                       f"values from {int(y.min())} to {int(y.max())}")


# ----------------------------------------------------------------------------------------
# Converters between torch state dicts and reference parameter dicts


def state_dict_from_params(params: Mapping[str, Any], *, device: Any = None, dtype: Any = None) -> dict[str, Tensor]:
    """Reference parameters (real, finite arrays) as torch tensors of ``dtype`` (default float64) on ``device``."""
    if not isinstance(params, Mapping):
        raise DTypeError("params", "a mapping from state-dict names to arrays", type(params).__name__)
    dtype = torch.float64 if dtype is None else dtype
    return {name: torch.as_tensor(as_float64_array(value, f"params[{name!r}]"), dtype=dtype, device=device)
            for name, value in params.items()}


def params_from_model(model: nn.Module) -> dict[str, np.ndarray]:
    """A model's state dict as float64 NumPy arrays (exact upcast), e.g. a reference parameter dict of a DiT."""
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError("model", "a torch.nn.Module", type(model).__name__)
    return {name: value.detach().to("cpu", torch.float64).numpy() for name, value in model.state_dict().items()}


# ----------------------------------------------------------------------------------------
# LD2: the latent score network


class LatentScoreNetwork(nn.Module):
    """LD2 (Hu et al. 2024, eq. 3.2): s(x, t) = W_B f(W_B^T x, t)/sigma_t^2 - x/sigma_t^2, W_B [D, d0] orthonormal.

    ``network`` maps latents [N, C, H, W] (d0 = C*H*W, B^T x reshaped row-major) with times t [N]
    (passed as they are; the DiT scales them by config.time_scale) and labels to [N, C_out, H, W];
    its first C channels are n. ``output="q"``: f = n (the network learns q = sigma_t^2 grad log
    p^h_t + h); ``output="eps"``: n is a noise prediction and f = h - sigma_t n. This is
    ``reference.dit.dit_latent_score`` when ``network`` is a :class:`DiT`. W_B is a fixed buffer;
    sigma_t^2 comes from the reference schedule in float64 (times are data, not learned).
    """

    def __init__(self, network: nn.Module, basis: Any, *, schedule: str | Schedule = "ou-half", output: str = "q",
                 latent_shape: tuple[int, int, int] | None = None, tolerance: float = ORTHONORMAL_TOLERANCE,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        if not isinstance(network, nn.Module):
            raise InvalidArgumentError("network", "a torch.nn.Module (usually a DiT)", type(network).__name__)
        if latent_shape is None:
            config = getattr(network, "config", None)
            if not isinstance(config, DiTConfig):
                raise InvalidArgumentError("latent_shape", "(C, H, W), required when network is not a DiT", "None")
            latent_shape = (config.in_channels, *config.latent_size)
        if len(latent_shape) != 3 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                                             for n in latent_shape):
            raise InvalidArgumentError("latent_shape", "(C, H, W) positive ints", repr(latent_shape))
        if output not in ("q", "eps"):
            raise InvalidArgumentError("output", "'q' (the network is f) or 'eps' (f = h - sigma_t * network)",
                                       repr(output))
        raw = basis.detach().cpu().double().numpy() if isinstance(basis, Tensor) else basis
        matrix = as_float64_array(raw, "basis")
        latent_dim = math.prod(latent_shape)
        if matrix.ndim != 2 or matrix.shape[1] != latent_dim:
            raise ShapeError("basis", f"shape [D, {latent_dim}] (d0 = C*H*W of the latent)", str(matrix.shape))
        check_orthonormal(matrix, "basis", tolerance)
        self.network = network
        self.schedule = get_schedule(schedule)
        self.output = output
        self.latent_shape = tuple(int(n) for n in latent_shape)
        dtype = network_dtype(network) if dtype is None else dtype
        self.register_buffer("basis", torch.tensor(matrix, dtype=dtype, device=device))

    def sigma2(self, t: Tensor, batch: int) -> Tensor:
        """sigma_t^2 [N] in float64 from the reference schedule; TimeOutOfRangeError unless 0 < t <= t_max."""
        times = np.broadcast_to(t.detach().cpu().double().numpy(), (batch,))
        self.schedule.check_time(times, positive=True)
        return torch.as_tensor(self.schedule.sigma2(FLOAT64, times), dtype=self.basis.dtype, device=self.basis.device)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """x [N, D] ambient points, t scalar or [N], y [N] or None -> scores [N, D]."""
        if not isinstance(x, Tensor):
            raise InvalidArgumentError("x", "a torch.Tensor", type(x).__name__)
        if x.ndim != 2 or x.shape[1] != self.basis.shape[0]:
            raise ShapeError("x", f"a tensor [N, {self.basis.shape[0]}]", str(tuple(x.shape)))
        if x.dtype != self.basis.dtype:
            raise DTypeError("x", f"the network's dtype {self.basis.dtype}", str(x.dtype))
        batch = x.shape[0]
        t = torch.as_tensor(t, dtype=self.basis.dtype, device=x.device)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != batch):
            raise ShapeError("t", f"a scalar or shape [{batch}] (one time per point)", str(tuple(t.shape)))
        s2 = self.sigma2(t, batch)[:, None]
        h = x @ self.basis
        out = self.network(h.reshape(batch, *self.latent_shape), t.expand(batch), y)
        n = out[:, :self.latent_shape[0]].reshape(batch, -1)
        f = n if self.output == "q" else h - torch.sqrt(s2) * n
        return (f @ self.basis.T - x) / s2


def network_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a module's first floating parameter or buffer (float64 if it has none)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float64

