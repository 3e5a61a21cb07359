"""DiT forks as real users write them: the original DiT's structure (facebookresearch/DiT models.py, written
here from a reading of it, not copied) with renamed head counts, renamed classes and attributes, a SiT-style
forward, the original's float32 timestep frequencies and float32-rounded position table, and planted bugs.

Every factory returns a tiny float32 model (latents 2 x 8 x 8, patch 2, hidden 32, depth 2, 4 heads,
5 classes) unless it says otherwise. ``FORK_BUGS``: name -> (factory, validate options, first divergence).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT, PATCH, CHANNELS, HIDDEN, DEPTH, HEADS, CLASSES = 8, 2, 2, 32, 2, 4, 5


def sincos_2d(dim: int, side: int, *, transposed: bool = False) -> np.ndarray:
    """The 2-D sin-cos table [side*side, dim] (float64): first half of channels from grid[0], [sin, cos] per axis."""
    rows, cols = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64))
    grid = (cols, rows) if transposed else (rows, cols)
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    halves = []
    for axis in grid:
        out = np.einsum("m,d->md", axis.reshape(-1), omega)
        halves.append(np.concatenate([np.sin(out), np.cos(out)], axis=1))
    return np.concatenate(halves, axis=1)


class Attention(nn.Module):
    """timm-style attention; the head count lives in ``head_attr`` (num_heads / heads / n_heads) or nowhere."""

    def __init__(self, dim: int, heads: int, head_attr: str | None = "num_heads", qkv_order: str = "qkv",
                 scale_power: float = -0.5, merge_wrong: bool = False):
        super().__init__()
        if head_attr is not None:
            setattr(self, head_attr, heads)
        self._h = heads if head_attr is None else None  # a fork hiding it: only the head dim is kept
        self.head_dim_only = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head_attr, self.qkv_order, self.scale_power, self.merge_wrong = head_attr, qkv_order, scale_power, \
            merge_wrong

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        heads = dim // self.head_dim_only
        qkv = self.qkv(x).reshape(n, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        parts = dict(zip(self.qkv_order, qkv.unbind(0)))
        out = F.scaled_dot_product_attention(parts["q"], parts["k"], parts["v"],
                                             scale=(dim // heads) ** self.scale_power)
        out = out.reshape(n, tokens, dim) if self.merge_wrong else out.transpose(1, 2).reshape(n, tokens, dim)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, approximate: str = "tanh"):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate=approximate), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """The original's: frequencies and arguments in float32 whatever the model dtype (a float32 island)."""

    def __init__(self, dim: int, frequency: int = 256, shift: float = 0.0, flip: bool = True, time_scale: float = 1.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.frequency, self.shift, self.flip, self.time_scale = frequency, shift, flip, time_scale

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / (half - self.shift))
        args = self.time_scale * t[:, None].float() * freqs[None].to(t.device)
        pair = [torch.cos(args), torch.sin(args)] if self.flip else [torch.sin(args), torch.cos(args)]
        return torch.cat(pair, dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t))


class LabelEmbedder(nn.Module):
    """The original's: a table of classes + 1 rows (the last is the null class), called as (labels, train)."""

    def __init__(self, classes: int, dim: int, null_off_by_one: bool = False):
        super().__init__()
        self.embedding_table = nn.Embedding(classes + 1, dim)
        self.classes, self.null_off_by_one = classes, null_off_by_one

    def forward(self, labels: torch.Tensor, train: bool) -> torch.Tensor:
        if self.null_off_by_one:  # planted: a clamp meant for dropped labels reads the last class for the null one
            labels = labels.clamp(max=self.classes - 1)
        return self.embedding_table(labels)


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, *, eps_mlp: float = 1e-6, chunk_order: tuple[int, ...] = tuple(range(6)),
                 output_scale: float = 1.0, **attention: Any):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, **{k: v for k, v in attention.items() if k != "approximate"})
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=eps_mlp)
        self.mlp = Mlp(dim, 4 * dim, approximate=attention.get("approximate", "tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.chunk_order, self.output_scale = chunk_order, output_scale

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        chunks = self.adaLN_modulation(c).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (chunks[i] for i in self.chunk_order)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa)) * self.output_scale
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class CompiledDiTBlock(DiTBlock):
    """LightningDiT's pattern: ``@torch.compile`` on the block's forward (backend "eager": dynamo without a compiler)."""

    @torch.compile(backend="eager")
    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return DiTBlock.forward(self, x, c)


