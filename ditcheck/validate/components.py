"""Component-level validation: every recognised submodule recomputed from its own recorded inputs and parameters.

:func:`check_components` runs a torch model once with forward hooks on every submodule
(``register_forward_pre_hook`` / ``register_forward_hook``, ``with_kwargs=True``), recording each call
in execution order: its inputs bound to the names of ``forward``'s parameters, its parameters and its
outputs, as detached float64 NumPy copies. When a call returns, the component is recomputed at once by
the reference component library (:mod:`ditcheck.reference.components`, :mod:`~ditcheck.reference.layers`,
:mod:`~ditcheck.reference.attention`), compared, and its recording freed, so memory holds only the calls
still open on the stack.

Composites are recomputed *given their children's recorded outputs* (a recorded to_q's output is the
query; an output projection's recorded input is what the attention core is compared with), so each check
measures its own inline code on bit-identical inputs and a child's error is never counted twice.

Tolerance (docs/conventions.md#tolerances), per compared tensor: the call's output format F (float32 or
float64) is the dtype of its output; "exact" is the reference in a format wider than F (float64 for
float32 outputs, x87 long double for float64 ones, :class:`~ditcheck.reference.native.Native`); the naive
same-dtype baseline is the same reference with every operation rounded to F, the worst over NumPy's three
summation orders, torch's own kernels (:class:`TorchKernels`) and, for attention, both placements of the
scale. The tensor conforms when

    max |output - exact| <= max(2 x max |naive - exact|, a-priori bound, 4 ulps of max |exact|)

(ditcheck.properties.validation.derive_tolerance); the a-priori candidate is Higham's gamma_{n+2}
(|x||W|^T + |b|) for Linear and patch convolutions and a first-order bound for timestep sinusoids.

Recognised (``recognised_classes()``): torch.nn Linear, LayerNorm, RMSNorm, GELU, SiLU, ReLU, Conv2d/3d
(patch convolutions), Embedding and their subclasses; diffusers Attention (AttnProcessor2_0,
JointAttnProcessor2_0) and FluxAttention (FluxAttnProcessor) and subclasses of those processors,
FeedForward, GELU, GEGLU, ApproximateGELU, SwiGLU, LinearActivation, RMSNorm, FP32LayerNorm,
AdaLayerNormZero, AdaLayerNormZeroSingle, AdaLayerNormContinuous, AdaLayerNormSingle, Timesteps,
TimestepEmbedding, PatchEmbed, PixArtAlphaTextProjection, LabelEmbedding, the Combined* embedders,
FluxPosEmbed, BasicTransformerBlock (ada_norm_zero, ada_norm_single), JointTransformerBlock (with SD3.5's
dual attention), SD35AdaLayerNormZeroX, FluxTransformerBlock, FluxSingleTransformerBlock, the Flux model's
conditioning (timestep and guidance x 1000); Wan: WanAttention, WanTransformerBlock, WanRotaryPosEmbed,
WanTimeTextImageEmbedding and the model's own glue; Sana: linear attention (SanaLinearAttnProcessor2_0),
SanaAttnProcessor2_0, GLUMBConv (with general 2-D convolutions), SanaTransformerBlock, SanaModulatedNorm;
CogVideoX: CogVideoXAttnProcessor2_0, CogVideoXLayerNormZero, CogVideoXBlock, AdaLayerNorm; by structure, timm / original-DiT Attention (qkv, proj,
num_heads; also PixArt-alpha's global WindowAttention: no direct parameters, use_rel_pos False, no mask), Mlp
(fc1, act, fc2), PatchEmbed (proj) and TimestepEmbedder (mlp + frequency size); the original DiT's DiTBlock (exactly
norm1, attn, norm2, mlp or DiT-MoE's moe, and adaLN_modulation = Sequential(SiLU, Linear(D, 6 D)): Latte's
TransformerBlock, DiT-MoE's DiTBlock) and FinalLayer (exactly norm_final, linear, adaLN_modulation = Sequential(SiLU,
Linear(D, 2 D)): also Flux's LastLayer); PixArt-alpha's original code:
PixArtBlock (exactly norm1, attn, cross_attn, norm2, mlp, a [6, D] scale_shift_table and forward(x, y, t, mask),
attn returning its input's shape), MultiHeadCrossAttention
(exactly q_linear, kv_linear of twice q's width, proj, and num_heads; the batch flattened into one sequence with
the block-diagonal mask of the caption lengths), T2IFinalLayer (exactly norm_final, linear and a [2, D]
scale_shift_table); Flux's original code: MLPEmbedder (exactly in_layer, silu, out_layer), Modulation (exactly lin
of multiplier (3 or 6) x D outputs, is_double; its ModulationOut dataclasses compared field by field), QKNorm
(exactly query_norm, key_norm; forward(q, k, v)), EmbedND (no parameters; theta, axes_dim; its float32 2 x 2
rotation matrices), DoubleStreamBlock (exactly the img_/txt_ mod, norm1, attn (qkv, norm, proj), norm2, mlp; the
attention, called inline, is recomputed: [text, image] tokens, RoPE by the matrices on interleaved pairs, SDPA) and
SingleStreamBlock (exactly linear1, linear2, norm, pre_norm, mlp_act, modulation); U-ViT's Block (exactly norm1,
attn, norm2, mlp and skip_linear None or Linear(2 D, D), use_checkpoint, forward(x, skip)); a LLaMA-style gated MLP
(exactly gate_proj, up_proj, down_proj and act_fn SiLU/GELU: DiT-MoE's experts, also with their weight-slice
pretraining_tp path); classifier-free-guidance embedders: the original DiT's LabelEmbedder (exactly embedding_table
of num_classes + 1 rows when dropout_prob > 0, else num_classes; forward(labels, train, force_drop_ids); a dropped
label is num_classes) and PixArt-alpha's CaptionEmbedder (exactly y_proj, an Mlp C -> D -> D, and the null caption
y_embedding [tokens, C], uncond_prob; forward(caption, train, force_drop_ids); compared at y_proj's input); a random
drop (called with train true) is unsupported; Flux's RMSNorm (exactly one 1-D parameter ``scale``, forward(x), eps
only in its forward); a LLaMA FeedForward (w1, w2, w3) states no activation: silu, gelu and gelu-tanh are its
identities, the finding notes which fits. By parameter shapes, a fork's own leaf classes (a 2-D weight: linear; 1-D
vectors: LayerNorm or RMSNorm, float32 inside allowed): a fork's class named like a registered one but lacking what
its evaluation reads is recognised this way. A norm stating no eps attribute (Flux's, a fork's RMSNorm, a shape guess)
is tried with 1e-6, 1e-5, finfo(dtype).eps (torch's F.rms_norm default), 1e-8, 0 and the eps its rows solve for (and,
for a parameter named ``gamma``, lucidrains' unit-offset gain 1 + gamma); its finding notes which fits and, for an RMS
norm, the eps its rows are consistent with. A guess (by structure or parameter shapes) is refuted, ``not-checked``
with the reason, when its recomputation's outputs differ in count or shape from the call's, and a norm guessed by
shapes stating no eps when none of those identities reproduces it; Flux's RMSNorm, recognised by structure, fails
then. A registered class name is consulted before any structure. Not recognised: a torch leaf's subclass with its own
forward and its own submodules or tensors beyond weight and bias (Flux's / loralib's LoRA linears: lora_A / lora_B
modules are checked, the sum is not), and a class named like a torch leaf that has children (peft's ``Linear``).

A target that raises is an ``error`` finding located at the innermost call that did not return.

Statuses of a finding:

* ``conforms``;
* ``precision``: a float64 run where the call is within the float32 tolerance only (a float32 island:
  diffusers computes timestep sinusoids, RMSNorm variances, RoPE and FP32LayerNorm in float32 by design; a user's
  module is one only if it produced a float32 tensor while the run was recorded, never because its source names
  float32). Not a failure unless ``strict_precision``. Float32 work no precision finding covers is listed
  (``ComponentReport.unjudged_float32``);
* ``mismatch``: a leaf (a call with no hooked children) outside tolerance: the fault is that module;
* ``inline``: a composite outside tolerance whose children all conform: the fault is inline code in
  ``<Class>.forward`` (chunking, gates, RoPE application, the attention call, masks);
* ``follows``: a composite outside tolerance with a failing child (the child is the finding);
* ``unsupported``: a recognised class in a configuration the engine does not model (said why);
* ``not-checked``: a class the engine does not recognise (listed, never a failure).

For every mismatch the component's convention knobs are tried one at a time (chunk orders, of both branches of a
six-chunk block or of one, eps, GELU
tanh/erf, flip_sin_to_cos, downscale_freq_shift, RoPE pairing, theta and axis split, QK-norm per head /
across heads, mask sign or mask ignored, joint token order, timestep and guidance scale, GLU gate order,
variance precision, a null class / null caption's drop flag and row...), and each setting that brings the error
within tolerance is reported as the explanation; when no single knob does, pairs of knobs are tried (at most
MAX_PAIRS reported; never two knobs of which one subsumes the other, Component.overlapping).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ditcheck.properties.validation import Tolerance, derive_tolerance
from ditcheck.reference import components as C
from ditcheck.reference.attention import attention, merge_heads, split_heads
from ditcheck.reference.diffusers_modules import patch_position_table
from ditcheck.reference.errors import InvalidArgumentError
from ditcheck.reference.formats import format_named, gamma_or_inf
from ditcheck.reference.layers import (
    layer_norm,
    linear,
    modulate,
    patchify,
    pos_embed_2d,
    silu,
    timestep_embedding,
    unpatchify,
)
from ditcheck.reference.native import SUMMATION_ORDERS, Native
from ditcheck.reference.precision import FLOAT64, Precision
from ditcheck.reference.rounding import EXP_ULPS

__all__ = ["ComponentFinding", "ComponentReport", "check_components", "recognised_classes", "STATUSES",
           "FAILING_STATUSES", "TorchKernels", "exact_precision", "naive_precisions"]

#: every status a finding can have (see the module docstring)
STATUSES = ("conforms", "precision", "mismatch", "inline", "follows", "unsupported", "not-checked", "error")
#: the statuses that make a report fail (``precision`` too under ``strict_precision``)
FAILING_STATUSES = ("mismatch", "inline", "follows", "error")
#: at most this many knob pairs are reported as explanations (a pair is tried only when no single knob explains)
MAX_PAIRS = 4


# ----------------------------------------------------------------------------------------
# Findings and the report


@dataclass
class ComponentFinding:
    """One recorded call of one submodule: where, what, the verdict, the numbers and the explaining knob."""

    #: qualified module name ("transformer_blocks.0.attn"), with "#k" for the k-th call after the first
    name: str
    #: the module's class name
    cls: str
    status: str
    #: max |output - exact| (None when not compared)
    error: float | None = None
    tolerance: Tolerance | None = None
    #: the output format the call was measured in ("float32", "float64")
    fmt: str = ""
    #: where the fault is: the module itself, or "inline code in <Class>.forward"
    location: str = ""
    #: knob settings under which the mismatch vanishes (each a dict of knob -> value), empty if none does
    explanations: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    #: the component's note on a passing call (an identity the module does not state: "eps=1e-06 fits"), also in
    #: ``message``; kept apart so that a report can list it
    remark: str = ""

    @property
    def ratio(self) -> float | None:
        """error / tolerance (None when not compared)."""
        if self.error is None or self.tolerance is None:
            return None
        return self.tolerance.ratio(self.error)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "class": self.cls, "status": self.status, "error": self.error,
                "tolerance": None if self.tolerance is None else self.tolerance.to_dict(), "format": self.fmt,
                "location": self.location, "explanations": self.explanations, "message": self.message,
                "remark": self.remark}

    def __str__(self) -> str:
        numbers = ""
        if self.error is not None and self.tolerance is not None:
            numbers = f" error {self.error:.3g} vs tolerance {self.tolerance.value:.3g} ({self.fmt})"
        knob = ""
        if self.explanations:
            knob = "; explained by " + " or ".join(", ".join(f"{k}={v!r}" for k, v in e.items())
                                                  for e in self.explanations)
        elif self.status in ("mismatch", "inline"):
            knob = "; no convention knob explains it"
        where = f" at {self.location}" if self.location and self.status != "conforms" else ""
        text = f"{self.status:<11} {self.name} ({self.cls}){where}{numbers}{knob}"
        return text + (f" - {self.message}" if self.message else "")


@dataclass
class ComponentReport:
    """What :func:`check_components` found: one finding per recorded call, in execution order (by call start)."""

    findings: list[ComponentFinding]
    dtype: str
    strict_precision: bool = False
    #: in a float64 run, the calls inside which float32 (or a narrower float) was computed - a tensor created, or one
    #: meeting float64 and promoted - that no ``precision`` finding covers (neither the call nor an enclosing one):
    #: (call name, class, what happened). Their numbers passed as float64 work on float32-rounded values.
    unjudged_float32: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def failures(self) -> list[ComponentFinding]:
        """The localised faults: mismatching leaves, inline code of composites, target errors (not ``follows``)."""
        statuses = ("mismatch", "inline", "error") + (("precision",) if self.strict_precision else ())
        return [f for f in self.findings if f.status in statuses]

    @property
    def islands(self) -> list[ComponentFinding]:
        """Calls that conform only at float32's tolerance in a float64 run (float32 islands)."""
        return [f for f in self.findings if f.status == "precision"]

    @property
    def checked(self) -> list[ComponentFinding]:
        return [f for f in self.findings if f.error is not None]

    @property
    def ok(self) -> bool:
        failing = FAILING_STATUSES + (("precision",) if self.strict_precision else ())
        return not any(f.status in failing for f in self.findings)

    def by_status(self, status: str) -> list[ComponentFinding]:
        return [f for f in self.findings if f.status == status]

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "ok": self.ok, "strict_precision": self.strict_precision,
                "findings": [f.to_dict() for f in self.findings],
                "unjudged_float32": [{"name": n, "class": c, "what": w} for n, c, w in self.unjudged_float32]}

    def __str__(self) -> str:
        counts = {s: len(self.by_status(s)) for s in STATUSES if self.by_status(s)}
        head = f"components ({self.dtype}): {'CONFORMS' if self.ok else 'DISCREPANCY'}  " + \
            ", ".join(f"{n} {s}" for s, n in counts.items())
        lines = [head]
        for f in self.findings:
            if f.status in ("mismatch", "inline", "error", "precision", "unsupported"):
                lines.append("  " + str(f))
        unreturned = [f.name for f in self.findings if f.status == "not-checked" and f.message.startswith("did not return")]
        unchecked = sorted({f.cls for f in self.findings if f.status == "not-checked" and f.name not in unreturned})
        if unchecked:
            lines.append("  not recognised (not checked): " + ", ".join(unchecked))
        if unreturned:
            lines.append("  did not return (the target raised inside): " + ", ".join(unreturned))
        if self.unjudged_float32:
            lines.append("  " + unjudged_float32_note(self.unjudged_float32))
        return "\n".join(lines)


def unjudged_float32_note(sites: Sequence[tuple[str, str, str]]) -> str:
    """The report line naming the calls of a float64 run that computed in float32 outside any precision finding."""
    return ("float32 inside a float64 run, not covered by a precision finding (checked as float64 work on "
            "float32-rounded values; unrecognised float32 code there is not judged): "
            + ", ".join(f"{name} ({cls}: {what})" for name, cls, what in sites))


# ----------------------------------------------------------------------------------------
# Recorded calls


def _to_numpy(value: Any) -> Any:
    """Detached float64 (floating), int64 (integer) or bool NumPy copies of tensors, recursively in tuples/lists."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.is_floating_point():
            return tensor.to(torch.float64).numpy().copy()
        if tensor.dtype == torch.bool:
            return tensor.numpy().copy()
        if tensor.is_complex():
            return tensor.to(torch.complex128).numpy().copy()
        return tensor.to(torch.int64).numpy().copy()
    if isinstance(value, (tuple, list)):
        return type(value)(_to_numpy(v) for v in value)
    if isinstance(value, dict):  # keyword bundles such as PixArt's added_cond_kwargs
        return {key: _to_numpy(v) for key, v in value.items()}
    return value


def _float_tensors(value: Any) -> list[torch.Tensor]:
    """The floating tensors of an output (tensor, tuple/list, or a ModelOutput / dataclass), in order."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _float_tensors(v)]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _float_tensors(v)]
    if is_dataclass(value) and not isinstance(value, type):  # Flux's ModulationOut(shift, scale, gate)
        return [t for f in fields(value) for t in _float_tensors(getattr(value, f.name))]
    return []


@dataclass
class RecordedCall:
    """One call of one module: its bound inputs (float64 NumPy copies), outputs and its direct children's calls.

    A child's inputs and outputs are kept (``kept_inputs``, ``kept_outputs``) until its parent is compared,
    so that a composite is recomputed *given its children's recorded outputs*: each composite check then
    measures its own inline code on bit-identical inputs, and a child's rounding errors are not amplified
    differently in the target and the reference (the children are checked on their own).
    """

    name: str
    module: nn.Module
    inputs: dict[str, Any]
    outputs: list[np.ndarray] = field(default_factory=list)
    output_dtypes: list[torch.dtype] = field(default_factory=list)
    children: list[RecordedCall] = field(default_factory=list)
    finding: ComponentFinding | None = None
    kept_inputs: dict[str, Any] = field(default_factory=dict)
    kept_outputs: list[np.ndarray] = field(default_factory=list)
    #: float64 copies of the parameters read while this call is compared (the exact, naive and knob evaluations read
    #: the same weights: converting a real-width weight once, not once per evaluation), and tables derived from them
    #: once per precision (CogVideoX's sin-cos table)
    params: dict[tuple[int, str], np.ndarray] = field(default_factory=dict, repr=False)
    #: in a float64 run, whether a floating tensor narrower than float64 was produced while this call was open (itself
    #: or a callee): recorded at run time by _NarrowFloatWatch, it decides whether the call may be a float32 island
    computed_narrow: bool = False

    def param(self, name: str, module: nn.Module | None = None) -> np.ndarray | None:
        """A parameter or buffer of ``module`` (default: this call's module) as float64 NumPy, None if absent."""
        owner = self.module if module is None else module
        value = getattr(owner, name, None)
        if value is None:
            return None
        key = (id(owner), name)
        if key not in self.params:
            self.params[key] = _to_numpy(value)
        return self.params[key]

    def child(self, module: nn.Module | None) -> RecordedCall | None:
        """This call's first direct child call of ``module`` whose outputs were kept (None if there is none)."""
        if module is None:
            return None
        for child in self.children:
            if child.module is module and child.kept_outputs:
                return child
        return None

    def child_outputs(self, module: nn.Module) -> list[np.ndarray]:
        """The recorded outputs of this call's (first) child call of ``module``."""
        child = self.child(module)
        if child is None:
            raise LookupError(f"no recorded call of child {type(module).__name__}")
        return child.kept_outputs

    def arg(self, *names: str) -> Any:
        """The first of ``names`` bound in this call (None if none is)."""
        for name in names:
            if name in self.inputs and self.inputs[name] is not None:
                return self.inputs[name]
        return None


# ----------------------------------------------------------------------------------------
# Component specifications

Evaluate = Callable[[RecordedCall, Precision, Mapping[str, Any]], list[Any]]


@dataclass(frozen=True)
class Component:
    """How to recompute one module class: ``evaluate(call, xp, knobs)`` returns the outputs, in order.

    ``knobs(call)`` gives the expected convention {knob: value} read from the module, ``alternatives(call)``
    the other values each knob can take (tried one at a time when the call mismatches), ``apriori(call, u)``
    an optional a-priori error bound on the outputs in unit roundoff u, labelled ``apriori_label``.
    """

    kind: str
    evaluate: Evaluate
    knobs: Callable[[RecordedCall], dict[str, Any]] = lambda call: {}
    alternatives: Callable[[RecordedCall], dict[str, Sequence[Any]]] = lambda call: {}
    apriori: Callable[[RecordedCall, float], float] | None = None
    apriori_label: str = "a-priori"
    #: what the recomputation is compared with (default: the call's outputs)
    observed: Callable[[RecordedCall], list[np.ndarray]] | None = None
    #: whether this call computes in float32 by design even in a float64 run (diffusers' RMSNorm variance,
    #: FP32LayerNorm, RoPE application, float32-rounded tables): only then is a float64 call that meets
    #: float32's tolerance a float32 island; otherwise it is a mismatch, explained by compute_format='float32'
    float32_inside: Callable[[RecordedCall], bool] = lambda call: False
    #: other knob settings that are each a legitimate identity of the module, not a bug (a module recognised by
    #: its parameter shapes may be a LayerNorm or an RMSNorm, eps unknown): the first that conforms is the one
    identities: Callable[[RecordedCall], list[dict[str, Any]]] = lambda call: []
    #: knob settings computing the same reals with other roundings (e.g. the attention scale applied to q and k
    #: or to the logits): the naive baseline is evaluated under each, the worst kept
    naive_variants: Callable[[RecordedCall], list[dict[str, Any]]] = lambda call: []
    #: groups of knobs one of which subsumes another (a block's chunk ``order`` of both branches and each branch's
    #: own order): two knobs of one group are never tried as a pair (the pair only repeats a single or another pair)
    overlapping: tuple[frozenset[str], ...] = ()
    #: a note for a call that passes, on what its numbers say that the module does not state (a norm whose eps lives
    #: only in its forward): remark(call, knobs, conforms, inside_fmt), ``conforms(setting)`` testing other knob
    #: settings against the verdict's tolerance, ``inside_fmt`` the format the call computes in ("float32" for an
    #: island)
    remark: Callable[[RecordedCall, Mapping[str, Any], Callable[[Mapping[str, Any]], bool], str], str] | None = None
    #: how a recognition that is a guess was made ("structure", "parameter shapes"; "" when by class): a guess whose
    #: recomputation returns other outputs (count, shapes) or cannot be broadcast together is refuted, not-checked
    guess: str = ""
    #: why a guess is refuted when none of its identities reproduces the call (a norm stating no eps, tried with every
    #: eps the code bases use); "" when a call outside tolerance is a failure
    refuted_unless_fits: Callable[[RecordedCall], str] = lambda call: ""


class Unsupported(Exception):
    """The module is recognised but configured in a way the engine does not model (the message says how)."""


class NotRecognised(Unsupported):
    """A recognition by parameter shapes that the call's own outputs refute (DiT-MoE's MoEGate has a linear's single
    2-D weight but returns the top-k expert indices and weights): the module is some other computation, not checked."""


def _refute_shape_guess(call: RecordedCall, kind: str, expected: tuple[int, ...]) -> None:
    """NotRecognised unless the call returned exactly one floating tensor of the shape a ``kind`` would return."""
    shapes = [tuple(np.shape(o)) for o in call.outputs]
    if shapes != [tuple(expected)]:
        raise NotRecognised(f"its parameter shapes suggest a {kind}, but it returns floating tensors of shapes {shapes} "
                            f"where a {kind} returns one of shape {tuple(expected)}")


def _x(xp: Precision, value: Any) -> Any:
    """A recorded float64 array as an array of the precision ``xp`` (None passes)."""
    return None if value is None else xp.asarray(np.asarray(value, dtype=np.float64))


def _p(call: RecordedCall, xp: Precision, name: str, module: nn.Module | None = None) -> Any:
    return _x(xp, call.param(name, module))


def _linear(call: RecordedCall, xp: Precision, module: nn.Module, x: Any) -> Any:
    """A linear child's recorded output when this call recorded one, else the reference linear of x."""
    child = call.child(module) if module is not call.module else None
    if child is not None:
        return _x(xp, child.kept_outputs[0])
    return linear.generic(xp, x, _p(call, xp, "weight", module), _p(call, xp, "bias", module))


def _linear_apriori(call: RecordedCall, u: float) -> float:
    """gamma_{n+2}(u) max (|x||W|^T + |b|): the dot product, the bias addition and the output rounding (Higham eq. 3.13)."""
    x = np.abs(call.arg("input", "x", "hidden_states"))
    weight = np.abs(call.param("weight"))
    bias = call.param("bias")
    magnitude = x @ weight.T + (0 if bias is None else np.abs(bias))
    return gamma_or_inf(weight.shape[1] + 2, u) * float(np.max(magnitude, initial=0.0))


def _activation_name(module: nn.Module | None) -> str:
    """The reference activation name of a torch/diffusers activation module."""
    if module is None:
        return "identity"
    name = type(module).__name__
    if name in ("SiLU", "FP32SiLU"):
        return "silu"
    if name == "GELU" and isinstance(module, nn.GELU):
        return "gelu-tanh" if module.approximate == "tanh" else "gelu"
    if name == "ReLU":
        return "relu"
    if name == "Identity":
        return "identity"
    raise Unsupported(f"activation {name}")


_GELU_NAMES = ("gelu", "gelu-tanh", "approximate-gelu")


def _other(value: Any, options: Sequence[Any]) -> list[Any]:
    return [o for o in options if o != value]


# --- leaves -------------------------------------------------------------------------------


