"""Validate the zoo's diffusers classes at diffusers' DEFAULT configuration, the layer counts cut to 1 (issue 16).

  python -m ditcheck.validate._zoo_default_configs [--names A,B] [--dtype float32] [--timeout S] [--max-params-m N]

ditcheck's zoo builds each class tiny (:func:`ditcheck.validate.zoo.build_model`); this measures the same
``ditcheck.validate.dit`` run at the widths, heads, head dims and text dims users run (diffusers' ``__init__``
defaults, the keys it leaves None filled from the released checkpoint, :data:`FILL`), only the layer counts cut to
1 to bound time and memory. Each class runs in its own subprocess, so its peak RSS is its own; classes above
``--max-params-m`` million parameters (counted on the meta device) are skipped. Prints a Markdown table: class,
parameters (M, layers cut), exit code, validate time, peak RSS and the first failure (or "conforms").
Results and limits: docs/zoo-default-configs.md.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import re
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._attention import resolve_dtype
from .models import dit
from .zoo import ENTRIES, _quiet_diffusers, randomise_weights

#: A layer-count key of a diffusers ``__init__``: num_layers, num_single_layers, depth, n_layers, mmdit_layers, ...
LAYER_RE = re.compile(r"(^|_)(num_.*(layers|blocks)|n_.*layers|depth|mmdit_layers|num_layers|LFE_depth)$")

#: Keys diffusers leaves None, from the released checkpoint's config; and two cut-depth fixes (say so).
FILL: dict[str, dict[str, Any]] = {
    # Tencent-Hunyuan/HunyuanDiT-v1.x; its long skips need an even depth >= 4, so 4 layers, not 1
    "HunyuanDiT2DModel": {"in_channels": 4, "patch_size": 2, "sample_size": 128, "hidden_size": 1408,
                          "num_layers": 4, "mlp_ratio": 4.3637},
    # maxin-cn/Latte-1
    "LatteTransformer3DModel": {"in_channels": 4, "out_channels": 8, "patch_size": 2, "num_attention_heads": 16,
                                "attention_head_dim": 72, "cross_attention_dim": 1152, "caption_channels": 4096,
                                "norm_type": "ada_norm_single", "num_embeds_ada_norm": 1000,
                                "activation_fn": "gelu-approximate", "norm_elementwise_affine": False,
                                "norm_eps": 1e-6, "num_layers": 1},
    # Alpha-VLLM/Lumina-Next-SFT
    "LuminaNextDiT2DModel": {"num_kv_heads": 8},
    # alibaba-pai/EasyAnimateV5.1
    "EasyAnimateTransformer3DModel": {"in_channels": 16, "out_channels": 16, "patch_size": 2},
    # HiDream-ai/HiDream-I1 (axes_dims_rope stays diffusers' (32, 32): see the doc)
    "HiDreamImageTransformer2DModel": {"patch_size": 2, "in_channels": 16, "out_channels": 16,
                                       "caption_channels": [4096, 4096], "llama_layers": [10, 11]},
    # not a checkpoint value: diffusers' default vace_layers index blocks beyond the cut depth; one, at block 0
    "WanVACETransformer3DModel": {"vace_layers": [0]},
    # not a checkpoint value: the default injection layers lie beyond the cut depth; 2 layers, injected at 1
    "BriaFibo2Transformer2DModel": {"n_layers": 2, "injection_layer_ids": (1,)},
}

COLUMNS = ("class", "parameters (M, layers cut)", "exit", "validate s", "peak RSS GB", "first failure")


def _init_defaults(cls: type) -> dict[str, Any]:
    """The keyword defaults of ``cls.__init__`` (diffusers' default configuration)."""
    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is not p.empty}


def default_config(name: str) -> dict[str, Any]:
    """The kwargs ``name`` is built with: every layer-count default above 1 cut to 1, then :data:`FILL`.

    Only the changed keys are returned; the rest stay diffusers' defaults.
    """
    import diffusers  # lazy: diffusers is optional (the test extra)

    kw: dict[str, Any] = {k: 1 for k, v in _init_defaults(getattr(diffusers, name)).items()
                          if isinstance(v, int) and not isinstance(v, bool) and LAYER_RE.search(k) and v > 1}
    kw.update(FILL.get(name, {}))
    return kw


def run_one(name: str, dtype: str, timeout: float, max_params_m: float) -> dict[str, Any]:
    """Build ``name`` at :func:`default_config`, validate it and return one row (run in its own process)."""
    import diffusers  # lazy: diffusers is optional (the test extra)

    cls, kw = getattr(diffusers, name), default_config(name)
    with torch.device("meta"):  # count without allocating
        params_m = sum(p.numel() for p in cls(**kw).parameters()) / 1e6
    row: dict[str, Any] = {"name": name, "params_m": params_m}
    if params_m > max_params_m:
        return row | {"first": f"skipped: {params_m:.0f}M parameters > --max-params-m {max_params_m:g}"}
    # the draw validate's weights="random" makes for example 0 (seed 0, in the run dtype), made here in place: one
    # real-width model in memory instead of the model and validate's deep copy
    with _quiet_diffusers():
        model = randomise_weights(cls(**kw).to(resolve_dtype(dtype)), 0)
    start = time.perf_counter()
    report = dit(model, examples=1, dtype=dtype, weights="model", target=f"default:{name}", timeout=timeout)
    fails = [c for c in report.checks if not c.ok]
    first = "conforms" if not fails and report.loaded else \
        f"{fails[0].id}: {fails[0].message}" if fails else "could not run: " + "; ".join(report.notes)
    return row | {"exit": report.exit_code, "validate_s": time.perf_counter() - start, "first": first[:200]}


def format_row(row: Mapping[str, Any]) -> str:
    """One Markdown table row from a :func:`run_one` result (missing fields blank)."""
    def num(key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else ""
    first = str(row.get("first", "")).replace("|", "\\|").replace("\n", " ")
    cells = (row["name"], num("params_m", ".0f"), str(row.get("exit", "")), num("validate_s", ".1f"),
             num("rss_gb", ".2f"), first)
    return "| " + " | ".join(cells) + " |"


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table of :data:`COLUMNS` over ``rows``."""
    head = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(head + [format_row(r) for r in rows])


def _child(name: str, dtype: str, timeout: float, max_params_m: float) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; its peak RSS is measured there (ru_maxrss, kB on Linux)."""
    cmd = [sys.executable, "-m", "ditcheck.validate._zoo_default_configs", "--child", name, "--dtype", dtype,
           "--timeout", str(timeout), "--max-params-m", str(max_params_m)]
    try:  # the child's own time-out counts from the last progress; this one only catches a wedged process
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout + 900)
    except subprocess.TimeoutExpired:
        return {"name": name, "exit": "killed", "first": f"no result within {timeout + 900:g} s"}
    for line in done.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"name": name, "exit": done.returncode, "first": f"crashed: {tail}"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditcheck.validate._zoo_default_configs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", default="", help="comma-separated class names (default: every zoo class)")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="validate's time-out, s without progress (default 600)")
    parser.add_argument("--max-params-m", type=float, default=1000.0,
                        help="skip classes above this many million parameters (default 1000, ~4 GB float32)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # one class, in this process
    args = parser.parse_args(argv)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    if args.child:
        row = run_one(args.child, args.dtype, args.timeout, args.max_params_m)
        row["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print("ROW " + json.dumps(row))
        return 0
    names = [n for n in args.names.split(",") if n] or list(ENTRIES)
    print(table([_child(n, args.dtype, args.timeout, args.max_params_m) for n in names]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