class QKNormAttention(Attention):
    """LightningDiT's use_qknorm: a LayerNorm over each head's q and k before the product."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.q_norm, self.k_norm = nn.LayerNorm(dim // heads), nn.LayerNorm(dim // heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class RMSNorm(nn.Module):
    """LightningDiT's use_rmsnorm (LLaMA's RMSNorm, with a weight) in place of the blocks' LayerNorms."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    """LightningDiT's use_swiglu: w12 D -> 2H, silu(x1) * x2, w3 H -> D (H = 2/3 of the GELU MLP's width)."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.w12, self.w3 = nn.Linear(dim, 2 * width), nn.Linear(width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class NoShiftBlock(DiTBlock):
    """LightningDiT's wo_shift: adaLN makes 4 chunks (scale, gate per branch), no shifts."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(4, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(self.norm1(x) * (1 + scale_msa.unsqueeze(1)))
        return x + gate_mlp.unsqueeze(1) * self.mlp(self.norm2(x) * (1 + scale_mlp.unsqueeze(1)))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: int, out: int, scale_first: bool = False):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.scale_first = scale_first

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        if self.scale_first:
            shift, scale = scale, shift
        return self.linear(modulate(self.norm_final(x), shift, scale))


class OriginalStyleDiT(nn.Module):
    """The original DiT's structure and init (adaLN-Zero, float32-rounded pos_embed); ``sit``: return the first C."""

    def __init__(self, *, heads: int = HEADS, head_attr: str | None = "num_heads", top_level_heads: bool = False,
                 sit: bool = False, learn_sigma: bool = True, pos_transposed: bool = False, eps_mlp: float = 1e-6,
                 chunk_order: tuple[int, ...] = tuple(range(6)), block1_scale: float = 1.0, shift: float = 0.0,
                 flip: bool = True, time_scale: float = 1.0, null_off_by_one: bool = False, final_scale_first:
                 bool = False, unpatchify_transposed: bool = False, **attention: Any):
        super().__init__()
        if top_level_heads:
            self.num_heads = heads
        self.in_channels, self.out_channels, self.patch, self.sit = CHANNELS, CHANNELS * (1 + learn_sigma), PATCH, sit
        self.unpatchify_transposed = unpatchify_transposed
        self.x_embedder = PatchEmbed(CHANNELS, HIDDEN, PATCH)
        self.t_embedder = TimestepEmbedder(HIDDEN, shift=shift, flip=flip, time_scale=time_scale)
        self.y_embedder = LabelEmbedder(CLASSES, HIDDEN, null_off_by_one)
        side = INPUT // PATCH
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side, HIDDEN), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(HIDDEN, heads, eps_mlp=eps_mlp, chunk_order=chunk_order,
                                              output_scale=block1_scale if i == 1 else 1.0, head_attr=head_attr,
                                              **attention) for i in range(DEPTH)])
        self.final_layer = FinalLayer(HIDDEN, PATCH, self.out_channels, final_scale_first)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # the original fills its table from float64 NumPy through .float(): rounded to float32 for good
        self.pos_embed.data.copy_(torch.from_numpy(sincos_2d(HIDDEN, side, transposed=pos_transposed)).float()[None])
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        c, p = self.out_channels, self.patch
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->ncwqhp" if self.unpatchify_transposed else "nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        for block in self.blocks:
            x = block(x, c)
        out = self.unpatchify(self.final_layer(x, c))
        return out[:, :self.in_channels] if self.sit else out


