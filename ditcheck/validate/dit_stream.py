"""Validating a DiT block by block in bounded memory (full-size models such as DiT-XL/2).

The stored path (dit_run.capture then dit_run.measure) keeps every activation of every example,
a float64 copy of all weights per example and a whole naive model: for DiT-XL/2 (675M parameters)
that is tens of GB. Here the comparison streams inside the target's own forward pass: when a hooked
submodule returns, the reference (float64 NumPy) and the naive candidate (ditcheck.models.dit's
modules in the target dtype) compute the same part from the weights *of that part only*, read from
the target as float64 when needed, and only the worst errors are kept. At any time memory holds
the target, one block's float64 weights, one naive block, and one block's activations.

Random weights are drawn entry by entry straight into the target (:func:`randomise_weights`),
never as a whole float64 dictionary. The diagnosis (which needs every activation stored) and the
.npz reproducer (which needs every weight) are not produced on this path; the report says so.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ditcheck.models.dit import DiTBlock, FinalLayer, LabelEmbedder, PatchEmbed, TimestepEmbedder, sdpa_attention
from ditcheck.reference.dit import (DiTConfig, dit_block_intermediates, dit_param_shapes, final_layer_intermediates,
                                    timestep_embedder)
from ditcheck.reference.layers import patchify, pos_embed_2d

from ._target import Heartbeat, TargetTimeoutError
from .dit_precision import call_target
from .dit_recognition import Layout
from .dit_run import Comparison, hooked_activation, max_abs

__all__ = ["STREAM_PARAMETERS", "randomise_weights", "StreamingComparison"]

#: Activations the target may hand over ahead of the comparison: the target's forward and the reference's
#: work overlap (DiT-XL/2, 3 examples, 2 cores at load ~2: 154 s -> 106 s wall) while memory stays bounded
#: (8 activations of [4, 256, 1152] float64: 75 MB).
IN_FLIGHT = 8

#: Targets with more parameters than this validate block by block (a float64 copy of them is over 400 MB).
STREAM_PARAMETERS = 50_000_000


def randomise_weights(model: nn.Module, layout: Layout, config: DiTConfig, seed: int) -> None:
    """Draw every reference entry into the target, one entry at a time (the law of reference.random_dit_params).

    Weights and biases N(0, 1/fan_in), the label table N(0, 1), pos_embed the exact 2-D sin-cos table.
    Each entry is drawn in place in the target's dtype (Tensor.normal_ from its own generator, seeded
    by (seed, entry index)): no float64 copy of DiT-XL/2's 675M parameters is ever made. The
    reference reads the weights back from the target, so the draw needs no other rounding rule.
    """
    shapes = dit_param_shapes(config)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for index, (name, shape) in enumerate(shapes.items()):
            target_name = layout.names.get(name)
            if target_name is None:
                continue
            target = tensors[target_name]
            if name == "pos_embed":
                value = torch.from_numpy(pos_embed_2d(config.hidden_size, config.grid, config.pos_embed_max_period))
                target.copy_(value.reshape(target.shape))
                continue
            std = 1.0
            if not name.endswith("embedding_table.weight"):
                weight_shape = shapes[name.removesuffix("bias") + "weight" if name.endswith(".bias") else name]
                std = 1.0 / math.sqrt(math.prod(weight_shape[1:]))
            generator = torch.Generator(device=target.device).manual_seed(int(seed) * 1_000_003 + index)
            target.normal_(0.0, std, generator=generator)


class _Aborted(Exception):
    """Raised in the target's thread by a hook once the comparison stopped (its own error, or a time-out)."""


def _naive(module: nn.Module, params: dict[str, np.ndarray], prefix: str, dtype: torch.dtype,
           device: torch.device) -> nn.Module:
    """``module`` (built on the meta device: no random init to pay for) holding ``params`` under ``prefix`` in dtype."""
    state = {name.removeprefix(prefix): torch.as_tensor(value, dtype=dtype, device=device)
             for name, value in params.items() if name.startswith(prefix)}
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()