def _eval_linear(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    return [_linear(call, xp, call.module, _x(xp, call.arg("input")))]


def _eval_layer_norm(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    module = call.module
    if len(module.normalized_shape) != 1:
        raise Unsupported(f"normalized_shape {tuple(module.normalized_shape)} over more than one axis")
    weight = _p(call, xp, "weight") if knobs["affine"] else None
    bias = _p(call, xp, "bias") if knobs["affine"] else None
    return [layer_norm.generic(xp, _x(xp, call.arg("input", "inputs", "hidden_states")), weight, bias, knobs["eps"])]


def _norm_eps(module: nn.Module, dtype: torch.dtype | None) -> float:
    """The eps a norm states (``eps``, or LLaMA's ``variance_epsilon`` and the other spellings of _declared_eps)."""
    eps = _declared_eps(module)
    if eps is None:  # torch.nn.RMSNorm(eps=None): finfo(input dtype).eps
        return float(torch.finfo(dtype or torch.float32).eps)
    return eps


def _eval_rms_norm(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    x = _x(xp, call.arg("hidden_states", "x", "input"))
    return [C.rms_norm.generic(xp, x, _p(call, xp, "weight"), _p(call, xp, "bias"), knobs["eps"],
                               knobs["variance_format"])]


def _eval_activation(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    return [C.activation.generic(xp, _x(xp, call.arg("input", "inputs", "x", "hidden_states")), knobs["activation"])]


def _eval_embedding(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    table = _p(call, xp, "weight")
    return [table[np.asarray(call.arg("input"), dtype=np.int64)]]


def _eval_conv(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    module = call.module
    kernel = tuple(module.kernel_size)
    if tuple(module.stride) != kernel or any(module.padding if not isinstance(module.padding, str) else [1]) or \
            module.groups != 1 or any(d != 1 for d in module.dilation):
        return [_general_conv2d(call, xp)]
    x = _x(xp, call.arg("input"))
    weight, bias = _p(call, xp, "weight"), _p(call, xp, "bias")
    if len(kernel) == 2:
        n, _, height, width = np.shape(x)
        grid = (height // kernel[0], width // kernel[1])
        if kernel[0] != kernel[1]:
            raise Unsupported("non-square 2-D patches")
        tokens = patchify.generic(xp, x, weight, bias, kernel[0])
    else:
        n, _, frames, height, width = np.shape(x)
        grid = (frames // kernel[0], height // kernel[1], width // kernel[2])
        tokens = C.patchify_3d.generic(xp, x, weight, bias, kernel)
    out = np.reshape(tokens, (n,) + grid + (np.shape(tokens)[-1],))
    return [np.moveaxis(out, -1, 1)]


def _general_conv2d(call: RecordedCall, xp: Precision) -> Any:
    """A 2-D convolution other than a patch convolution (Sana's 1x1 and depthwise 3x3): square stride and padding."""
    module = call.module
    stride, padding = set(module.stride), module.padding
    if isinstance(padding, str) or len(set(padding)) != 1 or len(stride) != 1 or len(module.kernel_size) != 2 or \
            any(d != 1 for d in module.dilation) or module.padding_mode != "zeros":
        raise Unsupported("convolutions other than 2-D with equal strides, equal zero padding and dilation 1")
    return C.conv2d.generic(xp, _x(xp, call.arg("input")), _p(call, xp, "weight"), _p(call, xp, "bias"),
                            stride.pop(), int(padding[0]), module.groups)


def _conv_apriori(call: RecordedCall, u: float) -> float:
    x = np.abs(call.arg("input"))
    weight = np.abs(call.param("weight"))
    module = call.module
    kernel = tuple(module.kernel_size)
    conv = torch.nn.functional.conv2d if len(kernel) == 2 else torch.nn.functional.conv3d
    if isinstance(module.padding, str):
        return math.inf
    if module.groups > 1 and len(kernel) == 2 and len(set(module.padding)) == 1 and len(set(module.stride)) == 1:
        # torch's grouped float64 convolution is slow on the CPU (seconds at Sana's tiny depthwise 3x3); NumPy is not
        bound = C.conv2d.generic(FLOAT64, x, weight, None, module.stride[0], int(module.padding[0]), module.groups)
    else:
        bound = conv(torch.from_numpy(x), torch.from_numpy(weight), stride=module.stride, padding=module.padding,
                     groups=module.groups).numpy()
    bias = call.param("bias")
    if bias is not None:
        bound = bound + np.abs(bias).reshape((1, -1) + (1,) * len(kernel))
    return gamma_or_inf(int(np.prod(weight.shape[1:])) + 2, u) * float(np.max(bound, initial=0.0))


# --- diffusers activations, FeedForward, timestep and text embedders -----------------------


def _eval_proj_activation(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers GELU / GEGLU / SwiGLU / ApproximateGELU / LinearActivation: a projection, then the activation."""
    projected = _linear(call, xp, call.module.proj, _x(xp, call.arg("hidden_states", "x")))
    return [_diffusers_activation(xp, projected, knobs)]


def _diffusers_activation(xp: Precision, projected: Any, knobs: Mapping[str, Any]) -> Any:
    if knobs.get("glu"):
        return C.gated_linear_unit.generic(xp, projected, knobs["activation"], knobs["gate_first"])
    return C.activation.generic(xp, projected, knobs["activation"])


def _proj_activation_knobs(module: nn.Module) -> dict[str, Any]:
    name = type(module).__name__
    if name == "GELU":
        return {"activation": "gelu-tanh" if module.approximate == "tanh" else "gelu"}
    if name == "GEGLU":
        return {"activation": "gelu", "glu": True, "gate_first": False}
    if name == "SwiGLU":
        return {"activation": "silu", "glu": True, "gate_first": False}
    if name == "ApproximateGELU":
        return {"activation": "approximate-gelu"}
    if name == "LinearActivation":
        return {"activation": _activation_name(module.activation)}
    raise Unsupported(f"feed-forward activation {name}")


def _proj_activation_alternatives(knobs: Mapping[str, Any]) -> dict[str, Sequence[Any]]:
    alternatives: dict[str, Sequence[Any]] = {}
    if knobs["activation"] in _GELU_NAMES:
        alternatives["activation"] = _other(knobs["activation"], _GELU_NAMES)
    if knobs.get("glu"):
        alternatives["gate_first"] = [not knobs["gate_first"]]
    return alternatives


def _eval_feed_forward(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    module = call.module
    act = module.net[0]
    hidden = _diffusers_activation(xp, _linear(call, xp, act.proj, _x(xp, call.arg("hidden_states"))), knobs)
    for layer in list(module.net)[1:]:
        if isinstance(layer, nn.Linear):
            hidden = _linear(call, xp, layer, hidden)
        elif not isinstance(layer, nn.Dropout):
            raise Unsupported(f"FeedForward.net holds a {type(layer).__name__}")
    return [hidden]


def _timesteps_knobs(call: RecordedCall) -> dict[str, Any]:
    module = call.module
    return {"flip_sin_to_cos": bool(module.flip_sin_to_cos), "downscale_freq_shift": float(module.downscale_freq_shift),
            "time_scale": float(getattr(module, "scale", 1)), "max_period": 10000.0}


def _eval_timesteps(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    t = _x(xp, call.arg("timesteps"))
    return [timestep_embedding.generic(xp, t, call.module.num_channels, knobs["max_period"], knobs["flip_sin_to_cos"],
                                       knobs["downscale_freq_shift"], knobs["time_scale"])]


def _timesteps_apriori(call: RecordedCall, u: float) -> float:
    """First order: freqs exp(e), e = -ln(P) i/(h - s), err |e| gamma_3 + exp's ulps; args t freqs scale (+gamma_2); sin/cos ulps."""
    knobs = _timesteps_knobs(call)
    half = call.module.num_channels // 2
    if half == 0 or half - knobs["downscale_freq_shift"] <= 0:
        return 0.0
    exponent = math.log(knobs["max_period"]) * (half - 1) / (half - knobs["downscale_freq_shift"])
    relative_frequency = exponent * gamma_or_inf(3, u) + 2 * EXP_ULPS * u
    largest_argument = float(np.max(np.abs(call.arg("timesteps")), initial=0.0)) * abs(knobs["time_scale"])
    return largest_argument * (relative_frequency + gamma_or_inf(2, u)) + 2 * EXP_ULPS * u + u


def _eval_two_linear(first: str, act: str, second: str) -> Evaluate:
    def evaluate(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
        module = call.module
        x = _x(xp, call.arg("sample", "caption", "x", "hidden_states"))
        if call.arg("condition") is not None:
            raise Unsupported("TimestepEmbedding with a condition projection")
        hidden = C.activation.generic(xp, _linear(call, xp, getattr(module, first), x), knobs["activation"])
        out = _linear(call, xp, getattr(module, second), hidden)
        post = getattr(module, "post_act", None)
        return [out if post is None else C.activation.generic(xp, out, _activation_name(post))]
    return evaluate


def _two_linear_knobs(act: str) -> Callable[[RecordedCall], dict[str, Any]]:
    return lambda call: {"activation": _activation_name(getattr(call.module, act))}


def _stated_max_period(module: nn.Module) -> float:
    """The period a DiT-style timestep embedder states: its ``max_period`` attribute, else the default of its
    ``timestep_embedding(t, dim, max_period=...)`` method (10000 in the original DiT, 10 in DDT's, whose timesteps
    lie in [0, 1]), else the original's 10000."""
    if _is_number(getattr(module, "max_period", None)):
        return float(module.max_period)
    method = getattr(module, "timestep_embedding", None)
    try:
        default = inspect.signature(method).parameters["max_period"].default if callable(method) else None
    except (KeyError, TypeError, ValueError):  # no such parameter, or a builtin without a signature
        default = None
    return float(default) if _is_number(default) else 10000.0


def _dit_timestep_knobs(call: RecordedCall) -> dict[str, Any]:
    """The original DiT TimestepEmbedder's conventions ([cos, sin], shift 0, period 10000), or the module's own
    attributes (the period also from its timestep_embedding method's default)."""
    module = call.module
    return {"flip_sin_to_cos": bool(getattr(module, "flip_sin_to_cos", True)),
            "downscale_freq_shift": float(getattr(module, "downscale_freq_shift", 0.0)),
            "time_scale": float(getattr(module, "time_scale", 1.0)),
            "max_period": _stated_max_period(module)}


def _dit_frequency_dim(module: nn.Module) -> int:
    return int(getattr(module, "frequency_embedding_size", getattr(module, "frequency_dim", 0)))


def _eval_dit_timestep_embedder(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """DiT's TimestepEmbedder: mlp = Sequential(Linear, SiLU, Linear) applied to the timestep sinusoid."""
    module = call.module
    t = _x(xp, call.arg("t", "timesteps"))
    features = timestep_embedding.generic(xp, t, _dit_frequency_dim(module), knobs["max_period"],
                                          knobs["flip_sin_to_cos"], knobs["downscale_freq_shift"], knobs["time_scale"])
    first, act, second = module.mlp
    hidden = C.activation.generic(xp, _linear(call, xp, first, features), _activation_name(act))
    return [_linear(call, xp, second, hidden)]


def _eval_timm_patch_embed(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """timm PatchEmbed as DiT uses it: proj (a patch Conv2d), flatten(2).transpose(1, 2), norm Identity."""
    module = call.module
    norm = getattr(module, "norm", None)
    if norm is not None and not isinstance(norm, nn.Identity):
        raise Unsupported(f"timm PatchEmbed with norm {type(norm).__name__}")
    child = call.child(module.proj)
    if child is not None:
        grid = _x(xp, child.kept_outputs[0])
    else:
        grid = _eval_conv(RecordedCall(call.name, module.proj, {"input": call.arg("x")}), xp, knobs)[0]
    n, channels = np.shape(grid)[:2]
    return [np.swapaxes(np.reshape(grid, (n, channels, -1)), 1, 2)]


def _eval_patch_embed(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    module = call.module
    if not module.flatten:
        raise Unsupported("PatchEmbed(flatten=False)")
    latent = _x(xp, call.arg("latent"))
    tokens = patchify.generic(xp, latent, _p(call, xp, "weight", module.proj), _p(call, xp, "bias", module.proj),
                              module.patch_size)
    if module.layer_norm:
        tokens = layer_norm.generic(xp, tokens, None, None, module.norm.eps)
    if module.pos_embed is None:
        return [tokens]
    # the exact table (the module's float32 one is its own rounding, reported as such), cropped as the module does
    table = patch_position_table(xp, np.shape(latent), module.patch_size, np.shape(tokens)[-1], module.base_size,
                                 module.interpolation_scale, module.pos_embed_max_size or None)
    return [tokens + table[None]]


# --- adaLN family -------------------------------------------------------------------------

_TRIPLE = ("shift", "scale", "gate")


def _triple_orders(suffixes: Sequence[str]) -> list[tuple[str, ...]]:
    """Every order of (shift, scale, gate) applied to each group, e.g. (scale_msa, shift_msa, gate_msa, ...)."""
    orders = []
    for permutation in itertools.permutations(_TRIPLE):
        orders.append(tuple(f"{p}_{s}" for s in suffixes for p in permutation))
    return orders


def _adaln_emb(call: RecordedCall, xp: Precision) -> Any:
    module = call.module
    if getattr(module, "emb", None) is not None:
        return _x(xp, call.child_outputs(module.emb)[0])
    return _x(xp, call.arg("emb"))


def _recorded_or(call: RecordedCall, xp: Precision, module: nn.Module | None, compute: Callable[[], Any]) -> Any:
    """A child's recorded output when this call recorded one (its own check measures it), else ``compute()``."""
    child = call.child(module) if module is not None else None
    return _x(xp, child.kept_outputs[0]) if child is not None else compute()


def _adaln_parts(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any], emb: Any,
                 norm_kind: str = "layer") -> tuple[dict[str, Any], Any]:
    """(chunks by name [B, D], normed x) of an adaLN module: linear(silu(emb)) and its norm, each taken from the
    recorded child when there is one (the glue alone is then checked: chunking and modulation), else recomputed."""
    module = call.module
    projected = _recorded_or(call, xp, module.linear, lambda: linear.generic(
        xp, silu.generic(xp, emb()), _p(call, xp, "weight", module.linear), _p(call, xp, "bias", module.linear)))
    order = knobs["order"]
    width = np.shape(projected)[-1] // len(order)
    chunks = {name: projected[..., i * width:(i + 1) * width] for i, name in enumerate(order)}
    norm = module.norm

    def compute_norm() -> Any:
        x = _x(xp, call.arg("x"))
        if norm_kind == "rms" or type(norm).__name__ == "RMSNorm":
            return C.rms_norm.generic(xp, x, _p(call, xp, "weight", norm), None, knobs["eps"])
        if not isinstance(norm, nn.LayerNorm):
            raise Unsupported(f"{type(module).__name__} with norm {type(norm).__name__} that did not run as a child")
        return layer_norm.generic(xp, x, _p(call, xp, "weight", norm), _p(call, xp, "bias", norm), knobs["eps"])
    return chunks, _recorded_or(call, xp, norm, compute_norm)


def _eval_adaln_zero(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers AdaLayerNormZero: (norm(x)(1 + scale_msa) + shift_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp)."""
    chunks, normed = _adaln_parts(call, xp, knobs, lambda: _adaln_emb(call, xp))
    return [normed * (1 + chunks["scale_msa"][:, None]) + chunks["shift_msa"][:, None], chunks["gate_msa"],
            chunks["shift_mlp"], chunks["scale_mlp"], chunks["gate_mlp"]]


def _eval_adaln_zero_single(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers AdaLayerNormZeroSingle: (norm(x)(1 + scale_msa) + shift_msa, gate_msa)."""
    chunks, normed = _adaln_parts(call, xp, knobs, lambda: _x(xp, call.arg("emb")))
    return [normed * (1 + chunks["scale_msa"][:, None]) + chunks["shift_msa"][:, None], chunks["gate_msa"]]


def _eval_adaln_continuous(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers AdaLayerNormContinuous: norm(x)(1 + scale) + shift, (scale, shift) = linear(silu(cond))."""
    chunks, normed = _adaln_parts(call, xp, knobs, lambda: _x(xp, call.arg("conditioning_embedding")))
    return [normed * (1 + chunks["scale"][:, None]) + chunks["shift"][:, None]]


def _eval_adaln_single(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers AdaLayerNormSingle: (linear(silu(emb(t, **added_cond_kwargs))), emb(...)); with PixArt's size
    conditions also the resolution and aspect ratio its emb must receive (its added_cond_kwargs, passed through)."""
    module = call.module
    embedded = _x(xp, call.child_outputs(module.emb)[0])
    expected = [_linear(call, xp, module.linear, silu.generic(xp, embedded)), embedded]
    if _size_conditioned(module.emb):
        expected += [_x(xp, value) for value in _size_condition_values(call.arg("added_cond_kwargs"))]
    return expected


def _observed_adaln_single(call: RecordedCall) -> list[np.ndarray]:
    observed = list(call.outputs)
    if _size_conditioned(call.module.emb):
        emb = call.child(call.module.emb)
        if emb is None:
            raise Unsupported("its emb did not run as a hooked child")
        observed += _size_condition_values(emb.kept_inputs)
    return observed


def _size_conditioned(module: nn.Module) -> bool:
    """Whether a PixArtAlphaCombinedTimestepSizeEmbeddings adds the resolution / aspect-ratio embeddings, or a
    PixArt model needs them (added_cond_kwargs): the use_additional_conditions flag each keeps, as diffusers resolved
    it (a config None: sample_size == 128)."""
    return bool(getattr(module, "use_additional_conditions", False))


def _size_condition_values(conditions: Mapping[str, Any] | None) -> list[Any]:
    """PixArt's size conditions [resolution, aspect_ratio] out of added_cond_kwargs (or emb's inputs); None where
    absent."""
    conditions = conditions or {}
    return [conditions.get("resolution"), conditions.get("aspect_ratio")]


def _eval_label_embedding(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers LabelEmbedding in eval: table[labels], labels with force_drop_ids == 1 replaced by the null class."""
    module = call.module
    labels = np.asarray(call.arg("labels"), dtype=np.int64)
    drop = call.arg("force_drop_ids")
    if drop is not None:
        labels = np.where(np.asarray(drop) == 1, module.num_classes + knobs["null_offset"], labels)
    return [_p(call, xp, "weight", module.embedding_table)[labels]]


def _eval_sum_of_children(*names: str) -> Evaluate:
    """Combined embedders: the sum of the named children's recorded outputs (checks the inline addition only)."""
    def evaluate(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
        total = None
        for name in names:
            child = getattr(call.module, name, None)
            if child is None:
                continue
            try:
                value = _x(xp, call.child_outputs(child)[0])
            except LookupError:
                continue
            total = value if total is None else total + value
        if total is None:
            raise Unsupported("none of the summed embedders ran")
        return [total]
    return evaluate


def _pixart_size_calls(call: RecordedCall) -> tuple[list[RecordedCall], dict[str, RecordedCall]]:
    """The size conditions' recorded calls: additional_condition_proj's two (resolution, then aspect ratio, in the
    order diffusers makes them) and the resolution and aspect-ratio embedders."""
    module = call.module
    projections = [c for c in call.children if c.module is module.additional_condition_proj and c.kept_outputs]
    if len(projections) != 2:
        raise Unsupported(f"size-condition sinusoid ran {len(projections)} times as a hooked child (2 expected)")
    return projections, _needed_children(call, ["timestep_embedder", "resolution_embedder", "aspect_ratio_embedder"])


def _eval_pixart_combined(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """PixArtAlphaCombinedTimestepSizeEmbeddings (PixArt-alpha's PixArtMS t_block + csize / ar embedders):
    c = t_emb, plus with use_additional_conditions concat(res_emb.reshape(B, -1), ar_emb.reshape(B, -1)), where
    res_emb = resolution_embedder(sinusoid(resolution.flatten())) over the (height, width) pairs [B, 2] and ar_emb
    = aspect_ratio_embedder(sinusoid(aspect_ratio.flatten())) [B, 1], both sinusoids additional_condition_proj.
    Given the children's outputs; with the conditions, returns [the sinusoid's two inputs, the two embedders' inputs,
    c] (the order of _observed_pixart_combined): the flattening, which embedder gets which sinusoid, the concat."""
    if not _size_conditioned(call.module):
        return _eval_sum_of_children("timestep_embedder")(call, xp, knobs)
    projections, children = _pixart_size_calls(call)
    out = _children_out(call, children, xp)
    batch = int(call.arg("batch_size") or np.shape(out("timestep_embedder"))[0])
    resolution = np.asarray(call.arg("resolution"), dtype=np.float64)
    if knobs["resolution_order"] == "width, height":  # each (h, w) pair read the other way round
        resolution = resolution[..., ::-1]
    resolution, aspect = _x(xp, np.reshape(resolution, -1)), _x(xp, np.reshape(call.arg("aspect_ratio"), -1))
    sinusoids = [_x(xp, projection.kept_outputs[0]) for projection in projections]
    sizes = [np.reshape(out(name), (batch, -1)) for name in knobs["embedders"]]
    return [resolution, aspect, *sinusoids, out("timestep_embedder") + np.concatenate(sizes, axis=1)]


def _observed_pixart_combined(call: RecordedCall) -> list[np.ndarray]:
    if not _size_conditioned(call.module):
        return list(call.outputs)
    projections, children = _pixart_size_calls(call)
    return [projection.kept_inputs["timesteps"] for projection in projections] + \
        [_first_array(children[name].kept_inputs) for name in ("resolution_embedder", "aspect_ratio_embedder")] + \
        [call.outputs[0]]


# --- transformer blocks (the inline glue between recorded children) -----------------------


def _first_array(values: Mapping[str, Any]) -> np.ndarray:
    return next(v for v in values.values() if isinstance(v, np.ndarray))


def _block_children(call: RecordedCall) -> dict[str, RecordedCall]:
    """The recorded children a BasicTransformerBlock check needs (Unsupported if one did not run or a feature is on)."""
    module = call.module
    if module.norm_type not in ("ada_norm_zero", "ada_norm_single"):
        raise Unsupported(f"BasicTransformerBlock(norm_type={module.norm_type!r})")
    if module.pos_embed is not None or module._chunk_size is not None or call.arg("cross_attention_kwargs"):
        raise Unsupported("BasicTransformerBlock with pos_embed, chunked feed-forward or cross_attention_kwargs")
    names = ["norm1", "attn1", "ff"] + (["attn2", "norm2"] if module.attn2 is not None else []) + \
        (["norm3"] if module.norm_type == "ada_norm_zero" else ["norm2"])
    return _needed_children(call, names)


def _eval_basic_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers BasicTransformerBlock, ada_norm_zero (DiT) or ada_norm_single (PixArt), given its children's outputs.

    Returns, in order, what the next child must receive and the block's output: [attn1's input (single)],
    [norm2's input after self-attention (with cross-attention)], the MLP norm's input, ff's input, the output.
    """
    module = call.module
    children = _block_children(call)
    out = lambda name, i=0: _x(xp, children[name].kept_outputs[i])  # noqa: E731
    x = _x(xp, call.arg("hidden_states"))
    expected = []
    if module.norm_type == "ada_norm_zero":
        gate_msa, shift_mlp, scale_mlp, gate_mlp = (out("norm1", i)[:, None, :] for i in range(1, 5))
    else:
        chunks = C.scale_shift_table_chunks.generic(xp, _p(call, xp, "scale_shift_table"), _x(xp, call.arg("timestep")),
                                                    _chunk_order(knobs))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            chunks[name][:, None, :] for name in C.ADALN_ZERO_ORDER)
        expected.append(out("norm1") * (1 + scale_msa) + shift_msa)
    hidden = gate_msa * out("attn1") + x
    if module.attn2 is not None:
        expected.append(hidden)  # norm2's input (ada_norm_zero) or attn2's (ada_norm_single)
        hidden = out("attn2") + hidden
    expected.append(hidden)  # the MLP norm's input
    mlp_norm = "norm3" if module.norm_type == "ada_norm_zero" else "norm2"
    expected.append(out(mlp_norm) * (1 + scale_mlp) + shift_mlp)
    expected.append(gate_mlp * out("ff") + hidden)
    return expected


def _observed_basic_block(call: RecordedCall) -> list[np.ndarray]:
    module = call.module
    children = _block_children(call)
    observed = []
    if module.norm_type == "ada_norm_single":
        observed.append(_first_array(children["attn1"].kept_inputs))
    if module.attn2 is not None:
        key = "norm2" if module.norm_type == "ada_norm_zero" else "attn2"
        observed.append(_first_array(children[key].kept_inputs))
    mlp_norm = "norm3" if module.norm_type == "ada_norm_zero" else "norm2"
    observed.append(_first_array(children[mlp_norm].kept_inputs))
    observed.append(_first_array(children["ff"].kept_inputs))
    observed.append(call.outputs[0])
    return observed


def _block_knobs(call: RecordedCall) -> dict[str, Any]:
    return _block_order_knobs(call) if call.module.norm_type == "ada_norm_single" else {}


def _block_alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
    return _block_order_alternatives(call) if call.module.norm_type == "ada_norm_single" else {}


_BRANCHES = ("msa", "mlp")


def _branch_roles(branch: str, roles: Sequence[str] = _TRIPLE) -> tuple[str, ...]:
    """One branch's chunk names, e.g. ("scale_mlp", "shift_mlp", "gate_mlp")."""
    return tuple(f"{role}_{branch}" for role in roles)


def _block_order_knobs(call: RecordedCall) -> dict[str, Any]:
    """A six-chunk block's ``order`` (both branches) and each branch's own role order ``order_msa`` / ``order_mlp``
    (identity by default): a shift/scale swap in one modulate only is a one-branch knob."""
    return {"order": C.ADALN_ZERO_ORDER, **{f"order_{branch}": _branch_roles(branch) for branch in _BRANCHES}}


def _block_order_alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
    """The five other orders applied to both branches, then to each branch alone (15 singles; the pairs tried when
    none explains are order_msa x order_mlp only: see _BLOCK_ORDER_OVERLAPS)."""
    alternatives: dict[str, Sequence[Any]] = {
        "order": [o for o in _triple_orders(_BRANCHES) if o != C.ADALN_ZERO_ORDER]}
    for branch in _BRANCHES:
        alternatives[f"order_{branch}"] = [_branch_roles(branch, p) for p in itertools.permutations(_TRIPLE)
                                           if p != _TRIPLE]
    return alternatives


#: ``order`` permutes both branches, so pairing it with a branch's own order only repeats another single or pair
_BLOCK_ORDER_OVERLAPS = (frozenset({"order", "order_msa"}), frozenset({"order", "order_mlp"}))


def _chunk_order(knobs: Mapping[str, Any]) -> tuple[str, ...]:
    """The six chunk names in output order: ``order``, then each branch's roles renamed by its ``order_<branch>``
    (order_mlp = (scale_mlp, shift_mlp, gate_mlp): the chunk ``order`` calls shift_mlp is used as the MLP's scale)."""
    order = tuple(knobs["order"])
    for branch in _BRANCHES:
        roles = knobs.get(f"order_{branch}")
        if roles is not None:
            renamed = dict(zip(_branch_roles(branch), roles))
            order = tuple(renamed.get(name, name) for name in order)
    return order


def _needed_children(call: RecordedCall, names: Sequence[str]) -> dict[str, RecordedCall]:
    """The recorded calls of the submodules ``names`` of ``call.module`` (Unsupported if one did not run hooked)."""
    children = {}
    for name in names:
        child = call.child(getattr(call.module, name, None))
        if child is None:
            raise Unsupported(f"its {name} did not run as a hooked child")
        children[name] = child
    return children


def _hooked_blocks(call: RecordedCall, blocks: Iterable[nn.Module]) -> list[RecordedCall]:
    """The recorded call of every block of a model's block list, in order (Unsupported if one did not run hooked)."""
    recorded = [call.child(block) for block in blocks]
    if any(block is None for block in recorded):
        raise Unsupported("a block did not run as a hooked child")
    return recorded  # type: ignore[return-value]


def _dual_stream_names(call: RecordedCall) -> list[str]:
    module = call.module
    if getattr(module, "_chunk_size", None) is not None:
        raise Unsupported("chunked feed-forward")
    text = not getattr(module, "context_pre_only", False)
    dual = ["attn2"] if getattr(module, "use_dual_attention", False) else []
    return ["norm1", "attn", "norm2", "ff"] + dual + (["norm1_context", "norm2_context", "ff_context"] if text else [])


def _eval_dual_stream_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """SD3 JointTransformerBlock / Flux FluxTransformerBlock glue, given the children's outputs.

    Per stream: h1 = h + gate_msa attn; norm2's input h1; ff's input norm2(h1)(1 + scale_mlp) + shift_mlp;
    out = h1 + gate_mlp ff. SD3.5's dual attention (image stream): h1 = (h + gate_msa attn) + gate_msa2 attn2,
    attn2 fed norm1's seventh output. Returns [norm2 in, ff in, (norm2_context in, ff_context in,) (text out,) image out].
    """
    children = _needed_children(call, _dual_stream_names(call))
    out = lambda name, i=0: _x(xp, children[name].kept_outputs[i])  # noqa: E731
    expected: list[Any] = []

    def stream(x: Any, norm1: str, attention_index: int, norm2: str, ff: str) -> Any:
        gate_msa, shift_mlp, scale_mlp, gate_mlp = (out(norm1, i)[:, None, :] for i in range(1, 5))
        hidden = x + gate_msa * out("attn", attention_index)
        if norm1 == "norm1" and "attn2" in children:
            hidden = hidden + out(norm1, 6)[:, None, :] * out("attn2")
        expected.extend([hidden, out(norm2) * (1 + scale_mlp) + shift_mlp])
        return hidden + gate_mlp * out(ff)

    image = stream(_x(xp, call.arg("hidden_states")), "norm1", 0, "norm2", "ff")
    if "norm1_context" in children:
        text = stream(_x(xp, call.arg("encoder_hidden_states")), "norm1_context", 1, "norm2_context", "ff_context")
        expected.append(text)
    expected.append(image)
    return expected


def _observed_dual_stream_block(call: RecordedCall) -> list[np.ndarray]:
    names = _dual_stream_names(call)
    children = _needed_children(call, names)
    observed = [_first_array(children["norm2"].kept_inputs), _first_array(children["ff"].kept_inputs)]
    if "norm1_context" in children:
        observed += [_first_array(children["norm2_context"].kept_inputs),
                     _first_array(children["ff_context"].kept_inputs)]
    return observed + list(call.outputs)


def _eval_flux_single_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Flux FluxSingleTransformerBlock glue: x = [text, image]; proj_out's input [attn(norm x), act(proj_mlp(norm x))];
    out = x + gate proj_out(...), split back into (text, image). Returns [norm's input, proj_out's input, text, image]."""
    children = _needed_children(call, ["norm", "attn", "act_mlp", "proj_out"])
    text, image = _x(xp, call.arg("encoder_hidden_states")), _x(xp, call.arg("hidden_states"))
    joined = np.concatenate([text, image], axis=1)
    gate = _x(xp, children["norm"].kept_outputs[1])[:, None, :]
    mixed = np.concatenate([_x(xp, children["attn"].kept_outputs[0]), _x(xp, children["act_mlp"].kept_outputs[0])],
                           axis=-1)
    result = joined + gate * _x(xp, children["proj_out"].kept_outputs[0])
    text_tokens = np.shape(text)[1]
    return [joined, mixed, result[:, :text_tokens], result[:, text_tokens:]]


def _observed_flux_single_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, ["norm", "attn", "act_mlp", "proj_out"])
    return [_first_array(children["norm"].kept_inputs), _first_array(children["proj_out"].kept_inputs),
            *call.outputs]


# --- attention ----------------------------------------------------------------------------


def _apply_norm(call: RecordedCall, xp: Precision, module: nn.Module | None, x: Any, heads: int,
                across_heads: bool, dtype: torch.dtype | None) -> Any:
    """A QK-norm module applied to x [B, L, H*Dh], per head (as diffusers' processors do) or across heads."""
    if module is None:
        return x
    child = call.child(module)
    if child is not None and not across_heads:
        return _x(xp, _as_tokens(child.kept_outputs[0], child.kept_inputs, x, heads))
    name = type(module).__name__
    weight, bias = _p(call, xp, "weight", module), _p(call, xp, "bias", module)
    if name == "RMSNorm":
        kind = "rms"
    elif isinstance(module, nn.LayerNorm):
        kind = "layer"
    else:
        raise Unsupported(f"QK-norm {name}")
    return C.qk_norm.generic(xp, x, weight, heads, _norm_eps(module, dtype), kind, across_heads, bias)


def _as_tokens(value: np.ndarray, child_inputs: Mapping[str, Any], x: Any, heads: int) -> np.ndarray:
    """A per-head norm's recorded output, [B, L, H, Dh] (Flux) or [B, H, L, Dh] (SD3), as [B, L, H*Dh].

    When L = H the layouts look alike; the norm's recorded input, equal to x in the right layout, decides.
    """
    b, length, channels = np.shape(x)
    as_is = np.reshape(value, (b, length, channels)) if np.shape(value) == (b, length, heads, channels // heads) else None
    swapped = np.swapaxes(value, 1, 2).reshape(b, length, channels) \
        if np.shape(value) == (b, heads, length, channels // heads) else None
    if as_is is not None and swapped is not None:
        recorded = next((v for v in child_inputs.values() if isinstance(v, np.ndarray)), None)
        plain = np.asarray(x, dtype=np.float64)
        if recorded is not None and np.array_equal(np.swapaxes(recorded, 1, 2).reshape(b, length, channels), plain):
            return swapped
        return as_is
    if as_is is None and swapped is None:
        raise Unsupported(f"a QK-norm output of shape {np.shape(value)}")
    return as_is if as_is is not None else swapped


def _projected(call: RecordedCall, xp: Precision, module: nn.Module | None, x: Any) -> Any:
    """The output projection of a composite: x itself when the projection was recorded (its input is compared)."""
    if module is None or call.child(module) is not None:
        return x
    return _linear(call, xp, module, x)


def _projection_inputs_or_outputs(*projections: str) -> Callable[[RecordedCall], list[np.ndarray]]:
    """What a composite's recomputation is compared with: each recorded output projection's input, else the output."""
    def observed(call: RecordedCall) -> list[np.ndarray]:
        values = []
        for index, name in enumerate(projections):
            module = getattr(call.module, name, None)
            if isinstance(module, nn.ModuleList):
                module = module[0]
            if index == 1 and _processor_kind(call.module) == "JointAttnProcessor2_0" \
                    and getattr(call.module, "context_pre_only", False):
                module = None
            child = call.child(module)
            if index >= len(call.outputs):
                break
            if child is not None:
                values.append(next(v for v in child.kept_inputs.values() if isinstance(v, np.ndarray)))
            else:
                values.append(call.outputs[index])
        return values
    return observed


_PROCESSORS = ("FluxAttnProcessor", "JointAttnProcessor2_0", "AttnProcessor2_0", "AttnProcessor", "WanAttnProcessor",
               "SanaLinearAttnProcessor2_0", "SanaAttnProcessor2_0", "CogVideoXAttnProcessor2_0",
               "HunyuanVideoAttnProcessor2_0", "LTXVideoAttnProcessor", "HunyuanAttnProcessor2_0",
               "AuraFlowAttnProcessor2_0", "Lumina2AttnProcessor2_0", "AllegroAttnProcessor2_0",
               "MochiAttnProcessor2_0")
#: processors computing softmax attention like AttnProcessor2_0 (Sana's cross-attention is the same mathematics)
_PLAIN_PROCESSORS = ("AttnProcessor2_0", "AttnProcessor", "SanaAttnProcessor2_0")


def _processor_kind(module: nn.Module) -> str:
    """The diffusers processor class a module's processor is (or derives from); its own class name otherwise."""
    processor = type(getattr(module, "processor", None))
    return next((c.__name__ for c in processor.__mro__ if c.__name__ in _PROCESSORS), processor.__name__)


def _attention_knobs(call: RecordedCall) -> dict[str, Any]:
    """The conventions of a diffusers attention call: scale, QK-norm placement, mask form, token order, RoPE pairing.

    ``mask``: "applied" (the recorded mask reaches the attention) or "ignored" (a processor that drops it, as
    SD3's joint processor does by design, diffusers#8673); ``mask_sign`` 1 or -1 (an additive mask negated).
    """
    processor = _processor_kind(call.module)
    knobs: dict[str, Any] = {"scale": "1/sqrt(head_dim)", "qk_norm": "per-head", "mask_sign": 1, "mask": "applied"}
    if processor == "FluxAttnProcessor":
        knobs.update(token_order="text-first", rope_pairing="interleaved")
    elif processor == "JointAttnProcessor2_0":
        knobs.update(token_order="image-first")
    elif processor == "CogVideoXAttnProcessor2_0":
        knobs.update(token_order="text-first", rope_pairing="interleaved")
    elif processor in ("HunyuanAttnProcessor2_0", "Lumina2AttnProcessor2_0"):
        knobs.update(rope_pairing="interleaved")
    elif processor == "MochiAttnProcessor2_0":
        knobs.update(token_order="image-first", rope_pairing="interleaved")
    elif processor == "AllegroAttnProcessor2_0":
        knobs.update(rope_pairing="half")
    elif processor == "AuraFlowAttnProcessor2_0":
        knobs.update(token_order="text-first")
    elif processor == "HunyuanVideoAttnProcessor2_0":
        knobs.update(token_order="image-first", rope_pairing="interleaved")
    elif processor in ("WanAttnProcessor", "LTXVideoAttnProcessor"):
        knobs.update(qk_norm="across-heads", rope_pairing="interleaved")
    elif processor == "SanaLinearAttnProcessor2_0":
        knobs = {"qk_norm": "per-head", "kernel": "relu", "linear_eps": 1e-15}
    elif processor not in _PLAIN_PROCESSORS:
        raise Unsupported(f"attention processor {processor}")
    return knobs


def _attention_alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
    knobs = _attention_knobs(call)
    module = call.module
    if "kernel" in knobs:  # linear attention
        return {"kernel": ["identity"], "linear_eps": [0.0, 1e-6]}
    alternatives: dict[str, Sequence[Any]] = {"scale": ["1/head_dim", "1"]}
    norm = getattr(module, "norm_q", None)
    if norm is not None and not isinstance(norm, nn.Identity):
        alternatives["qk_norm"] = _other(knobs["qk_norm"], ("per-head", "across-heads"))
    if call.arg("attention_mask") is not None:
        alternatives["mask_sign"] = [-1]
        alternatives["mask"] = ["ignored"]
    if "token_order" in knobs and call.arg("encoder_hidden_states") is not None:
        alternatives["token_order"] = _other(knobs["token_order"], ("text-first", "image-first"))
    if "rope_pairing" in knobs and call.arg("image_rotary_emb", "rotary_emb") is not None:
        alternatives["rope_pairing"] = _other(knobs["rope_pairing"], ("interleaved", "half"))
    return alternatives


def _applies_rope(call: RecordedCall) -> bool:
    """diffusers' apply_rotary_emb computes x.float() * cos + rot(x).float() * sin: float32 inside; Sana's linear
    attention computes in float32 (query.float(), key.float(), value.float())."""
    return call.arg("image_rotary_emb") is not None or \
        _processor_kind(call.module) == "SanaLinearAttnProcessor2_0"


def _scale_value(knob: str, head_dim: int) -> float | None:
    return {"1/sqrt(head_dim)": None, "1/head_dim": 1.0 / head_dim, "1": 1.0}[knob]


def _scaled_attention(xp: Precision, q: Any, k: Any, v: Any, scale_knob: str, mask: Any = None,
                      prescale: bool = True) -> Any:
    """softmax(s q k^T + mask) v, q and k each multiplied by sqrt(s) first (torch's SDPA math path) or the logits by s.

    The same reals either way; in a narrow format the roundings differ and grow with the logits, so the naive
    same-dtype baseline is measured both ways (Component.naive_variants) and the worse kept.
    """
    head_dim = np.shape(q)[-1]
    scale = _scale_value(scale_knob, head_dim)
    if not prescale:
        return attention.generic(xp, q, k, v, None if scale is None else scale, mask, "zero")
    root = xp.sqrt(xp.const(1) / xp.sqrt(xp.const(head_dim)) if scale is None else xp.const(scale))
    return attention.generic(xp, q * root, k * root, v, 1.0, mask, "zero")


def _eval_diffusers_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers Attention + AttnProcessor2_0 / JointAttnProcessor2_0, FluxAttention + FluxAttnProcessor."""
    module = call.module
    processor = _processor_kind(module)
    if processor == "SanaLinearAttnProcessor2_0":
        return _eval_sana_linear_attention(call, xp, knobs)
    if processor == "CogVideoXAttnProcessor2_0":
        return _eval_cogvideox_attention(call, xp, knobs)
    if processor == "HunyuanVideoAttnProcessor2_0":
        return _eval_hunyuan_video_attention(call, xp, knobs)
    if processor == "Lumina2AttnProcessor2_0":
        return _eval_lumina2_attention(call, xp, knobs)
    for flag in ("spatial_norm", "group_norm"):
        if getattr(module, flag, None) is not None:
            raise Unsupported(f"Attention with {flag}")
    if getattr(module, "residual_connection", False) or getattr(module, "rescale_output_factor", 1.0) != 1.0:
        raise Unsupported("Attention with residual_connection or rescale_output_factor")
    if getattr(module, "fused_projections", False):
        raise Unsupported("fused QKV projections")
    hidden = _x(xp, call.arg("hidden_states"))
    if np.ndim(hidden) != 3:
        raise Unsupported("attention over 4-D (image) hidden states")
    context = _x(xp, call.arg("encoder_hidden_states"))
    mask = call.arg("attention_mask")
    heads = module.heads
    dtype = call.output_dtypes[0] if call.output_dtypes else None
    across = knobs["qk_norm"] == "across-heads"
    joint = processor in ("JointAttnProcessor2_0", "FluxAttnProcessor", "AuraFlowAttnProcessor2_0")
    query = _apply_norm(call, xp, module.norm_q, _linear(call, xp, module.to_q, hidden), heads, across, dtype)
    source = hidden if (context is None or joint) else context
    if context is not None and not joint and getattr(module, "norm_cross", None):
        raise Unsupported("cross-attention with norm_cross")
    key = _apply_norm(call, xp, module.norm_k, _linear(call, xp, module.to_k, source), heads, across, dtype)
    value = _linear(call, xp, module.to_v, source)
    image_tokens = np.shape(hidden)[1]
    if joint and context is not None and getattr(module, "add_q_proj", None) is not None:
        extra_q = _apply_norm(call, xp, getattr(module, "norm_added_q", None),
                              _linear(call, xp, module.add_q_proj, context), heads, across, dtype)
        extra_k = _apply_norm(call, xp, getattr(module, "norm_added_k", None),
                              _linear(call, xp, module.add_k_proj, context), heads, across, dtype)
        extra_v = _linear(call, xp, module.add_v_proj, context)
        text_first = knobs["token_order"] == "text-first"
        parts = ((extra_q, query), (extra_k, key), (extra_v, value)) if text_first else \
            ((query, extra_q), (key, extra_k), (value, extra_v))
        query, key, value = (np.concatenate(pair, axis=1) for pair in parts)
    else:
        text_first = False
    q, k, v = split_heads(query, heads), split_heads(key, heads), split_heads(value, heads)
    rope = call.arg("image_rotary_emb")
    if processor == "AllegroAttnProcessor2_0":
        if rope is not None and not module.is_cross_attention:
            q, k = (_allegro_rope(xp, x, rope, knobs["rope_pairing"]) for x in (q, k))
        rope = None
    if rope is not None:
        if not isinstance(rope, tuple) or len(rope) != 2:
            raise Unsupported("rotary embeddings given as complex numbers")
        cos, sin = (_x(xp, table) for table in rope)
        pairing = knobs.get("rope_pairing", "interleaved")
        q = C.apply_rope.generic(xp, q, cos, sin, pairing)
        if not (processor == "HunyuanAttnProcessor2_0" and module.is_cross_attention):  # HunyuanDiT: q only there
            k = C.apply_rope.generic(xp, k, cos, sin, pairing)
    attn_mask = _mask_bias(mask, q, k, knobs)
    out = merge_heads(_scaled_attention(xp, q, k, v, knobs["scale"], attn_mask, knobs.get("_prescale", True)))
    if joint and context is not None and getattr(module, "add_q_proj", None) is not None:
        text_tokens = np.shape(context)[1]
        if text_first:
            text_out, image_out = out[:, :text_tokens], out[:, text_tokens:]
        else:
            image_out, text_out = out[:, :image_tokens], out[:, image_tokens:]
        to_out = getattr(module, "to_out", None)
        to_add_out = getattr(module, "to_add_out", None)
        if processor == "JointAttnProcessor2_0" and getattr(module, "context_pre_only", False):
            to_add_out = None
        return [_projected(call, xp, None if to_out is None else to_out[0], image_out),
                _projected(call, xp, to_add_out, text_out)]
    to_out = getattr(module, "to_out", None)
    return [_projected(call, xp, None if to_out is None else to_out[0], out)]


def _eval_timm_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """timm / DiT Attention: qkv Linear split (q, k, v) then heads, SDPA with 1/sqrt(Dh), proj (no QK-norm modules)."""
    module = call.module
    for name in ("q_norm", "k_norm"):
        norm = getattr(module, name, None)
        if norm is not None and not isinstance(norm, nn.Identity):
            raise Unsupported("timm Attention with qk_norm")
    if call.arg("mask", "attn_mask", "attention_mask") is not None:
        raise Unsupported(f"{type(module).__name__} with a mask")
    x = _x(xp, call.arg("x"))
    channels = np.shape(x)[-1]
    qkv = _linear(call, xp, module.qkv, x)
    heads = module.num_heads
    order = getattr(module, "qkv_order", "qkv")
    parts = {name: qkv[..., i * channels:(i + 1) * channels] for i, name in enumerate(order)}
    q, k, v = (split_heads(parts[name], heads) for name in "qkv")
    out = merge_heads(_scaled_attention(xp, q, k, v, knobs["scale"], None, knobs.get("_prescale", True)))
    return [_projected(call, xp, module.proj, out)]


def _eval_timm_mlp(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    module = call.module
    hidden = C.activation.generic(xp, _linear(call, xp, module.fc1, _x(xp, call.arg("x"))), knobs["activation"])
    return [_linear(call, xp, module.fc2, hidden)]


# --- original (non-diffusers) code recognised by structure: PixArt-alpha's and Flux's own modules ----------------


def _children_named(module: nn.Module) -> dict[str, nn.Module]:
    """A module's direct children by attribute name, without the ones that compute nothing (Dropout, Identity)."""
    return {name: child for name, child in module.named_children() if type(child).__name__ not in ("Dropout", "Identity")}


def _has_structure(module: nn.Module, children: Mapping[str, type[nn.Module] | tuple[type[nn.Module], ...]],
                   table_rows: int | None = None) -> bool:
    """Exactly these children (by name and torch class; Dropout / Identity aside) and, if ``table_rows``, exactly one
    direct parameter ``scale_shift_table`` of shape [table_rows, D]: strict, so another class is not taken for it."""
    present = _children_named(module)
    if set(present) != set(children) or not all(isinstance(present[n], cls) for n, cls in children.items()):
        return False
    params = _direct_parameters(module)
    if table_rows is None:
        return not params
    return set(params) == {"scale_shift_table"} and len(params["scale_shift_table"]) == 2 and \
        params["scale_shift_table"][0] == table_rows


def _eval_linear_act_linear(first: str, act: str, second: str) -> Evaluate:
    """second(act(first(x))) compared at second's recorded input (the wiring; both linears are checked on their own)."""
    def evaluate(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
        module = call.module
        hidden = C.activation.generic(xp, _linear(call, xp, getattr(module, first), _x(xp, _first_input(call))),
                                      knobs["activation"])
        return [_projected(call, xp, getattr(module, second), hidden)]
    return evaluate


def _is_mlp_embedder(module: nn.Module) -> bool:
    """Flux's MLPEmbedder: in_layer (Linear), silu (SiLU), out_layer (Linear), nothing else."""
    return _has_structure(module, {"in_layer": nn.Linear, "silu": nn.SiLU, "out_layer": nn.Linear})


def _is_t2i_final_layer(module: nn.Module) -> bool:
    """PixArt-alpha's T2IFinalLayer: norm_final (LayerNorm), linear (Linear), scale_shift_table [2, D]."""
    return _has_structure(module, {"norm_final": nn.LayerNorm, "linear": nn.Linear}, table_rows=2)


def _is_pixart_block(module: nn.Module) -> bool:
    """PixArt-alpha's PixArtBlock: norm1, attn, cross_attn, norm2, mlp and a scale_shift_table [6, D] (adaLN-single)."""
    present = _children_named(module)
    return set(present) == {"norm1", "attn", "cross_attn", "norm2", "mlp"} and \
        all(isinstance(present[n], nn.LayerNorm) for n in ("norm1", "norm2")) and \
        {n: s for n, s in _direct_parameters(module).items()} .keys() == {"scale_shift_table"} and \
        tuple(module.scale_shift_table.shape[:1]) == (6,) and _has_pixart_block_signature(module)


def _has_pixart_block_signature(module: nn.Module) -> bool:
    """forward(x, y, t, mask) (the caption also as ``cond``; **kwargs aside): Open-Sora's STDiT3Block has the children
    and table but also x_mask, t0, T, S (its temporal attention runs over (B S) T tokens): not a PixArtBlock."""
    parameters = inspect.signature(module.forward).parameters
    named = [n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return len(named) == 4 and named[0] == "x" and named[1] in ("y", "cond") and named[2:] == ["t", "mask"]


def _is_cross_attention(module: nn.Module) -> bool:
    """PixArt-alpha's MultiHeadCrossAttention: q_linear [D, D], kv_linear [2D, D], proj, num_heads."""
    if not _has_structure(module, {"q_linear": nn.Linear, "kv_linear": nn.Linear, "proj": nn.Linear}):
        return False
    width = module.q_linear.out_features
    return isinstance(getattr(module, "num_heads", None), int) and module.kv_linear.out_features == 2 * width and \
        width % module.num_heads == 0


def _modulated(xp: Precision, normed: Any, shift: Any, scale: Any) -> Any:
    """modulate / t2i_modulate, normed (1 + scale) + shift, given chunks [B, 1, D] (the reference takes [B, D])."""
    return modulate.generic(xp, normed, shift[:, 0], scale[:, 0])


def _eval_t2i_final_layer(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """PixArt's T2IFinalLayer: (shift, scale) = (table[None] + t[:, None]) chunked along axis 1; the linear's input is
    norm_final(x)(1 + scale) + shift (its norm and linear checked on their own)."""
    module = call.module
    table, t = _p(call, xp, "scale_shift_table"), _x(xp, call.arg("t", "c", "emb"))
    if t is None or np.ndim(t) != 2:
        raise Unsupported("a conditioning that is not [B, D]")
    combined = table[None] + t[:, None]
    chunks = {name: combined[:, i:i + 1] for i, name in enumerate(knobs["order"])}
    normed = _x(xp, call.child_outputs(module.norm_final)[0])
    return [_projected(call, xp, module.linear, _modulated(xp, normed, chunks["shift"], chunks["scale"]))]


def _pixart_block_children(call: RecordedCall) -> dict[str, RecordedCall]:
    return _needed_children(call, ["norm1", "attn", "cross_attn", "norm2", "mlp"])


def _eval_pixart_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """PixArt-alpha's PixArtBlock given its children's outputs: the chunks of scale_shift_table[None] + t.reshape(B, 6,
    D); attn's input norm1(x)(1 + scale_msa) + shift_msa, cross_attn's input x + gate_msa attn, norm2's input that plus
    cross_attn, mlp's input norm2(.)(1 + scale_mlp) + shift_mlp, the output that plus gate_mlp mlp (Wan's glue)."""
    out = _children_out(call, _pixart_block_children(call), xp)
    x = _x(xp, call.arg("x", "hidden_states"))
    t = _x(xp, call.arg("t", "timestep"))
    if t is None or np.ndim(t) != 2:
        raise Unsupported("a conditioning that is not [B, 6 D]")
    if np.shape(out("attn")) != np.shape(x):
        raise NotRecognised(f"a PixArtBlock's attn returns its input's tokens, but this one returns "
                            f"{np.shape(out('attn'))} for x {np.shape(x)} (tokens rearranged: some other block)")
    chunks = _table_chunks(xp, _p(call, xp, "scale_shift_table"), t, _chunk_order(knobs))
    return _modulated_self_cross_mlp(x, chunks, out("norm1"), out("attn"), out("cross_attn"), out("norm2"), out("mlp"))


def _observed_pixart_block(call: RecordedCall) -> list[np.ndarray]:
    children = _pixart_block_children(call)
    return [_first_array(children[name].kept_inputs) for name in ("attn", "cross_attn", "norm2", "mlp")] + \
        [call.outputs[0]]


def _eval_cross_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """PixArt-alpha's MultiHeadCrossAttention: q = q_linear(x), (k, v) = kv_linear(cond) split in halves, every batch
    flattened into one sequence (x [B, N, D] as 1 x B N tokens, cond [1, sum L, D]) with xformers' block-diagonal mask
    from the caption lengths ``mask`` (each image's queries see its own caption's keys; no mask: every key), SDPA with
    1/sqrt(head_dim); compared at proj's input. Without caption lengths the module states nothing about the batch:
    knob ``uncaptioned`` "every key" (PixArt-alpha's xformers path) or, an identity, "own caption" (each image sees
    its own equal share of the caption tokens: Open-Sora's [Nc] * B, Sana's per-batch path without xformers). A 2-D
    0/1 mask [B, L] (Sana's path without xformers: additive (1 - mask) -10000, per sample) keeps the caption tokens
    where it is 1, each image its own caption's."""
    module = call.module
    x, cond = _x(xp, call.arg("x")), _x(xp, call.arg("cond", "context", "y"))
    lengths, keep = call.arg("mask"), None
    if x is None or cond is None or np.ndim(x) != 3:
        raise Unsupported("inputs other than x [B, N, D] and cond")
    if isinstance(lengths, np.ndarray) and np.ndim(lengths) == 2 and np.isin(lengths, (0, 1)).all():
        keep = np.reshape(lengths != 0, -1)  # per sample: caption tokens of every image in turn
        lengths = [int(np.shape(lengths)[1])] * int(np.shape(lengths)[0])
    if lengths is not None and not (isinstance(lengths, (list, tuple)) and all(isinstance(n, int) for n in lengths)):
        raise Unsupported("a mask other than a list of caption lengths (xformers' BlockDiagonalMask.from_seqlens) or "
                          "a 0/1 mask [B, L]")
    b, tokens, width = np.shape(x)
    heads = module.num_heads
    q = np.reshape(_linear(call, xp, module.q_linear, x), (1, b * tokens, width))
    kv = np.reshape(_linear(call, xp, module.kv_linear, cond), (1, -1, 2 * width))
    parts = {name: kv[..., i * width:(i + 1) * width] for i, name in enumerate(knobs["kv_order"])}
    keys = np.shape(kv)[1]
    if lengths is None and knobs.get("uncaptioned") == "own caption":
        if keys % b:
            raise Unsupported(f"{keys} caption tokens do not split evenly over {b} images")
        lengths = [keys // b] * b
    mask = None
    if lengths is not None:
        if len(lengths) != b or sum(lengths) != keys:
            raise Unsupported(f"caption lengths {list(lengths)} for {b} images and {keys} caption tokens")
        ends = np.cumsum(lengths)
        owner = np.searchsorted(ends, np.arange(keys), side="right")  # the image each caption token belongs to
        mask = (np.repeat(np.arange(b), tokens)[:, None] == owner[None, :])[None, None]
        if keep is not None:
            mask = mask & keep[None, None, None, :]
    out = merge_heads(_scaled_attention(xp, split_heads(q, heads), split_heads(parts["k"], heads), split_heads(parts["v"], heads),
                                        knobs["scale"], mask, knobs.get("_prescale", True)))
    return [_projected(call, xp, module.proj, np.reshape(out, (b, tokens, width)))]


def _cross_attention_identities(call: RecordedCall) -> list[dict[str, Any]]:
    """Without caption lengths, "own caption" is the other legitimate reading (see _eval_cross_attention)."""
    if call.arg("mask") is not None:
        return []
    return [{"scale": "1/sqrt(head_dim)", "kv_order": ("k", "v"), "uncaptioned": "own caption"}]


def _cross_attention_remark(call: RecordedCall, knobs: Mapping[str, Any], conforms: Callable[[Mapping[str, Any]], bool],
                            inside_fmt: str) -> str:
    if knobs.get("uncaptioned") != "own caption":
        return ""
    return "no caption lengths given: each image attends to its own equal share of the caption tokens (as Open-Sora's " \
        "and Sana's code without xformers do; PixArt-alpha's xformers path attends to every token)"


def _is_gated_mlp(module: nn.Module) -> bool:
    """A LLaMA-style gated MLP (DiT-MoE's MoeMLP, HunYuan's, Lumina's with these names): exactly gate_proj, up_proj,
    down_proj (Linear, gate and up of one width) and act_fn (SiLU or GELU)."""
    if not _has_structure(module, {"gate_proj": nn.Linear, "up_proj": nn.Linear, "down_proj": nn.Linear,
                                   "act_fn": (nn.SiLU, nn.GELU)}):
        return False
    return module.gate_proj.weight.shape == module.up_proj.weight.shape and \
        module.down_proj.in_features == module.up_proj.out_features


def _is_swiglu_feed_forward(module: nn.Module) -> bool:
    """LLaMA's FeedForward as DDT and Lumina-Next write it, w2(silu(w1(x)) w3(x)): exactly the Linear children w1,
    w3 (one shape [H, D]) and w2 [D, H], no parameter of its own, forward(x)."""
    if not _has_structure(module, {"w1": nn.Linear, "w2": nn.Linear, "w3": nn.Linear}) or \
            _forward_parameters(module) != ["x"]:
        return False
    return module.w1.weight.shape == module.w3.weight.shape and \
        tuple(module.w2.weight.shape) == tuple(reversed(module.w1.weight.shape))


#: the gate activations of a w1 / w2 / w3 feed-forward that has no act child (SwiGLU's silu first, then GEGLU's)
_UNSTATED_GATE_ACTIVATIONS = ("silu", "gelu", "gelu-tanh")


def _eval_gated(gate_name: str, up_name: str, down_name: str) -> Evaluate:
    """down(act(gate(x)) up(x)), compared at down's input when it ran as a child; DiT-MoE's pretraining_tp > 1
    computes the three projections with F.linear on weight slices instead (no child call): the whole MLP is then
    recomputed from the weights (its slice sums one more summation order within tolerance)."""
    def evaluate(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
        module = call.module
        x = _x(xp, _first_input(call))
        projected = {name: _linear(call, xp, getattr(module, name), x) for name in (gate_name, up_name)}
        gate, up = (projected[name] for name in knobs["gate_order"])
        return [_projected(call, xp, getattr(module, down_name),
                           C.activation.generic(xp, gate, knobs["activation"]) * up)]
    return evaluate


def _is_adaln_projection(module: nn.Module | None, chunks: int) -> bool:
    """The original DiT's adaLN_modulation: Sequential(SiLU, Linear(D, chunks D))."""
    return isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.SiLU) and \
        isinstance(module[1], nn.Linear) and module[1].out_features == chunks * module[1].in_features


def _is_dit_final_layer(module: nn.Module) -> bool:
    """The original DiT's FinalLayer (Latte's, DiT-MoE's, SiT's, Flux's LastLayer): exactly norm_final (LayerNorm),
    linear (Linear) and adaLN_modulation = Sequential(SiLU, Linear(D, 2 D))."""
    return _has_structure(module, {"norm_final": nn.LayerNorm, "linear": nn.Linear, "adaLN_modulation": nn.Sequential}) \
        and _is_adaln_projection(module.adaLN_modulation, 2)


def _dit_block_mlp(module: nn.Module) -> str:
    """The name of the original DiT block's MLP child: mlp, or moe (DiT-MoE's SparseMoeBlock)."""
    return "moe" if hasattr(module, "moe") else "mlp"


def _is_dit_block(module: nn.Module) -> bool:
    """The original DiT's DiTBlock (Latte's TransformerBlock, DiT-MoE's DiTBlock): exactly norm1, attn, norm2 (norms),
    mlp or moe, and adaLN_modulation = Sequential(SiLU, Linear(D, 6 D))."""
    present = _children_named(module)
    names = {"norm1", "attn", "norm2", _dit_block_mlp(module), "adaLN_modulation"}
    return set(present) == names and not _direct_parameters(module) and \
        _is_adaln_projection(module.adaLN_modulation, 6)


def _dit_chunks(call: RecordedCall, xp: Precision, order: Sequence[str]) -> dict[str, Any]:
    """adaLN_modulation's recorded output [B, k D] cut into k chunks named by ``order``, each [B, 1, D]."""
    projected = _x(xp, call.child_outputs(call.module.adaLN_modulation)[0])
    if np.ndim(projected) != 2:
        raise Unsupported(f"per-token conditioning (adaLN_modulation returns {np.shape(projected)}; the original DiT's "
                          "conditioning is one vector per sample, [B, k D])")
    width = np.shape(projected)[-1] // len(order)
    return {name: projected[:, None, i * width:(i + 1) * width] for i, name in enumerate(order)}


def _eval_dit_final_layer(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """The original DiT's FinalLayer: (shift, scale) = adaLN_modulation(c).chunk(2); linear's input is
    norm_final(x)(1 + scale) + shift (modulate)."""
    chunks = _dit_chunks(call, xp, knobs["order"])
    normed = _x(xp, call.child_outputs(call.module.norm_final)[0])
    return [_projected(call, xp, call.module.linear, _modulated(xp, normed, chunks["shift"], chunks["scale"]))]


def _dit_block_children(call: RecordedCall) -> dict[str, RecordedCall]:
    return _needed_children(call, ["norm1", "attn", "norm2", _dit_block_mlp(call.module)])


def _eval_dit_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """The original DiT's block given its children's outputs: attn's input modulate(norm1(x), shift_msa, scale_msa),
    norm2's input x + gate_msa attn, the MLP's input modulate(norm2(.), shift_mlp, scale_mlp), the output that plus
    gate_mlp mlp; the six chunks of adaLN_modulation(c) in ``order``."""
    children = _dit_block_children(call)
    out = lambda name: _x(xp, children[name].kept_outputs[0])  # noqa: E731
    chunks = _dit_chunks(call, xp, _chunk_order(knobs))
    x = _x(xp, call.arg("x", "hidden_states"))
    hidden = x + chunks["gate_msa"] * out("attn")
    return [_modulated(xp, out("norm1"), chunks["shift_msa"], chunks["scale_msa"]), hidden,
            _modulated(xp, out("norm2"), chunks["shift_mlp"], chunks["scale_mlp"]),
            hidden + chunks["gate_mlp"] * out(_dit_block_mlp(call.module))]


def _observed_dit_block(call: RecordedCall) -> list[np.ndarray]:
    children = _dit_block_children(call)
    return [_first_array(children[name].kept_inputs) for name in ("attn", "norm2", _dit_block_mlp(call.module))] + \
        [call.outputs[0]]


def _is_uvit_block(module: nn.Module) -> bool:
    """U-ViT's Block: exactly norm1, attn, norm2, mlp (norms LayerNorm) and a skip_linear attribute (None, or
    Linear(2 D, D) on [x, skip] for the long skip connections), use_checkpoint, forward(x, skip=None). The
    skip_linear / use_checkpoint attributes keep other pre-norm blocks (or post-norm ones of the same names) out."""
    present = _children_named(module)
    skip = getattr(module, "skip_linear", False)
    names = {"norm1", "attn", "norm2", "mlp"} | ({"skip_linear"} if skip is not None else set())
    return skip is not False and hasattr(module, "use_checkpoint") and set(present) == names and \
        not _direct_parameters(module) and all(isinstance(present[n], nn.LayerNorm) for n in ("norm1", "norm2")) and \
        (skip is None or (isinstance(skip, nn.Linear) and skip.in_features == 2 * skip.out_features)) and \
        _forward_parameters(module)[:2] == ["x", "skip"]


def _uvit_block_children(call: RecordedCall) -> dict[str, RecordedCall]:
    names = ["norm1", "attn", "norm2", "mlp"] + (["skip_linear"] if call.module.skip_linear is not None else [])
    return _needed_children(call, names)


def _eval_uvit_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """U-ViT's Block given its children's outputs: [skip_linear's input [x, skip]], norm1's input (x, or
    skip_linear's output), norm2's input that plus attn, the output that plus mlp (pre-norm residuals)."""
    children = _uvit_block_children(call)
    out = lambda name: _x(xp, children[name].kept_outputs[0])  # noqa: E731
    x = _x(xp, call.arg("x"))
    expected = []
    if "skip_linear" in children:
        skip = _x(xp, call.arg("skip"))
        if skip is None:
            raise Unsupported("a skip_linear block called without its skip")
        parts = {"x": x, "skip": skip}
        expected.append(np.concatenate([parts[name] for name in knobs["skip_order"]], axis=-1))
        x = out("skip_linear")
    hidden = x + out("attn")
    return expected + [x, hidden, hidden + out("mlp")]


def _observed_uvit_block(call: RecordedCall) -> list[np.ndarray]:
    children = _uvit_block_children(call)
    names = (["skip_linear"] if "skip_linear" in children else []) + ["norm1", "norm2"]
    return [_first_array(children[name].kept_inputs) for name in names] + [call.outputs[0]]


def _forward_parameters(module: nn.Module) -> list[str]:
    return list(inspect.signature(module.forward).parameters)


def _only_tensor_attributes(module: nn.Module, names: set[str]) -> bool:
    """Whether the module's direct parameters and buffers are exactly ``names``."""
    return set(_direct_parameters(module)) | {name for name, _ in module.named_buffers(recurse=False)} == names


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_dit_label_embedder(module: nn.Module) -> bool:
    """The original DiT's LabelEmbedder (SiT's, DiT-MoE's, Latte's copies): exactly embedding_table, an Embedding of
    num_classes + 1 rows when dropout_prob > 0 (the last row is the null class of classifier-free guidance), else
    num_classes rows; no parameter of its own; the attributes num_classes (int) and dropout_prob;
    forward(labels, train, force_drop_ids)."""
    if not _has_structure(module, {"embedding_table": nn.Embedding}) or not _only_tensor_attributes(module, set()):
        return False
    classes, probability = getattr(module, "num_classes", None), getattr(module, "dropout_prob", None)
    return isinstance(classes, int) and not isinstance(classes, bool) and _is_number(probability) and \
        module.embedding_table.num_embeddings == classes + (probability > 0) and \
        _forward_parameters(module) == ["labels", "train", "force_drop_ids"]


def _is_caption_embedder(module: nn.Module) -> bool:
    """PixArt-alpha's CaptionEmbedder (PixArt-Sigma's, Sana's): exactly y_proj, an Mlp (fc1 Linear(C, D), act, fc2
    Linear(D, D)), and the null caption y_embedding [tokens, C] (a buffer in the original), nothing else; the
    attribute uncond_prob; forward(caption, train, force_drop_ids)."""
    if set(_children_named(module)) != {"y_proj"} or not _only_tensor_attributes(module, {"y_embedding"}):
        return False
    projection, null = module.y_proj, module.y_embedding
    if not _has_structure(projection, {"fc1": nn.Linear, "act": nn.Module, "fc2": nn.Linear}) or \
            _direct_parameters(projection):
        return False
    width = projection.fc1.out_features
    return null.dim() == 2 and null.shape[1] == projection.fc1.in_features and \
        (projection.fc2.in_features, projection.fc2.out_features) == (width, width) and \
        _is_number(getattr(module, "uncond_prob", None)) and \
        _forward_parameters(module) == ["caption", "train", "force_drop_ids"]


def _forced_drops(call: RecordedCall, probability: float, knobs: Mapping[str, Any]) -> np.ndarray | None:
    """The batch rows a classifier-free-guidance embedder replaces by its null entry: where force_drop_ids equals the
    ``drop_flag`` knob (1 in the originals); None when no drop is forced. Called with train true and a dropout
    probability, the rows are drawn by torch.rand: Unsupported (the model's own forward passes self.training, false
    in the engine's eval-mode run)."""
    force = call.arg("force_drop_ids")
    if force is None:
        if bool(np.any(call.inputs.get("train", False))) and probability > 0:
            raise Unsupported("called with train=True and a dropout probability: the dropped rows are drawn at random")
        return None
    return np.reshape(np.asarray(force), (-1,)) == knobs["drop_flag"]


def _eval_dit_label_embedder(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """The original DiT's LabelEmbedder: embedding_table[labels], a dropped row's label replaced by the null class
    num_classes (+ the ``null_offset`` knob); in eval without force_drop_ids, the table lookup itself."""
    module = call.module
    labels = np.asarray(call.arg("labels"), dtype=np.int64)
    dropped = _forced_drops(call, float(module.dropout_prob), knobs)
    if dropped is not None:
        labels = np.where(dropped, module.num_classes + knobs["null_offset"], labels)
    return [_p(call, xp, "weight", module.embedding_table)[labels]]


def _eval_caption_embedder(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """PixArt-alpha's CaptionEmbedder given y_proj's output: y_proj's input is the caption [B, 1, T, C] with each
    dropped row replaced by the null caption y_embedding [T, C]; the output is y_proj's output (nothing after it)."""
    module = call.module
    caption = _x(xp, call.arg("caption"))
    dropped = _forced_drops(call, float(module.uncond_prob), knobs)
    if dropped is not None:
        null = _p(call, xp, "y_embedding")
        if np.shape(caption)[-2:] != np.shape(null) or len(dropped) != np.shape(caption)[0]:
            raise Unsupported(f"a caption {np.shape(caption)} that the null caption {np.shape(null)} and "
                              f"{len(dropped)} drop flags do not fit")
        rows = np.reshape(dropped, (-1,) + (1,) * (np.ndim(caption) - 1))
        caption = np.where(rows, null, caption)
    projection = _needed_children(call, ["y_proj"])["y_proj"]
    return [caption, _x(xp, projection.kept_outputs[0])]


def _observed_caption_embedder(call: RecordedCall) -> list[np.ndarray]:
    return [_first_array(_needed_children(call, ["y_proj"])["y_proj"].kept_inputs), call.outputs[0]]


_FLUX_FIELDS = ("shift", "scale", "gate")


def _is_flux_modulation(module: nn.Module) -> bool:
    """Flux's Modulation: exactly lin (Linear(D, multiplier D)), an int multiplier (3 or 6) and a bool is_double."""
    multiplier = getattr(module, "multiplier", None)
    return _has_structure(module, {"lin": nn.Linear}) and multiplier in (3, 6) and \
        isinstance(getattr(module, "is_double", None), bool) and module.lin.out_features == multiplier * module.lin.in_features


def _is_flux_qk_norm(module: nn.Module) -> bool:
    """Flux's QKNorm: exactly query_norm and key_norm (its own RMSNorms), forward(q, k, v)."""
    present = _children_named(module)
    return set(present) == {"query_norm", "key_norm"} and not _direct_parameters(module) and \
        _forward_parameters(module)[:3] == ["q", "k", "v"]


def _is_flux_embed_nd(module: nn.Module) -> bool:
    """Flux's EmbedND: no children or parameters, theta and axes_dim (ints), forward(ids)."""
    axes = getattr(module, "axes_dim", None)
    return not any(True for _ in module.children()) and not _direct_parameters(module) and \
        isinstance(getattr(module, "theta", None), (int, float)) and isinstance(axes, (list, tuple)) and \
        all(isinstance(a, int) and a % 2 == 0 for a in axes) and _forward_parameters(module) == ["ids"]


def _is_flux_attention_parts(module: nn.Module | None) -> bool:
    return module is not None and set(_children_named(module)) == {"qkv", "norm", "proj"} and \
        isinstance(module.qkv, nn.Linear) and isinstance(module.proj, nn.Linear) and _is_flux_qk_norm(module.norm)


_FLUX_DOUBLE = ("img_mod", "img_norm1", "img_attn", "img_norm2", "img_mlp",
                "txt_mod", "txt_norm1", "txt_attn", "txt_norm2", "txt_mlp")


def _is_flux_double_block(module: nn.Module) -> bool:
    """Flux's DoubleStreamBlock: exactly the image and text streams' mod, norm1, attn (qkv, norm, proj), norm2, mlp."""
    return set(_children_named(module)) == set(_FLUX_DOUBLE) and isinstance(getattr(module, "num_heads", None), int) \
        and all(_is_flux_modulation(getattr(module, f"{s}_mod")) and _is_flux_attention_parts(getattr(module, f"{s}_attn"))
                for s in ("img", "txt"))


def _is_flux_single_block(module: nn.Module) -> bool:
    """Flux's SingleStreamBlock: exactly linear1 (qkv and MLP in), linear2, norm (QKNorm), pre_norm, mlp_act, modulation."""
    return set(_children_named(module)) == {"linear1", "linear2", "norm", "pre_norm", "mlp_act", "modulation"} and \
        all(isinstance(getattr(module, a, None), int) for a in ("num_heads", "hidden_size", "mlp_hidden_dim")) and \
        _is_flux_modulation(module.modulation) and _is_flux_qk_norm(module.norm)


def _modulation_fields(values: Sequence[Any], order: Sequence[str]) -> list[dict[str, Any]]:
    """Flux's ModulationOut groups from the flat recorded tensors, each group's three read in ``order``."""
    return [dict(zip(order, values[i:i + 3])) for i in range(0, len(values), 3)]


def _eval_flux_modulation(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Flux's Modulation: lin(silu(vec))[:, None, :] chunked into ModulationOut(shift, scale, gate) x 1 or 2 (the
    chunks named in ``order``); compared at lin's input (silu(vec)) when lin ran as a child, and at the outputs."""
    module = call.module
    activated = silu.generic(xp, _x(xp, call.arg("vec", "x")))
    projected = _linear(call, xp, module.lin, activated)[:, None, :]
    width = np.shape(projected)[-1] // module.multiplier
    named = {name: projected[..., i * width:(i + 1) * width] for i, name in enumerate(knobs["order"])}
    groups = [f"_{g}" for g in range(module.multiplier // 3)]
    outputs = [named[f"{field}{group}"] for group in groups for field in _FLUX_FIELDS]
    return ([activated] if call.child(module.lin) is not None else []) + outputs


def _observed_flux_modulation(call: RecordedCall) -> list[np.ndarray]:
    child = call.child(call.module.lin)
    return ([_first_array(child.kept_inputs)] if child is not None else []) + list(call.outputs)


def _flux_modulation_order(call: RecordedCall) -> tuple[str, ...]:
    return tuple(f"{field}_{g}" for g in range(call.module.multiplier // 3) for field in _FLUX_FIELDS)


def _eval_flux_qk_norm(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Flux's QKNorm: (query_norm(q), key_norm(k)) in v's dtype; compared at the norms' inputs (q to query_norm, k to
    key_norm) and the outputs (the norms' outputs; each norm is checked on its own)."""
    children = _needed_children(call, ["query_norm", "key_norm"])
    q, k = _x(xp, call.arg("q")), _x(xp, call.arg("k"))
    return [q, k] + [_x(xp, children[name].kept_outputs[0]) for name in ("query_norm", "key_norm")]


def _observed_flux_qk_norm(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, ["query_norm", "key_norm"])
    return [_first_array(children[name].kept_inputs) for name in ("query_norm", "key_norm")] + list(call.outputs)


def _eval_flux_embed_nd(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Flux's EmbedND: per axis i of ids [B, L, n], angles ids[..., i] theta^(-2j/d_i) as 2 x 2 rotation matrices
    [[cos, -sin], [sin, cos]], concatenated over the axes: [B, 1, L, D/2, 2, 2] (returned in float32 by design)."""
    module = call.module
    ids = _x(xp, call.arg("ids"))
    if ids is None or np.shape(ids)[-1] != len(module.axes_dim):
        raise Unsupported(f"ids of shape {np.shape(ids)} for {len(module.axes_dim)} axes")
    theta = xp.const(float(knobs["theta"]))
    blocks = []
    for axis, dim in enumerate(module.axes_dim):
        exponent = xp.asarray(np.arange(0, dim, 2, dtype=np.float64)) / xp.const(dim)
        omega = xp.const(1) / xp.exp(exponent * xp.log(theta))
        angles = ids[..., axis][..., None] * omega
        cos, sin = xp.cos(angles), xp.sin(angles)
        blocks.append(np.stack([np.stack([cos, -sin], axis=-1), np.stack([sin, cos], axis=-1)], axis=-2))
    return [np.concatenate(blocks, axis=-3)[:, None]]


def _flux_rope(xp: Precision, x: Any, pe: Any, pairing: str) -> Any:
    """Flux's apply_rope: each channel pair (x0, x1) times pe's 2 x 2 matrix, out_j = pe[j, 0] x0 + pe[j, 1] x1;
    pairs (2i, 2i+1) (interleaved, Flux's) or (i, i + D/2) (half)."""
    width = np.shape(x)[-1]
    if np.shape(pe)[-3:] != (width // 2, 2, 2):
        raise Unsupported(f"a RoPE table of shape {np.shape(pe)} for head dim {width}")
    if pairing == "half":
        first, second = x[..., :width // 2], x[..., width // 2:]
    else:
        pairs = np.reshape(x, np.shape(x)[:-1] + (width // 2, 2))
        first, second = pairs[..., 0], pairs[..., 1]
    out = [pe[..., j, 0] * first + pe[..., j, 1] * second for j in (0, 1)]
    if pairing == "half":
        return np.concatenate(out, axis=-1)
    return np.reshape(np.stack(out, axis=-1), np.shape(x))


def _flux_heads(qkv: Any, heads: int) -> list[Any]:
    """rearrange(qkv, "B L (K H D) -> K B H L D", K=3): q, k, v [B, H, L, Dh]."""
    return [split_heads(part, heads) for part in np.split(qkv, 3, axis=-1)]


def _flux_attention(xp: Precision, q: Any, k: Any, v: Any, pe: Any, knobs: Mapping[str, Any]) -> Any:
    """Flux's attention: RoPE on q and k, SDPA, heads merged back [B, L, H Dh]."""
    if pe is not None:
        table = _x(xp, pe)
        q, k = _flux_rope(xp, q, table, knobs["rope_pairing"]), _flux_rope(xp, k, table, knobs["rope_pairing"])
    return merge_heads(_scaled_attention(xp, q, k, v, knobs["scale"], None, knobs.get("_prescale", True)))


def _flux_double_children(call: RecordedCall) -> dict[str, RecordedCall]:
    module = call.module
    children = {}
    for stream in ("img", "txt"):
        attention_parts = getattr(module, f"{stream}_attn")
        for name in ("mod", "norm1", "norm2", "mlp"):
            children[f"{stream}_{name}"] = getattr(module, f"{stream}_{name}")
        for part in ("qkv", "norm", "proj"):
            children[f"{stream}_attn.{part}"] = getattr(attention_parts, part)
    recorded = {}
    for name, child in children.items():
        recorded[name] = call.child(child)
        if recorded[name] is None:
            raise Unsupported(f"its {name} did not run as a hooked child (a SelfAttention called whole?)")
    return recorded


def _eval_flux_double_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Flux's DoubleStreamBlock given its children's outputs. Per stream: qkv's input (1 + scale1) norm1(x) + shift1,
    QKNorm's inputs (q, k) split from qkv as "B L (K H D)"; then joint attention over [text, image] tokens with RoPE
    on q and k, split back to each proj's input; norm2's input x + gate1 proj, the MLP's input (1 + scale2) norm2 +
    shift2, the output that plus gate2 mlp. ``order``: how the ModulationOut fields are read (shift, scale, gate)."""
    module = call.module
    children = _flux_double_children(call)
    out = lambda name, i=0: _x(xp, children[name].kept_outputs[i])  # noqa: E731
    heads = module.num_heads
    streams = {"img": _x(xp, call.arg("img")), "txt": _x(xp, call.arg("txt"))}
    expected: dict[str, list[Any]] = {}
    parts: dict[str, list[Any]] = {}
    mods: dict[str, list[dict[str, Any]]] = {}
    for stream in ("img", "txt"):
        mods[stream] = _modulation_fields([out(f"{stream}_mod", i) for i in range(6)], knobs["order"])
        first = mods[stream][0]
        q, k, v = _flux_heads(out(f"{stream}_attn.qkv"), heads)
        parts[stream] = [out(f"{stream}_attn.norm", 0), out(f"{stream}_attn.norm", 1), v]
        expected[stream] = [(1 + first["scale"]) * out(f"{stream}_norm1") + first["shift"], q, k]
    first_stream, second_stream = ("txt", "img") if knobs["token_order"] == "text-first" else ("img", "txt")
    joint = [np.concatenate([parts[first_stream][i], parts[second_stream][i]], axis=2) for i in range(3)]
    attended = _flux_attention(xp, *joint, call.arg("pe"), knobs)
    split = np.shape(parts[first_stream][0])[2]
    by_stream = {first_stream: attended[:, :split], second_stream: attended[:, split:]}
    results = []
    for stream in ("img", "txt"):
        first, second = mods[stream]
        hidden = streams[stream] + first["gate"] * out(f"{stream}_attn.proj")
        expected[stream] += [by_stream[stream], hidden, (1 + second["scale"]) * out(f"{stream}_norm2") + second["shift"]]
        results.append(hidden + second["gate"] * out(f"{stream}_mlp"))
    return expected["img"] + expected["txt"] + results


def _observed_flux_double_block(call: RecordedCall) -> list[np.ndarray]:
    children = _flux_double_children(call)
    observed = []
    for stream in ("img", "txt"):
        norm_inputs = [v for v in children[f"{stream}_attn.norm"].kept_inputs.values() if isinstance(v, np.ndarray)]
        observed += [_first_array(children[f"{stream}_attn.qkv"].kept_inputs), norm_inputs[0], norm_inputs[1]]
        observed += [_first_array(children[f"{stream}_{name}"].kept_inputs) for name in ("attn.proj", "norm2", "mlp")]
    return observed + list(call.outputs[:2])


_FLUX_SINGLE = ["modulation", "pre_norm", "linear1", "norm", "mlp_act", "linear2"]


def _eval_flux_single_block_original(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Flux's SingleStreamBlock given its children's outputs: linear1's input (1 + scale) pre_norm(x) + shift; QKNorm's
    (q, k) and mlp_act's input split from linear1's output; linear2's input [attention with RoPE, mlp_act]; the output
    x + gate linear2."""
    module = call.module
    children = _needed_children(call, _FLUX_SINGLE)
    out = lambda name, i=0: _x(xp, children[name].kept_outputs[i])  # noqa: E731
    [mod] = _modulation_fields([out("modulation", i) for i in range(3)], knobs["order"])
    projected = out("linear1")
    q, k, v = _flux_heads(projected[..., :3 * module.hidden_size], module.num_heads)
    attended = _flux_attention(xp, out("norm", 0), out("norm", 1), v, call.arg("pe"), knobs)
    return [(1 + mod["scale"]) * out("pre_norm") + mod["shift"], q, k, projected[..., 3 * module.hidden_size:],
            np.concatenate([attended, out("mlp_act")], axis=-1), _x(xp, call.arg("x")) + mod["gate"] * out("linear2")]


def _observed_flux_single_block_original(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, _FLUX_SINGLE)
    norm_inputs = [v for v in children["norm"].kept_inputs.values() if isinstance(v, np.ndarray)]
    return [_first_array(children["linear1"].kept_inputs), norm_inputs[0], norm_inputs[1],
            _first_array(children["mlp_act"].kept_inputs), _first_array(children["linear2"].kept_inputs),
            call.outputs[0]]


def _flux_block_knobs(call: RecordedCall) -> dict[str, Any]:
    knobs = {"order": _FLUX_FIELDS, "rope_pairing": "interleaved", "scale": "1/sqrt(head_dim)"}
    return knobs | ({"token_order": "text-first"} if _is_flux_double_block(call.module) else {})


def _flux_block_alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
    alternatives: dict[str, Sequence[Any]] = {
        "order": [o for o in itertools.permutations(_FLUX_FIELDS) if o != _FLUX_FIELDS],
        "rope_pairing": ["half"], "scale": ["1/head_dim", "1"]}
    return alternatives | ({"token_order": ["image-first"]} if _is_flux_double_block(call.module) else {})


def _t2i_final_order(call: RecordedCall) -> dict[str, Sequence[Any]]:
    return {"order": [("scale", "shift")]}


def _eval_flux_pos_embed(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    module = call.module
    cos, sin = C.rope_frequencies.generic(xp, _x(xp, call.arg("ids")), tuple(module.axes_dim), float(module.theta),
                                          knobs["pairing"])
    return [cos, sin]


def _mask_bias(mask: Any, q: Any, k: Any, knobs: Mapping[str, Any]) -> Any:
    """The recorded attention mask as SDPA's attn_mask [B, 1, Lq or 1, Lk]; None when absent or under mask='ignored'."""
    if mask is None or knobs.get("mask") == "ignored":
        return None
    mask = np.asarray(mask)
    if mask.shape[-1] != np.shape(k)[-2]:
        raise Unsupported("an attention mask not of the key length (prepare_attention_mask pads it)")
    if mask.dtype == bool:
        return mask.reshape((np.shape(q)[0], 1, -1, mask.shape[-1]))
    return knobs.get("mask_sign", 1) * mask.reshape((np.shape(q)[0], 1, -1, mask.shape[-1]))


# --- the zoo: Wan, Sana, CogVideoX, SD3.5 ----------------------------------------------------


def _tokens_norm(call: RecordedCall, xp: Precision, norm: nn.Module | None, projected: Any, heads: int,
                 knobs: Mapping[str, Any], dtype: torch.dtype | None) -> Any:
    """A QK-norm module that runs on [B, L, H*Dh] (Wan, Sana): its recorded output under the module's own placement,
    else RMSNorm recomputed per head or across heads (the weight, of width H*Dh, applied after)."""
    if norm is None or isinstance(norm, nn.Identity):
        return projected
    native = knobs["_native_qk_norm"]
    child = call.child(norm)
    if knobs["qk_norm"] == native and child is not None:
        return _x(xp, child.kept_outputs[0])
    if type(norm).__name__ != "RMSNorm":
        raise Unsupported(f"QK-norm {type(norm).__name__} recomputed under another placement")
    normed = C.qk_norm.generic(xp, projected, None, heads, _norm_eps(norm, dtype), "rms",
                               knobs["qk_norm"] == "across-heads")
    weight = _p(call, xp, "weight", norm)
    return normed if weight is None else normed * weight


def _rope_tables(rope: Any, length: int, head_dim: int, xp: Precision) -> tuple[Any, Any]:
    """(cos, sin) given by the caller as real tables of any leading singleton layout ([L, Dh], [1, L, 1, Dh]) -> [L, Dh]."""
    if not isinstance(rope, tuple) or len(rope) != 2:
        raise Unsupported("rotary embeddings given as complex numbers")
    tables = [np.asarray(t) for t in rope]
    if any(t.size != length * head_dim for t in tables):
        raise Unsupported(f"RoPE tables of shape {tables[0].shape} for {length} tokens of head dim {head_dim}")
    return tuple(_x(xp, np.reshape(t, (length, head_dim))) for t in tables)


def _allegro_rope(xp: Precision, x: Any, rope: Any, pairing: str) -> Any:
    """Allegro's 3-D RoPE (apply_rotary_emb_allegro): the head dim cut in three (t, h, w) chunks, each rotated by its
    axis' tables looked up at the tokens' positions, half-split pairs (i, i + d/2), float32 inside."""
    try:
        tables, positions = rope
        if len(tables) != 3 or len(positions) != 3:
            raise ValueError
    except (TypeError, ValueError):
        raise Unsupported("Allegro RoPE given as other than ((cos, sin) x 3, positions x 3)") from None
    chunks = np.split(x, 3, axis=-1)
    rotated = []
    for chunk, (cos, sin), position in zip(chunks, tables, positions):
        index = np.asarray(position, dtype=np.int64)
        cos_at, sin_at = (_x(xp, np.asarray(t)[index])[:, None] for t in (cos, sin))  # [B, 1, L, d]
        rotated.append(C.apply_rope.generic(xp, chunk, cos_at, sin_at, pairing))
    return np.concatenate(rotated, axis=-1)


def _across_heads_query_key(call: RecordedCall, xp: Precision,
                            knobs: Mapping[str, Any]) -> tuple[Any, Any, Any, dict[str, Any], Any]:
    """The start Wan's and LTX's attention share: q = norm_q(to_q(x)), k = norm_k(to_k(source)) with one RMSNorm
    across all heads (before the head split), source the text for cross-attention, else x. Returns (source, q, k,
    the knobs with that QK-norm placement as the native one, the output dtype)."""
    module = call.module
    hidden = _x(xp, call.arg("hidden_states"))
    context = _x(xp, call.arg("encoder_hidden_states"))
    source = hidden if context is None else context
    dtype = call.output_dtypes[0] if call.output_dtypes else None
    knobs = {**knobs, "_native_qk_norm": "across-heads"}
    query = _tokens_norm(call, xp, module.norm_q, _linear(call, xp, module.to_q, hidden), module.heads, knobs, dtype)
    key = _tokens_norm(call, xp, module.norm_k, _linear(call, xp, module.to_k, source), module.heads, knobs, dtype)
    return source, query, key, knobs, dtype


def _eval_wan_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """WanAttention + WanAttnProcessor: RMSNorm QK-norm across all heads (before the head split), RoPE on the
    self-attention's q and k (interleaved pairs, Wan's own apply_rotary_emb, in the input's dtype), SDPA."""
    module = call.module
    if getattr(module, "add_k_proj", None) is not None:
        raise Unsupported("Wan image-to-video added key/value projections")
    if getattr(module, "fused_projections", False):
        raise Unsupported("fused QKV projections")
    source, query, key, knobs, dtype = _across_heads_query_key(call, xp, knobs)
    heads = module.heads
    q, k, v = split_heads(query, heads), split_heads(key, heads), split_heads(_linear(call, xp, module.to_v, source), heads)
    rope = call.arg("rotary_emb")
    if rope is not None:
        cos, sin = _rope_tables(rope, np.shape(q)[-2], np.shape(q)[-1], xp)
        q = C.apply_rope.generic(xp, q, cos, sin, knobs["rope_pairing"])
        k = C.apply_rope.generic(xp, k, cos, sin, knobs["rope_pairing"])
    out = merge_heads(_scaled_attention(xp, q, k, v, knobs["scale"], _mask_bias(call.arg("attention_mask"), q, k, knobs),
                                        knobs.get("_prescale", True)))
    return [_projected(call, xp, module.to_out[0], out)]


def _eval_hunyuan_video_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """HunyuanVideoAttnProcessor2_0: one attention over [image, text] tokens (dual-stream blocks: the text through
    add_*_proj; single-stream: the same projections), RMSNorm QK-norm per head, RoPE (given by the caller, float32
    inside) on the image tokens only, a boolean key mask over [image, text]; split back, then to_out / to_add_out."""
    module = call.module
    hidden = _x(xp, call.arg("hidden_states"))
    context = _x(xp, call.arg("encoder_hidden_states"))
    if context is None:
        raise Unsupported("HunyuanVideo attention without text tokens")
    heads = module.heads
    dtype = call.output_dtypes[0] if call.output_dtypes else None
    across = knobs["qk_norm"] == "across-heads"
    image_tokens, text_tokens = np.shape(hidden)[1], np.shape(context)[1]
    image_first = knobs["token_order"] == "image-first"
    separate = getattr(module, "add_q_proj", None) is not None
    source = hidden if separate else np.concatenate([hidden, context] if image_first else [context, hidden], axis=1)
    image = slice(0, image_tokens) if image_first or separate else slice(text_tokens, None)
    text = slice(image_tokens, None) if image_first or separate else slice(0, text_tokens)
    q, k = (split_heads(_apply_norm(call, xp, norm, _linear(call, xp, proj, source), heads, across, dtype), heads)
            for norm, proj in ((module.norm_q, module.to_q), (module.norm_k, module.to_k)))
    v = split_heads(_linear(call, xp, module.to_v, source), heads)
    rope = call.arg("image_rotary_emb")
    if rope is not None:
        cos, sin = _rope_tables(rope, image_tokens, np.shape(q)[-1], xp)

        def rotated(x: Any) -> Any:
            turned = C.apply_rope.generic(xp, x[:, :, image], cos, sin, knobs["rope_pairing"])
            if separate:
                return turned
            return np.concatenate([turned, x[:, :, text]] if image_first else [x[:, :, text], turned], axis=2)
        q, k = rotated(q), rotated(k)
    if separate:
        extra = [split_heads(_apply_norm(call, xp, getattr(module, norm, None), _linear(call, xp, getattr(module, proj),
                                                                                   context), heads, across, dtype),
                        heads) for norm, proj in (("norm_added_q", "add_q_proj"), ("norm_added_k", "add_k_proj"))]
        extra.append(split_heads(_linear(call, xp, module.add_v_proj, context), heads))
        q, k, v = (np.concatenate([a, b] if image_first else [b, a], axis=2) for a, b in zip((q, k, v), extra))
        image = slice(0, image_tokens) if image_first else slice(text_tokens, None)
        text = slice(image_tokens, None) if image_first else slice(0, text_tokens)
    out = merge_heads(_scaled_attention(xp, q, k, v, knobs["scale"], _mask_bias(call.arg("attention_mask"), q, k, knobs),
                                        knobs.get("_prescale", True)))
    to_out = getattr(module, "to_out", None)
    return [_projected(call, xp, None if to_out is None else to_out[0], out[:, image]),
            _projected(call, xp, getattr(module, "to_add_out", None), out[:, text])]


def _eval_ltx_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """LTXAttention + LTXVideoAttnProcessor: RMSNorm QK-norm across heads, RoPE over all H*Dh channels (interleaved
    pairs, float32 inside; tables [B, L, H*Dh] from the model's LTXVideoRotaryPosEmbed), SDPA with the additive mask."""
    module = call.module
    source, query, key, knobs, dtype = _across_heads_query_key(call, xp, knobs)
    heads = module.heads
    rope = call.arg("image_rotary_emb")
    if rope is not None:
        cos, sin = (_x(xp, t) for t in rope)
        if np.shape(cos) != np.shape(query):
            raise Unsupported(f"LTX RoPE tables of shape {np.shape(cos)} for queries {np.shape(query)}")
        query = C.apply_rope.generic(xp, query, cos, sin, knobs["rope_pairing"])
        key = C.apply_rope.generic(xp, key, cos, sin, knobs["rope_pairing"])
    q, k, v = split_heads(query, heads), split_heads(key, heads), split_heads(_linear(call, xp, module.to_v, source), heads)
    out = merge_heads(_scaled_attention(xp, q, k, v, knobs["scale"], _mask_bias(call.arg("attention_mask"), q, k, knobs),
                                        knobs.get("_prescale", True)))
    return [_projected(call, xp, module.to_out[0], out)]


def _complex_rope_tables(xp: Precision, freqs: Any) -> tuple[Any, Any]:
    """Complex RoPE factors e^{i angle} [..., L, Dh/2] (Lumina2, use_real=False) as real interleaved (cos, sin) [..., L, Dh]."""
    freqs = np.asarray(freqs)
    if not np.iscomplexobj(freqs):
        raise Unsupported("complex RoPE factors expected")
    return _x(xp, np.repeat(freqs.real, 2, axis=-1)), _x(xp, np.repeat(freqs.imag, 2, axis=-1))


def _eval_lumina2_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Lumina2AttnProcessor2_0: grouped-query attention (each kv head shared by heads/kv_heads query heads, head h uses
    kv head h // n_rep), per-head RMSNorm QK-norm, complex RoPE on q and k (float32 inside), a boolean key mask,
    scale attn.scale (times sqrt(log_base L) with proportional attention's base_sequence_length)."""
    module = call.module
    hidden = _x(xp, call.arg("hidden_states"))
    context = _x(xp, call.arg("encoder_hidden_states"))
    source = hidden if context is None else context
    heads = module.heads
    dtype = call.output_dtypes[0] if call.output_dtypes else None
    across = knobs["qk_norm"] == "across-heads"
    query = _linear(call, xp, module.to_q, hidden)
    head_dim = np.shape(query)[-1] // heads
    key = _linear(call, xp, module.to_k, source)
    kv_heads = np.shape(key)[-1] // head_dim
    query = _apply_norm(call, xp, module.norm_q, query, heads, across, dtype)
    key = _apply_norm(call, xp, module.norm_k, key, kv_heads, across, dtype)
    q, k, v = split_heads(query, heads), split_heads(key, kv_heads), split_heads(_linear(call, xp, module.to_v, source), kv_heads)
    rope = call.arg("image_rotary_emb")
    if rope is not None:
        cos, sin = _complex_rope_tables(xp, rope)
        cos, sin = (t[:, None] if np.ndim(t) == 3 else t for t in (cos, sin))  # [B, L, Dh] over the heads axis
        q = C.apply_rope.generic(xp, q, cos, sin, knobs["rope_pairing"])
        k = C.apply_rope.generic(xp, k, cos, sin, knobs["rope_pairing"])
    repeats = heads // kv_heads
    k, v = np.repeat(k, repeats, axis=1), np.repeat(v, repeats, axis=1)
    scale = _scale_value(knobs["scale"], head_dim) or 1.0 / math.sqrt(head_dim)
    base = call.arg("base_sequence_length")
    if base is not None:  # proportional attention: the scale grows with the sequence length
        scale = math.sqrt(math.log(np.shape(hidden)[1], float(base))) * scale
    mask = call.arg("attention_mask")
    if mask is not None:
        mask = np.asarray(mask).astype(bool).reshape((np.shape(q)[0], 1, 1, -1))
    attn_mask = _mask_bias(mask, q, k, knobs)
    if knobs.get("_prescale", True):
        root = xp.sqrt(xp.const(scale))
        out = attention.generic(xp, q * root, k * root, v, 1.0, attn_mask, "zero")
    else:
        out = attention.generic(xp, q, k, v, scale, attn_mask, "zero")
    return [_projected(call, xp, module.to_out[0], merge_heads(out))]


def _eval_mochi_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """MochiAttnProcessor2_0: per sample, one attention over [image, the valid text tokens] (the mask drops padded
    prompt tokens as keys and queries; their outputs are zero, the valid ones compacted to the front), per-head QK
    RMSNorm, RoPE (cos, sin) [L, H, Dh/2] (per-head learned frequencies) on the image q and k, float32 inside."""
    module = call.module
    hidden, context = _x(xp, call.arg("hidden_states")), _x(xp, call.arg("encoder_hidden_states"))
    heads = module.heads
    dtype = call.output_dtypes[0] if call.output_dtypes else None
    across = knobs["qk_norm"] == "across-heads"

    def stream(source: Any, projections: Sequence[str], norms: Sequence[str]) -> list[Any]:
        q, k = (_apply_norm(call, xp, getattr(module, norm, None), _linear(call, xp, getattr(module, proj), source),
                            heads, across, dtype) for proj, norm in zip(projections[:2], norms))
        return [q, k, _linear(call, xp, getattr(module, projections[2]), source)]

    q, k, v = (np.reshape(t, np.shape(t)[:2] + (heads, -1)) for t in
               stream(hidden, ("to_q", "to_k", "to_v"), ("norm_q", "norm_k")))
    rope = call.arg("image_rotary_emb")
    if rope is not None:
        cos, sin = (_x(xp, np.repeat(np.asarray(t), 2, axis=-1)) for t in rope)  # [L, H, Dh]
        q, k = (C.apply_rope.generic(xp, t, cos, sin, knobs["rope_pairing"]) for t in (q, k))
    q, k, v = (np.swapaxes(t, 1, 2) for t in (q, k, v))
    eq, ek, ev = (split_heads(t, heads) for t in stream(context, ("add_q_proj", "add_k_proj", "add_v_proj"),
                                                   ("norm_added_q", "norm_added_k")))
    mask = np.asarray(call.arg("attention_mask")).astype(bool)
    if knobs.get("mask") == "ignored":
        mask = np.ones_like(mask)
    image_tokens, text_tokens = np.shape(hidden)[1], np.shape(context)[1]
    outputs = []
    for index in range(np.shape(hidden)[0]):
        valid = np.flatnonzero(mask[index])
        parts = [np.concatenate([a[index], b[index][:, valid]], axis=1) for a, b in ((q, eq), (k, ek), (v, ev))]
        out = _scaled_attention(xp, *(p[None] for p in parts), knobs["scale"], None, knobs.get("_prescale", True))[0]
        padding = np.zeros(np.shape(out)[:1] + (image_tokens + text_tokens - np.shape(out)[1],) + np.shape(out)[2:])
        outputs.append(np.concatenate([out, xp.asarray(padding)], axis=1))
    merged = merge_heads(np.stack(outputs))
    return [_projected(call, xp, module.to_out[0], merged[:, :image_tokens]),
            _projected(call, xp, getattr(module, "to_add_out", None), merged[:, image_tokens:])]


def _eval_sana_linear_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Sana's SanaLinearAttnProcessor2_0: relu feature maps, o_i = sum_j v_j (k_j . q_i) / (sum_j k_j . q_i + 1e-15),
    computed in float32 (reference.components.linear_attention)."""
    module = call.module
    hidden = _x(xp, call.arg("hidden_states"))
    context = _x(xp, call.arg("encoder_hidden_states"))
    source = hidden if context is None else context
    heads = module.heads
    dtype = call.output_dtypes[0] if call.output_dtypes else None
    norm_knobs = {**knobs, "_native_qk_norm": knobs["qk_norm"]}
    query = _tokens_norm(call, xp, module.norm_q, _linear(call, xp, module.to_q, hidden), heads, norm_knobs, dtype)
    key = _tokens_norm(call, xp, module.norm_k, _linear(call, xp, module.to_k, source), heads, norm_knobs, dtype)
    value = _linear(call, xp, module.to_v, source)
    out = C.linear_attention.generic(xp, split_heads(query, heads), split_heads(key, heads), split_heads(value, heads),
                                     knobs["linear_eps"], knobs["kernel"])
    return [_projected(call, xp, module.to_out[0], merge_heads(out))]


def _eval_cogvideox_attention(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """CogVideoXAttnProcessor2_0: one attention over [text, image] tokens, LayerNorm QK-norm per head, RoPE (given by
    the caller, float32 inside) on the image tokens' q (and k), one output projection, split back.

    Returns [to_out's input, the image output, the text output]."""
    module = call.module
    hidden = _x(xp, call.arg("hidden_states"))
    context = _x(xp, call.arg("encoder_hidden_states"))
    text_tokens, image_tokens = np.shape(context)[1], np.shape(hidden)[1]
    text_first = knobs["token_order"] == "text-first"
    joined = np.concatenate([context, hidden] if text_first else [hidden, context], axis=1)
    heads = module.heads
    dtype = call.output_dtypes[0] if call.output_dtypes else None
    across = knobs["qk_norm"] == "across-heads"
    query = _apply_norm(call, xp, module.norm_q, _linear(call, xp, module.to_q, joined), heads, across, dtype)
    key = _apply_norm(call, xp, module.norm_k, _linear(call, xp, module.to_k, joined), heads, across, dtype)
    q, k, v = split_heads(query, heads), split_heads(key, heads), split_heads(_linear(call, xp, module.to_v, joined), heads)
    image = slice(text_tokens, None) if text_first else slice(0, image_tokens)
    text = slice(0, text_tokens) if text_first else slice(image_tokens, None)
    rope = call.arg("image_rotary_emb")
    if rope is not None:
        cos, sin = _rope_tables(rope, image_tokens, np.shape(q)[-1], xp)

        def rotated(x: Any) -> Any:
            turned = C.apply_rope.generic(xp, x[:, :, image], cos, sin, knobs["rope_pairing"])
            parts = [x[:, :, text], turned] if text_first else [turned, x[:, :, text]]
            return np.concatenate(parts, axis=2)
        q = rotated(q)
        if not module.is_cross_attention:
            k = rotated(k)
    out = merge_heads(_scaled_attention(xp, q, k, v, knobs["scale"], _mask_bias(call.arg("attention_mask"), q, k, knobs),
                                        knobs.get("_prescale", True)))
    child = call.child(module.to_out[0])
    projected = _linear(call, xp, module.to_out[0], out) if child is None else _x(xp, child.kept_outputs[0])
    return [out, projected[:, image], projected[:, text]]


def _attention_observed(call: RecordedCall) -> list[np.ndarray]:
    """What an Attention call's recomputation is compared with (CogVideoX: to_out's input and the split outputs)."""
    if _processor_kind(call.module) == "CogVideoXAttnProcessor2_0":
        child = call.child(call.module.to_out[0])
        return [next(v for v in child.kept_inputs.values() if isinstance(v, np.ndarray)), *call.outputs] \
            if child is not None else list(call.outputs)
    return _projection_inputs_or_outputs("to_out", "to_add_out")(call)


def _table_chunks(xp: Precision, table: Any, emb: Any, order: tuple[str, ...]) -> dict[str, Any]:
    """A scale-shift table [k, D] (or [1, k, D]) plus a projected embedding [B, k, D] (or [B, k D]) in k named chunks [B, 1, D]."""
    count, width = np.shape(table)[-2:]
    table = np.reshape(table, (count, width))
    emb = np.reshape(emb, (np.shape(emb)[0], count * width))
    return {name: value[:, None, :] for name, value in C.scale_shift_table_chunks.generic(xp, table, emb, order).items()}


def _children_out(call: RecordedCall, children: Mapping[str, RecordedCall], xp: Precision) -> Callable[..., Any]:
    return lambda name, i=0: _x(xp, children[name].kept_outputs[i])


def _wan_block_names(call: RecordedCall) -> list[str]:
    if np.ndim(call.arg("temb")) != 3:
        raise Unsupported("per-token timesteps (Wan 2.2 TI2V temb [B, L, 6, D])")
    return ["norm1", "attn1", "norm2", "attn2", "norm3", "ffn"]


def _modulated_self_cross_mlp(x: Any, chunks: Mapping[str, Any], self_norm: Any, self_attn: Any, cross_attn: Any,
                              mlp_norm: Any, mlp: Any) -> list[Any]:
    """The Wan / LTX block glue given its children's outputs and the six named modulation chunks: [self-attention
    input, h1 = x + gate_msa attn1, h2 = h1 + attn2, MLP input, h2 + gate_mlp MLP] (the order the observed lists use)."""
    first = self_norm * (1 + chunks["scale_msa"]) + chunks["shift_msa"]
    after_self = x + self_attn * chunks["gate_msa"]
    after_cross = after_self + cross_attn
    mlp_in = mlp_norm * (1 + chunks["scale_mlp"]) + chunks["shift_mlp"]
    return [first, after_self, after_cross, mlp_in, after_cross + mlp * chunks["gate_mlp"]]


def _eval_wan_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """WanTransformerBlock glue (float32 by design: table + temb.float(), norms on hidden.float()), given its children:
    attn1 in = norm1(x)(1 + scale_msa) + shift_msa; h1 = x + gate_msa attn1 (norm2's input); h2 = h1 + attn2 (norm3's
    input); ffn in = norm3(h2)(1 + scale_mlp) + shift_mlp; out = h2 + gate_mlp ffn (Wan's c_* chunks are the *_mlp)."""
    out = _children_out(call, _needed_children(call, _wan_block_names(call)), xp)
    chunks = _table_chunks(xp, _p(call, xp, "scale_shift_table"), _x(xp, call.arg("temb")), _chunk_order(knobs))
    return _modulated_self_cross_mlp(_x(xp, call.arg("hidden_states")), chunks, out("norm1"), out("attn1"),
                                     out("attn2"), out("norm3"), out("ffn"))


def _observed_wan_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, _wan_block_names(call))
    return [_first_array(children[name].kept_inputs) for name in ("attn1", "norm2", "norm3", "ffn")] + \
        [call.outputs[0]]


def _eval_ltx_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """LTXVideoTransformerBlock glue: (table[None, None] + temb [B, T, 6, D]) in six named chunks (T = 1 or per token);
    attn1 in = norm1(x)(1 + scale_msa) + shift_msa; h1 = x + gate_msa attn1 (attn2's input); h2 = h1 + attn2 (norm2's
    input); ff in = norm2(h2)(1 + scale_mlp) + shift_mlp; out = h2 + gate_mlp ff."""
    out = _children_out(call, _needed_children(call, ["norm1", "attn1", "attn2", "norm2", "ff"]), xp)
    table, temb = _p(call, xp, "scale_shift_table"), _x(xp, call.arg("temb"))
    count, width = np.shape(table)
    ada = table[None, None] + np.reshape(temb, (np.shape(temb)[0], np.shape(temb)[1], count, width))
    chunks = {name: ada[:, :, i] for i, name in enumerate(_chunk_order(knobs))}
    return _modulated_self_cross_mlp(_x(xp, call.arg("hidden_states")), chunks, out("norm1"), out("attn1"),
                                     out("attn2"), out("norm2"), out("ff"))


def _observed_ltx_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, ["attn1", "attn2", "norm2", "ff"])
    return [_first_array(children[name].kept_inputs) for name in ("attn1", "attn2", "norm2", "ff")] + \
        [call.outputs[0]]


def _eval_hunyuan_video_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """HunyuanVideoTransformerBlock: the SD3/Flux dual-stream glue, returning (image, text) instead of (text, image)."""
    expected = _eval_dual_stream_block(call, xp, knobs)
    return expected[:-2] + [expected[-1], expected[-2]]


def _eval_hunyuan_video_single_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """HunyuanVideoSingleTransformerBlock glue: x = [image, text]; proj_out's input [attn (image, text), act(proj_mlp(
    norm x))]; out = x + gate proj_out(...), split back. Returns [norm's input, proj_out's input, image, text]."""
    children = _needed_children(call, ["norm", "attn", "act_mlp", "proj_out"])
    image, text = _x(xp, call.arg("hidden_states")), _x(xp, call.arg("encoder_hidden_states"))
    image_first = knobs["token_order"] == "image-first"
    joined = np.concatenate([image, text] if image_first else [text, image], axis=1)
    attn = [_x(xp, v) for v in children["attn"].kept_outputs[:2]]
    mixed = np.concatenate([np.concatenate(attn if image_first else attn[::-1], axis=1),
                            _x(xp, children["act_mlp"].kept_outputs[0])], axis=-1)
    result = joined + _x(xp, children["norm"].kept_outputs[1])[:, None, :] * _x(xp, children["proj_out"].kept_outputs[0])
    tokens = np.shape(image)[1] if image_first else np.shape(text)[1]
    first, second = result[:, :tokens], result[:, tokens:]
    return [joined, mixed] + ([first, second] if image_first else [second, first])


def _observed_hunyuan_video_single_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, ["norm", "proj_out"])
    return [_first_array(children["norm"].kept_inputs), _first_array(children["proj_out"].kept_inputs),
            *call.outputs]


def _aura_block_names(call: RecordedCall) -> list[str]:
    text = hasattr(call.module, "norm1_context")
    return ["norm1", "attn", "norm2", "ff"] + (["norm1_context", "norm2_context", "ff_context"] if text else [])


def _eval_aura_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """AuraFlow joint / single block glue: norm2's input x + gate_msa attn; ff's input norm2(...)(1 + scale_mlp) +
    shift_mlp; out = x + gate_mlp ff, the MLP residual taken from the block's input x (AuraFlow), not from
    x + gate_msa attn (SD3; knob mlp_residual). Returns [norm2 in, ff in, (context's two,) (text out,) image out]."""
    children = _needed_children(call, _aura_block_names(call))
    out = _children_out(call, children, xp)
    expected: list[Any] = []

    def stream(x: Any, norm1: str, attention_index: int, norm2: str, ff: str) -> Any:
        gate_msa, shift_mlp, scale_mlp, gate_mlp = (out(norm1, i)[:, None, :] for i in range(1, 5))
        attended = x + gate_msa * out("attn", attention_index)
        expected.extend([attended, out(norm2) * (1 + scale_mlp) + shift_mlp])
        return (x if knobs["mlp_residual"] == "block-input" else attended) + gate_mlp * out(ff)

    image = stream(_x(xp, call.arg("hidden_states")), "norm1", 0, "norm2", "ff")
    if "norm1_context" in children:
        expected.append(stream(_x(xp, call.arg("encoder_hidden_states")), "norm1_context", 1, "norm2_context",
                               "ff_context"))
    return expected + [image]


def _observed_aura_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, _aura_block_names(call))
    names = ["norm2", "ff"] + (["norm2_context", "ff_context"] if "norm1_context" in children else [])
    return [_first_array(children[name].kept_inputs) for name in names] + list(call.outputs)


def _eval_aura_feed_forward(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """AuraFlowFeedForward: out_projection's input silu(linear_1 x) * linear_2 x (the gate is the first projection;
    knob gate: which projection goes through silu)."""
    children = _needed_children(call, ["linear_1", "linear_2", "out_projection"])
    first, second = (_x(xp, children[name].kept_outputs[0]) for name in ("linear_1", "linear_2"))
    gate, value = (first, second) if knobs["gate"] == "linear_1" else (second, first)
    return [silu.generic(xp, gate) * value]


_LUMINA_BLOCK = ["norm1", "attn", "norm2", "ffn_norm1", "feed_forward", "ffn_norm2"]


def _eval_lumina2_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Lumina2TransformerBlock glue (sandwich norms, tanh gates): h1 = x + tanh(gate_msa) norm2(attn) (ffn_norm1's
    input); feed_forward's input ffn_norm1(h1)(1 + scale_mlp); out = h1 + tanh(gate_mlp) ffn_norm2(mlp). Without
    modulation (refiner blocks) the gates are 1 and the scale 0. Knob gate_activation: tanh or identity."""
    out = _children_out(call, _needed_children(call, _LUMINA_BLOCK), xp)
    x = _x(xp, call.arg("hidden_states"))

    def gate(value: Any) -> Any:
        return C.activation.generic(xp, value[:, None, :], "identity") if knobs["gate_activation"] == "identity" \
            else xp.tanh(value[:, None, :])
    if call.module.modulation:
        after_attention = x + gate(out("norm1", 1)) * out("norm2")
        mlp_in = out("ffn_norm1") * (1 + out("norm1", 2)[:, None, :])
        return [after_attention, mlp_in, after_attention + gate(out("norm1", 3)) * out("ffn_norm2")]
    after_attention = x + out("norm2")
    return [after_attention, after_attention + out("ffn_norm2")]


def _observed_lumina2_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, _LUMINA_BLOCK)
    observed = [_first_array(children["ffn_norm1"].kept_inputs)]
    if call.module.modulation:
        observed.append(_first_array(children["feed_forward"].kept_inputs))
    return observed + [call.outputs[0]]


def _eval_lumina_norm_zero(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """LuminaRMSNormZero: (norm(x)(1 + scale_msa), gate_msa, scale_mlp, gate_mlp), four chunks of linear(silu(emb))."""
    chunks, normed = _adaln_parts(call, xp, knobs, lambda: _x(xp, call.arg("emb")), "rms")
    return [normed * (1 + chunks["scale_msa"][:, None]), chunks["gate_msa"], chunks["scale_mlp"], chunks["gate_mlp"]]


_LUMINA_NORM_ORDER = ("scale_msa", "gate_msa", "scale_mlp", "gate_mlp")


def _eval_lumina_feed_forward(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """LuminaFeedForward (SwiGLU over two projections): linear_2's input silu(linear_1 x) * linear_3 x (knob gate)."""
    children = _needed_children(call, ["linear_1", "linear_2", "linear_3"])
    first, third = (_x(xp, children[name].kept_outputs[0]) for name in ("linear_1", "linear_3"))
    if knobs["gate"] == "linear_1":  # the silu child's recorded output (FP32SiLU computes in float32 by design)
        return [_recorded_or(call, xp, getattr(call.module, "silu", None), lambda: silu.generic(xp, first)) * third]
    return [silu.generic(xp, third) * first]


def _hunyuan_dit_block_names(call: RecordedCall) -> list[str]:
    skip = ["skip_norm", "skip_linear"] if call.module.skip_linear is not None else []
    return skip + ["norm1", "attn1", "norm2", "attn2", "norm3", "ff"]


def _eval_hunyuan_dit_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """HunyuanDiTBlock glue: with a long skip, skip_norm's input [x, skip] (knob skip_order) and norm1 fed skip_linear's
    output; h1 = h + attn1 (norm2's input); h2 = h1 + attn2 (norm3's input); out = h2 + ff."""
    children = _needed_children(call, _hunyuan_dit_block_names(call))
    out = _children_out(call, children, xp)
    hidden = _x(xp, call.arg("hidden_states"))
    expected = []
    if "skip_linear" in children:
        skip = _x(xp, call.arg("skip"))
        expected.append(np.concatenate([hidden, skip] if knobs["skip_order"] == "hidden-first" else [skip, hidden],
                                       axis=-1))
        hidden = out("skip_linear")
    expected.append(hidden)
    hidden = hidden + out("attn1")
    expected.append(hidden)
    hidden = hidden + out("attn2")
    expected.append(hidden)
    return expected + [hidden + out("ff")]


def _observed_hunyuan_dit_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, _hunyuan_dit_block_names(call))
    names = (["skip_norm"] if "skip_norm" in children else []) + ["norm1", "norm2", "norm3"]
    return [_first_array(children[name].kept_inputs) for name in names] + [call.outputs[0]]


def _eval_adaln_shift(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """AdaLayerNormShift (HunyuanDiT): norm(x) + linear(silu(emb)), the shift broadcast over the tokens."""
    children = _needed_children(call, ["norm", "linear"])
    return [_x(xp, children["norm"].kept_outputs[0]) + _x(xp, children["linear"].kept_outputs[0])[:, None, :]]


def _mochi_gate(xp: Precision, value: Any, knobs: Mapping[str, Any]) -> Any:
    return value[:, None, :] if knobs["gate_activation"] == "identity" else xp.tanh(value[:, None, :])


def _eval_mochi_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """MochiTransformerBlock glue, per stream: norm2's scale tanh(gate_msa), h1 = x + norm2(attn) (norm3's input),
    norm3's scale 1 + scale_mlp, norm4's scale tanh(gate_mlp), out = h1 + norm4(ff). Knob gate_activation."""
    module = call.module
    text = not module.context_pre_only
    names = ["norm1", "norm2", "norm3", "norm4"] + (["norm1_context", "norm2_context", "norm3_context",
                                                     "norm4_context"] if text else [])
    out = _children_out(call, _needed_children(call, names), xp)
    expected: list[Any] = []

    def stream(x: Any, suffix: str) -> Any:
        gate_msa, scale_mlp, gate_mlp = (out(f"norm1{suffix}", i) for i in (1, 2, 3))
        after_attention = x + out(f"norm2{suffix}")
        expected.extend([_mochi_gate(xp, gate_msa, knobs), after_attention, 1 + scale_mlp[:, None, :],
                         _mochi_gate(xp, gate_mlp, knobs)])
        return after_attention + out(f"norm4{suffix}")
    image = stream(_x(xp, call.arg("hidden_states")), "")
    context = stream(_x(xp, call.arg("encoder_hidden_states")), "_context") if text else \
        _x(xp, call.arg("encoder_hidden_states"))
    return expected + [image, context]


def _observed_mochi_block(call: RecordedCall) -> list[np.ndarray]:
    text = not call.module.context_pre_only
    suffixes = ["", "_context"] if text else [""]
    children = _needed_children(call, [f"norm{i}{s}" for s in suffixes for i in (2, 3, 4)])
    observed = []
    for suffix in suffixes:
        observed += [children[f"norm2{suffix}"].kept_inputs["scale"],
                     children[f"norm3{suffix}"].kept_inputs["hidden_states"],
                     children[f"norm3{suffix}"].kept_inputs["scale"], children[f"norm4{suffix}"].kept_inputs["scale"]]
    return observed + list(call.outputs)


def _eval_mochi_modulated_norm(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """MochiModulatedRMSNorm: norm(x) * scale (float32 inside), the scale given by the caller."""
    normed = _x(xp, _needed_children(call, ["norm"])["norm"].kept_outputs[0])
    scale = call.arg("scale")
    return [normed if scale is None else normed * _x(xp, scale)]


def _eval_mochi_norm_zero(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """MochiRMSNormZero: (norm(x)(1 + scale_msa), gate_msa, scale_mlp, gate_mlp), float32 inside."""
    chunks, normed = _adaln_parts(call, xp, knobs, lambda: _x(xp, call.arg("emb")), "rms")
    return [normed * (1 + chunks["scale_msa"][:, None]), chunks["gate_msa"], chunks["scale_mlp"], chunks["gate_mlp"]]


def _eval_mochi_norm_continuous(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """MochiLayerNormContinuous: its modulated norm fed scale 1 + linear_1(silu(cond))."""
    linear_1 = _x(xp, _needed_children(call, ["linear_1"])["linear_1"].kept_outputs[0])
    return [1 + linear_1[:, None, :]]


def _eval_hunyuan_video_patch_embed(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """HunyuanVideoPatchEmbed: proj's [B, D, F, H, W] grid flattened to tokens [B, F H W, D] (frame, row, column)."""
    grid = _x(xp, _needed_children(call, ["proj"])["proj"].kept_outputs[0])
    return [np.swapaxes(np.reshape(grid, np.shape(grid)[:2] + (-1,)), 1, 2)]


def _eval_hunyuan_video_ada_norm(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """HunyuanVideoAdaNorm: (gate_msa, gate_mlp)[:, None], the two chunks of linear(silu(temb)) in ``order``."""
    projected = _x(xp, _needed_children(call, ["linear"])["linear"].kept_outputs[0])
    width = np.shape(projected)[-1] // 2
    chunks = {name: projected[:, None, i * width:(i + 1) * width] for i, name in enumerate(knobs["order"])}
    return [chunks["gate_msa"], chunks["gate_mlp"]]


def _eval_hunyuan_video_refiner_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """HunyuanVideoIndividualTokenRefinerBlock glue: h1 = x + gate_msa attn (norm2's input); out = h1 + gate_mlp ff."""
    out = _children_out(call, _needed_children(call, ["attn", "norm_out", "norm2", "ff"]), xp)
    after_attention = _x(xp, call.arg("hidden_states")) + out("attn") * out("norm_out", 0)
    return [after_attention, after_attention + out("ff") * out("norm_out", 1)]


def _sana_block_names(call: RecordedCall) -> list[str]:
    return ["norm1", "attn1"] + (["attn2"] if call.module.attn2 is not None else []) + ["norm2", "ff"]


def _eval_sana_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """SanaTransformerBlock glue: adaLN-single chunks (table + timestep), h1 = x + gate_msa attn1(modulated norm1(x)),
    h2 = h1 + attn2(h1), ff's input = modulated norm2(h2) as an image [B, D, H, W], out = h2 + gate_mlp ff (tokens)."""
    out = _children_out(call, _needed_children(call, _sana_block_names(call)), xp)
    chunks = _table_chunks(xp, _p(call, xp, "scale_shift_table"), _x(xp, call.arg("timestep")), _chunk_order(knobs))
    x = _x(xp, call.arg("hidden_states"))
    height, width = int(call.arg("height")), int(call.arg("width"))
    expected = [out("norm1") * (1 + chunks["scale_msa"]) + chunks["shift_msa"]]
    hidden = x + chunks["gate_msa"] * out("attn1")
    if call.module.attn2 is not None:
        expected.append(hidden)
        hidden = out("attn2") + hidden
    expected.append(hidden)
    modulated = out("norm2") * (1 + chunks["scale_mlp"]) + chunks["shift_mlp"]
    batch, tokens, channels = np.shape(modulated)
    expected.append(np.reshape(modulated, (batch, height, width, channels)).transpose(0, 3, 1, 2))
    ff = np.reshape(out("ff"), (batch, channels, tokens)).transpose(0, 2, 1)
    expected.append(hidden + chunks["gate_mlp"] * ff)
    return expected


def _eval_allegro_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """AllegroTransformerBlock glue (PixArt's adaLN-single block): chunks of table + temb; attn1's input modulated
    norm1(x); h1 = x + gate_msa attn1 (attn2's input); h2 = h1 + attn2 (norm2's input); ff's input modulated
    norm2(h2); out = h2 + gate_mlp ff."""
    out = _children_out(call, _needed_children(call, _sana_block_names(call)), xp)
    chunks = _table_chunks(xp, _p(call, xp, "scale_shift_table"), _x(xp, call.arg("temb")), _chunk_order(knobs))
    x = _x(xp, call.arg("hidden_states"))
    expected = [out("norm1") * (1 + chunks["scale_msa"]) + chunks["shift_msa"]]
    hidden = x + chunks["gate_msa"] * out("attn1")
    if call.module.attn2 is not None:
        expected.append(hidden)
        hidden = out("attn2") + hidden
    expected += [hidden, out("norm2") * (1 + chunks["scale_mlp"]) + chunks["shift_mlp"]]
    return expected + [hidden + chunks["gate_mlp"] * out("ff")]


def _observed_sana_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, _sana_block_names(call))
    names = ["attn1"] + (["attn2"] if "attn2" in children else []) + ["norm2", "ff"]
    return [_first_array(children[name].kept_inputs) for name in names] + [call.outputs[0]]


def _eval_glumbconv(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """Sana's GLUMBConv glue: conv_point's input = value * silu(gate), (value, gate) the channel halves of conv_depth's output."""
    module = call.module
    if module.norm_type is not None or module.residual_connection:
        raise Unsupported("GLUMBConv with a norm or a residual connection")
    depth = _x(xp, _needed_children(call, ["conv_depth"])["conv_depth"].kept_outputs[0])
    half = np.shape(depth)[1] // 2
    value, gate = depth[:, :half], depth[:, half:]
    if knobs["gate_first"]:
        value, gate = gate, value
    return [value * silu.generic(xp, gate)]


def _observed_glumbconv(call: RecordedCall) -> list[np.ndarray]:
    return [_first_array(_needed_children(call, ["conv_point"])["conv_point"].kept_inputs)]


def _eval_sana_modulated_norm(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """SanaModulatedNorm (Sana's norm_out): norm(x)(1 + scale) + shift, (shift, scale) = table[None] + temb[:, None]."""
    normed = _x(xp, _needed_children(call, ["norm"])["norm"].kept_outputs[0])
    chunks = _table_chunks(xp, _x(xp, call.arg("scale_shift_table")), np.repeat(
        _x(xp, call.arg("temb"))[:, None, :], 2, axis=1), knobs["order"])
    return [normed * (1 + chunks["scale"]) + chunks["shift"]]


def _per_group_orders(suffixes: Sequence[str]) -> list[tuple[str, ...]]:
    """Every order of (shift, scale, gate) chosen independently per group: a port may cross one group only."""
    per_group = [[tuple(f"{p}_{s}" for p in permutation) for permutation in itertools.permutations(_TRIPLE)]
                 for s in suffixes]
    return [tuple(itertools.chain.from_iterable(choice)) for choice in itertools.product(*per_group)]


def _group_orders(groups: Sequence[str]) -> list[tuple[str, ...]]:
    """Every (shift, scale, gate) order within the groups, the groups in either order: names "<group>shift" etc."""
    orders = []
    for permutation in itertools.permutations(_TRIPLE):
        for arrangement in (tuple(groups), tuple(reversed(groups))):
            orders.append(tuple(f"{g}{p}" for g in arrangement for p in permutation))
    return orders


_COGVIDEOX_ORDER = ("shift", "scale", "gate", "enc_shift", "enc_scale", "enc_gate")


def _eval_cogvideox_norm_zero(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """CogVideoXLayerNormZero: six chunks of linear(silu(temb)) modulate the image and the text stream with one
    LayerNorm; returns (image, text, gate[:, None], enc_gate[:, None])."""
    module = call.module
    projected = _linear(call, xp, module.linear, silu.generic(xp, _x(xp, call.arg("temb"))))
    width = np.shape(projected)[-1] // 6
    chunks = {name: projected[:, None, i * width:(i + 1) * width] for i, name in enumerate(knobs["order"])}
    norms = [c for c in call.children if c.module is module.norm and c.kept_outputs]
    if len(norms) != 2:
        raise Unsupported("its norm did not run twice as a hooked child")
    image, text = (_x(xp, c.kept_outputs[0]) for c in norms)
    return [image * (1 + chunks["scale"]) + chunks["shift"], text * (1 + chunks["enc_scale"]) + chunks["enc_shift"],
            chunks["gate"], chunks["enc_gate"]]


def _eval_cogvideox_block(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """CogVideoXBlock glue: h1 = x + gate attn_img, e1 = e + enc_gate attn_txt (norm2's inputs); ff's input
    [text, image] of norm2's outputs (knob token_order); out (h1 + gate_ff ff[image], e1 + enc_gate_ff ff[text]),
    the feed-forward's output split as [text, image] (knob split_order: a port may join one way, split the other)."""
    out = _children_out(call, _needed_children(call, ["norm1", "attn1", "norm2", "ff"]), xp)
    x, e = _x(xp, call.arg("hidden_states")), _x(xp, call.arg("encoder_hidden_states"))
    text_tokens, image_tokens = np.shape(e)[1], np.shape(x)[1]
    hidden, text = x + out("norm1", 2) * out("attn1", 0), e + out("norm1", 3) * out("attn1", 1)
    text_first = knobs["token_order"] == "text-first"
    joined = np.concatenate([out("norm2", 1), out("norm2", 0)] if text_first else [out("norm2", 0), out("norm2", 1)],
                            axis=1)
    ff = out("ff")
    ff_image, ff_text = (ff[:, text_tokens:], ff[:, :text_tokens]) if knobs["split_order"] == "text-first" else \
        (ff[:, :image_tokens], ff[:, image_tokens:])
    return [hidden, text, joined, hidden + out("norm2", 2) * ff_image, text + out("norm2", 3) * ff_text]


def _observed_cogvideox_block(call: RecordedCall) -> list[np.ndarray]:
    children = _needed_children(call, ["norm2", "ff"])
    norm2 = children["norm2"].kept_inputs
    return [norm2["hidden_states"], norm2["encoder_hidden_states"], _first_array(children["ff"].kept_inputs),
            *call.outputs]


def _eval_ada_layer_norm(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """diffusers AdaLayerNorm with chunk_dim=1 (CogVideoX's norm_out): norm(x)(1 + scale) + shift, (shift, scale) chunks
    of linear(silu(temb))."""
    module = call.module
    if module.chunk_dim != 1 or getattr(module, "emb", None) is not None:
        raise Unsupported("AdaLayerNorm with chunk_dim 0 or its own timestep embedding")
    projected = _linear(call, xp, module.linear, silu.generic(xp, _x(xp, call.arg("temb"))))
    width = np.shape(projected)[-1] // 2
    chunks = {name: projected[:, None, i * width:(i + 1) * width] for i, name in enumerate(knobs["order"])}
    normed = _x(xp, _needed_children(call, ["norm"])["norm"].kept_outputs[0])
    return [normed * (1 + chunks["scale"]) + chunks["shift"]]


def _eval_sd35_adaln_x(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """SD35AdaLayerNormZeroX: nine chunks; (n(1 + scale_msa) + shift_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp,
    n(1 + scale_msa2) + shift_msa2, gate_msa2) with n = norm(x), one LayerNorm for both attentions."""
    module = call.module
    projected = _linear(call, xp, module.linear, silu.generic(xp, _x(xp, call.arg("emb"))))
    width = np.shape(projected)[-1] // 9
    chunks = {name: projected[:, i * width:(i + 1) * width] for i, name in enumerate(knobs["order"])}
    normed = _x(xp, _needed_children(call, ["norm"])["norm"].kept_outputs[0])
    modulate = lambda suffix: normed * (1 + chunks[f"scale_{suffix}"][:, None]) + chunks[f"shift_{suffix}"][:, None]  # noqa: E731
    return [modulate("msa"), chunks["gate_msa"], chunks["shift_mlp"], chunks["scale_mlp"], chunks["gate_mlp"],
            modulate("msa2"), chunks["gate_msa2"]]


def _eval_wan_rope(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """WanRotaryPosEmbed: per token of the (frame, row, column) grid, angles pos_a theta^(-2i/d_a) over the axis split
    (t, h, w) of the head dim, repeated to pairs; returned (cos, sin) as [1, L, 1, Dh] (float32 tables)."""
    module = call.module
    _, _, frames, height, width = np.shape(call.arg("hidden_states"))
    pt, ph, pw = module.patch_size
    positions = C.rope_grid_positions((frames // pt, height // ph, width // pw))
    cos, sin = C.rope_frequencies.generic(xp, _x(xp, positions), tuple(knobs["axes_dims"]), knobs["theta"],
                                          knobs["pairing"])
    return [np.reshape(t, (1, np.shape(t)[0], 1, np.shape(t)[1])) for t in (cos, sin)]


def _eval_ltx_rope(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """LTXVideoRotaryPosEmbed: positions g in [0, 1] per axis (grid x interpolation scale x patch / base size, or the
    caller's video_coords / base), frequencies (pi/2) theta^linspace(0, 1, dim // 6), angles f (2 g - 1) laid out
    frequency-major over the three axes, each repeated to a pair, the dim % 6 leading channels padded (cos 1, sin 0)."""
    module = call.module
    batch = np.shape(call.arg("hidden_states"))[0]
    coords = call.arg("video_coords")
    if coords is not None:
        coords = np.asarray(coords, dtype=np.float64)
        bases = np.array([module.base_num_frames, module.base_height, module.base_width], dtype=np.float64)
        grid = np.stack([coords[:, i] / bases[i] for i in range(3)], axis=-1)
    else:
        frames, height, width = (int(call.arg(name)) for name in ("num_frames", "height", "width"))
        grid = np.broadcast_to(C.rope_grid_positions((frames, height, width)), (batch, frames * height * width, 3))
        scale = call.arg("rope_interpolation_scale")
        if scale is not None:
            factors = [float(np.asarray(scale[0]).reshape(-1)[0]) * module.patch_size_t / module.base_num_frames,
                       float(scale[1]) * module.patch_size / module.base_height,
                       float(scale[2]) * module.patch_size / module.base_width]
            grid = grid * np.asarray(factors)
    count = module.dim // 6
    exponents = xp.asarray(np.linspace(0.0, 1.0, count)) if count > 1 else xp.asarray(np.zeros(count))
    theta = xp.const(knobs["theta"])
    frequencies = xp.exp(exponents * xp.log(theta)) * (xp.pi() / 2)
    angles = frequencies[None, None, None, :] * (2 * _x(xp, grid)[..., None] - 1)       # [B, L, 3, F]
    angles = np.reshape(np.swapaxes(angles, -1, -2), (batch, -1, 3 * count))
    cos, sin = xp.cos(angles), xp.sin(angles)
    if knobs["pairing"] == "half":
        cos, sin = np.concatenate([cos, cos], axis=-1), np.concatenate([sin, sin], axis=-1)
    else:
        cos, sin = np.repeat(cos, 2, axis=-1), np.repeat(sin, 2, axis=-1)
    pad = module.dim % 6
    if pad:
        shape = np.shape(cos)[:-1] + (pad,)
        cos = np.concatenate([xp.asarray(np.ones(shape)), cos], axis=-1)
        sin = np.concatenate([xp.asarray(np.zeros(shape)), sin], axis=-1)
    return [cos, sin]


def _eval_hunyuan_video_rope(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """HunyuanVideoRotaryPosEmbed: rope_frequencies over the (frame, row, column) patch grid, axis split rope_dim,
    theta 256, interleaved pairs; (cos, sin) [L, Dh] (float32 tables)."""
    module = call.module
    _, _, frames, height, width = np.shape(call.arg("hidden_states"))
    positions = C.rope_grid_positions((frames // module.patch_size_t, height // module.patch_size,
                                       width // module.patch_size))
    return list(C.rope_frequencies.generic(xp, _x(xp, positions), tuple(knobs["axes_dims"]), knobs["theta"],
                                           knobs["pairing"]))


def _hunyuan_video_rope_knobs(call: RecordedCall) -> dict[str, Any]:
    return {"axes_dims": tuple(call.module.rope_dim), "theta": float(call.module.theta), "pairing": "interleaved"}


def _hunyuan_video_rope_alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
    knobs = _hunyuan_video_rope_knobs(call)
    splits = sorted({p for p in itertools.permutations(knobs["axes_dims"]) if p != knobs["axes_dims"]})
    return {"axes_dims": splits, "theta": _other(knobs["theta"], (256.0, 10000.0)), "pairing": ["half"]}


def _wan_rope_knobs(call: RecordedCall) -> dict[str, Any]:
    module = call.module
    return {"axes_dims": (module.t_dim, module.h_dim, module.w_dim), "theta": 10000.0, "pairing": "interleaved"}


def _wan_rope_alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
    axes = _wan_rope_knobs(call)["axes_dims"]
    splits = sorted({p for p in itertools.permutations(axes) if p != axes})
    return {"axes_dims": splits, "theta": [256.0, 1e6], "pairing": ["half"]}


def _wiring(pairs: Sequence[tuple[str, str]]) -> tuple[Evaluate, Callable[[RecordedCall], list[np.ndarray]]]:
    """A composite whose glue only passes values on: each pair (child A's output -> child B's input, or "out:i").

    Sources and sinks are "child" (its first output / input) or "child:i"; sinks "out:i" are the call's outputs.
    """
    def parse(spec: str) -> tuple[str, int]:
        name, _, index = spec.partition(":")
        return name, int(index or 0)

    def evaluate(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
        values = []
        for source, _ in pairs:
            name, index = parse(source)
            values.append(_x(xp, _needed_children(call, [name])[name].kept_outputs[index]))
        return values

    def observed(call: RecordedCall) -> list[np.ndarray]:
        values = []
        for _, sink in pairs:
            name, index = parse(sink)
            if name == "out":
                values.append(call.outputs[index])
            else:
                inputs = _needed_children(call, [name])[name].kept_inputs
                values.append([v for v in inputs.values() if isinstance(v, np.ndarray)][index])
        return values
    return evaluate, observed


def _wan_condition_pairs(call: RecordedCall) -> None:
    if call.arg("timestep_seq_len") is not None or call.arg("encoder_hidden_states_image") is not None:
        raise Unsupported("per-token timesteps or image conditioning")


_WAN_CONDITION_EVAL, _WAN_CONDITION_OBSERVED = _wiring(
    [("timesteps_proj", "time_embedder"), ("time_embedder", "act_fn"), ("act_fn", "time_proj"),
     ("time_embedder", "out:0"), ("time_proj", "out:1"), ("text_embedder", "out:2")])


def _eval_wan_condition(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    _wan_condition_pairs(call)
    return _WAN_CONDITION_EVAL(call, xp, knobs)


def _glue_parts(call: RecordedCall, children: Sequence[str],
                blocks: nn.ModuleList) -> tuple[dict[str, RecordedCall], list[RecordedCall]]:
    """A model-glue check's inputs: the recorded children it reads and the model's hooked blocks in call order."""
    return _needed_children(call, list(children)), _hooked_blocks(call, blocks)


def _wan_model_children(call: RecordedCall) -> tuple[dict[str, RecordedCall], list[RecordedCall]]:
    if np.ndim(call.arg("timestep")) != 1 or call.arg("encoder_hidden_states_image") is not None:
        raise Unsupported("per-token timesteps (Wan 2.2 TI2V) or image conditioning")
    return _glue_parts(call, ["rope", "patch_embedding", "condition_embedder", "norm_out", "proj_out"],
                       call.module.blocks)


def _eval_wan_model(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """WanTransformer3DModel's inline code between its children: tokens = patch_embedding(x).flatten(2).transpose(1, 2);
    each block fed the previous one's output, timestep_proj as [B, 6, D] and the RoPE tables; the output norm
    modulated by its table, (shift, scale) = table + temb (float32 by design); the output unpatchified to
    [B, C, F, H, W]. Returns the values in the order of _observed_wan_model."""
    children, blocks = _wan_model_children(call)
    out = _children_out(call, children, xp)
    batch, channels = np.shape(out("patch_embedding"))[:2]
    expected = [np.reshape(out("patch_embedding"), (batch, channels, -1)).transpose(0, 2, 1),
                np.reshape(out("condition_embedder", 1), (batch, 6, channels))]
    for index, block in enumerate(blocks):
        if index:
            expected.append(_x(xp, blocks[index - 1].kept_outputs[0]))
        expected.extend([out("rope", 0), out("rope", 1)])
    expected.append(_x(xp, blocks[-1].kept_outputs[0]))
    chunks = _table_chunks(xp, _p(call, xp, "scale_shift_table"),
                           np.repeat(out("condition_embedder", 0)[:, None, :], 2, axis=1), knobs["order"])
    expected.append(out("norm_out") * (1 + chunks["scale"]) + chunks["shift"])
    patch = tuple(call.module.config.patch_size)
    grid = tuple(n // p for n, p in zip(np.shape(call.arg("hidden_states"))[2:], patch))
    expected.append(C.unpatchify_3d.generic(xp, out("proj_out"), patch, grid))
    return expected


def _observed_wan_model(call: RecordedCall) -> list[np.ndarray]:
    children, blocks = _wan_model_children(call)
    observed = [blocks[0].kept_inputs["hidden_states"], blocks[0].kept_inputs["temb"]]
    for index, block in enumerate(blocks):
        if index:
            observed.append(block.kept_inputs["hidden_states"])
        observed.extend(block.kept_inputs["rotary_emb"])
    observed += [_first_array(children["norm_out"].kept_inputs), _first_array(children["proj_out"].kept_inputs),
                 call.outputs[0]]
    return observed


def _pixart_model_children(call: RecordedCall) -> tuple[dict[str, RecordedCall], list[RecordedCall]]:
    module = call.module
    # without caption_channels (diffusers' default config) the text states reach the blocks unprojected
    projected = ["caption_projection"] if module.caption_projection is not None else []
    if call.arg("attention_mask") is not None:
        raise Unsupported("PixArt with a self-attention mask")
    return _glue_parts(call, ["pos_embed", "adaln_single", *projected, "norm_out", "proj_out"],
                       module.transformer_blocks)


def _eval_pixart_model(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """PixArtTransformer2DModel's inline code: the caption mask as an additive bias (1 - mask) x -10000 [B, 1, L]; the
    first block fed pos_embed's tokens, adaln_single's modulation and the caption (projected when caption_channels
    is set); adaln_single given the size conditions (added_cond_kwargs) unchanged; each next block the previous one's
    output; the final norm modulated by (shift, scale) = table + embedded timestep; unpatchify
    "nhwpqc->nchpwq". Returns the values in the order of _observed_pixart_model."""
    children, blocks = _pixart_model_children(call)
    out = _children_out(call, children, xp)
    text = out("caption_projection") if "caption_projection" in children else \
        _x(xp, call.arg("encoder_hidden_states"))
    expected = [out("pos_embed"), out("adaln_single", 0), text]
    if _size_conditioned(call.module.adaln_single.emb):  # added_cond_kwargs passed on to adaln_single unchanged
        expected += [_x(xp, value) for value in _size_condition_values(call.arg("added_cond_kwargs"))]
    mask = call.arg("encoder_attention_mask")
    if mask is not None and np.ndim(mask) == 2:
        expected.append(((1 - _x(xp, mask)) * knobs["mask_bias"])[:, None, :])
    expected += [_x(xp, block.kept_outputs[0]) for block in blocks]  # each next block's input, then norm_out's
    chunks = _table_chunks(xp, _p(call, xp, "scale_shift_table"),
                           np.repeat(out("adaln_single", 1)[:, None, :], 2, axis=1), knobs["order"])
    expected.append(out("norm_out") * (1 + chunks["scale"]) + chunks["shift"])
    height, width = np.shape(call.arg("hidden_states"))[-2:]
    expected.append(_unpatchify_2d(xp, out("proj_out"), height, width, call.module.config.patch_size))
    return expected


def _observed_pixart_model(call: RecordedCall) -> list[np.ndarray]:
    children, blocks = _pixart_model_children(call)
    first = blocks[0].kept_inputs
    observed = [first["hidden_states"], first["timestep"], first["encoder_hidden_states"]]
    if _size_conditioned(call.module.adaln_single.emb):
        observed += _size_condition_values(children["adaln_single"].kept_inputs.get("added_cond_kwargs"))
    mask = call.arg("encoder_attention_mask")
    if mask is not None and np.ndim(mask) == 2:
        observed.append(first["encoder_attention_mask"])
    observed += [block.kept_inputs["hidden_states"] for block in blocks[1:]]
    observed += [_first_array(children["norm_out"].kept_inputs), _first_array(children["proj_out"].kept_inputs),
                 call.outputs[0]]
    return observed


def _unpatchify_2d(xp: Precision, tokens: Any, height: int, width: int, patch: int) -> Any:
    """[B, (H/p)(W/p), p p C] tokens -> [B, C, H, W] images, diffusers' "nhwpqc->nchpwq" (H, W the image size)."""
    return unpatchify.generic(xp, tokens, patch, np.shape(tokens)[-1] // patch ** 2, (height // patch, width // patch))


def _sd3_model_children(call: RecordedCall) -> tuple[dict[str, RecordedCall], list[RecordedCall]]:
    if call.arg("skip_layers") is not None or call.arg("block_controlnet_hidden_states") is not None or \
            call.arg("joint_attention_kwargs"):
        raise Unsupported("SD3 with skipped layers, ControlNet residuals or joint_attention_kwargs")
    return _glue_parts(call, ["pos_embed", "time_text_embed", "context_embedder", "norm_out", "proj_out"],
                       call.module.transformer_blocks)


def _two_stream_chain(xp: Precision, blocks: Sequence[RecordedCall], temb: Any, streams: tuple[int, int]) -> list[Any]:
    """What a two-stream model's inline code feeds its blocks after the first: block i + 1 gets block i's outputs
    ``streams`` (the indices of its (image, text) outputs: SD3 returns (text, image), CogVideoX (image, text)), and
    every block gets temb. In the order of _two_stream_block_inputs."""
    expected: list[Any] = []
    for index in range(len(blocks)):
        if index:
            previous = blocks[index - 1].kept_outputs
            expected += [_x(xp, previous[i]) for i in streams]
        expected.append(temb)
    return expected


def _two_stream_block_inputs(blocks: Sequence[RecordedCall]) -> list[np.ndarray]:
    """The (hidden_states, encoder_hidden_states) each block after the first received, and every block's temb."""
    observed: list[np.ndarray] = []
    for index, block in enumerate(blocks):
        if index:
            observed += [block.kept_inputs["hidden_states"], block.kept_inputs["encoder_hidden_states"]]
        observed.append(block.kept_inputs["temb"])
    return observed


def _eval_sd3_model(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """SD3Transformer2DModel's inline code: time_text_embed fed the timestep as given (no x1000, unlike Flux); the
    first block fed pos_embed's tokens, the embedded context and temb; block i + 1 fed block i's (text, image)
    outputs; norm_out fed the last image stream and temb; unpatchify. Order as in _observed_sd3_model."""
    children, blocks = _sd3_model_children(call)
    out = _children_out(call, children, xp)
    temb = out("time_text_embed")
    expected = [_x(xp, call.arg("timestep")) * knobs["timestep_scale"], out("pos_embed"), out("context_embedder")]
    expected += _two_stream_chain(xp, blocks, temb, (1, 0))
    expected += [_x(xp, blocks[-1].kept_outputs[-1]), temb]
    height, width = np.shape(call.arg("hidden_states"))[-2:]
    expected.append(_unpatchify_2d(xp, out("proj_out"), height, width, call.module.config.patch_size))
    return expected


def _observed_sd3_model(call: RecordedCall) -> list[np.ndarray]:
    children, blocks = _sd3_model_children(call)
    first = blocks[0].kept_inputs
    observed = [children["time_text_embed"].kept_inputs["timestep"], first["hidden_states"],
                first["encoder_hidden_states"], *_two_stream_block_inputs(blocks)]
    norm = children["norm_out"].kept_inputs
    return observed + [norm["x"], norm["conditioning_embedding"], call.outputs[0]]


def _eval_cogvideox_patch_embed(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """CogVideoXPatchEmbed (per-frame 2-D patches): [text_proj(text), image tokens], image tokens in (frame, row,
    column) order from proj's per-frame outputs [B F, D, h, w]; with use_positional_embeddings (CogVideoX-2b, the
    default config; the RoPE models have none) plus the joint sin-cos table (_cogvideox_positions)."""
    module = call.module
    if module.patch_size_t is not None or module.use_learned_positional_embeddings:
        raise Unsupported("CogVideoXPatchEmbed with 3-D patches or a learned positional table")
    children = _needed_children(call, ["text_proj", "proj"])
    batch, frames = np.shape(call.arg("image_embeds"))[:2]
    grid = _x(xp, children["proj"].kept_outputs[0])
    channels, height, width = np.shape(grid)[1:]
    image = np.reshape(grid, (batch, frames, channels, -1)).transpose(0, 1, 3, 2).reshape(batch, -1, channels)
    text = _x(xp, children["text_proj"].kept_outputs[0])
    embeds = np.concatenate([text, image] if knobs["token_order"] == "text-first" else [image, text], axis=1)
    if module.use_positional_embeddings and knobs["positional_table"]:
        # one table per precision kind and format (elementwise only: the summation order does not enter), kept for
        # this call's evaluations and freed with its parameter copies
        key = (id(module), f"sin-cos table {type(xp).__name__} {getattr(xp, 'dtype', xp.name)}")
        if key not in call.params:
            call.params[key] = _cogvideox_positions(xp, module, np.shape(text)[1], frames, height, width)
        embeds = embeds + call.params[key][None]
    return [embeds]


def _cogvideox_positions(xp: Precision, module: nn.Module, text_tokens: int, frames: int, height: int,
                         width: int) -> Any:
    """CogVideoXPatchEmbed's joint table [L + F h w, D]: zeros at the L text positions, then diffusers'
    get_3d_sincos_pos_embed per image token (frame, row, column): [1-D sin-cos of frame / temporal_interpolation_scale
    over D/4 channels | 2-D sin-cos table (columns, then rows) of positions / spatial_interpolation_scale over 3D/4]
    (the 1-D table [sin, cos] of pos x 10000^(-k/(D/8)) is timestep_embedding without flip or shift)."""
    dim = module.embed_dim
    spatial = pos_embed_2d.generic(xp, 3 * dim // 4, (height, width), 10000, None,
                                   float(module.spatial_interpolation_scale))
    times = xp.asarray(np.arange(frames, dtype=np.float64)) / xp.const(float(module.temporal_interpolation_scale))
    temporal = timestep_embedding.generic(xp, times, dim // 4, 10000, False, 0.0)
    table = np.concatenate([np.repeat(temporal[:, None, :], height * width, axis=1),
                            np.repeat(spatial[None], frames, axis=0)], axis=-1).reshape(-1, dim)
    return np.concatenate([xp.asarray(np.zeros((text_tokens, dim))), table], axis=0)


def _cogvideox_model_children(call: RecordedCall) -> tuple[dict[str, RecordedCall], list[RecordedCall]]:
    module = call.module
    if module.config.patch_size_t is not None or module.ofs_embedding is not None or \
            call.arg("timestep_cond") is not None:
        raise Unsupported("CogVideoX 1.5 3-D patches, ofs embedding or timestep_cond")
    return _glue_parts(call, ["time_proj", "time_embedding", "patch_embed", "norm_final", "norm_out", "proj_out"],
                       module.transformer_blocks)


def _eval_cogvideox_model(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """CogVideoXTransformer3DModel's inline code: time_embedding fed time_proj's sinusoid; patch_embed's [text, image]
    split into the first block's streams; block i + 1 fed block i's (image, text); norm_final -> norm_out (temb) ->
    proj_out; unpatchify to [B, F, C, H, W]. Order as in _observed_cogvideox_model."""
    children, blocks = _cogvideox_model_children(call)
    out = _children_out(call, children, xp)
    text_tokens = np.shape(call.arg("encoder_hidden_states"))[1]
    joined, temb = out("patch_embed"), out("time_embedding")
    expected = [out("time_proj"), joined[:, text_tokens:], joined[:, :text_tokens]]
    expected += _two_stream_chain(xp, blocks, temb, (0, 1))
    expected += [_x(xp, blocks[-1].kept_outputs[0]), out("norm_final"), temb]
    batch, frames, _, height, width = np.shape(call.arg("hidden_states"))
    patch = call.module.config.patch_size
    tokens = np.reshape(out("proj_out"), (batch, frames, height // patch, width // patch, -1, patch, patch))
    expected.append(np.reshape(tokens.transpose(0, 1, 4, 2, 5, 3, 6), (batch, frames, -1, height, width)))
    return expected


def _observed_cogvideox_model(call: RecordedCall) -> list[np.ndarray]:
    children, blocks = _cogvideox_model_children(call)
    first = blocks[0].kept_inputs
    observed = [_first_array(children["time_embedding"].kept_inputs), first["hidden_states"],
                first["encoder_hidden_states"], *_two_stream_block_inputs(blocks)]
    norm = children["norm_out"].kept_inputs
    return observed + [_first_array(children["norm_final"].kept_inputs), norm["x"], norm["temb"], call.outputs[0]]


def _sana_model_children(call: RecordedCall) -> tuple[dict[str, RecordedCall], list[RecordedCall]]:
    if any(call.arg(name) is not None for name in ("guidance", "controlnet_block_samples", "attention_mask")):
        raise Unsupported("Sana with guidance embedding, ControlNet residuals or a self-attention mask")
    return _glue_parts(call, ["patch_embed", "time_embed", "caption_projection", "caption_norm", "norm_out",
                              "proj_out"], call.module.transformer_blocks)


def _eval_sana_model(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """SanaTransformer2DModel's inline code: the caption mask as (1 - mask) x -10000 [B, 1, L]; caption_norm fed the
    projected caption; the first block fed patch tokens, the normed caption and time_embed's modulation; block i + 1
    fed block i's output; norm_out fed the last output, the embedded timestep and the model's table; unpatchify."""
    children, blocks = _sana_model_children(call)
    out = _children_out(call, children, xp)
    expected = [out("caption_projection"), out("patch_embed"), out("caption_norm"), out("time_embed", 0)]
    mask = call.arg("encoder_attention_mask")
    if mask is not None and np.ndim(mask) == 2:
        expected.append(((1 - _x(xp, mask)) * knobs["mask_bias"])[:, None, :])
    expected += [_x(xp, block.kept_outputs[0]) for block in blocks]
    expected += [out("time_embed", 1), _p(call, xp, "scale_shift_table")]
    height, width = np.shape(call.arg("hidden_states"))[-2:]
    expected.append(_unpatchify_2d(xp, out("proj_out"), height, width, call.module.config.patch_size))
    return expected


def _observed_sana_model(call: RecordedCall) -> list[np.ndarray]:
    children, blocks = _sana_model_children(call)
    first = blocks[0].kept_inputs
    observed = [_first_array(children["caption_norm"].kept_inputs), first["hidden_states"],
                first["encoder_hidden_states"], first["timestep"]]
    mask = call.arg("encoder_attention_mask")
    if mask is not None and np.ndim(mask) == 2:
        observed.append(first["encoder_attention_mask"])
    observed += [block.kept_inputs["hidden_states"] for block in blocks[1:]]
    norm = children["norm_out"].kept_inputs
    return observed + [norm["hidden_states"], norm["temb"], norm["scale_shift_table"], call.outputs[0]]


def _eval_flux_model(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """FluxTransformer2DModel's inline conditioning: time_text_embed receives timestep x 1000 and guidance x 1000
    (the pipeline passes t in [0, 1] and the guidance scale itself)."""
    values = [_x(xp, call.arg("timestep")) * knobs["timestep_scale"]]
    if call.arg("guidance") is not None:
        values.append(_x(xp, call.arg("guidance")) * knobs["guidance_scale"])
    return values


def _observed_flux_model(call: RecordedCall) -> list[np.ndarray]:
    embed = _needed_children(call, ["time_text_embed"])["time_text_embed"].kept_inputs
    values = [embed["timestep"]]
    if call.arg("guidance") is not None:
        values.append(embed["guidance"])
    return values


# ----------------------------------------------------------------------------------------
# The registry


def _direct_parameters(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters(recurse=False)}


def _first_input(call: RecordedCall) -> np.ndarray:
    value = next((v for v in call.inputs.values() if isinstance(v, np.ndarray)), None)
    if value is None:
        raise Unsupported("no array input")
    return value


def _eval_shape_linear(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    params = _direct_parameters(call.module)
    weight = next(name for name, shape in params.items() if len(shape) == 2)
    bias = next((name for name, shape in params.items() if len(shape) == 1), None)
    if np.shape(_first_input(call))[-1:] != params[weight][1:]:
        raise NotRecognised(f"a 2-D parameter {params[weight]} that does not fit the input {np.shape(_first_input(call))}")
    _refute_shape_guess(call, "linear layer", np.shape(_first_input(call))[:-1] + params[weight][:1])
    return [linear.generic(xp, _x(xp, _first_input(call)), _p(call, xp, weight), None if bias is None else _p(call, xp, bias))]


_EPS_ATTRIBUTES = ("eps", "variance_epsilon", "epsilon", "norm_eps")
#: the eps values the DiT code bases state (the alternatives tried to explain a norm's mismatch)
_EPS_CANDIDATES = (1e-6, 1e-5)
#: what else a norm stating no eps may use: torch's F.rms_norm / nn.RMSNorm default finfo(dtype).eps (None here,
#: resolved per call), 1e-8, 0 (F.normalize's clamp at 1e-12 on the norm), and the eps its rows solve for
_UNSTATED_EPS = (*_EPS_CANDIDATES, None, 1e-8, 0.0)
#: the largest eps a norm's rows may solve for and still be an identity: the code bases use 1e-8 .. 1e-5 (and torch's
#: finfo eps); a norm whose rows fit eps=0.5 has a hard-coded constant that is a finding, not a convention
_MAX_PLAUSIBLE_EPS = 1e-4


def _declared_eps(module: nn.Module) -> float | None:
    """The eps a module states as an attribute (None when it lives only in its forward, as in Flux's RMSNorm)."""
    return next((float(getattr(module, a)) for a in _EPS_ATTRIBUTES if _is_number(getattr(module, a, None))), None)


def _states_no_eps(module: nn.Module) -> bool:
    """A norm of the user's code whose eps lives only in its forward (torch's nn.RMSNorm(eps=None) states finfo)."""
    return _declared_eps(module) is None and not type(module).__module__.startswith(("torch.", "diffusers.", "timm."))


def _finfo_eps(call: RecordedCall) -> float:
    dtype = call.output_dtypes[0] if call.output_dtypes else torch.float32
    return float(torch.finfo(dtype if dtype.is_floating_point else torch.float32).eps)


def _unit_offset_gain(module: nn.Module) -> bool:
    """lucidrains' RMSNorm: one 1-D parameter ``gamma`` (initialised to zeros) used as the gain 1 + gamma."""
    return list(_direct_parameters(module)) == ["gamma"]


def _unstated_eps_values(call: RecordedCall, rms: bool) -> list[float]:
    """The eps identities of a norm stating none: the usual values, finfo(dtype).eps, 1e-8, 0 and, for an RMS norm,
    the eps its recorded rows solve for (when in (0, _MAX_PLAUSIBLE_EPS]: a larger solved value is no code base's
    eps but a finding)."""
    values = [(_finfo_eps(call) if eps is None else eps) for eps in _UNSTATED_EPS]
    if rms:
        solved = _rows_eps(call)
        if math.isfinite(solved) and 0 < solved <= _MAX_PLAUSIBLE_EPS:
            values.append(solved)
    return list(dict.fromkeys(values))


def _norm_vectors(call: RecordedCall, unit_offset: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(gain, bias) of a norm recognised by its 1-D parameters (the gain 1 + gamma for a unit-offset one)."""
    params = list(_direct_parameters(call.module))
    weight = np.asarray(call.param(params[0]), dtype=np.float64)
    bias = np.asarray(call.param(params[1]), dtype=np.float64) if len(params) > 1 else None
    return (1 + weight if unit_offset else weight), bias


def _rows_eps(call: RecordedCall) -> float:
    """The eps an RMS norm's recorded rows solve for (see _rms_eps_estimate), weighted for rows near 1e-6."""
    weight, bias = _norm_vectors(call, _unit_offset_gain(call.module))
    x = np.asarray(_first_input(call), dtype=np.float64)
    if np.shape(call.outputs[0]) != np.shape(x):
        return math.nan
    return _rms_eps_estimate(x, call.outputs[0], weight, bias, _EPS_CANDIDATES[0])[0]


def _shape_norm_knobs(call: RecordedCall) -> dict[str, Any]:
    eps = _declared_eps(call.module)
    return {"kind": "layer", "eps": _EPS_CANDIDATES[0] if eps is None else eps}


def _shape_norm_identities(call: RecordedCall) -> list[dict[str, Any]]:
    """LayerNorm then RMSNorm at the stated eps; a norm stating none: also every _unstated_eps_values and, for
    lucidrains' ``gamma``, the unit-offset RMS gain."""
    eps = _declared_eps(call.module)
    if eps is not None:
        return [{"kind": "rms", "eps": eps}]
    identities = [{"kind": "layer", "eps": e} for e in _EPS_CANDIDATES] + \
        [{"kind": "rms", "eps": e} for e in _unstated_eps_values(call, rms=True)]
    if _unit_offset_gain(call.module):
        identities += [{**identity, "unit_offset": True} for identity in identities if identity["kind"] == "rms"]
    return identities[1:]


def _shape_norm_refuted(call: RecordedCall) -> str:
    if not _states_no_eps(call.module):
        return ""
    return "its parameter shapes suggest a norm, but it states no eps and no LayerNorm or RMSNorm with eps " + \
        ", ".join(f"{e:.3g}" for e in _unstated_eps_values(call, rms=True)) + \
        (" (nor the unit-offset gain 1 + gamma)" if _unit_offset_gain(call.module) else "") + " reproduces it"


def _eval_shape_norm(call: RecordedCall, xp: Precision, knobs: Mapping[str, Any]) -> list[Any]:
    """A leaf with one or two 1-D parameters of the feature width: LayerNorm or RMSNorm over the last axis (the gain
    1 + gamma for ``unit_offset``)."""
    params = list(_direct_parameters(call.module))
    weight = _p(call, xp, params[0])
    if knobs.get("unit_offset"):
        weight = 1 + weight
    bias = _p(call, xp, params[1]) if len(params) > 1 else None
    _refute_shape_guess(call, "norm", np.shape(_first_input(call)))
    x = _x(xp, _first_input(call))
    if knobs["kind"] == "layer":
        return [layer_norm.generic(xp, x, weight, bias, knobs["eps"])]
    return [C.rms_norm.generic(xp, x, weight, bias, knobs["eps"])]


def _rms_eps_estimate(x: np.ndarray, y: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                      weighting_eps: float) -> tuple[float, float, int]:
    """(eps, smallest mean(x^2), rows used) solved from an RMS norm's rows y = x w / sqrt(mean(x^2) + eps) (+ b).

    Per row, the least-squares factor c = sum((y - b) a) / sum(a^2) of a = x w estimates 1 / sqrt(m + eps), m the
    row's exact mean(x^2), so 1 / c^2 - m estimates eps; its rounding error grows with m + eps, so the rows are
    pooled weighted by 1 / (m + weighting_eps)^2: rows whose mean(x^2) is small enough for eps to matter dominate.
    """
    width = np.shape(x)[-1]
    x, y = np.reshape(x, (-1, width)), np.reshape(np.asarray(y, dtype=np.float64), (-1, width))
    if bias is not None:
        y = y - bias
    scaled = x * weight
    squares = np.sum(scaled * scaled, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.sum(y * scaled, axis=-1) / squares
    usable = (squares > 0) & np.isfinite(factor) & (factor > 0)
    if not np.any(usable):
        return math.nan, math.inf, 0
    mean_square = np.mean(x * x, axis=-1)[usable]
    weights = 1 / (mean_square + weighting_eps) ** 2
    estimates = 1 / factor[usable] ** 2 - mean_square
    return float(np.sum(weights * estimates) / np.sum(weights)), float(np.min(mean_square)), int(np.sum(usable))


def _solved_eps(call: RecordedCall, knobs: Mapping[str, Any], inside_fmt: str) -> tuple[float, float, float, int]:
    """(eps, its uncertainty, smallest mean(x^2), rows) an RMS norm's recorded call is consistent with.

    The uncertainty is derived as the engine's tolerances are: the same estimator run on the naive reference (the
    norm under ``knobs`` evaluated in ``inside_fmt``, every summation order and torch's kernels) misses the eps it was
    evaluated with by at most some amount; twice the worst of those, and at least the effect of 4 ulps of the row
    factor on the row with the smallest mean(x^2), is the uncertainty of the recorded call's estimate.
    """
    x = np.asarray(_first_input(call), dtype=np.float64)
    weight, bias = _norm_vectors(call, bool(knobs.get("unit_offset")))
    estimate = functools.partial(_rms_eps_estimate, x, weight=weight, bias=bias,
                                 weighting_eps=max(knobs["eps"], _EPS_CANDIDATES[0]))
    solved, smallest, rows = estimate(call.outputs[0])
    naive_miss = 0.0
    for xp in naive_precisions(inside_fmt):
        naive, _, _ = estimate(np.asarray(_eval_shape_norm(call, xp, knobs)[0], dtype=np.float64))
        naive_miss = max(naive_miss, abs(naive - knobs["eps"]))
    floor = 8 * format_named(inside_fmt).unit_roundoff * (smallest + knobs["eps"])
    return solved, max(2 * naive_miss, floor), smallest, rows


def _shape_norm_remark(call: RecordedCall, knobs: Mapping[str, Any], conforms: Callable[[Mapping[str, Any]], bool],
                       inside_fmt: str) -> str:
    """For a norm whose eps lives only in its forward (it passed under one of its eps identities): which of the usual
    eps conform (both: the tolerance cannot tell an eps bug; neither: the eps that does) and, for an RMS norm, the eps
    its recorded rows are consistent with (see _solved_eps). The module states no eps to hold it to."""
    if _declared_eps(call.module) is not None:
        return ""
    passing = [eps for eps in _EPS_CANDIDATES if eps == knobs["eps"] or conforms({"eps": eps})]
    named = " and ".join(f"{eps:g}" for eps in _EPS_CANDIDATES)
    neither = " nor ".join(f"{eps:g}" for eps in _EPS_CANDIDATES)
    note = "eps stated nowhere on the module: " + \
        (f"both {named} conform" if len(passing) > 1 else f"of {named}, only {passing[0]:g} conforms" if passing else
         f"neither {neither} conforms, eps={knobs['eps']:.3g} does" +
         (" (torch's default: finfo(dtype).eps)" if knobs["eps"] == _finfo_eps(call) else ""))
    if knobs.get("unit_offset"):
        note += "; its gain is 1 + gamma (a unit-offset RMSNorm, as lucidrains' code writes it)"
    if knobs["kind"] != "rms":
        return note + " (eps is solved for from the rows of an RMS norm only)"
    solved, uncertainty, smallest, rows = _solved_eps(call, knobs, inside_fmt)
    if not rows or not math.isfinite(solved):
        return note + "; eps cannot be solved for from the recorded rows"
    inside = [eps for eps in _EPS_CANDIDATES if abs(eps - solved) <= uncertainty]
    verdict = "consistent with " + (" and ".join(f"{e:g}" for e in inside) if len(inside) > 1 else
                                    f"{inside[0]:g} only" if inside else f"neither {neither}")
    return note + f"; the recorded rows give eps = {solved:.3g} +- {uncertainty:.2g} ({verdict}; {rows} rows at " \
        f"{inside_fmt}'s rounding, smallest mean(x^2) {smallest:.3g})"


def _is_flux_rms_norm(module: nn.Module) -> bool:
    """Flux's RMSNorm: exactly one 1-D parameter ``scale``, no child, no buffer, no eps attribute, forward(x)."""
    params = _direct_parameters(module)
    return list(params) == ["scale"] and len(params["scale"]) == 1 and not any(True for _ in module.children()) and \
        _only_tensor_attributes(module, {"scale"}) and _declared_eps(module) is None and \
        _forward_parameters(module) == ["x"]


def _flux_rms_identities(call: RecordedCall) -> list[dict[str, Any]]:
    return [{"kind": "rms", "eps": e} for e in _unstated_eps_values(call, rms=True)][1:]


def _shape_component(module: nn.Module) -> Component | None:
    """Recognition by parameter shapes, for leaves of unknown classes (forks that rename everything).

    A leaf whose only parameters are a 2-D weight [out, in] and an optional bias [out] is a linear layer; a
    leaf whose parameters are one or two 1-D vectors of the same width is a LayerNorm or an RMSNorm (tried in
    that order, eps from an eps-like attribute or 1e-6 / 1e-5): the first identity that conforms names it.
    """
    if any(True for _ in module.children()) or type(module).__module__.startswith(("torch.", "diffusers.", "timm.")):
        return None  # known libraries' unlisted classes (GroupNorm, ...) are not guessed at
    params = _direct_parameters(module)
    shapes = list(params.values())
    if 1 <= len(shapes) <= 2 and len(shapes[0]) == 2 and all(len(s) == 1 and s[0] == shapes[0][0] for s in shapes[1:]):
        return _REGISTRY["shape.Linear"]
    if 1 <= len(shapes) <= 2 and all(len(s) == 1 and s == shapes[0] for s in shapes):
        return _REGISTRY["shape.Norm"]
    return None


def _ln_knobs(call: RecordedCall) -> dict[str, Any]:
    return {"eps": float(call.module.eps), "affine": call.module.weight is not None}


def _ln_alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
    alternatives: dict[str, Sequence[Any]] = {"eps": _other(float(call.module.eps), _EPS_CANDIDATES)}
    if call.module.weight is not None:
        alternatives["affine"] = [False]
    return alternatives


def _rms_knobs(call: RecordedCall) -> dict[str, Any]:
    dtype = call.output_dtypes[0] if call.output_dtypes else None
    return {"eps": _norm_eps(call.module, dtype), "variance_format": None}


def _rms_alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
    eps = _rms_knobs(call)["eps"]
    return {"eps": _other(eps, _EPS_CANDIDATES), "variance_format": ["float32", "bfloat16", "float16"]}


def _adaln_alternatives(suffixes: Sequence[str], default: tuple[str, ...]) -> Callable[[RecordedCall], dict]:
    def alternatives(call: RecordedCall) -> dict[str, Sequence[Any]]:
        orders = [o for o in _triple_orders(suffixes) if o[:len(default)] != default]
        eps = float(call.module.norm.eps)
        return {"order": orders, "eps": _other(eps, _EPS_CANDIDATES)}
    return alternatives


_MLP_SUFFIXES = ("msa", "mlp")
def _shift_scale_final_layer(description: str, evaluate: Evaluate) -> Component:
    """A final layer modulating with (shift, scale) chunks before its ``linear`` (the original DiT's, PixArt's)."""
    return Component(description, evaluate, lambda call: {"order": ("shift", "scale")}, _t2i_final_order,
                     observed=_projection_inputs_or_outputs("linear"))


def _six_chunk_block(description: str, evaluate: Evaluate, observed: Callable[[RecordedCall], list[np.ndarray]]
                     ) -> Component:
    """A block whose six modulation chunks (shift, scale, gate per branch) may be read in another order, in one
    branch or both (the original DiT's, PixArt's)."""
    return Component(description, evaluate, _block_order_knobs, _block_order_alternatives,
                     overlapping=_BLOCK_ORDER_OVERLAPS, observed=observed)


def _computed_narrow(call: RecordedCall) -> bool:
    """Whether the call, in a float64 run, actually produced a float32 (or narrower) tensor: HunyuanDiT's
    FP32_Layernorm and FP32_SiLU, LLaMA's RMSNorm on x.float(), Open-Sora's Attention casting its logits to float32 for
    the softmax. Such a call is a float32 island, as diffusers' FP32LayerNorm / FP32SiLU are, held to float32's
    tolerance and reported on its own line. Recorded while the model ran (_NarrowFloatWatch), never read from the
    source: a comment or a branch not taken that mentions float32 computes nothing in it."""
    return call.computed_narrow


_REGISTRY: dict[str, Component] = {
    # plain torch.nn
    "Linear": Component("linear", _eval_linear, apriori=_linear_apriori),
    "LayerNorm": Component("layer norm", _eval_layer_norm, _ln_knobs, _ln_alternatives,
                           float32_inside=_computed_narrow),
    "FP32LayerNorm": Component("layer norm (float32)", _eval_layer_norm, _ln_knobs, _ln_alternatives,
                               float32_inside=lambda call: True),
    "RMSNorm": Component("RMS norm", _eval_rms_norm, _rms_knobs, _rms_alternatives,
                         float32_inside=lambda call: type(call.module).__module__.startswith("diffusers")
                         or _computed_narrow(call),  # LLaMA's / Lumina's: self._norm(x.float()).type_as(x)
                         # a fork's RMSNorm stating no eps (F.rms_norm(x, shape, w): torch's default) tries every eps
                         identities=lambda call: [{"eps": e, "variance_format": None} for e in _unstated_eps_values(
                             call, rms=True)[1:]] if _states_no_eps(call.module) else [],
                         remark=lambda call, knobs, conforms, fmt: f"eps stated nowhere on the module: "
                         f"eps={knobs['eps']:.3g} fits" if _states_no_eps(call.module) else ""),
    "GELU": Component("activation", _eval_activation,
                      lambda call: {"activation": _activation_name(call.module)},
                      lambda call: {"activation": _other(_activation_name(call.module), _GELU_NAMES)},
                      float32_inside=_computed_narrow),
    "SiLU": Component("activation", _eval_activation, lambda call: {"activation": "silu"},
                      float32_inside=_computed_narrow),
    "FP32SiLU": Component("activation (float32)", _eval_activation, lambda call: {"activation": "silu"},
                          float32_inside=lambda call: True),
    "ReLU": Component("activation", _eval_activation, lambda call: {"activation": "relu"}),
    "Embedding": Component("embedding", _eval_embedding),
    "Conv2d": Component("patch convolution", _eval_conv, apriori=_conv_apriori),
    "Conv3d": Component("patch convolution", _eval_conv, apriori=_conv_apriori),
    # diffusers
    "diffusers.GELU": Component("projection + GELU", _eval_proj_activation,
                                lambda call: _proj_activation_knobs(call.module),
                                lambda call: _proj_activation_alternatives(_proj_activation_knobs(call.module))),
    "GEGLU": Component("GEGLU", _eval_proj_activation, lambda call: _proj_activation_knobs(call.module),
                       lambda call: _proj_activation_alternatives(_proj_activation_knobs(call.module))),
    "SwiGLU": Component("SwiGLU", _eval_proj_activation, lambda call: _proj_activation_knobs(call.module),
                        lambda call: _proj_activation_alternatives(_proj_activation_knobs(call.module))),
    "ApproximateGELU": Component("sigmoid(1.702x) GELU", _eval_proj_activation,
                                 lambda call: _proj_activation_knobs(call.module),
                                 lambda call: _proj_activation_alternatives(_proj_activation_knobs(call.module))),
    "LinearActivation": Component("projection + activation", _eval_proj_activation,
                                  lambda call: _proj_activation_knobs(call.module),
                                  lambda call: _proj_activation_alternatives(_proj_activation_knobs(call.module))),
    "FeedForward": Component("feed-forward", _eval_feed_forward,
                             lambda call: _proj_activation_knobs(call.module.net[0]),
                             lambda call: _proj_activation_alternatives(_proj_activation_knobs(call.module.net[0]))),
    "Timesteps": Component("timestep sinusoid", _eval_timesteps, _timesteps_knobs,
                           lambda call: {"flip_sin_to_cos": [not call.module.flip_sin_to_cos],
                                         "downscale_freq_shift": _other(float(call.module.downscale_freq_shift),
                                                                        (0.0, 1.0)),
                                         "time_scale": _other(float(getattr(call.module, "scale", 1)), (1.0, 1000.0))},
                           apriori=_timesteps_apriori, apriori_label="first-order"),
    "TimestepEmbedding": Component("timestep MLP", _eval_two_linear("linear_1", "act", "linear_2"),
                                   _two_linear_knobs("act")),
    "PixArtAlphaTextProjection": Component("caption projection", _eval_two_linear("linear_1", "act_1", "linear_2"),
                                           _two_linear_knobs("act_1"),
                                           lambda call: {"activation": _other(_activation_name(call.module.act_1),
                                                                              _GELU_NAMES)}),
    "PatchEmbed": Component("patch embedding + sin-cos table", _eval_patch_embed,
                            float32_inside=lambda call: True),  # its table is computed, then stored .float()
    "AdaLayerNormZero": Component(
        "adaLN-Zero", _eval_adaln_zero,
        lambda call: {"order": C.ADALN_ZERO_ORDER, "eps": float(call.module.norm.eps)},
        _adaln_alternatives(_MLP_SUFFIXES, C.ADALN_ZERO_ORDER)),
    "AdaLayerNormZeroSingle": Component(
        "adaLN-Zero (single)", _eval_adaln_zero_single,
        lambda call: {"order": C.ADALN_ZERO_SINGLE_ORDER, "eps": float(call.module.norm.eps)},
        _adaln_alternatives(("msa",), C.ADALN_ZERO_SINGLE_ORDER)),
    "AdaLayerNormContinuous": Component(
        "adaLN (continuous)", _eval_adaln_continuous,
        lambda call: {"order": C.ADALN_CONTINUOUS_ORDER, "eps": float(call.module.norm.eps)},
        lambda call: {"order": [("shift", "scale")], "eps": _other(float(call.module.norm.eps), _EPS_CANDIDATES)}),
    "AdaLayerNormSingle": Component("adaLN-single", _eval_adaln_single, observed=_observed_adaln_single),
    "BasicTransformerBlock": Component("transformer block (adaLN-Zero / adaLN-single glue)", _eval_basic_block,
                                       _block_knobs, _block_alternatives, overlapping=_BLOCK_ORDER_OVERLAPS,
                                       observed=_observed_basic_block),
    "JointTransformerBlock": Component("dual-stream block glue (SD3)", _eval_dual_stream_block,
                                       observed=_observed_dual_stream_block),
    "FluxTransformerBlock": Component("dual-stream block glue (Flux)", _eval_dual_stream_block,
                                      observed=_observed_dual_stream_block),
    "FluxSingleTransformerBlock": Component("single-stream block glue (Flux)", _eval_flux_single_block,
                                            observed=_observed_flux_single_block),
    "LabelEmbedding": Component("class embedding", _eval_label_embedding, lambda call: {"null_offset": 0},
                                lambda call: {"null_offset": [-1]}),
    "PixArtAlphaCombinedTimestepSizeEmbeddings": Component(
        "t embedding (PixArt, with the resolution / aspect-ratio conditions)", _eval_pixart_combined,
        lambda call: {"embedders": ("resolution_embedder", "aspect_ratio_embedder"),
                      "resolution_order": "height, width"},
        lambda call: {"embedders": [("aspect_ratio_embedder", "resolution_embedder")],
                      "resolution_order": ["width, height"]},
        observed=_observed_pixart_combined),
    "CombinedTimestepLabelEmbeddings": Component("t + label embedding", _eval_sum_of_children(
        "timestep_embedder", "class_embedder")),
    "CombinedTimestepTextProjEmbeddings": Component("t + pooled text embedding", _eval_sum_of_children(
        "timestep_embedder", "text_embedder")),
    "CombinedTimestepGuidanceTextProjEmbeddings": Component("t + guidance + pooled text", _eval_sum_of_children(
        "timestep_embedder", "guidance_embedder", "text_embedder")),
    "Attention": Component("attention", _eval_diffusers_attention, _attention_knobs, _attention_alternatives,
                           naive_variants=lambda call: [] if "kernel" in _attention_knobs(call) else
                           [{"_prescale": False}],
                           observed=_attention_observed, float32_inside=_applies_rope),
    "WanAttention": Component("attention (Wan)", _eval_wan_attention, _attention_knobs, _attention_alternatives,
                              naive_variants=lambda call: [{"_prescale": False}],
                              observed=_projection_inputs_or_outputs("to_out")),
    "MochiAttention": Component("attention (Mochi: valid prompt tokens only)", _eval_mochi_attention, _attention_knobs,
                                _attention_alternatives, naive_variants=lambda call: [{"_prescale": False}],
                                observed=_projection_inputs_or_outputs("to_out", "to_add_out"),
                                float32_inside=lambda call: call.arg("image_rotary_emb") is not None),
    "MochiRMSNorm": Component("RMS norm (Mochi: float32 variance)", _eval_rms_norm, _rms_knobs, _rms_alternatives,
                              float32_inside=lambda call: True),
    "LTXAttention": Component("attention (LTX-Video)", _eval_ltx_attention, _attention_knobs, _attention_alternatives,
                              naive_variants=lambda call: [{"_prescale": False}],
                              observed=_projection_inputs_or_outputs("to_out"), float32_inside=_applies_rope),
    "LTXVideoTransformerBlock": Component("LTX block glue (scale-shift table, gates, residuals)", _eval_ltx_block,
                                          _block_order_knobs, _block_order_alternatives,
                                          overlapping=_BLOCK_ORDER_OVERLAPS, observed=_observed_ltx_block),
    "HunyuanVideoTransformerBlock": Component("dual-stream block glue (HunyuanVideo)", _eval_hunyuan_video_block,
                                              observed=_observed_dual_stream_block),
    "HunyuanVideoSingleTransformerBlock": Component(
        "single-stream block glue (HunyuanVideo)", _eval_hunyuan_video_single_block,
        lambda call: {"token_order": "image-first"}, lambda call: {"token_order": ["text-first"]},
        observed=_observed_hunyuan_video_single_block),
    "AuraFlowJointTransformerBlock": Component(
        "dual-stream block glue (AuraFlow)", _eval_aura_block, lambda call: {"mlp_residual": "block-input"},
        lambda call: {"mlp_residual": ["after-attention"]}, observed=_observed_aura_block),
    "AuraFlowSingleTransformerBlock": Component(
        "block glue (AuraFlow)", _eval_aura_block, lambda call: {"mlp_residual": "block-input"},
        lambda call: {"mlp_residual": ["after-attention"]}, observed=_observed_aura_block),
    "AuraFlowFeedForward": Component(
        "gated feed-forward (AuraFlow)", _eval_aura_feed_forward, lambda call: {"gate": "linear_1"},
        lambda call: {"gate": ["linear_2"]},
        observed=lambda call: [_first_array(_needed_children(call, ["out_projection"])["out_projection"].kept_inputs)]),
    "Lumina2TransformerBlock": Component(
        "block glue (Lumina2: sandwich norms, tanh gates)", _eval_lumina2_block,
        lambda call: {"gate_activation": "tanh"}, lambda call: {"gate_activation": ["identity"]},
        observed=_observed_lumina2_block),
    "LuminaRMSNormZero": Component(
        "RMS adaLN-Zero (Lumina)", _eval_lumina_norm_zero, lambda call: {"order": _LUMINA_NORM_ORDER, "eps": 1e-5},
        lambda call: {"order": [tuple(p) for p in itertools.permutations(_LUMINA_NORM_ORDER)
                                if tuple(p) != _LUMINA_NORM_ORDER]}),
    "LuminaFeedForward": Component(
        "gated feed-forward (Lumina)", _eval_lumina_feed_forward, lambda call: {"gate": "linear_1"},
        lambda call: {"gate": ["linear_3"]},
        observed=lambda call: [_first_array(_needed_children(call, ["linear_2"])["linear_2"].kept_inputs)]),
    "HunyuanDiTBlock": Component("block glue (HunyuanDiT: long skips, residuals)", _eval_hunyuan_dit_block,
                                 lambda call: {"skip_order": "hidden-first"},
                                 lambda call: {"skip_order": ["skip-first"]}, observed=_observed_hunyuan_dit_block),
    "AdaLayerNormShift": Component("adaLN shift (HunyuanDiT)", _eval_adaln_shift),
    "AllegroTransformerBlock": Component("Allegro block glue (scale-shift table, gates, residuals)",
                                         _eval_allegro_block, _block_order_knobs, _block_order_alternatives,
                                         overlapping=_BLOCK_ORDER_OVERLAPS,
                                         observed=_observed_sana_block),
    "MochiTransformerBlock": Component(
        "block glue (Mochi: modulated sandwich norms, tanh gates)", _eval_mochi_block,
        lambda call: {"gate_activation": "tanh"}, lambda call: {"gate_activation": ["identity"]},
        observed=_observed_mochi_block, float32_inside=lambda call: True),  # 1 + scale_mlp.to(torch.float32)
    "MochiModulatedRMSNorm": Component("modulated RMS norm (Mochi)", _eval_mochi_modulated_norm,
                                       float32_inside=lambda call: True),
    "MochiRMSNormZero": Component(
        "RMS adaLN-Zero (Mochi)", _eval_mochi_norm_zero, lambda call: {"order": _LUMINA_NORM_ORDER, "eps": 1e-5},
        lambda call: {"order": [tuple(p) for p in itertools.permutations(_LUMINA_NORM_ORDER)
                                if tuple(p) != _LUMINA_NORM_ORDER]}, float32_inside=lambda call: True),
    "MochiLayerNormContinuous": Component(
        "continuous norm (Mochi)", _eval_mochi_norm_continuous,
        observed=lambda call: [_needed_children(call, ["norm"])["norm"].kept_inputs["scale"]],
        float32_inside=lambda call: True),  # 1 + scale.to(torch.float32)
    "HunyuanVideoPatchEmbed": Component("patch embedding (HunyuanVideo)", _eval_hunyuan_video_patch_embed),
    "HunyuanVideoAdaNorm": Component("gates (HunyuanVideo refiner)", _eval_hunyuan_video_ada_norm,
                                     lambda call: {"order": ("gate_msa", "gate_mlp")},
                                     lambda call: {"order": [("gate_mlp", "gate_msa")]}),
    "HunyuanVideoIndividualTokenRefinerBlock": Component(
        "token refiner block glue (HunyuanVideo)", _eval_hunyuan_video_refiner_block,
        observed=lambda call: [_first_array(_needed_children(call, ["norm2"])["norm2"].kept_inputs), call.outputs[0]]),
    "WanTransformerBlock": Component("Wan block glue (scale-shift table, gates, residuals)", _eval_wan_block,
                                     _block_order_knobs, _block_order_alternatives,
                                     overlapping=_BLOCK_ORDER_OVERLAPS, observed=_observed_wan_block,
                                     float32_inside=lambda call: True),
    "WanRotaryPosEmbed": Component("RoPE tables (Wan, 3-D)", _eval_wan_rope, _wan_rope_knobs, _wan_rope_alternatives,
                                   float32_inside=lambda call: True),  # tables computed, then stored .float()
    "LTXVideoRotaryPosEmbed": Component(
        "RoPE tables (LTX-Video)", _eval_ltx_rope, lambda call: {"theta": float(call.module.theta), "pairing": "interleaved"},
        lambda call: {"theta": _other(float(call.module.theta), (10000.0, 256.0)), "pairing": ["half"]},
        float32_inside=lambda call: True),
    "HunyuanVideoRotaryPosEmbed": Component(
        "RoPE tables (HunyuanVideo, 3-D)", _eval_hunyuan_video_rope, _hunyuan_video_rope_knobs,
        _hunyuan_video_rope_alternatives, float32_inside=lambda call: True),
    "WanTimeTextImageEmbedding": Component("Wan condition embedder wiring", _eval_wan_condition,
                                           observed=_WAN_CONDITION_OBSERVED),
    "SanaTransformerBlock": Component("Sana block glue (scale-shift table, gates, residuals)", _eval_sana_block,
                                      _block_order_knobs, _block_order_alternatives,
                                      overlapping=_BLOCK_ORDER_OVERLAPS, observed=_observed_sana_block),
    "GLUMBConv": Component("GLUMBConv gate", _eval_glumbconv, lambda call: {"gate_first": False},
                           lambda call: {"gate_first": [True]}, observed=_observed_glumbconv),
    "SanaModulatedNorm": Component("modulated norm (Sana)", _eval_sana_modulated_norm,
                                   lambda call: {"order": ("shift", "scale")},
                                   lambda call: {"order": [("scale", "shift")]}),
    "CogVideoXLayerNormZero": Component(
        "adaLN-Zero (CogVideoX, two streams)", _eval_cogvideox_norm_zero, lambda call: {"order": _COGVIDEOX_ORDER},
        lambda call: {"order": [o for o in _group_orders(("", "enc_")) if o != _COGVIDEOX_ORDER]}),
    "CogVideoXBlock": Component("CogVideoX block glue (gates, residuals, [text, image] feed-forward)",
                                _eval_cogvideox_block, lambda call: {"token_order": "text-first",
                                                                     "split_order": "text-first"},
                                lambda call: {"token_order": ["image-first"], "split_order": ["image-first"]},
                                observed=_observed_cogvideox_block),
    "AdaLayerNorm": Component("adaLN (chunk_dim 1)", _eval_ada_layer_norm, lambda call: {"order": ("shift", "scale")},
                              lambda call: {"order": [("scale", "shift")]}),
    "SD35AdaLayerNormZeroX": Component(
        "adaLN-Zero (SD3.5 dual attention)", _eval_sd35_adaln_x, lambda call: {"order": C.SD35_ADALN_ZERO_X_ORDER},
        lambda call: {"order": [o for o in _per_group_orders(("msa", "mlp", "msa2")) if o != C.SD35_ADALN_ZERO_X_ORDER]}),
    "WanTransformer3DModel": Component("Wan model glue (token layout, block wiring, output modulation, unpatchify)",
                                       _eval_wan_model, lambda call: {"order": ("shift", "scale")},
                                       lambda call: {"order": [("scale", "shift")]}, observed=_observed_wan_model,
                                       float32_inside=lambda call: True),
    "PixArtTransformer2DModel": Component(
        "PixArt model glue (caption mask bias, block wiring, final modulation, unpatchify)", _eval_pixart_model,
        lambda call: {"order": ("shift", "scale"), "mask_bias": -10000.0},
        lambda call: {"order": [("scale", "shift")], "mask_bias": [10000.0]}, observed=_observed_pixart_model),
    "SD3Transformer2DModel": Component(
        "SD3 model glue (timestep as given, block wiring, unpatchify)", _eval_sd3_model,
        lambda call: {"timestep_scale": 1.0}, lambda call: {"timestep_scale": [1000.0]}, observed=_observed_sd3_model),
    "CogVideoXPatchEmbed": Component(
        "patch embedding (CogVideoX: [text, image] tokens, sin-cos table)", _eval_cogvideox_patch_embed,
        lambda call: {"token_order": "text-first", "positional_table": True},
        lambda call: {"token_order": ["image-first"], "positional_table": [False]},
        # diffusers builds the table from float32 grid positions (torch.arange(..., float32) / scale)
        float32_inside=lambda call: bool(call.module.use_positional_embeddings)),
    "CogVideoXTransformer3DModel": Component("CogVideoX model glue (stream split, block wiring, unpatchify)",
                                             _eval_cogvideox_model, observed=_observed_cogvideox_model),
    "SanaTransformer2DModel": Component(
        "Sana model glue (caption mask bias, block wiring, final norm inputs, unpatchify)", _eval_sana_model,
        lambda call: {"mask_bias": -10000.0}, lambda call: {"mask_bias": [10000.0]}, observed=_observed_sana_model),
    "FluxTransformer2DModel": Component("Flux conditioning (timestep and guidance x 1000)", _eval_flux_model,
                                        lambda call: {"timestep_scale": 1000.0, "guidance_scale": 1000.0},
                                        lambda call: {"timestep_scale": [1.0], "guidance_scale": [1.0]},
                                        observed=_observed_flux_model),
    "FluxAttention": Component("attention", _eval_diffusers_attention, _attention_knobs, _attention_alternatives,
                               naive_variants=lambda call: [{"_prescale": False}],
                               observed=_projection_inputs_or_outputs("to_out", "to_add_out"),
                               float32_inside=_applies_rope),
    "FluxPosEmbed": Component("RoPE tables", _eval_flux_pos_embed, lambda call: {"pairing": "interleaved"},
                              lambda call: {"pairing": ["half"]}),
    # timm / the original DiT layout (recognised by structure: timm needs torchvision to import)
    "timm.Attention": Component("attention (qkv)", _eval_timm_attention, lambda call: {"scale": "1/sqrt(head_dim)"},
                                lambda call: {"scale": ["1/head_dim", "1"]},
                                observed=_projection_inputs_or_outputs("proj"),
                                naive_variants=lambda call: [{"_prescale": False}], float32_inside=_computed_narrow),
    "shape.Linear": Component("linear (by parameter shapes)", _eval_shape_linear, lambda call: {},
                              guess="parameter shapes"),
    "shape.Norm": Component("norm (by parameter shapes)", _eval_shape_norm, _shape_norm_knobs,
                            lambda call: {"eps": _other(_shape_norm_knobs(call)["eps"], _EPS_CANDIDATES)},
                            identities=_shape_norm_identities, remark=_shape_norm_remark, guess="parameter shapes",
                            refuted_unless_fits=_shape_norm_refuted,
                            # an unknown norm may upcast by design (Flux's RMSNorm computes x.float()): in a float64
                            # run where it did, within float32's tolerance is a float32 island, not a mismatch
                            float32_inside=_computed_narrow),
    "timm.PatchEmbed": Component("patch embedding (timm)", _eval_timm_patch_embed),
    "dit.TimestepEmbedder": Component(
        "timestep embedder (DiT)", _eval_dit_timestep_embedder, _dit_timestep_knobs,
        lambda call: {"flip_sin_to_cos": [not _dit_timestep_knobs(call)["flip_sin_to_cos"]],
                      "downscale_freq_shift": _other(_dit_timestep_knobs(call)["downscale_freq_shift"], (0.0, 1.0)),
                      "time_scale": _other(_dit_timestep_knobs(call)["time_scale"], (1.0, 1000.0))},
        # the original DiT (and Z-Image's copy) builds its frequencies with dtype=torch.float32: a float32 island
        # when the run saw it do so
        float32_inside=_computed_narrow),
    "pixart.T2IFinalLayer": _shift_scale_final_layer("final layer (PixArt-alpha T2IFinalLayer: t2i_modulate)",
                                                     _eval_t2i_final_layer),
    "pixart.PixArtBlock": _six_chunk_block("block glue (PixArt-alpha PixArtBlock: adaLN-single chunks, t2i_modulate, "
                                           "gates)", _eval_pixart_block, _observed_pixart_block),
    "pixart.MultiHeadCrossAttention": Component(
        "cross-attention (PixArt-alpha: q_linear, kv_linear, block-diagonal caption mask)", _eval_cross_attention,
        lambda call: {"scale": "1/sqrt(head_dim)", "kv_order": ("k", "v"), "uncaptioned": "every key"},
        lambda call: {"scale": ["1/head_dim", "1"], "kv_order": [("v", "k")]},
        observed=_projection_inputs_or_outputs("proj"), naive_variants=lambda call: [{"_prescale": False}],
        identities=_cross_attention_identities, remark=_cross_attention_remark),
    "llama.GatedMLP": Component("gated MLP (gate_proj, up_proj, down_proj, act_fn)",
                                _eval_gated("gate_proj", "up_proj", "down_proj"),
                                lambda call: {"activation": _activation_name(call.module.act_fn),
                                              "gate_order": ("gate_proj", "up_proj")},
                                lambda call: {"activation": _other(_activation_name(call.module.act_fn),
                                                                   ("silu", *_GELU_NAMES)),
                                              "gate_order": [("up_proj", "gate_proj")]},
                                observed=_projection_inputs_or_outputs("down_proj")),
    "llama.FeedForward": Component("SwiGLU feed-forward (LLaMA's w2(silu(w1 x) w3 x): DDT, Lumina-Next)",
                                   _eval_gated("w1", "w3", "w2"),
                                   lambda call: {"activation": "silu", "gate_order": ("w1", "w3")},
                                   lambda call: {"activation": ["identity", "approximate-gelu"],
                                                 "gate_order": [("w3", "w1")]},
                                   observed=_projection_inputs_or_outputs("w2"),
                                   # no act child states the activation: GEGLU's gelu / gelu-tanh are identities too
                                   identities=lambda call: [{"activation": a, "gate_order": ("w1", "w3")}
                                                            for a in _UNSTATED_GATE_ACTIVATIONS[1:]],
                                   remark=lambda call, knobs, conforms, fmt: "activation stated nowhere on the module "
                                   f"(no act child): {knobs['activation']} fits, of "
                                   f"{', '.join(_UNSTATED_GATE_ACTIVATIONS)}"),
    "flux.RMSNorm": Component("RMS norm (by structure: Flux's RMSNorm, weight named scale, eps in its forward)",
                              _eval_shape_norm, lambda call: {"kind": "rms", "eps": _EPS_CANDIDATES[0]},
                              lambda call: {"eps": list(_EPS_CANDIDATES[1:])}, identities=_flux_rms_identities,
                              remark=_shape_norm_remark, float32_inside=_computed_narrow),
    "dit.FinalLayer": _shift_scale_final_layer("final layer (original DiT: adaLN_modulation chunks, modulate)",
                                               _eval_dit_final_layer),
    "dit.DiTBlock": _six_chunk_block("block glue (original DiT: adaLN-Zero chunks, modulate, gates, residuals)",
                                     _eval_dit_block, _observed_dit_block),
    "flux.Modulation": Component("modulation (Flux: lin(silu(vec)) chunked into ModulationOut)", _eval_flux_modulation,
                                 lambda call: {"order": _flux_modulation_order(call)},
                                 lambda call: {"order": [o for o in _triple_orders(tuple(
                                     str(g) for g in range(call.module.multiplier // 3)))
                                     if o != _flux_modulation_order(call)]},
                                 observed=_observed_flux_modulation),
    "flux.QKNorm": Component("QK-norm pair (Flux: query_norm(q), key_norm(k))", _eval_flux_qk_norm,
                             observed=_observed_flux_qk_norm),
    "flux.EmbedND": Component("RoPE rotation matrices (Flux EmbedND)", _eval_flux_embed_nd,
                              lambda call: {"theta": float(call.module.theta)},
                              lambda call: {"theta": _other(float(call.module.theta), (10000.0, 256.0))}),
    "flux.DoubleStreamBlock": Component(
        "double-stream block glue (Flux: modulation, qkv split, joint RoPE attention, gates, residuals)",
        _eval_flux_double_block, _flux_block_knobs, _flux_block_alternatives, observed=_observed_flux_double_block,
        naive_variants=lambda call: [{"_prescale": False}],
        # apply_rope computes xq.float() (and EmbedND returns float32 tables): float32 inside when it did so
        float32_inside=_computed_narrow),
    "flux.SingleStreamBlock": Component(
        "single-stream block glue (Flux: modulation, linear1 split, RoPE attention, [attention, MLP] into linear2)",
        _eval_flux_single_block_original, _flux_block_knobs, _flux_block_alternatives,
        observed=_observed_flux_single_block_original, naive_variants=lambda call: [{"_prescale": False}],
        float32_inside=_computed_narrow),
    "dit.LabelEmbedder": Component("class embedding (original DiT LabelEmbedder: table lookup, null class num_classes)",
                                   _eval_dit_label_embedder, lambda call: {"null_offset": 0, "drop_flag": 1},
                                   lambda call: {"null_offset": [-1], "drop_flag": [0]}),
    "pixart.CaptionEmbedder": Component(
        "caption embedder (PixArt-alpha CaptionEmbedder: null caption y_embedding for dropped rows, y_proj)",
        _eval_caption_embedder, lambda call: {"drop_flag": 1}, lambda call: {"drop_flag": [0]},
        observed=_observed_caption_embedder),
    "uvit.Block": Component("block glue (U-ViT: long skip [x, skip] -> skip_linear, pre-norm residuals)",
                            _eval_uvit_block, lambda call: {"skip_order": ("x", "skip")},
                            lambda call: {"skip_order": [("skip", "x")]}, observed=_observed_uvit_block),
    "flux.MLPEmbedder": Component("MLP embedder (Flux: in_layer, silu, out_layer)",
                                  _eval_linear_act_linear("in_layer", "silu", "out_layer"),
                                  lambda call: {"activation": "silu"},
                                  lambda call: {"activation": ["identity", *_GELU_NAMES]},
                                  observed=_projection_inputs_or_outputs("out_layer")),
    "timm.Mlp": Component("MLP", _eval_timm_mlp, lambda call: {"activation": _activation_name(call.module.act)},
                          lambda call: {"activation": _other(_activation_name(call.module.act), _GELU_NAMES)}),
}

#: classes recognised (registry keys without the "diffusers."/"timm." disambiguation prefix)
_SILENT = ("Dropout", "Identity", "ModuleList", "Sequential")


def recognised_classes() -> list[str]:
    """The module classes the engine recomputes (diffusers, timm-style and torch.nn), sorted."""
    return sorted(_REGISTRY)


def _component_for(module: nn.Module) -> Component | None:
    """The Component of a module: by class name (diffusers and torch.nn), by subclass, or by structure (timm)."""
    name = type(module).__name__
    origin = type(module).__module__
    if name == "GELU" and origin.startswith("diffusers"):
        return _REGISTRY["diffusers.GELU"]
    if name == "Attention" and hasattr(module, "qkv") and hasattr(module, "proj") and hasattr(module, "num_heads"):
        return _REGISTRY["timm.Attention"]
    if name == "WindowAttention" and hasattr(module, "qkv") and hasattr(module, "proj") and \
            hasattr(module, "num_heads") and not _direct_parameters(module) and not getattr(module, "use_rel_pos", True):
        return _REGISTRY["timm.Attention"]  # PixArt-alpha's, global (no relative-position tables, unlike Swin's)
    if name == "Mlp" and all(hasattr(module, a) for a in ("fc1", "act", "fc2")):
        return _REGISTRY["timm.Mlp"]
    if name == "PatchEmbed" and not origin.startswith("diffusers"):
        return _REGISTRY["timm.PatchEmbed"] if isinstance(getattr(module, "proj", None), nn.Conv2d) else None
    if _dit_frequency_dim(module) and isinstance(getattr(module, "mlp", None), nn.Sequential) and len(module.mlp) == 3:
        return _REGISTRY["dit.TimestepEmbedder"]
    if name == "Attention" and not hasattr(module, "processor"):
        return None
    if name in _REGISTRY and not _unlike_namesake(module, name):  # a registered class name first (diffusers' and
        return _REGISTRY[name]  # a fork's FluxPosEmbed returns (cos, sin), not Flux EmbedND's matrices)
    for is_it, key in ((_is_t2i_final_layer, "pixart.T2IFinalLayer"), (_is_pixart_block, "pixart.PixArtBlock"),
                       (_is_cross_attention, "pixart.MultiHeadCrossAttention"), (_is_mlp_embedder, "flux.MLPEmbedder"),
                       (_is_gated_mlp, "llama.GatedMLP"), (_is_swiglu_feed_forward, "llama.FeedForward"),
                       (_is_dit_final_layer, "dit.FinalLayer"),
                       (_is_dit_block, "dit.DiTBlock"), (_is_flux_modulation, "flux.Modulation"),
                       (_is_flux_qk_norm, "flux.QKNorm"), (_is_flux_embed_nd, "flux.EmbedND"),
                       (_is_flux_double_block, "flux.DoubleStreamBlock"), (_is_flux_single_block, "flux.SingleStreamBlock"),
                       (_is_uvit_block, "uvit.Block"), (_is_dit_label_embedder, "dit.LabelEmbedder"),
                       (_is_caption_embedder, "pixart.CaptionEmbedder"), (_is_flux_rms_norm, "flux.RMSNorm")):
        if not origin.startswith(("torch.", "diffusers.", "timm.")) and is_it(module):
            return _guessed(key)
    for base, key in ((nn.Linear, "Linear"), (nn.LayerNorm, "LayerNorm"), (nn.Conv2d, "Conv2d"),
                      (nn.Conv3d, "Conv3d"), (nn.Embedding, "Embedding"), (nn.GELU, "GELU"), (nn.SiLU, "SiLU")):
        if isinstance(module, base):
            return None if _extends_leaf(module, base) else _REGISTRY[key]
    if hasattr(nn, "RMSNorm") and isinstance(module, nn.RMSNorm):
        return None if _extends_leaf(module, nn.RMSNorm) else _REGISTRY["RMSNorm"]
    return _shape_component(module)


@functools.cache
def _guessed(key: str) -> Component:
    """The registered component ``key`` as a recognition by structure (refuted by outputs of another shape)."""
    return dataclasses.replace(_REGISTRY[key], guess="structure")


#: what the evaluation of a registered class reads from the module: a fork's class of the same name without these
#: (Flux's own RMSNorm keeps its weight as ``scale`` and hard-codes eps) is not taken for it
_NAMESAKE_ATTRIBUTES = {"RMSNorm": ("weight",), "LayerNorm": ("normalized_shape", "eps", "weight"),
                        # diffusers' FeedForward is a ``net`` list; DDT's / LLaMA's FeedForward (w1, w2, w3) is not it
                        "FeedForward": ("net",)}


#: torch leaves recognised by class name: none has a child module
_TORCH_LEAF_NAMES = ("Linear", "LayerNorm", "RMSNorm", "GELU", "SiLU", "ReLU", "Conv2d", "Conv3d", "Embedding")


def _unlike_namesake(module: nn.Module, name: str) -> bool:
    """Whether ``module`` only shares a registered class's name: from outside torch / diffusers / timm and lacking an
    attribute that class's evaluation reads (it is then recognised by parameter shapes, if at all)."""
    if type(module).__module__.startswith(("torch.", "diffusers.", "timm.")):
        return False
    if name in _TORCH_LEAF_NAMES and any(True for _ in module.children()):
        return True  # a wrapper named like a leaf (peft's LoRA ``Linear``: base_layer, lora_A, lora_B) is not that leaf
    return any(not hasattr(module, attribute) for attribute in _NAMESAKE_ATTRIBUTES.get(name, ()))


def _extends_leaf(module: nn.Module, base: type[nn.Module]) -> bool:
    """Whether a subclass of a torch leaf computes more than it: its own forward with its own submodules (Flux's LoRA
    linear adds lora_B(lora_A(x)) to the base's output) or its own tensors beyond weight and bias (loralib's Linear
    keeps lora_A / lora_B as parameters). Such a module is not checked as the leaf (that would be a false alarm); its
    submodules are checked on their own."""
    own_tensors = set(_direct_parameters(module)) | {name for name, _ in module.named_buffers(recurse=False)}
    return type(module).forward is not base.forward and \
        (any(True for _ in module.children()) or bool(own_tensors - {"weight", "bias"}))


# ----------------------------------------------------------------------------------------
# Comparison


def _differences(actual: Sequence[np.ndarray], expected: Sequence[Any]) -> list[float]:
    """max |actual - expected| per compared tensor (inf on a count or shape mismatch; NaN counts as inf)."""
    if len(actual) != len(expected):
        return [math.inf]
    worst = []
    for a, e in zip(actual, expected):
        e = np.asarray(e, dtype=np.float64)
        if np.shape(a) != np.shape(e):
            return [math.inf]
        with np.errstate(invalid="ignore"):
            d = np.abs(np.asarray(a, dtype=np.float64) - e)
        worst.append(0.0 if not d.size else math.inf if np.isnan(d).any() else float(np.max(d)))
    return worst


class TorchKernels(Native):
    """The reference evaluated with torch's own kernels in ``fmt``: matmul, sums and elementary functions by torch.

    Element-wise + - * / are correctly rounded in NumPy and torch alike; what differs between libraries is the
    summation order of products and reductions and the accuracy of exp, tanh, erf, sin, cos. A torch target is
    best compared with a naive implementation built from torch's kernels (FlashAttention's rule uses a plain
    PyTorch implementation in the same dtype), so this is one more naive baseline beside NumPy's orders.
    """

    def __init__(self, name: str = "float32"):
        super().__init__(name)
        self.torch_dtype = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}[name]
        self.name = f"torch:{name}"

    def _t(self, x: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=self.dtype)))

    def _unary(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any], Any]:
        def apply(x: Any) -> Any:
            out = fn(self._t(x)).numpy()
            return out if np.ndim(x) else self.dtype(out)
        return apply

    def __getattribute__(self, name: str) -> Any:
        functions = {"exp": torch.exp, "expm1": torch.expm1, "log": torch.log, "log1p": torch.log1p,
                     "sqrt": torch.sqrt, "erf": torch.erf, "tanh": torch.tanh, "sin": torch.sin, "cos": torch.cos}
        if name in functions:
            return object.__getattribute__(self, "_unary")(functions[name])
        return object.__getattribute__(self, name)

    def sum(self, x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Any:
        if axis is None:
            return self.dtype(torch.sum(self._t(x)).item())
        return torch.sum(self._t(x), dim=axis, keepdim=keepdims).numpy()

    def matmul(self, a: Any, b: Any) -> Any:
        return torch.matmul(self._t(a), self._t(b)).numpy()


def exact_precision(fmt: str) -> Precision:
    """A format wider than ``fmt`` for the "exact" value: float64 for float32 outputs, long double for float64 ones."""
    return Native("longdouble") if fmt == "float64" else FLOAT64


def naive_precisions(fmt: str) -> list[Precision]:
    """The naive same-dtype baselines of the tolerance rule: the reference in ``fmt`` in each of NumPy's summation
    orders, and with torch's own kernels (TorchKernels): a target's order is unknown."""
    return [Native(fmt, order) for order in SUMMATION_ORDERS] + [TorchKernels(fmt)]


def _tolerances(call: RecordedCall, spec: Component, knobs: Mapping[str, Any], fmt: str,
                exact: Sequence[np.ndarray]) -> list[Tolerance]:
    """One tolerance per compared tensor: max(2 x naive error, a-priori bound, 4 ulps of its own max |exact|).

    The naive error is that of the reference evaluated in ``fmt``, the worst over NumPy's three summation
    orders of its matrix products and torch's own kernels (TorchKernels): a target's order is unknown.
    """
    naive_errors = [0.0] * len(exact)
    for variant in [{}] + spec.naive_variants(call):
        for xp in naive_precisions(fmt):
            naive = [np.asarray(n, dtype=np.float64) for n in spec.evaluate(call, xp, {**knobs, **variant})]
            naive_errors = [max(n, d) for n, d in zip(naive_errors, _differences(naive, exact))]
    u = format_named(fmt).unit_roundoff
    apriori = None if spec.apriori is None else spec.apriori(call, u)
    return [derive_tolerance(n, apriori, float(np.max(np.abs(e), initial=0.0)), fmt, apriori_label=spec.apriori_label)
            for n, e in zip(naive_errors, exact)]


def _within(errors: Sequence[float], tolerances: Sequence[Tolerance]) -> bool:
    return len(errors) == len(tolerances) and all(e <= t.value for e, t in zip(errors, tolerances))


def _worst(errors: Sequence[float], tolerances: Sequence[Tolerance]) -> tuple[float, Tolerance | None]:
    """The (error, tolerance) of the tensor with the largest error/tolerance ratio."""
    if len(errors) != len(tolerances) or not tolerances:
        return math.inf, tolerances[0] if tolerances else None
    ratios = [e / t.value if t.value > 0 else math.inf for e, t in zip(errors, tolerances)]
    index = int(np.argmax(ratios))
    return errors[index], tolerances[index]


def _compare(call: RecordedCall, spec: Component, run_fmt: str) -> ComponentFinding:
    """Recompute one call with the reference, measure it, classify it and, if it fails, try the knobs.

    Each compared tensor has its own tolerance; the finding shows the tensor with the worst error/tolerance.
    """
    module = call.module
    finding = ComponentFinding(call.name, type(module).__name__, "conforms", location=call.name)
    dtypes = {str(d).removeprefix("torch.") for d in call.output_dtypes}
    fmt = "float64" if dtypes == {"float64"} else ("float32" if dtypes <= {"float32", "float64"} else "")
    if not fmt:
        finding.status, finding.message = "unsupported", f"outputs in {sorted(dtypes)} (float32 and float64 are modelled)"
        return finding
    finding.fmt = fmt
    try:
        actual = call.outputs if spec.observed is None else spec.observed(call)
        measured, refusals = [], []
        for identity in [spec.knobs(call)] + spec.identities(call):
            try:
                exact = _guarded_evaluate(call, spec, identity, fmt, actual)
            except Unsupported as reason:  # this identity does not fit the call; another may
                refusals.append(reason)
                continue
            errors, tolerances = _differences(actual, exact), _tolerances(call, spec, identity, fmt, exact)
            measured.append((_worst(errors, tolerances), identity, exact, errors, tolerances))
            if _within(errors, tolerances):
                break
        if not measured:
            raise refusals[0]
        (error, tolerance), knobs, exact, errors, tolerances = min(
            measured, key=lambda m: m[0][0] / m[0][1].value if m[0][1] is not None and m[0][1].value > 0 else math.inf)
        if " (by " in spec.kind:
            finding.message = f"recognised by {spec.kind.split(' (by ')[1].rstrip(')')}: {spec.kind.split(' (')[0]} " + \
                ", ".join(f"{k}={v!r}" for k, v in knobs.items())
    except NotRecognised as reason:
        finding.status, finding.message = "not-checked", str(reason)
        return finding
    except Unsupported as reason:
        finding.status, finding.message = "unsupported", str(reason)
        return finding
    finding.error, finding.tolerance = error, tolerance

    def add_remark(verdict_fmt: str) -> None:
        """The component's note on a passing call, other knob settings judged at the verdict's tolerance."""
        if spec.remark is None:
            return

        def conforms(setting: Mapping[str, Any]) -> bool:
            trial_knobs = {**knobs, **setting}
            trial = [np.asarray(v, dtype=np.float64) for v in spec.evaluate(call, exact_precision(fmt), trial_knobs)]
            return _within(_differences(actual, trial), _tolerances(call, spec, trial_knobs, verdict_fmt, trial))
        finding.remark = spec.remark(call, knobs, conforms, verdict_fmt)
        finding.message = "; ".join(filter(None, [finding.message, finding.remark]))

    if _within(errors, tolerances):
        finding.status = "precision" if fmt == "float32" and run_fmt == "float64" else "conforms"
        if finding.status == "precision":
            finding.message = "; ".join(filter(None, [finding.message, "returns float32 in a float64 run"]))
        add_remark(fmt)
        return finding
    diagnosis = tolerances
    within_float32 = False
    if fmt == "float64":  # a float32 island inside a float64 call?
        island = _tolerances(call, spec, knobs, "float32", exact)
        within_float32 = _within(errors, island)
        if within_float32 or spec.float32_inside(call):  # knobs are then judged at float32's tolerance
            diagnosis = [max(t, i, key=lambda x: x.value) for t, i in zip(tolerances, island)]
        if within_float32 and spec.float32_inside(call):
            finding.status, finding.fmt = "precision", "float32"
            finding.error, finding.tolerance = _worst(errors, island)
            finding.message = "; ".join(filter(None, [finding.message,
                                                      "computes in float32 inside a float64 run (within float32's tolerance)"]))
            add_remark("float32")
            return finding
    refuted = spec.refuted_unless_fits(call)
    if refuted:
        finding.status, finding.message = "not-checked", refuted
        finding.error = finding.tolerance = None
        return finding
    finding.status = "mismatch"
    if within_float32:
        finding.explanations.append({"compute_format": "float32"})
    exact_xp = exact_precision(fmt)

    def explains(setting: Mapping[str, Any]) -> bool:
        try:
            trial = spec.evaluate(call, exact_xp, {**knobs, **setting})
        except Exception:  # noqa: BLE001 - a knob value that does not fit this module explains nothing
            return False
        return _within(_differences(actual, trial), diagnosis)

    alternatives = spec.alternatives(call)
    singles = [{knob: value} for knob, values in alternatives.items() for value in values]
    finding.explanations.extend(setting for setting in singles if explains(setting))
    if not finding.explanations:  # two conventions crossed at once (e.g. pairing and theta), tried in pairs
        for first, second in itertools.combinations(singles, 2):
            knob_pair = {next(iter(first)), next(iter(second))}
            if len(knob_pair) == 2 and not any(knob_pair <= group for group in spec.overlapping) and \
                    len(finding.explanations) < MAX_PAIRS and explains({**first, **second}):
                finding.explanations.append({**first, **second})
    return finding


def _guarded_evaluate(call: RecordedCall, spec: Component, knobs: Mapping[str, Any], fmt: str,
                      actual: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The exact recomputation under ``knobs``; for a guess (spec.guess), outputs that cannot be combined (a numpy
    broadcast error) or differ from the call's in count or shape refute it: NotRecognised, never an inf error."""
    try:
        exact = [np.asarray(v, dtype=np.float64) for v in spec.evaluate(call, exact_precision(fmt), knobs)]
    except ValueError as error:
        if not spec.guess:
            raise
        raise NotRecognised(f"recognised by {spec.guess} as a {spec.kind}, but its recomputation does not fit the "
                            f"call's tensors ({error})") from error
    if spec.guess and [np.shape(a) for a in actual] != [np.shape(e) for e in exact]:
        raise NotRecognised(f"recognised by {spec.guess} as a {spec.kind}, but it returns tensors of shapes "
                            f"{[tuple(np.shape(a)) for a in actual]} where that returns "
                            f"{[tuple(np.shape(e)) for e in exact]}")
    return exact


# ----------------------------------------------------------------------------------------
# The run


def _bound_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """forward's arguments by parameter name (positional and keyword alike), as NumPy copies."""
    try:
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
        named = dict(bound.arguments)
        for name, parameter in inspect.signature(module.forward).parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in named:
                named.update(named.pop(name))
    except TypeError:
        named = {f"arg{i}": a for i, a in enumerate(args)} | dict(kwargs)
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.LayerNorm, nn.GELU, nn.SiLU)) or \
            (hasattr(nn, "RMSNorm") and isinstance(module, nn.RMSNorm)):
        if "input" not in named and args:
            named["input"] = args[0]
    return {k: _to_numpy(v) for k, v in named.items()}


_NARROW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
#: conversions: an explicit cast of a float32 tensor to float64 is not a float32 operand promoted in a computation
_CONVERSIONS = frozenset({"to", "type", "type_as", "double", "__get__", "__set__", "detach", "clone"})


class _NarrowFloatWatch(TorchFunctionMode):
    """During a float64 run, what each open module call computes narrower than float64, recorded at run time.

    For every torch function returning a float32 / float16 / bfloat16 tensor, every call open on the engine's stack
    is marked (RecordedCall.computed_narrow: the call may be a float32 island) and the innermost one is noted as
    having created it; a computation taking such an operand and returning float64 (torch's type promotion, or
    dit_precision.PromoteMixedFloats' around a float64 layer) notes the innermost call as having promoted it.
    ``paused`` while the engine's own hooks run (their NumPy copies are not the target's work).
    """

    def __init__(self, stack: Sequence[RecordedCall]) -> None:
        super().__init__()
        self.stack = stack
        self.paused = False
        #: id(call) -> (the call, the calls open around it, what it did with float32)
        self.sites: dict[int, tuple[RecordedCall, list[RecordedCall], set[str]]] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        if self.paused or not self.stack:
            return result
        produced = result if isinstance(result, (tuple, list)) else (result,)
        if any(isinstance(t, torch.Tensor) and t.dtype in _NARROW_FLOATS for t in produced):
            for call in self.stack:
                call.computed_narrow = True
            self._site("created float32")
        elif isinstance(result, torch.Tensor) and result.dtype == torch.float64 and \
                getattr(func, "__name__", "") not in _CONVERSIONS and _has_narrow_operand(args, kwargs):
            self._site("float32 met float64")
        return result

    def _site(self, what: str) -> None:
        innermost = self.stack[-1]
        if id(innermost) not in self.sites:
            self.sites[id(innermost)] = (innermost, list(self.stack[:-1]), set())
        self.sites[id(innermost)][2].add(what)

    def unjudged(self) -> list[tuple[str, str, str]]:
        """The sites no precision finding covers (neither the call nor one open around it), in order of first use."""
        return [(call.name, type(call.module).__name__, " and ".join(sorted(what)))
                for call, around, what in self.sites.values()
                if not any(c.finding is not None and c.finding.status == "precision" for c in [*around, call])]


def _has_narrow_operand(args: tuple[Any, ...], kwargs: Any) -> bool:
    """Whether a float32 (or narrower) tensor is among the arguments (or in a list of them: torch.cat)."""
    for value in (*args, *(kwargs or {}).values()):
        for item in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(item, torch.Tensor) and item.dtype in _NARROW_FLOATS:
                return True
    return False


def check_components(model: nn.Module, call_args: Sequence[Any] = (), call_kwargs: Mapping[str, Any] | None = None,
                     *, dtype: torch.dtype | None = None, strict_precision: bool = False,
                     skip: Sequence[str] = (), progress: Callable[[], None] | None = None) -> ComponentReport:
    """Run ``model(*call_args, **call_kwargs)`` once and check every recognised submodule call against the reference.

    ``dtype``: convert the model (in place, ``model.to(dtype)``) and every floating tensor argument to it
    first; None runs as given. The report's dtype is the run's (that of the model's first floating
    parameter). ``strict_precision``: float32 islands in a float64 run fail the report. ``skip``: qualified
    module names not to check (still run). ``progress``: called as each submodule call has been checked (a
    heartbeat for time-outs, _target.Heartbeat.beat). The model is put in eval mode (dropout off) for the run and
    restored; it is never called more than once. A target that raises is a finding with status ``error``,
    never an exception. Returns a :class:`ComponentReport`; its ``failures`` are the localised faults.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError("model", "a torch.nn.Module", type(model).__name__)
    call_kwargs = dict(call_kwargs or {})
    if dtype is not None:
        model.to(dtype)
        cast = (lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
        call_args = [cast(a) for a in call_args]
        call_kwargs = {k: cast(v) for k, v in call_kwargs.items()}
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    run_fmt = str(first.dtype if first is not None else torch.float32).removeprefix("torch.")
    findings: list[ComponentFinding] = []
    stack: list[RecordedCall] = []
    counts: dict[str, int] = {}
    names = {module: name or type(model).__name__ for name, module in model.named_modules()}
    skipped = set(skip)
    # what each module is checked as, decided once (each call's hooks ask it of the module and of its parent)
    specs = {module: None if name in skipped else _component_for(module) for module, name in names.items()}

    # a float64 run records, as it goes, which calls compute in float32 (islands are decided on that, never on source)
    watch = _NarrowFloatWatch(stack) if run_fmt == "float64" else None

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if watch is None:
            record_call(module, args, kwargs)
            return
        watch.paused = True
        try:
            record_call(module, args, kwargs)
        finally:
            watch.paused = False

    def post_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if watch is None:
            check_call(module, output)
            return
        watch.paused = True
        try:
            check_call(module, output)
        finally:
            watch.paused = False

    def record_call(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        base = names[module]
        index = counts.get(base, 0)
        counts[base] = index + 1
        spec = specs[module]
        # a child's inputs are kept for a recognised parent even when the child itself is not recognised (PixArt's
        # block compares what reaches its WindowAttention)
        parent_checked = bool(stack) and specs[stack[-1].module] is not None
        inputs = _bound_inputs(module, args, kwargs) if spec is not None or parent_checked else {}
        call = RecordedCall(base if index == 0 else f"{base}#{index}", module, inputs)
        call.finding = ComponentFinding(call.name, type(module).__name__, "not-checked", location=call.name)
        findings.append(call.finding)
        if stack:
            stack[-1].children.append(call)
        stack.append(call)

    def check_call(module: nn.Module, output: Any) -> None:
        call = stack.pop()
        tensors = _float_tensors(output)
        call.output_dtypes = [t.dtype for t in tensors]
        spec = specs[module]
        if spec is not None or (stack and specs[stack[-1].module] is not None):
            call.kept_outputs = [_to_numpy(t) for t in tensors]
            call.kept_inputs = call.inputs
        if spec is not None:
            call.outputs = call.kept_outputs
            try:
                result = _compare(call, spec, run_fmt)
            except Exception as error:  # noqa: BLE001 - a reference failure is reported, never raised
                result = ComponentFinding(call.name, type(module).__name__, "unsupported", location=call.name,
                                          message=f"could not recompute: {type(error).__name__}: {error}")
            _localise(call, result)
            call.finding.__dict__.update(result.__dict__)
        # free what the parent no longer needs: inputs, parameter copies and grandchildren
        call.inputs = {}
        call.outputs = []
        call.params = {}
        for child in call.children:
            child.kept_outputs, child.kept_inputs = [], {}
            child.children = []
        if progress is not None:
            progress()

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), (watch if watch is not None else contextlib.nullcontext()):
            model(*call_args, **call_kwargs)
    except Exception as error:  # noqa: BLE001 - a target that raises is a failed check
        findings.append(_raised(model, names[model], stack, error))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    findings = [f for f in findings if not (f.status == "not-checked" and f.cls in _SILENT)]
    return ComponentReport(findings, run_fmt, strict_precision, [] if watch is None else watch.unjudged())


def _raised(model: nn.Module, model_name: str, open_calls: Sequence[RecordedCall], error: Exception) -> ComponentFinding:
    """The ``error`` finding of a target that raised, located at the innermost call that did not return (the calls
    still open when it raised say so instead of looking merely unchecked)."""
    message = f"the target raised {type(error).__name__}: {error}"
    location = model_name
    if open_calls:
        innermost = open_calls[-1]
        location = innermost.name
        if innermost.module is not model:
            message += f" (inside {innermost.name}, {type(innermost.module).__name__}.forward)"
        for call in open_calls:
            call.finding.message = f"did not return: the target raised {type(error).__name__} inside it"
    return ComponentFinding(model_name, type(model).__name__, "error", location=location, message=message)


def _localise(call: RecordedCall, finding: ComponentFinding) -> None:
    """A failing leaf is the fault; a failing composite is one too (inline code) unless a child failed first."""
    if finding.status != "mismatch":
        return
    failing = [c for c in call.children if c.finding is not None and c.finding.status in FAILING_STATUSES]
    if failing:
        finding.status = "follows"
        finding.location = failing[0].name
        finding.message = f"follows from {failing[0].name} ({failing[0].finding.cls})"
    elif call.children:
        finding.status = "inline"
        finding.location = f"inline code in {type(call.module).__name__}.forward"
        unchecked = [c.name for c in call.children if c.finding is not None and c.finding.status == "not-checked"
                     and c.finding.cls not in _SILENT]
        if unchecked:
            finding.message = "children not checked: " + ", ".join(unchecked)