class ProjectedFeaturesDiT(OriginalStyleDiT):
    """REPA's SiT (sihyun-yu/REPA models/sit.py): an MLP projector on the tokens after block 0 (aligned with a vision
    encoder's features in training); the forward returns (output, [projected tokens])."""

    def __init__(self, **bug: Any):
        super().__init__(learn_sigma=False, **bug)
        self.projectors = nn.ModuleList([nn.Sequential(nn.Linear(HIDDEN, 48), nn.SiLU(), nn.Linear(48, 24))])

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        zs: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x, c)
            if i == 0:
                zs = [projector(x) for projector in self.projectors]
        return self.unpatchify(self.final_layer(x, c)), zs


# ----------------------------------------------------------------------------------------
# A fork with its own class and attribute names for every part


class Dense(nn.Linear):
    """A fork's own linear class."""


class PixelsToTokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(CHANNELS, HIDDEN, PATCH, PATCH)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)  # the flatten happens in the model (the hook sees [N, D, h, w])


class NoiseLevelEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc_in, self.fc_out = Dense(256, HIDDEN), Dense(HIDDEN, HIDDEN)

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=level.dtype, device=level.device) / half)
        args = level[:, None] * freqs[None]
        return self.fc_out(F.silu(self.fc_in(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))))


class ClassTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(CLASSES + 1, HIDDEN)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.table(cls)


class Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_qkv, self.out = Dense(HIDDEN, 3 * HIDDEN), Dense(HIDDEN, HIDDEN)
        self.n_head = HEADS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        q, k, v = self.to_qkv(x).reshape(n, tokens, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, tokens, dim))


class FeedForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = Dense(HIDDEN, 4 * HIDDEN), Dense(4 * HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_a, self.mix, self.ln_b, self.ffn = Norm(), Mixer(), Norm(), FeedForward()
        self.mod = Dense(HIDDEN, 6 * HIDDEN)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        a, b, g, a2, b2, g2 = self.mod(F.silu(cond))[:, None].chunk(6, dim=-1)
        h = h + g * self.mix(self.ln_a(h) * (1 + b) + a)
        return h + g2 * self.ffn(self.ln_b(h) * (1 + b2) + a2)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln, self.mod2, self.out_proj = Norm(), Dense(HIDDEN, 2 * HIDDEN), Dense(HIDDEN, PATCH * PATCH * 2 * CHANNELS)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        a, b = self.mod2(F.silu(cond))[:, None].chunk(2, dim=-1)
        return self.out_proj(self.ln(h) * (1 + b) + a)


class RenamedDiT(nn.Module):
    """Every class and attribute renamed; heads only as ``Mixer.n_head``; float64 sinusoid in the model dtype."""

    def __init__(self) -> None:
        super().__init__()
        side = INPUT // PATCH
        self.tokenize, self.noise, self.classes = PixelsToTokens(), NoiseLevelEncoder(), ClassTable()
        self.register_buffer("grid_code", torch.from_numpy(sincos_2d(HIDDEN, side))[None].float())
        self.layers = nn.ModuleList([Layer() for _ in range(DEPTH)])
        self.head = Head()

    def forward(self, image: torch.Tensor, level: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        h = self.tokenize(image).flatten(2).transpose(1, 2) + self.grid_code
        cond = self.noise(level) + self.classes(cls)
        for layer in self.layers:
            h = layer(h, cond)
        out = self.head(h, cond)
        n, side, c = out.shape[0], INPUT // PATCH, 2 * CHANNELS
        out = torch.einsum("nhwpqc->nchpwq", out.reshape(n, side, side, PATCH, PATCH, c))
        return out.reshape(n, c, INPUT, INPUT)


# ----------------------------------------------------------------------------------------
# Factories


def fork_attn_heads() -> OriginalStyleDiT:
    return OriginalStyleDiT(head_attr="heads")


def fork_attn_n_heads() -> OriginalStyleDiT:
    return OriginalStyleDiT(head_attr="n_heads")


def fork_top_level_heads() -> OriginalStyleDiT:
    return OriginalStyleDiT(head_attr=None, top_level_heads=True)


def fork_no_heads_anywhere() -> OriginalStyleDiT:
    return OriginalStyleDiT(head_attr=None)


def sit_style() -> OriginalStyleDiT:
    return OriginalStyleDiT(sit=True)


def sit_style_sin_cos_flipped() -> OriginalStyleDiT:
    """SiT's forward (the first C of 2C channels) with a planted bug: [sin, cos] timestep features."""
    return OriginalStyleDiT(sit=True, flip=False)


def compiled_blocks(**bug: Any) -> OriginalStyleDiT:
    """Blocks under torch.compile, already called once (compiled without ditcheck's hooks); ``bug``: FORK_BUGS kwargs."""
    model = OriginalStyleDiT(**bug)
    for block in model.blocks:
        block.__class__ = CompiledDiTBlock
    with torch.no_grad():
        model(torch.zeros(1, CHANNELS, INPUT, INPUT), torch.zeros(1), torch.zeros(1, dtype=torch.int64))
    return model


def lightning(option: str) -> OriginalStyleDiT:
    """One of LightningDiT's options (hustvl/LightningDiT) on the original structure: qk_norm, rmsnorm, swiglu or
    wo_shift (the released LightningDiT-XL sets swiglu, rope and rmsnorm)."""
    model = OriginalStyleDiT()
    for i, block in enumerate(model.blocks):
        if option == "qk_norm":
            block.attn = QKNormAttention(HIDDEN, HEADS)
        elif option == "rmsnorm":
            block.norm1, block.norm2 = RMSNorm(HIDDEN), RMSNorm(HIDDEN)
        elif option == "swiglu":
            block.mlp = SwiGLU(HIDDEN, int(2 / 3 * 4 * HIDDEN))
        elif option == "wo_shift":
            model.blocks[i] = NoShiftBlock(HIDDEN, HEADS)
    return model


def repa_style(**bug: Any) -> ProjectedFeaturesDiT:
    return ProjectedFeaturesDiT(**bug)


def original_style() -> OriginalStyleDiT:
    return OriginalStyleDiT()


def original_style_float64() -> OriginalStyleDiT:
    return OriginalStyleDiT().double()


def renamed() -> RenamedDiT:
    return RenamedDiT()


#: planted bug -> (factory keyword arguments, validate() options, the first divergence it must produce)
FORK_BUGS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "null_label_off_by_one": ({"null_off_by_one": True}, {}, "y_embedder"),
    "ln_eps_mlp_1e-5": ({"eps_mlp": 1e-5}, {"dtype": torch.float64}, "blocks.0.norm2"),
    "adaln_shift_scale_swapped": ({"chunk_order": (1, 0, 2, 4, 3, 5)}, {}, "blocks.0.attn"),
    "adaln_gate_first": ({"chunk_order": (2, 0, 1, 5, 3, 4)}, {}, "blocks.0.attn"),
    "final_scale_shift_swapped": ({"final_scale_first": True}, {}, "final_layer"),
    "timestep_shift_1": ({"shift": 1.0}, {}, "t_embedder"),
    "timestep_sin_cos_flipped": ({"flip": False}, {}, "t_embedder"),
    "timestep_scaled_1000": ({"time_scale": 1000.0}, {}, "t_embedder"),
    "block1_attention_1e-3": ({"block1_scale": 1.0 + 1e-3}, {}, "blocks.1"),
    "pos_embed_transposed": ({"pos_transposed": True}, {}, "pos_embed"),
    "qkv_order_kqv": ({"qkv_order": "kqv"}, {}, "blocks.0.attn"),
    "attention_scale_1_over_d": ({"scale_power": -1.0}, {}, "blocks.0.attn"),
    "gelu_erf": ({"approximate": "none"}, {}, "blocks.0.mlp"),
    "heads_merged_wrong": ({"merge_wrong": True}, {}, "blocks.0.attn"),
    "unpatchify_transposed": ({"unpatchify_transposed": True}, {}, "output"),
}


def fork_bug(name: str) -> OriginalStyleDiT:
    """The fork with planted bug ``name`` (see FORK_BUGS)."""
    return OriginalStyleDiT(**FORK_BUGS[name][0])