def _run_recording(module: nn.Module, names: dict[str, str], *args: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """module(*args) with its submodules ``names`` (submodule -> activation name) recorded as float64."""
    seen: dict[str, np.ndarray] = {}

    def record(key: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:  # returns None: output unchanged
            seen.setdefault(key, out.detach().to("cpu", torch.float64).numpy())
        return hook
    handles = [module.get_submodule(sub).register_forward_hook(record(key)) for sub, key in names.items()]
    try:
        with torch.no_grad():
            out = module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return out, seen


class StreamingComparison:
    """Errors of one target against the reference and the naive candidate, compared while the target runs."""

    def __init__(self, layout: Layout, config: DiTConfig, model: nn.Module, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.layout, self.config, self.model, self.dtype, self.device = layout, config, model, dtype, device
        self.comparisons: dict[str, Comparison] = {}
        self.output = Comparison("output", "unpatchify", 10**6)

    # -- one forward --------------------------------------------------------------------

    def run(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, timeout: float) -> Any:
        """Run the target once on (x, t, y) with streaming hooks; returns its output (compared after).

        The target runs through _target.call_isolated (dit_precision.call_target); each hooked submodule hands
        its output to a comparing thread and goes on (it waits only when IN_FLIGHT outputs are not compared yet),
        so the target's forward overlaps the comparison. The heartbeat beats at each hand-over and is paused while
        an output is compared, so ``timeout`` bounds the target's own computation between two hooked submodules
        (a hang anywhere is still caught), never the reference's work, which for a full-size model is longer
        than the target's whole forward. Raises TargetError / TargetTimeoutError like call_isolated; an error of
        the comparison itself (ditcheck's, not the target's) stops the target at its next hook and is raised as
        it is. After a time-out the hooks stay, inert in any other thread, until the abandoned target reaches
        the next one: it removes them and stops there.
        """
        self._begin(x, t, y)
        heartbeat = Heartbeat()
        arrivals: queue.Queue[tuple[str, str, np.ndarray] | None] = queue.Queue(maxsize=IN_FLIGHT)
        stop = threading.Event()  # set: the target stops at its next hook, the comparer skips what is queued
        failed: list[BaseException] = []  # the comparison's own error
        owner: list[threading.Thread] = []  # the thread running the target: the hooks do nothing in any other
        handles = []

        def compare() -> None:  # the comparing thread: each output compared and freed as it arrives
            while (item := arrivals.get()) is not None:
                if stop.is_set():
                    continue  # drained, so a hook waiting to hand over goes on to its stop
                try:
                    with heartbeat.pause(), torch.no_grad():
                        self._compare(*item)
                except BaseException as error:  # noqa: BLE001 - raised by run once the target has stopped
                    failed.append(error)
                    stop.set()

        modules = dict(self.model.named_modules())
        for target_name, reference_name, transform in self.layout.hooks:
            module = modules.get(target_name)
            if module is None:
                continue

            def hook(_module: nn.Module, _inputs: Any, output: Any, target_name: str = target_name,
                     reference_name: str = reference_name, transform: Any = transform) -> None:
                if threading.current_thread() not in owner or target_name in self._done:
                    return
                if stop.is_set():
                    for handle in handles:
                        handle.remove()
                    raise _Aborted("ditcheck stopped comparing")
                self._done.add(target_name)
                value = hooked_activation(output, transform)
                if value is not None:
                    arrivals.put((target_name, reference_name, value))
                    heartbeat.beat()
            handles.append(module.register_forward_hook(hook))

        def call() -> Any:
            owner.append(threading.current_thread())
            return self.layout.call(self.model, x, t, y)

        comparer = threading.Thread(target=compare, daemon=True, name="ditcheck-compare")
        comparer.start()
        error: BaseException | None = None
        try:
            out = call_target(call, timeout, self.dtype == torch.float64, heartbeat=heartbeat)
        except BaseException as raised:  # noqa: BLE001 - raised below, after the comparer has stopped
            error = raised
            stop.set()
        arrivals.put(None)  # the comparer ends after what is queued (compared, or skipped after a stop)
        comparer.join()
        if not isinstance(error, TargetTimeoutError):  # the target has ended: its hooks go now
            for handle in handles:
                handle.remove()
        if failed:
            raise failed[0]  # the comparison failed (the target's _Aborted, if any, is only its consequence)
        if error is not None:
            raise error
        return out

    def compare_output(self, out: np.ndarray) -> None:
        """The model output against the reference's unpatchify (the first C channels of a SiT-style forward)."""
        with torch.no_grad():
            self._ensure_final()
        expected = self._final_ref["unpatchify"][:, :out.shape[1]]
        naive = self._final_naive["unpatchify"][:, :out.shape[1]]
        entry = self.output
        entry.observed = max(entry.observed, max_abs(out - expected) if out.shape == expected.shape else math.inf)
        entry.naive = max(entry.naive, max_abs(naive - expected))
        entry.magnitude = max(entry.magnitude, max_abs(expected))
        self._free()

    def ordered(self) -> list[Comparison]:
        """Every compared activation in execution order, the output last (as dit_run.measure returns them)."""
        return sorted(self.comparisons.values(), key=lambda c: c.order) + [self.output]

    # -- the chain of reference and naive states ------------------------------------------

    def _begin(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> None:
        self._x, self._t, self._y = x, t, y
        self._done: set[str] = set()
        self._known: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # activation -> (reference, naive)
        self._block = -1
        self._tokens: tuple[np.ndarray, torch.Tensor] | None = None
        self._c: tuple[np.ndarray, torch.Tensor] | None = None
        self._final_ref: dict[str, np.ndarray] = {}
        self._final_naive: dict[str, np.ndarray] = {}

    def _free(self) -> None:
        self._known.clear()
        self._tokens = self._c = None
        self._final_ref, self._final_naive = {}, {}

    def _params(self, prefix: str) -> dict[str, np.ndarray]:
        return {name: np.asarray(value, dtype=np.float64) for name, value in self.layout.params(self.model, prefix).items()}

    def _ensure_embeddings(self) -> None:
        if self._tokens is not None:
            return
        config, dtype, device = self.config, self.dtype, self.device
        x = self._x.detach().to("cpu", torch.float64).numpy()
        t = self._t.detach().to("cpu", torch.float64).numpy()
        params = self._params("x_embedder.") | self._params("pos_embed") | self._params("t_embedder.")
        if config.num_classes:
            params |= self._params("y_embedder.")
        pos = params["pos_embed"]
        x_ref = patchify(x, params["x_embedder.proj.weight"], params["x_embedder.proj.bias"], config.patch_size)
        x_naive = _naive(PatchEmbed(config, device="meta", dtype=dtype), params, "x_embedder.", dtype, device)(self._x)
        self._known["x_embedder"] = (x_ref, x_naive.double().cpu().numpy())
        t_ref = timestep_embedder(t, params, config)
        t_naive = _naive(TimestepEmbedder(config, device="meta", dtype=dtype), params, "t_embedder.", dtype,
                         device)(self._t)
        self._known["t_embedder"] = (t_ref, t_naive.double().cpu().numpy())
        c_ref, c_naive = t_ref, t_naive
        if config.num_classes and self._y is not None:
            labels = self._y.detach().cpu().numpy()
            y_ref = params["y_embedder.embedding_table.weight"][labels]
            y_naive = _naive(LabelEmbedder(config, device="meta", dtype=dtype), params, "y_embedder.", dtype,
                             device)(self._y)
            self._known["y_embedder"] = (y_ref, y_naive.double().cpu().numpy())
            c_ref, c_naive = c_ref + y_ref, c_naive + y_naive
        self._known["c"] = (c_ref, c_naive.double().cpu().numpy())
        self._tokens = (x_ref + pos, x_naive + torch.as_tensor(pos, dtype=dtype, device=device))
        self._c = (c_ref, c_naive)

    def _ensure_block(self, index: int) -> None:
        self._ensure_embeddings()
        while self._block < index:
            self._block += 1
            prefix = f"blocks.{self._block}"
            for name in [n for n in self._known if n.startswith("blocks.")]:
                del self._known[name]  # the previous block's activations: freed
            params = self._params(prefix + ".")
            tokens_ref, tokens_naive = self._tokens
            c_ref, c_naive = self._c
            record = dit_block_intermediates(tokens_ref, c_ref, params, prefix, self.config)
            block = _naive(DiTBlock(self.config, sdpa_attention, device="meta", dtype=self.dtype), params,
                           prefix + ".", self.dtype, self.device)
            subs = {"adaLN_modulation": f"{prefix}.adaLN_modulation", "norm1": f"{prefix}.norm1",
                    "attn": f"{prefix}.attn", "norm2": f"{prefix}.norm2", "mlp": f"{prefix}.mlp"}
            out, seen = _run_recording(block, subs, tokens_naive, c_naive)
            seen[prefix] = out.double().cpu().numpy()
            for name, value in record.items():
                self._known[name] = (value, seen[name])
            self._tokens = (record[prefix], out)
            del block, params

    def _ensure_final(self) -> None:
        if self._final_ref:
            return
        self._ensure_block(self.config.depth - 1)
        params = self._params("final_layer.")
        tokens_ref, tokens_naive = self._tokens
        c_ref, c_naive = self._c
        self._final_ref = final_layer_intermediates(tokens_ref, c_ref, params, self.config)
        final = _naive(FinalLayer(self.config, device="meta", dtype=self.dtype), params, "final_layer.",
                       self.dtype, self.device)
        out, seen = _run_recording(final, {"adaLN_modulation": "final_layer.adaLN_modulation",
                                           "norm_final": "final_layer.norm_final"}, tokens_naive, c_naive)
        seen["final_layer"] = out.double().cpu().numpy()
        (h, w), p, channels = self.config.grid, self.config.patch_size, self.config.out_channels
        image = torch.einsum("nhwpqc->nchpwq", out.reshape(out.shape[0], h, w, p, p, channels))
        seen["unpatchify"] = image.reshape(out.shape[0], channels, h * p, w * p).double().cpu().numpy()
        self._final_naive = seen
        for name in ("final_layer.adaLN_modulation", "final_layer.norm_final", "final_layer"):
            self._known[name] = (self._final_ref[name], seen[name])

    def _compare(self, target_name: str, reference_name: str, value: np.ndarray) -> None:
        if reference_name.startswith("blocks."):
            self._ensure_block(int(reference_name.split(".")[1]))
        elif reference_name.startswith("final_layer"):
            self._ensure_final()
        else:
            self._ensure_embeddings()
        expected, naive = self._known[reference_name]
        entry = self.comparisons.setdefault(target_name, Comparison(target_name, reference_name,
                                                                    len(self.comparisons)))
        entry.observed = max(entry.observed, max_abs(value - expected) if value.shape == expected.shape else math.inf)
        entry.naive = max(entry.naive, max_abs(naive - expected))
        entry.magnitude = max(entry.magnitude, max_abs(expected))

